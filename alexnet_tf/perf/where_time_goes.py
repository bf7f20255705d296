"""Where the training step's time goes: the same model with one thing changed at a time, timed in one run.

    python -m alexnet_tf.perf.where_time_goes [--model default|paper] [--steps 8]

Variants: the shipped LRN (model.lrn_kernel auto: the fused C++ op where it is built); the pure-TF
layer (float32 normaliser, rsqrt for beta=0.75, hand-written gradient; lrn_kernel reference);
LRN with autodiff through pow (a direct transcription of the formula); TF's own LRN op in
float32 (the first prototype); no LRN (an upper bound); the whole step under XLA
(jit_compile=True); mixed_bfloat16; intra-op threads 1 vs 2 is in docs/speed.md (it needs a fresh process).
Prints training img/s and the ratio to the shipped version.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import alexnet_tf  # noqa: E402,F401  (before TensorFlow: oneDNN on, see alexnet_tf/__init__.py)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_tf import layers as layers_lib  # noqa: E402
from alexnet_tf.config import load_config  # noqa: E402
from alexnet_tf.model import build_model  # noqa: E402
from alexnet_tf.optim import compile_model  # noqa: E402
from alexnet_tf.perf.speed import MODELS  # noqa: E402


def autodiff_pow(self, x):
    """LRN's normaliser as the formula reads, differentiated by autodiff through pow."""
    window_sum = tf.matmul(tf.square(x), tf.constant(self._band))
    return x * tf.pow(self.k + self.alpha_eff * window_sum, -self.beta)


def tf_op(self, x):
    """LRN by TensorFlow's own op (float32)."""
    return tf.nn.local_response_normalization(x, self.size // 2, self.k, self.alpha_eff, self.beta)


def measure(name, steps, precision="float32", jit=False, lrn=True, normalize=None, kernel="auto"):
    """Training images/s of model `name` with one thing changed (after 2 warm-up steps); a replaced
    `normalize` is the pure-TF layer's, so it implies the reference kernel."""
    path, overrides = MODELS[name]
    kernel = "reference" if normalize is not None else kernel
    config = load_config(path, overrides + [f"model.lrn_kernel={kernel}"] + ([] if lrn else ["model.lrn=false"]))
    keras.mixed_precision.set_global_policy(precision)
    shipped = layers_lib.LocalResponseNormalization._normalize
    if normalize is not None:
        layers_lib.LocalResponseNormalization._normalize = normalize
    try:
        model = compile_model(build_model(config), config, jit_compile=jit)
        m = config.model
        batch = config.data.batch_size
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(0, 50, (batch, m.image_size, m.image_size, m.channels)).astype("float32"))
        y = tf.constant(rng.integers(0, m.num_classes, batch))
        for _ in range(2):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return batch * steps / (time.perf_counter() - start)
    finally:
        layers_lib.LocalResponseNormalization._normalize = shipped
        keras.mixed_precision.set_global_policy("float32")


def main():
    """`python -m alexnet_tf.perf.where_time_goes`: every variant's img/s and its ratio to the shipped one."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    variants = [
        ("shipped: LRN by model.lrn_kernel auto (fused op if built)", {}),
        ("LRN pure-TF: float32, rsqrt, hand-written gradient", dict(kernel="reference")),
        ("LRN autodiff through pow", dict(normalize=autodiff_pow)),
        ("LRN = tf.nn.local_response_normalization (float32)", dict(normalize=tf_op)),
        ("no LRN (upper bound)", dict(lrn=False)),
        ("jit_compile=True (XLA)", dict(jit=True)),
        ("mixed_bfloat16", dict(precision="mixed_bfloat16")),
    ]
    base = None
    print(f"model {args.model}, {args.steps} timed steps each, {os.cpu_count()} cores")
    for label, kwargs in variants:
        rate = measure(args.model, args.steps, **kwargs)
        base = base or rate
        print(f"{label:55s} {rate:8.1f} img/s  x{rate / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
