"""Where the training step's time goes: the same model with one thing changed at a time, timed in one run.

    python -m alexnet_tf.perf.where_time_goes [--model default|paper] [--steps 8] [--repeats 2]
        [--variants shipped,pad16,bf16,...]

Variants (VARIANTS; the first, `shipped`, is the baseline every ratio is against):
- LRN: the shipped layer (model.lrn_kernel auto: the fused C++ op where it is built); the pure-TF
  layer (float32 normaliser, rsqrt for beta=0.75, hand-written gradient; lrn_kernel reference); autodiff
  through pow (a direct transcription of the formula); TF's own LRN op in float32 (the first
  prototype); no LRN (an upper bound);
- the whole step under XLA (jit_compile=True);
- convolutions shaped for the CPU's units: channel counts padded to oneDNN's block of 16 inside
  each conv layer and sliced off after it (conv_padding.py: same network, same outputs);
  mixed_bfloat16; both together;
- oneDNN settings TensorFlow reads once at start-up, so each runs in a fresh process: oneDNN off
  (TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's Eigen kernels), oneDNN on the system allocator
  (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1), and float32 convolutions and matmuls allowed to compute in
  bfloat16 inside oneDNN (TF_SET_ONEDNN_FPMATH_MODE=BF16; no effect on a CPU without bfloat16).
  oneDNN's blocked layout cannot be kept across layers: TensorFlow 2.8 and later run every oneDNN op
  on the native NHWC layout and reorder inside the op (docs/speed.md says where this is stated).

The variants are timed in rounds (every variant once per round, `repeats` rounds), so a spell of load
on the shared machine hits all of them alike; each variant's figure is its best round, with the spread.
Prints a table: step time, images/s and the ratio to the baseline.
"""

import argparse
import json
import os
import subprocess
import sys
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
from alexnet_tf.perf import spread  # noqa: E402
from alexnet_tf.perf.conv_padding import pad_convolutions  # noqa: E402
from alexnet_tf.perf.speed import MODELS  # noqa: E402


def autodiff_pow(self, x):
    """LRN's normaliser as the formula reads, differentiated by autodiff through pow."""
    window_sum = tf.matmul(tf.square(x), tf.constant(self._band))
    return x * tf.pow(self.k + self.alpha_eff * window_sum, -self.beta)


def tf_op(self, x):
    """LRN by TensorFlow's own op (float32)."""
    return tf.nn.local_response_normalization(x, self.size // 2, self.k, self.alpha_eff, self.beta)


# name: (label, in-process changes (build's keywords), environment of a fresh process)
VARIANTS = {
    "shipped": ("shipped: LRN by model.lrn_kernel auto (fused op if built); float32", {}, None),
    "lrn-reference": ("LRN pure-TF: float32, rsqrt, hand-written gradient", dict(kernel="reference"), None),
    "lrn-pow": ("LRN autodiff through pow", dict(normalize=autodiff_pow), None),
    "lrn-tf-op": ("LRN = tf.nn.local_response_normalization (float32)", dict(normalize=tf_op), None),
    "no-lrn": ("no LRN (upper bound)", dict(lrn=False), None),
    "xla": ("jit_compile=True (XLA)", dict(jit=True), None),
    "pad16": ("conv channels padded to 16 inside the layer, sliced off", dict(pad_block=16), None),
    "bf16": ("mixed_bfloat16", dict(precision="mixed_bfloat16"), None),
    "bf16-pad16": ("mixed_bfloat16 + conv channels padded to 16", dict(precision="mixed_bfloat16", pad_block=16), None),
    "onednn-off": ("TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels; fresh process)", {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "system-allocator": ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 (fresh process)", {},
                         {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}),
    "fpmath-bf16": ("TF_SET_ONEDNN_FPMATH_MODE=BF16: float32 model, oneDNN in bf16 (fresh process)", {},
                    {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"}),
}


def build(name, precision="float32", jit=False, lrn=True, normalize=None, pad_block=None, kernel="auto"):
    """(step, batch): model `name` with one thing changed, compiled, its training step traced and run
    twice (warm-up) while the change is in place; step() runs one more training step. A replaced
    `normalize` is the pure-TF layer's, so it implies the reference kernel."""
    path, overrides = MODELS[name]
    kernel = "reference" if normalize is not None else kernel
    config = load_config(path, overrides + [f"model.lrn_kernel={kernel}"] + ([] if lrn else ["model.lrn=false"]))
    keras.mixed_precision.set_global_policy(precision)
    shipped = layers_lib.LocalResponseNormalization._normalize
    if normalize is not None:  # the traced step keeps the replacement after it is undone
        layers_lib.LocalResponseNormalization._normalize = normalize
    try:
        model = build_model(config)
        if pad_block:
            model = pad_convolutions(model, pad_block)
        model = compile_model(model, config, jit_compile=jit)
        m, batch = config.model, config.data.batch_size
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(0, 50, (batch, m.image_size, m.image_size, m.channels)).astype("float32"))
        y = tf.constant(rng.integers(0, m.num_classes, batch))
        for _ in range(2):
            model.train_on_batch(x, y)
    finally:
        layers_lib.LocalResponseNormalization._normalize = shipped
        keras.mixed_precision.set_global_policy("float32")
    return (lambda: model.train_on_batch(x, y)), batch


def rate(step, batch, steps):
    """Training images/s over `steps` steps of an already warmed-up step()."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def in_fresh_process(model, steps, env):
    """Images/s of the shipped model in a new Python process whose environment adds `env`."""
    command = [sys.executable, "-m", "alexnet_tf.perf.where_time_goes", "--model", model, "--steps", str(steps),
               "--child"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(f'{k}={v}' for k, v in env.items())} run failed: {out.stderr[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def measure(model, steps, repeats, names, log=print):
    """{variant: spread of its images/s}: `repeats` rounds, each timing every variant once in order."""
    rates, built = {n: [] for n in names}, {}
    for r in range(repeats):
        for n in names:
            _, changes, env = VARIANTS[n]
            if env:
                rates[n].append(in_fresh_process(model, steps, env))
            else:
                if n not in built:
                    built[n] = build(model, **changes)
                rates[n].append(rate(*built[n], steps))
            log(f"round {r + 1}/{repeats} {n}: {rates[n][-1]:.1f} img/s")
    return {n: spread.spread(v) for n, v in rates.items()}


def table(spreads, batch):
    """Markdown rows: variant, best step time, images/s, ratio to the first variant, spread of the rounds."""
    names = list(spreads)
    base = spreads[names[0]]["best"]
    lines = ["| variant | step (ms) | img/s | ratio to baseline | spread of rounds |", "|---|---|---|---|---|"]
    for n in names:
        s = spreads[n]
        lines.append(f"| {VARIANTS[n][0]} | {1000 * batch / s['best']:.1f} | {s['best']:.1f} | x{s['best'] / base:.2f} "
                     f"| {100 * spread.relative_spread(s):.0f} % ({len(s['samples'])}) |")
    return lines


def noisy(spreads):
    """spread.noisy's lines for the variants whose rounds spread wider than spread.NOISY."""
    return spread.noisy([(f"{n} rounds", s) for n, s in spreads.items()])


def _variant_list(text):
    names = text.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or names[0] != "shipped":
        raise argparse.ArgumentTypeError(f"expected a comma-separated list starting with 'shipped' from {', '.join(VARIANTS)}; "
                                         f"got {text!r}")
    return names


def main(argv=None):
    """`python -m alexnet_tf.perf.where_time_goes`: every variant's step time and its ratio to the shipped one."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant per round (after 2 warm-up steps)")
    p.add_argument("--repeats", type=int, default=2, help="rounds; each variant's best round is reported")
    p.add_argument("--variants", type=_variant_list, default=list(VARIANTS), help="comma-separated, 'shipped' first")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one timing of the shipped model, as JSON
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps({"images_per_s": rate(*build(args.model), args.steps)}))
        return
    batch = load_config(*MODELS[args.model]).data.batch_size
    from alexnet_tf import machine
    print(f"model {args.model}, batch {batch}, {args.steps} timed steps per variant, {args.repeats} rounds; "
          f"{machine.describe()}; flags: {spread.describe_flags(spread.flags_present(machine.cpu_flags()))}", flush=True)
    spreads = measure(args.model, args.steps, args.repeats, args.variants)
    print("\n".join(table(spreads, batch) + noisy(spreads)))


if __name__ == "__main__":
    main()
