"""The LRN layers of a model alone, forward and backward, with each kernel (model.lrn_kernel).

    python -m alexnet_tf.perf.lrn_bench [--models paper,default] [--batch 128] [--repeats 10]

For every LRN layer of the model (its input shape at the given batch) and each precision, times one
forward and backward pass (output and input gradient) with the pure-TF layer (`reference`) and the
fused op (`fused`), interleaved so that both see the same load; prints the best time of each and the
ratio. The fused op must be built (`make setup`).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import alexnet_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on, see alexnet_tf/__init__.py)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_tf.config import load_config  # noqa: E402
from alexnet_tf.layers import LocalResponseNormalization  # noqa: E402
from alexnet_tf.model import build_model  # noqa: E402
from alexnet_tf.ops import fused_lrn  # noqa: E402
from alexnet_tf.perf.speed import MODELS  # noqa: E402


def lrn_layers(name):
    """[(layer name, its LRN arguments, input shape without the batch)] of model `name`, one per distinct shape."""
    path, overrides = MODELS[name]
    model = build_model(load_config(path, overrides + ["model.lrn_kernel=reference"]))
    found = {}
    for layer in model.layers:
        if isinstance(layer, LocalResponseNormalization):
            args = dict(convention=layer.convention, output_channels=layer.output_channels)
            found.setdefault((tuple(layer.input.shape[1:]), str(args)), (layer.name, args, tuple(layer.input.shape[1:])))
    return list(found.values())


def step(kernel, args, shape, dtype):
    """A compiled forward + backward of one LRN layer with `kernel`, and its input."""
    layer = LocalResponseNormalization(kernel=kernel, dtype=dtype, **args)
    rng = np.random.default_rng(0)
    x = tf.constant(np.abs(rng.normal(0, 40, shape)), layer.compute_dtype)
    y_shape = layer.compute_output_shape(shape)
    g = tf.constant(rng.normal(0, 1, y_shape), layer.compute_dtype)

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return y, tape.gradient(y, x, output_gradients=g)

    return run, x


def best_times(steps, repeats):
    """{kernel: best seconds of one call}, the kernels' calls interleaved."""
    for run, x in steps.values():
        run(x)
    best = {k: float("inf") for k in steps}
    for _ in range(repeats):
        for kernel, (run, x) in steps.items():
            start = time.perf_counter()
            y, dx = run(x)
            _ = (y.numpy(), dx.numpy())
            best[kernel] = min(best[kernel], time.perf_counter() - start)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="paper,default")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if fused_lrn.library() is None:
        raise SystemExit(f"error: {fused_lrn.unavailable_reason()}")
    print(f"{'model':8s} {'layer':7s} {'input (B,H,W,C)':22s} {'precision':15s} {'reference':>10s} {'fused':>10s}  ratio")
    for name in args.models.split(","):
        for layer, lrn_args, shape in lrn_layers(name):
            full = (args.batch, *shape)
            for dtype in args.precisions.split(","):
                best = best_times({k: step(k, lrn_args, full, dtype) for k in ("reference", "fused")}, args.repeats)
                print(f"{name:8s} {layer:7s} {str(full):22s} {dtype:15s} {best['reference'] * 1e3:8.1f}ms "
                      f"{best['fused'] * 1e3:8.1f}ms  x{best['reference'] / best['fused']:.2f}", flush=True)


if __name__ == "__main__":
    main()
