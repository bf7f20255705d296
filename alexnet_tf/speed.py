"""Speed of the model on synthetic in-memory data: training and inference images/s, FLOPs, utilisation.

`python -m alexnet_tf speed [--models paper,default] [--precisions float32,mixed_bfloat16]
 [--batch 128] [--steps 10] [--torch] [--json] [--tiny]`

FLOPs are counted from the layers (multiply-adds of conv and dense weights, as the paper's
724,406,816 per image); one training step costs ~3x the forward pass (forward, input gradients,
weight gradients). Utilisation compares the achieved FLOP/s with a large matmul of the same dtype
timed in the same run, so it is a ratio measured on the same (noisy, shared) machine.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.config import load_config
from alexnet_tf.model import build_model
from alexnet_tf.training import compile_model, resolve_precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "paper": (os.path.join(ROOT, "configs", "alexnet_imagenet.yaml"), []),
    "default": (os.path.join(ROOT, "configs", "fashion_mnist.yaml"), []),
    # a few-second model for tests of the benchmark itself
    "tiny": (None, ["model.image_size=28", "model.channels=1", "model.num_classes=10", "model.geometry=small",
                    "model.width=0.125", "model.fc_units=32"]),
}


def multiply_adds(model):
    """Forward multiply-adds per image of every Conv2D and Dense layer (weights only: no bias, LRN, pooling)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += h * w * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def _timed(fn, steps, warmup=2):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def matmul_peak(dtype, n=4096, steps=5):
    """FLOP/s of an n x n x n matmul in `dtype` (float32 or bfloat16)."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    seconds = _timed(lambda: f(a).numpy(), steps)
    return 2 * n ** 3 / seconds


def keras_speed(name, precision, batch, steps):
    path, overrides = MODELS[name]
    config = load_config(path, overrides)
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = compile_model(build_model(config), config)
        m = config.model
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(0, 50, (batch, m.image_size, m.image_size, m.channels)).astype("float32"))
        y = tf.constant(rng.integers(0, m.num_classes, batch))
        train_s = _timed(lambda: model.train_on_batch(x, y), steps)
        infer = tf.function(lambda t: model(t, training=False))
        infer_s = _timed(lambda: infer(x).numpy(), steps)
        macs = multiply_adds(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return dict(framework="keras", model=name, precision=precision, batch=batch,
                train_images_per_s=batch / train_s, inference_images_per_s=batch / infer_s,
                forward_multiply_adds=macs, train_flops_per_s=3 * 2 * macs * batch / train_s,
                inference_flops_per_s=2 * macs * batch / infer_s)


def run(models=("paper", "default"), precisions=("float32", "mixed_bfloat16"), batch=128, steps=10,
        torch=False, log=print):
    """All measurements of one benchmark run, as a list of dicts (and the matmul peaks)."""
    precisions = [resolve_precision(p) for p in precisions]
    peaks = {}
    for p in sorted(set(precisions)):
        dtype = tf.bfloat16 if "bfloat16" in p else (tf.float16 if "float16" in p else tf.float32)
        peaks[p] = matmul_peak(dtype)
        log(f"matmul peak {p}: {peaks[p] / 1e9:.0f} GFLOP/s")
    rows = []
    for name in models:
        for p in precisions:
            r = keras_speed(name, p, batch, steps)
            r["train_utilisation"] = r["train_flops_per_s"] / peaks[p]
            rows.append(r)
            log(_fmt(r))
            if torch:
                from alexnet_tf import speed_torch
                for t in speed_torch.speeds(name, MODELS[name], p, batch, steps):
                    t["train_utilisation"] = t["train_flops_per_s"] / peaks[p]
                    rows.append(t)
                    log(_fmt(t))
    return dict(threads=tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                matmul_peak_flops_per_s=peaks, results=rows)


def _fmt(r):
    return (f"{r['framework']:7s} {r['model']:8s} {r['precision']:15s} batch {r['batch']:4d}: "
            f"train {r['train_images_per_s']:8.1f} img/s ({r['train_flops_per_s'] / 1e9:6.1f} GFLOP/s, "
            f"{100 * r['train_utilisation']:4.1f} % of matmul peak), inference {r['inference_images_per_s']:8.1f} img/s; "
            f"{r['forward_multiply_adds']:,} multiply-adds/image")


def main(args):
    models = args.models.split(",")
    precisions = args.precisions.split(",")
    batch, steps = args.batch, args.steps
    if args.tiny:
        models, batch, steps = ["tiny"], 8, 2
    log = (lambda *a: None) if args.json else print
    out = run(models, precisions, batch, steps, torch=args.torch, log=log)
    if args.json:
        print(json.dumps(out, indent=2))
