"""The study's durable results: one small JSON record per finished (arm, seed), RESULTS/<arm>/seed<k>.json.

A run directory holds checkpoints, TensorBoard logs and the model (megabytes, kept out of git). All the
report reads of a finished run (measure_run's numbers, its per-step training-error curve and its
per-epoch errors) fits in a record of a few tens of KB that can be committed, so a study spread over
several sessions or machines loses at most the run in progress: a run whose record exists is not
trained again, and the report is written from the records alone. Each record holds the run's config
(one written under another config is refused, as a run directory is), the machine that trained it and
the values its numbers were measured under (`measurement()`: a record measured under others is stale,
measured again from its run directory, or refused when that is gone). A run that diverged is recorded
as failed, with train.py's message, and not trained again.
"""

import json
import os

import numpy as np

from alexnet_tf import machine
from alexnet_tf.ablation.measure import CLEAN_VERSION, SMOOTH, write_json
from alexnet_tf.ablation.study import CONVERGED, SENSITIVITY, THRESHOLD
from alexnet_tf.config import ConfigError

VERSION = 1  # of the record's layout


def measurement():
    """What a record's numbers depend on besides the run: a record measured under other values is stale (it is
    measured again from its run directory, or refused when that is gone)."""
    return {"layout": VERSION, "clean_version": CLEAN_VERSION, "smooth": SMOOTH,
            "thresholds": sorted({*SENSITIVITY, THRESHOLD, CONVERGED})}


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


def trained_on(run_dir):
    """The machine that trained a finished run, as its metrics.json recorded it ('unknown' when it did not)."""
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            return machine.describe(json.load(f))
    except (OSError, TypeError, KeyError, json.JSONDecodeError):
        return "unknown"


def write_record(path, config, trained_on, measured=None, failed=None):
    """The record of one finished run (`measured`: measure_run's result) or of one that diverged (`failed`: why)."""
    data = {"measurement": measurement(), "config": _plain(config), "machine": trained_on, "failed": failed,
            "measured": None if measured is None else _encode(measured)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, data, indent=None)  # one line: ~1,900 steps of curve per run


def read_record(path, config):
    """The record at `path` ({"measured": ... or None, "failed": why or None, "machine": ..., "stale": bool}), None
    when there is none; "stale" when it was measured under another `measurement()`. A record written under
    another config than `config` is a one-line error."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        stored = data["config"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config error: {path} is not a study record ({e!r}); remove it to measure or train the run again") from None
    if stored != _plain(config):
        raise ConfigError(f"config error: {path} records a run with another config than this study's (a different "
                          "budget, --config or --set?); use another --results directory")
    data["stale"] = data.get("measurement") != measurement()
    if data["measured"] is not None and not data["stale"]:
        data["measured"] = _decode(data["measured"])
    return data
