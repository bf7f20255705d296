"""The study's durable results: one small JSON record per finished (arm, seed), RESULTS/<arm>/seed<k>.json.

A run directory holds checkpoints, TensorBoard logs and the model (megabytes, kept out of git). All the
report reads of a finished run (measure_run's numbers, its per-step training-error curve and its
per-epoch errors) fits in a record of a few tens of KB that can be committed, so a study spread over
several sessions or machines loses at most the run in progress: a run whose record exists is not
trained again, and the report is written from the records alone. Each record holds the run's config
(one written under another config is refused, as a run directory is) and the machine that trained it.
"""

import json
import os

import numpy as np

from alexnet_tf import machine
from alexnet_tf.config import ConfigError

VERSION = 1  # of the record's layout; a record of another version is measured again from its run directory


def record_path(results_dir, arm, seed):
    return os.path.join(results_dir, arm, f"seed{seed}.json")


def _rounded(values):
    """Curve values to 6 decimals (a batch error of 128 images moves in steps of 0.0078): half the record's size,
    read only by the figures (the steps to each threshold are computed before, at full precision)."""
    return [round(float(v), 6) for v in np.asarray(values)]


def _encode(measured):
    """measure_run's dict as JSON: arrays as lists, the threshold-keyed dicts as [[threshold, value], ...]."""
    out = dict(measured)
    out["curve"] = [np.asarray(measured["curve"][0]).tolist(), _rounded(measured["curve"][1])]
    out["epoch_curves"] = {k: [np.asarray(s).tolist(), _rounded(v)] for k, (s, v) in measured["epoch_curves"].items()}
    for key in ("reached", "censored"):
        out[key] = sorted([float(t), v] for t, v in measured[key].items())
    return out


def _decode(stored):
    out = dict(stored)
    out["curve"] = (np.asarray(stored["curve"][0], dtype=np.int64), np.asarray(stored["curve"][1], dtype=np.float64))
    out["epoch_curves"] = {k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64))
                           for k, (s, v) in stored["epoch_curves"].items()}
    for key in ("reached", "censored"):
        out[key] = {t: v for t, v in stored[key]}
    return out


def _plain(config):
    """The config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config.to_dict()))


def _trained_on(run_dir):
    """The machine that trained the run, as its metrics.json recorded it (this one when it did not)."""
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            return machine.describe(json.load(f))
    except (OSError, TypeError, KeyError, json.JSONDecodeError):
        return machine.describe()


def write_record(path, config, measured=None, failed=None, run_dir=None):
    """The record of one finished run (`measured`: measure_run's result) or of one that failed (`failed`: why)."""
    data = {"version": VERSION, "config": _plain(config), "machine": _trained_on(run_dir),
            "run_dir": run_dir, "failed": failed, "measured": None if measured is None else _encode(measured)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))  # one line: ~1,900 steps of curve per run
        f.write("\n")
    os.replace(tmp, path)


def read_record(path, config):
    """The record at `path` ({"measured": ..., "failed": ..., "machine": ...}), None when there is none or it
    has another layout version; a record written under another config than `config` is a one-line error."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"config error: {path} is not a study record ({e}); remove it to measure the run again") from None
    if data.get("version") != VERSION:
        return None
    if data["config"] != _plain(config):
        raise ConfigError(f"config error: {path} records a run with another config than this study's (a different "
                          "budget, --config or --set?); use another --results directory")
    if data["measured"] is not None:
        data["measured"] = _decode(data["measured"])
    return data
