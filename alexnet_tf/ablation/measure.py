"""Measuring one finished run: the training-error curve from its TensorBoard logs, the error on
its own training images without augmentation or dropout, and the numbers the claims compare."""

import math
import os
from fractions import Fraction

import numpy as np

from alexnet_tf import machine, tblogs
from alexnet_tf.ablation.results import ArmResult
from alexnet_tf.ablation.study import CONVERGED, SENSITIVITY, THRESHOLD
from alexnet_tf.config import load_config
from alexnet_tf.run_dir import read_data, read_metrics


def batch_curve(run_dir, steps_per_epoch, tag="batch_top1_error"):
    """(global steps, values) of a batch-level training scalar, across resumed runs.

    Two numberings occur. Keras's TensorBoard callback, called by `model.fit`, numbers batches
    from 1 in every call, so a run resumed at an epoch boundary restarts at step 1 in a new event
    file: the file's first epoch (from its epoch-level summaries) gives the offset. `training.train`
    numbers them by the global step across resumes (it resumes mid-epoch, from step-level
    checkpoints): such a file continues where its checkpoint was. Either way a step logged twice
    keeps the resumed run's value (tblogs.last_write_wins).
    """
    segments, next_epoch = [], 0
    for path in tblogs.event_files(os.path.join(run_dir, "tb", "train")):
        found = tblogs.file_scalars(path, (tag, "epoch_top1_error"))
        batches, epochs = found[tag], [s for s, _ in found["epoch_top1_error"]]
        first = (min(epochs) if epochs else next_epoch) * steps_per_epoch
        renumbered = batches and min(s for s, _ in batches) <= first  # numbered from 1 again
        segments.append([(s + first, v) for s, v in batches] if renumbered else batches)
        if epochs:
            next_epoch = max(epochs) + 1
    return tblogs.last_write_wins(segments)


def windowed(steps, running_means, steps_per_epoch):
    """Per-window values from Keras's running means.

    A batch-level log at global step s (1-based) holds the mean over the steps of its epoch so far,
    n = (s - 1) % steps_per_epoch + 1 of them (Keras resets its metrics at every epoch). The mean
    over the steps since the previous log of the same epoch is (n·m - n'·m') / (n - n'), exact
    for equal batch sizes; for an epoch's first log it is m itself.
    Returns the values of the windows ending at `steps`.
    """
    out = np.empty(len(steps))
    prev_epoch, prev_n, prev_m = -1, 0, 0.0
    for i, (s, m) in enumerate(zip(steps, running_means)):
        epoch, n = divmod(int(s) - 1, steps_per_epoch)
        n += 1
        if epoch != prev_epoch or n <= prev_n:
            prev_n, prev_m = 0, 0.0
        out[i] = (n * m - prev_n * prev_m) / (n - prev_n)
        prev_epoch, prev_n, prev_m = epoch, n, m
    return out


# Steps to a threshold are read off the trailing mean over SMOOTH steps of the per-step training error:
# one 128-image batch has a standard error of ~2.7 pp at 10 % error, 20 of them ~0.6 pp, so the first
# crossing is not a lucky batch, and the step is resolved to one step (not to train.log_every).
SMOOTH = 20


def per_step(steps, errors):
    """The training error of every step 1..steps[-1] from logged windows: step s takes the value of the
    first window ending at or after s (exact with train.log_every = 1; a window's mean for its steps else)."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return np.array([])
    return np.asarray(errors, float)[np.searchsorted(steps, np.arange(1, steps[-1] + 1))]


def smoothed(errors, window=SMOOTH):
    """Trailing moving average: out[i] = mean(errors[max(0, i - window + 1) .. i])."""
    e = np.asarray(errors, float)
    c = np.concatenate([[0.0], np.cumsum(e)])
    i = np.arange(1, len(e) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


# A logged window's error times its images is a whole count of misclassified examples, up to the noise of its
# recovery from Keras's float32 running means (n·m - n'·m' with n up to an epoch's steps: ~1e-3 of a count here)
# and of a record's 6-decimal rounding (<= 6.4e-5 per 128 images): further from an integer is not such a count.
COUNT_TOLERANCE = 0.01


def window_counts(steps, errors, batch):
    """(misclassified examples per logged window, steps per window), both integer arrays: error × batch × the
    window's steps, rounded (a ValueError when a value is more than COUNT_TOLERANCE from a whole count)."""
    steps = np.asarray(steps, dtype=np.int64)
    widths = np.diff(np.concatenate([[0], steps]))
    raw = np.asarray(errors, float) * batch * widths
    counts = np.rint(raw)
    off = np.abs(raw - counts)
    if len(off) and off.max() > COUNT_TOLERANCE:
        i = int(np.argmax(off))
        raise ValueError(f"training error {errors[i]!r} at step {steps[i]} is {raw[i]:.4f} misclassified of "
                         f"{batch * widths[i]} images; expected a whole count (batch size {batch}?)")
    return counts.astype(np.int64), widths


def steps_to(steps, errors, threshold, batch, window=SMOOTH):
    """The first step s >= window at which the training errors of steps s - window + 1 .. s add up to at most
    threshold × batch × window misclassified examples, or None (never reached). `steps`, `errors`: the logged
    windows (`windowed`); a window of w steps gives each of its steps 1/w of its count.

    The comparison is of whole numbers (counts scaled by the least common multiple L of the window widths,
    against floor(threshold × batch × window × L), the threshold read as the decimal it prints as), so a
    trailing mean exactly at the threshold counts as reached: floating-point sums would settle such ties by
    their rounding."""
    counts, widths = window_counts(steps, errors, batch)
    if len(counts) == 0:
        return None
    scale = int(np.lcm.reduce(widths))
    per_step = np.repeat(counts * (scale // widths), widths)  # step s = 1..steps[-1], in units of 1/scale
    sums = np.cumsum(per_step)
    trailing = sums[window - 1:] - np.concatenate([[0], sums[:-window]])
    bound = math.floor(Fraction(repr(float(threshold))) * batch * window * scale)
    hit = np.nonzero(trailing <= bound)[0]
    return int(hit[0] + window) if len(hit) else None


def training_error_curve(run_dir, steps_per_epoch):
    """(steps, training top-1 error of the batches since the previous log) of a run."""
    steps, running = batch_curve(run_dir, steps_per_epoch)
    return steps, windowed(steps, running, steps_per_epoch)


def clean_evaluation(run_dir):
    """What the run's final model does on its own training images, without augmentation or dropout,
    and how strongly its LRN layers normalise (cached in RUN/ablation.json by records.measure_finished).

    Returns {"train_top1_error": ..., "lrn": {"lrn1": (mean, p99), "lrn2": (mean, p99)}}: the mean and
    99th percentile over positions and channels of alpha_eff * sum_window a² / k at the layer's input
    on 512 training images (towers averaged). Values << 1 mean the layer is close to a constant factor
    k^-beta: its normaliser k + alpha * sum a² barely depends on the activity.
    """
    import keras
    import tensorflow as tf

    from alexnet_tf.data import load_arrays, normalize_for_eval
    from alexnet_tf.layers import LocalResponseNormalization
    from alexnet_tf.run_dir import load_run

    keras.backend.clear_session()  # one study process measures many runs
    run = load_run(run_dir)
    arrays, _ = load_arrays(run.config)
    x, y = arrays["train"]
    scale = run.config.data.scale
    batches = tf.data.Dataset.from_tensor_slices(x).batch(500).map(lambda b: normalize_for_eval(b, run.mean, scale))
    logits = run.model.predict(batches, verbose=0)
    result = {"train_top1_error": float(np.mean(np.argmax(logits, 1) != y)), "train_images": len(y), "lrn": {}}
    lrns = [l for l in run.model.layers if isinstance(l, LocalResponseNormalization)]
    if lrns:
        probe = keras.Model(run.model.input, [l.input for l in lrns])
        inputs = probe.predict(normalize_for_eval(x[:512], run.mean, scale), verbose=0)
        ratios = {}
        for layer, a in zip(lrns, inputs):
            window = layer.window_sum_of_squares(a)
            r = layer.alpha_eff * window / layer.k
            ratios.setdefault(layer.name.split("_")[0], []).append((float(r.mean()), float(np.percentile(r, 99))))
        result["lrn"] = {name: np.mean(r, axis=0).tolist() for name, r in ratios.items()}
    return result


def steps_per_epoch(config, run_dir):
    """Training steps per epoch of a run, as training.train computed them."""
    steps = read_data(run_dir)["train_size"] // config.data.batch_size
    return min(steps, config.train.steps_per_epoch) if config.train.steps_per_epoch else steps


CLEAN_VERSION = 2  # of clean_evaluation's result as RUN/ablation.json caches it (records.py); a change recomputes it


def trained_on(metrics):
    """The machine that trained a run, as its metrics.json recorded it ('unknown' when it did not)."""
    try:
        return machine.describe(metrics)
    except (TypeError, KeyError):
        return "unknown"


def measure_run(run_dir, clean, attempts):
    """The numbers of one finished run that the claims compare (see CLAIMS' metrics), as an ArmResult.
    `clean`: clean_evaluation's result for the run; `attempts`: the study's timed work on it, each
    {"wall_seconds", "cpu_seconds", ...} (records.measure_finished passes both from RUN/ablation.json)."""
    config = load_config(os.path.join(run_dir, "config.yaml"))
    metrics = read_metrics(run_dir)
    spe = steps_per_epoch(config, run_dir)
    val_size, val_steps = read_data(run_dir)["val_size"], config.train.val_steps
    steps, errors = training_error_curve(run_dir, spe)
    total = spe * metrics["epochs_completed"]
    reached = {t: steps_to(steps, errors, t, config.data.batch_size) for t in SENSITIVITY + (THRESHOLD, CONVERGED)}
    return ArmResult(
        seed=config.train.seed,
        machine=trained_on(metrics),
        val_top1_error=metrics["val_top1_error"],
        val_top5_error=metrics["val_top5_error"],
        test_top1_error=metrics.get("test_top1_error"),
        train_top1_error=clean["train_top1_error"],
        gap=metrics["val_top1_error"] - clean["train_top1_error"],
        lrn=clean.get("lrn", {}),
        steps_per_epoch=spe,
        total_steps=total,
        val_images=min(val_size, val_steps * config.data.batch_size) if val_steps else val_size,
        reached=reached,
        # a threshold never reached counts as the whole run (a lower bound; the report marks it ">")
        steps_to_threshold=reached[THRESHOLD] or total,
        steps_to_converged=reached[CONVERGED] or total,
        censored={t: reached[t] is None for t in reached},
        wall_seconds=sum(a["wall_seconds"] for a in attempts) or metrics["wall_seconds"],
        cpu_seconds=sum(a["cpu_seconds"] for a in attempts),
        curve=(steps, errors),
        # per-epoch top-1 error as Keras logged it (epoch index from 0): the report's figures
        epoch_curves={split: tblogs.read_scalars(run_dir, split, "epoch_top1_error") for split in ("train", "validation")},
    )
