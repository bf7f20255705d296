"""Speed of the model on synthetic in-memory data: training and inference images/s, FLOPs, utilisation.

`python -m alexnet_tf speed [--models paper,default] [--precisions float32,mixed_bfloat16]
 [--batch 128] [--steps 10] [--repeats 3] [--torch] [--json] [--tiny]`

FLOPs are counted from the layers (multiply-adds of conv and dense weights, as the paper's
724,406,816 per image); one training step costs ~3x the forward pass (forward, input gradients,
weight gradients). Utilisation compares the achieved FLOP/s with the machine's matmul peak for
that dtype, measured in the same run: the best of TensorFlow's and numpy's 4096^3 matmul (numpy
only has a native float32 one), so a framework that is slow at matmuls cannot flatter itself.
The peak is sampled before every model timing and once after the last (peak, model, peak, model,
..., peak), each model is timed `repeats` times, and the best of each is used with its spread
reported (spread.py); a utilisation above 100 % is flagged as a measurement error, not a result.
The report starts with the CPU model, its vector ISA, its relevant flags and whether oneDNN is on.
The command's arguments and handler are speed_command.py.
"""

import functools
import os
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import machine
from alexnet_tf.config import load_config
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model, resolve_precision
from alexnet_tf.perf import spread

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


def _dtype(precision):
    """The dtype a Keras policy computes in: bfloat16, float16 or float32."""
    return tf.bfloat16 if "bfloat16" in precision else (tf.float16 if "float16" in precision else tf.float32)


@functools.lru_cache(maxsize=None)
def _matmul_fn(dtype, n):
    """The traced matmul and its operand, kept so that repeated peak samples do not retrace."""
    a = tf.cast(tf.random.normal((n, n), dtype=tf.float32, seed=0), dtype)
    return tf.function(lambda x: tf.matmul(x, x)), a


def matmul_peak(dtype, n=4096, steps=3):
    """FLOP/s of an n x n x n TensorFlow matmul in `dtype` (float32, bfloat16 or float16)."""
    f, a = _matmul_fn(dtype, n)
    seconds = _timed(lambda: f(a).numpy(), steps, warmup=1)
    return 2 * n ** 3 / seconds


def numpy_matmul_peak(n=4096, steps=3):
    """FLOP/s of numpy's float32 n x n x n matmul (its BLAS: OpenBLAS in the pip wheels)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    seconds = _timed(lambda: a @ a, steps, warmup=1)
    return 2 * n ** 3 / seconds


def peaks_for(precision, n=4096, steps=3):
    """{'tensorflow': FLOP/s, 'numpy': FLOP/s or None}: one sample of the peak of the dtype a policy computes in."""
    dtype = _dtype(precision)
    # numpy's bfloat16 (ml_dtypes) and float16 matmuls are emulated, not a peak of the machine
    return {"tensorflow": matmul_peak(dtype, n, steps),
            "numpy": numpy_matmul_peak(n, steps) if dtype == tf.float32 else None}


def prepare(name, precision, batch):
    """Model `name` (MODELS) built and compiled at `precision` with a synthetic batch: (train, infer, macs),
    where train() and infer() run one step each. The model keeps its layers' dtype policies after the
    global policy is reset, so it can be timed again between peak samples."""
    path, overrides = MODELS[name]
    config = load_config(path, overrides)
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = compile_model(build_model(config), config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    m = config.model
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0, 50, (batch, m.image_size, m.image_size, m.channels)).astype("float32"))
    y = tf.constant(rng.integers(0, m.num_classes, batch))
    infer = tf.function(lambda t: model(t, training=False))
    return (lambda: model.train_on_batch(x, y)), (lambda: infer(x).numpy()), multiply_adds(model)


def keras_row(name, precision, batch, macs, train_rates, infer_rates, peak):
    """One result row: the best training and inference images/s with their spreads, FLOP/s and the
    utilisation of the best training rate against `peak` (the best matmul of the run), flagged above 100 %."""
    train, infer = spread.spread(train_rates), spread.spread(infer_rates)
    row = dict(framework="keras", model=name, precision=precision, batch=batch,
               train_images_per_s=train["best"], inference_images_per_s=infer["best"],
               train_images_per_s_spread=train, inference_images_per_s_spread=infer,
               forward_multiply_adds=macs, train_flops_per_s=3 * 2 * macs * train["best"],
               inference_flops_per_s=2 * macs * infer["best"])
    return _with_utilisation(row, peak)


def _with_utilisation(row, peak):
    u = spread.utilisation(row["train_flops_per_s"], peak)
    return {**row, "train_utilisation": u["utilisation"], "utilisation_measurement_error": u["measurement_error"]}


class _Peaks:
    """Every peak sample of the run, per precision and library; the best is the max over all of them."""

    def __init__(self, size):
        self.size, self.samples = size, {}

    def sample(self, precision):
        one = peaks_for(precision, self.size)
        by_library = self.samples.setdefault(precision, {"tensorflow": [], "numpy": []})
        for library, value in one.items():
            if value:
                by_library[library].append(value)

    def best(self, precision):
        return max(max(v) for v in self.samples[precision].values() if v)

    def report(self):
        """(best per precision, spread of the per-sample best per precision, spread per library)."""
        best = {p: self.best(p) for p in self.samples}
        per_sample = {p: spread.spread([max(pair) for pair in _pairs(libs)]) for p, libs in self.samples.items()}
        by_library = {p: {lib: (spread.spread(v) if v else None) for lib, v in libs.items()}
                      for p, libs in self.samples.items()}
        return best, per_sample, by_library


def _pairs(libs):
    """The samples of both libraries taken together, one tuple per peak sample (numpy may have none)."""
    tf_samples, np_samples = libs["tensorflow"], libs["numpy"]
    return [(t, *([np_samples[i]] if i < len(np_samples) else [])) for i, t in enumerate(tf_samples)]


def _interleaved(name, precision, batch, steps, repeats, peaks):
    """Peak, model, peak, model, ..., peak: `repeats` timings of the model, each preceded by a sample of
    its dtype's peak and the last followed by one, so both see the same spells of load or clock."""
    train, infer, macs = prepare(name, precision, batch)
    train_rates, infer_rates = [], []
    for _ in range(repeats):
        peaks.sample(precision)
        train_rates.append(batch / _timed(train, steps))
        infer_rates.append(batch / _timed(infer, steps))
    peaks.sample(precision)
    return macs, train_rates, infer_rates


def run(models=("paper", "default"), precisions=("float32", "mixed_bfloat16"), batch=128, steps=10,
        torch=False, log=print, peak_size=4096, repeats=3):
    """All measurements of one benchmark run, as a dict: the machine and its relevant CPU flags, the
    matmul peaks (best and spread), one row per (framework, model, precision) with its spread, the
    figures flagged as measurement errors, and the goals (docs/speed.md)."""
    cpu_flags = spread.flags_present(machine.cpu_flags())
    log(f"machine: {machine.describe()}")
    log(f"cpu: {machine.cpu_model()}; flags: {spread.describe_flags(cpu_flags)}")
    precisions = [resolve_precision(p) for p in precisions]
    peaks, measured = _Peaks(peak_size), []
    for name in models:
        for p in precisions:
            measured.append((name, p, *_interleaved(name, p, batch, steps, repeats, peaks)))
    best, peak_spread, by_library = peaks.report()
    for p in best:
        log(f"matmul peak {p}: {spread.spread_text(peak_spread[p], 1e9, ' GFLOP/s')}; " + _library_text(by_library[p]))
    rows = []
    for name, p, macs, train_rates, infer_rates in measured:
        rows.append(keras_row(name, p, batch, macs, train_rates, infer_rates, best[p]))
        log(_fmt(rows[-1]))
        if torch:
            from alexnet_tf.perf import speed_torch
            for t in speed_torch.speeds(name, MODELS[name], p, batch, steps, log=log):
                rows.append(_with_utilisation(t, best[p]))
                log(_fmt(rows[-1]))
    out = dict(machine=machine.summary(), cpu_flags=cpu_flags,
               threads=tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(), repeats=repeats,
               matmul_peak_flops_per_s=best, matmul_peak_spread=peak_spread, matmul_peaks_by_library=by_library,
               results=rows, measurement_errors=measurement_errors(rows), noisy=noisy(peak_spread, rows),
               goals=goals(rows, amx=cpu_flags["amx_bf16"]))
    for line in out["measurement_errors"] + out["noisy"] + out["goals"]:
        log(line)
    return out


def _library_text(by_library):
    parts = [f"{lib} best {s['best'] / 1e9:.0f}" for lib, s in by_library.items() if s]
    if not by_library.get("numpy"):
        parts.append("numpy: no native matmul for this dtype")
    return ", ".join(parts)


def measurement_errors(rows):
    """One line per row whose training utilisation exceeds 100 % of the best peak: not a result."""
    return [f"measurement error: {r['framework']} {r['model']} {r['precision']} at {100 * r['train_utilisation']:.0f} % "
            "of the best matmul peak; the peak was under-measured (busy or clocked-down machine): rerun on a quiet machine"
            for r in rows if r["utilisation_measurement_error"]]


def noisy(peak_spread, rows):
    """One line per set of samples (each dtype's peak, each Keras row's training timings) that spread so
    wide the machine was not quiet (spread.NOISY)."""
    named = [(f"the {p} matmul peak samples", s) for p, s in peak_spread.items()]
    named += [(f"{r['model']} {r['precision']} training timings", r["train_images_per_s_spread"])
              for r in rows if "train_images_per_s_spread" in r]
    return spread.noisy(named)


# docs/speed.md: in float32 the paper model's training step at >= 3x PyTorch's best float32 figure and
# >= 85 % of the float32 matmul peak, the default model at >= 70 %; in mixed_bfloat16, where the CPU has
# AMX, >= 75 % and >= 50 % of the bfloat16 peak. {(model, precision): (x PyTorch, share of the peak)}
GOALS = {("paper", "float32"): (3.0, 0.85), ("default", "float32"): (None, 0.70),
         ("paper", "mixed_bfloat16"): (None, 0.75), ("default", "mixed_bfloat16"): (None, 0.50)}


def goals(rows, amx=True):
    """One line per goal that this run's rows can check: the measured figure, the goal, met or not. The
    bfloat16 goals are set for CPUs with AMX: elsewhere (`amx` false) their lines say so."""
    lines = []
    for (model, precision), (torch_ratio, utilisation) in GOALS.items():
        for r in (r for r in rows if r["framework"] == "keras" and r["model"] == model and r["precision"] == precision):
            u = r["train_utilisation"]
            verdict = ("measurement error (above 100 %), not a result" if spread.above_peak(u)
                       else "met" if u >= utilisation else "NOT met")
            where = "" if precision == "float32" or amx else ", a goal for CPUs with AMX; this one has none"
            lines.append(f"goal {model} {precision}: {100 * u:.0f} % of the matmul peak "
                         f"(goal >= {100 * utilisation:.0f} %{where}): {verdict}")
            torch_fp32 = [t["train_images_per_s"] for t in rows
                          if t["framework"] == "pytorch" and t["model"] == model and t["precision"] == "float32"]
            if torch_ratio and torch_fp32:
                ratio = r["train_images_per_s"] / max(torch_fp32)
                lines.append(f"goal {model} {precision}: {ratio:.2f}x PyTorch's best float32 training "
                             f"(goal >= {torch_ratio:.0f}x): " + ("met" if ratio >= torch_ratio else "NOT met"))
    return lines


def _fmt(r):
    """One text line per row; the training rate's spread where it was timed more than once."""
    u = spread.utilisation_text({"utilisation": r["train_utilisation"], "measurement_error": spread.above_peak(r["train_utilisation"])})
    train_spread = r.get("train_images_per_s_spread")
    spread_part = f"; train {spread.spread_text(train_spread, unit=' img/s')}" if train_spread else ""
    return (f"{r['framework']:7s} {r['model']:8s} {r['precision']:15s} batch {r['batch']:4d}: "
            f"train {r['train_images_per_s']:8.1f} img/s ({r['train_flops_per_s'] / 1e9:6.1f} GFLOP/s, {u}), "
            f"inference {r['inference_images_per_s']:8.1f} img/s; {r['forward_multiply_adds']:,} multiply-adds/image"
            + spread_part)
