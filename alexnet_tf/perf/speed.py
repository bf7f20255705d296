"""Speed of the model on synthetic in-memory data: training and inference images/s, FLOPs, utilisation.

`python -m alexnet_tf speed [--models paper,default] [--precisions float32,mixed_bfloat16]
 [--batch 128] [--steps 10] [--torch] [--json] [--tiny]`

FLOPs are counted from the layers (multiply-adds of conv and dense weights, as the paper's
724,406,816 per image); one training step costs ~3x the forward pass (forward, input gradients,
weight gradients). Utilisation compares the achieved FLOP/s with the machine's matmul peak for
that dtype, measured in the same run: the best of TensorFlow's and numpy's 4096^3 matmul (numpy
only has a native float32 one), so a framework that is slow at matmuls cannot flatter itself.
The report starts with the CPU model, its vector ISA and whether oneDNN is on. The command's arguments
and handler are speed_command.py.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import machine
from alexnet_tf.config import load_config
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model, resolve_precision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
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
    """FLOP/s of an n x n x n TensorFlow matmul in `dtype` (float32, bfloat16 or float16)."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    seconds = _timed(lambda: f(a).numpy(), steps)
    return 2 * n ** 3 / seconds


def numpy_matmul_peak(n=4096, steps=5):
    """FLOP/s of numpy's float32 n x n x n matmul (its BLAS: OpenBLAS in the pip wheels)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    seconds = _timed(lambda: a @ a, steps)
    return 2 * n ** 3 / seconds


def peaks_for(precision, n=4096, steps=5):
    """{'tensorflow': FLOP/s, 'numpy': FLOP/s or None} for the dtype a policy computes in."""
    dtype = tf.bfloat16 if "bfloat16" in precision else (tf.float16 if "float16" in precision else tf.float32)
    # numpy's bfloat16 (ml_dtypes) and float16 matmuls are emulated, not a peak of the machine
    return {"tensorflow": matmul_peak(dtype, n, steps),
            "numpy": numpy_matmul_peak(n, steps) if dtype == tf.float32 else None}


def keras_speed(name, precision, batch, steps):
    """One row for model `name` (MODELS) in Keras at `precision`: training and inference images/s and FLOPs."""
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
        torch=False, log=print, peak_size=4096):
    """All measurements of one benchmark run, as a dict: the machine, the matmul peaks, one row per
    (framework, model, precision), and the goals (docs/speed.md) where PyTorch was timed too."""
    log(f"machine: {machine.describe()}")
    precisions = [resolve_precision(p) for p in precisions]
    peaks, best = {}, {}
    for p in sorted(set(precisions)):
        peaks[p] = peaks_for(p, peak_size)
        best[p] = max(v for v in peaks[p].values() if v)
        numpy_text = f"numpy {peaks[p]['numpy'] / 1e9:.0f}" if peaks[p]["numpy"] else "numpy: no native matmul for this dtype"
        log(f"matmul peak {p}: {best[p] / 1e9:.0f} GFLOP/s (TensorFlow {peaks[p]['tensorflow'] / 1e9:.0f}, {numpy_text})")
    rows = []
    for name in models:
        for p in precisions:
            r = keras_speed(name, p, batch, steps)
            r["train_utilisation"] = r["train_flops_per_s"] / best[p]
            rows.append(r)
            log(_fmt(r))
            if torch:
                from alexnet_tf.perf import speed_torch
                for t in speed_torch.speeds(name, MODELS[name], p, batch, steps, log=log):
                    t["train_utilisation"] = t["train_flops_per_s"] / best[p]
                    rows.append(t)
                    log(_fmt(t))
    out = dict(machine=machine.summary(),
               threads=tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
               matmul_peak_flops_per_s=best, matmul_peaks_by_library=peaks, results=rows, goals=goals(rows))
    for line in out["goals"]:
        log(line)
    return out


# docs/speed.md: the paper model's training step at >= 3x PyTorch's best float32 figure and >= 85 % of
# the matmul peak of its dtype; the default model at >= 70 %.
GOALS = {"paper": (3.0, 0.85), "default": (None, 0.70)}


def goals(rows):
    """One line per goal that this run's rows can check: the measured figure, the goal, met or not."""
    lines = []
    for model, (torch_ratio, utilisation) in GOALS.items():
        for r in (r for r in rows if r["framework"] == "keras" and r["model"] == model):
            u = r["train_utilisation"]
            lines.append(f"goal {model} {r['precision']}: {100 * u:.0f} % of the matmul peak (goal >= {100 * utilisation:.0f} %): "
                         + ("met" if u >= utilisation else "NOT met"))
            torch_fp32 = [t["train_images_per_s"] for t in rows
                          if t["framework"] == "pytorch" and t["model"] == model and t["precision"] == "float32"]
            if torch_ratio and torch_fp32:  # every Keras precision against PyTorch's best float32 figure
                ratio = r["train_images_per_s"] / max(torch_fp32)
                lines.append(f"goal {model} {r['precision']}: {ratio:.2f}x PyTorch's best float32 training "
                             f"(goal >= {torch_ratio:.0f}x): " + ("met" if ratio >= torch_ratio else "NOT met"))
    return lines


def _fmt(r):
    return (f"{r['framework']:7s} {r['model']:8s} {r['precision']:15s} batch {r['batch']:4d}: "
            f"train {r['train_images_per_s']:8.1f} img/s ({r['train_flops_per_s'] / 1e9:6.1f} GFLOP/s, "
            f"{100 * r['train_utilisation']:4.1f} % of matmul peak), inference {r['inference_images_per_s']:8.1f} img/s; "
            f"{r['forward_multiply_adds']:,} multiply-adds/image")
