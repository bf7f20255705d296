"""The study's files: one small JSON record per finished (arm, seed), RESULTS/<arm>/seed<k>.json, and the
study's notes in each run directory, RUN/ablation.json. No other module reads or writes either.

A run directory holds checkpoints, TensorBoard logs and the model (megabytes, kept out of git). All the
report reads of a finished run (measure_run's numbers, its per-step training-error curve and its
per-epoch errors) fits in a record of a few tens of KB that can be committed, so a study spread over
several sessions or machines loses at most the run in progress: a run whose record exists is not
trained again, and the report is written from the records alone. Each record holds the run's config
(one written under another config is refused, as a run directory is), the machine that trained it and
the values its numbers were measured under (`measurement()`: a record measured under others is stale,
measured again from its run directory, or refused when that is gone). A run that diverged is recorded
as failed, with train.py's message, and not trained again.

RUN/ablation.json holds the study's timed attempts on the run (train.py, the clean evaluation), the
cached clean evaluation and, for a run that diverged, train.py's message.
"""

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from alexnet_tf.ablation.measure import CLEAN_VERSION, SMOOTH, clean_evaluation, measure_run, steps_to
from alexnet_tf.ablation.results import MEASURED, ArmResult
from alexnet_tf.ablation.study import CONVERGED, SENSITIVITY, THRESHOLD
from alexnet_tf.errors import ConfigError
from alexnet_tf.run_dir import read_json, write_json

VERSION = 1  # of the record's layout
# How measure.steps_to reads a curve: "whole counts" compares integer counts of misclassified examples with the
# threshold (records measured before compared floating-point means, which settle exact ties by rounding noise;
# recount_steps rewrites them from their stored curves).
STEPS_RULE = "whole counts"


def measurement():
    """What a record's numbers depend on besides the run: a record measured under other values is stale (it is
    measured again from its run directory, or refused when that is gone)."""
    return {"layout": VERSION, "clean_version": CLEAN_VERSION, "smooth": SMOOTH, "steps_rule": STEPS_RULE,
            "thresholds": sorted({*SENSITIVITY, THRESHOLD, CONVERGED})}


def record_path(results_dir, arm, seed):
    return os.path.join(results_dir, arm, f"seed{seed}.json")


# === Records: RESULTS/<arm>/seed<k>.json ===

@dataclass(frozen=True)
class Record:
    """A record as read back: `result` for a finished run (None when it failed or is stale), `failed`: why it
    diverged, or None."""
    result: ArmResult | None
    failed: str | None
    machine: str
    stale: bool          # measured under another `measurement()`: its numbers are not read
    measurement: dict    # the values it was measured under


def _rounded(values):
    """Curve values to 6 decimals (a batch error of 128 images moves in steps of 0.0078): half the record's size,
    read only by the figures (the steps to each threshold are computed before, at full precision)."""
    return [round(float(v), 6) for v in np.asarray(values)]


def _encode(result):
    """An ArmResult's measured fields as JSON: arrays as lists, the threshold-keyed dicts as [[threshold, value], ...]."""
    out = {name: getattr(result, name) for name in MEASURED}
    out["curve"] = [np.asarray(result.curve[0]).tolist(), _rounded(result.curve[1])]
    out["epoch_curves"] = {k: [np.asarray(s).tolist(), _rounded(v)] for k, (s, v) in result.epoch_curves.items()}
    for key in ("reached", "censored"):
        out[key] = sorted([float(t), v] for t, v in getattr(result, key).items())
    return out


def _decode(stored, seed, machine):
    out = dict(stored)
    out["curve"] = (np.asarray(stored["curve"][0], dtype=np.int64), np.asarray(stored["curve"][1], dtype=np.float64))
    out["epoch_curves"] = {k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64))
                           for k, (s, v) in stored["epoch_curves"].items()}
    for key in ("reached", "censored"):
        out[key] = {t: v for t, v in stored[key]}
    return ArmResult(seed=seed, machine=machine, **out)


def _plain(config):
    """The config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config.to_dict()))


def _write(path, config, machine, measured, failed):
    data = {"measurement": measurement(), "config": _plain(config), "machine": machine, "failed": failed,
            "measured": measured}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, data, indent=None)  # one line: ~1,900 steps of curve per run


def write_result(path, config, result):
    """The record of one finished run (`result`: measure_run's ArmResult)."""
    _write(path, config, result.machine, _encode(result), None)


def write_failure(path, config, machine, why):
    """The record of one run that diverged: `why` is train.py's message, `machine` who trained it."""
    _write(path, config, machine, None, why)


def _with_later_keys(stored, planned):
    """`stored` (a record's config) with the keys added to the config since it was written, each at its default:
    such a record describes the same run as a plan that keeps those keys at their defaults (a key it lacks whose
    planned value is not its default stays missing, so the configs differ)."""
    from alexnet_tf.config import Config

    defaults = _plain(Config())
    out = {}
    for section, keys in planned.items():
        if not isinstance(keys, dict) or not isinstance(stored.get(section, {}), dict):
            continue
        have = dict(stored.get(section, {}))
        for key, value in keys.items():
            if key not in have and defaults.get(section, {}).get(key) == value:
                have[key] = value
        out[section] = have
    return {**stored, **out}


def read_record(path, config):
    """The Record at `path`, None when there is none. A record written under another config than `config` is a
    one-line error."""
    if not os.path.isfile(path):
        return None
    try:
        data = read_json(path)
        stored = data["config"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a study record ({e!r}); remove it to measure or train the run again") from None
    if _with_later_keys(stored, _plain(config)) != _plain(config):
        raise ConfigError(f"{path} records a run with another config than this study's (a different "
                          "budget, --config or --set?); use another --results directory")
    stale = data.get("measurement") != measurement()
    result = None
    if data["measured"] is not None and not stale:
        result = _decode(data["measured"], stored["train"]["seed"], data["machine"])
    return Record(result, data["failed"], data["machine"], stale, data.get("measurement"))


def recount_steps(path):
    """Rewrite the record at `path` under today's measurement() when it differs only in the steps rule: the steps
    to each threshold recomputed from its stored per-step curve (measure.steps_to at the record's batch size; the
    curve's 6-decimal values still give whole counts), no training. Returns {threshold: (old, new)} of the steps
    that moved. A record measured under other values too is a one-line error."""
    data = read_json(path)
    now = measurement()
    was = dict(data.get("measurement") or {})
    if was == now:
        return {}
    if {**was, "steps_rule": STEPS_RULE} != now:
        raise ConfigError(f"{path} was measured under {was}; expected {now} apart from the steps rule: "
                          "measure it again from its run directory")
    stored, moved = data["measured"], {}
    if stored is not None:
        steps, errors = stored["curve"]
        reached = {t: steps_to(steps, errors, t, data["config"]["data"]["batch_size"]) for t, _ in stored["reached"]}
        moved = {t: (old, reached[t]) for t, old in stored["reached"] if old != reached[t]}
        total = stored["total_steps"]
        stored["reached"] = sorted([float(t), v] for t, v in reached.items())
        stored["censored"] = sorted([float(t), v is None] for t, v in reached.items())
        stored["steps_to_threshold"] = reached[THRESHOLD] or total
        stored["steps_to_converged"] = reached[CONVERGED] or total
    data["measurement"] = now
    write_json(path, data, indent=None)
    return moved


def recount_all(results_dir):
    """recount_steps on every record under `results_dir`: {record path: moved steps} of the records that changed.
    The command that rewrote the recorded study's: docs/ablation.md ("Steps to a threshold")."""
    out = {}
    for arm in sorted(os.listdir(results_dir)):
        folder = os.path.join(results_dir, arm)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            if name.endswith(".json"):
                moved = recount_steps(os.path.join(folder, name))
                if moved:
                    out[os.path.join(folder, name)] = moved
    return out


# === The study's notes in a run directory: RUN/ablation.json ===

def _notes_path(run_dir):
    return os.path.join(run_dir, "ablation.json")


def _notes(run_dir):
    path = _notes_path(run_dir)
    return read_json(path) if os.path.isfile(path) else {}


def add_attempt(run_dir, attempt, failed=None):
    """Note one timed attempt on the run ({"what", "wall_seconds", "cpu_seconds", ...}); `failed`: train.py's
    message when the run diverged (it is then not trained again)."""
    notes = _notes(run_dir)
    notes.setdefault("attempts", []).append(attempt)
    if failed:
        notes["failed"] = failed
    write_json(_notes_path(run_dir), notes, indent=1)


def run_failure(run_dir):
    """train.py's message when the run diverged, else None."""
    return _notes(run_dir).get("failed")


def measured_by_study(run_dir):
    """Whether the study that trained the run has noted both its successful train.py and its clean evaluation."""
    notes = _notes(run_dir)
    return "clean" in notes and any(a["what"] == "train.py" and a["returncode"] == 0 for a in notes.get("attempts", []))


def measure_finished(run_dir):
    """measure_run of a finished run, its clean evaluation computed once (timed, as an attempt) and cached."""
    notes = _notes(run_dir)
    if notes.get("clean", {}).get("version") != CLEAN_VERSION:
        t0, c0 = time.time(), time.process_time()
        notes["clean"] = dict(clean_evaluation(run_dir), version=CLEAN_VERSION)
        notes.setdefault("attempts", []).append({"what": "clean evaluation", "wall_seconds": time.time() - t0,
                                                 "cpu_seconds": time.process_time() - c0})
        write_json(_notes_path(run_dir), notes, indent=1)
    return measure_run(run_dir, notes["clean"], notes.get("attempts", []))
