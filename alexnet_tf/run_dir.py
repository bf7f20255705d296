"""The run directory: the one module that knows its on-disk format, for writing and for reading back.

    RUN_DIR/
      config.yaml            the resolved config (config.dump); a rerun resumes only the same run
      precision.json         train.precision: auto, as resolved when the run started
      mean.npy               the mean image subtracted in training, (H, W, C) on the 0..255 scale
      classes.json           class names in label order
      stats.npz              file sources: a copy of the mean image / RGB eigen-decomposition used
      data.json              split sizes, the stats file, undecodable files left out
      checkpoints/last/      recovery checkpoints (what they hold: checkpoint.py)
      checkpoints/worker-<i>/  multi_worker: worker i's own recovery checkpoints
      checkpoints/best/      the model after the epoch with the best validation top-1 error
      tb/train/, tb/validation/   TensorBoard logs (tblogs.py reads them back)
      model.keras            the final model, with its optimizer state
      metrics.json           final validation (and test) errors, wall time, precision, machine
      export/<version>/      TF Serving SavedModels (serving.py); export/.lock: one export at a time
    and, from the tools: evaluation.json / evaluation_test.json (`evaluate`), features/ (`features`),
    retrieval/ (`codes`), ablation.json (`ablate`).

`training.train` writes through the functions here; export, evaluation, prediction, retrieval,
figures and the ablation study read through `load_run` and the readers, so that they all see the
same model and the same preprocessing constants.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

from alexnet_tf import config as config_lib
from alexnet_tf.errors import USAGE, ConfigError, UserError
from alexnet_tf.user_files import check_user_file

CONFIG, PRECISION, MEAN, CLASSES = "config.yaml", "precision.json", "mean.npy", "classes.json"
STATS, DATA, MODEL, METRICS = "stats.npz", "data.json", "model.keras", "metrics.json"


def checkpoint_dir(run_dir, name):
    """RUN_DIR/checkpoints/<name>: 'last', 'best' or 'worker-<i>'."""
    return os.path.join(run_dir, "checkpoints", name)


def tb_dir(run_dir, split=None):
    """RUN_DIR/tb, or its `split` subdirectory ('train', 'validation', 'projector')."""
    return os.path.join(run_dir, "tb", split) if split else os.path.join(run_dir, "tb")


def export_dir(run_dir):
    """RUN_DIR/export: one integer-named SavedModel directory per version (TF Serving's layout)."""
    return os.path.join(run_dir, "export")


class RunDirError(UserError, FileNotFoundError):
    """The run directory lacks a file a tool needs; the one-line message names it."""


def _require(path, what):
    if not os.path.exists(path):
        raise RunDirError(f"{path} not found; expected {what} (train.py writes it)")
    return path


def write_json(path, value, indent=None):
    """Atomically (a kill mid-write leaves the old file): write path.tmp, then rename it over path."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=indent)
    os.replace(tmp, path)


def read_json(path):
    """The JSON document at `path`."""
    with open(path) as f:
        return json.load(f)


# === Writing (training.train) ===

class RunDirBusy(UserError):
    """Another live process trains in this run directory. Not a bad config, but reported as the command
    line's problem, like one (prefix and exit status 2), so scripts that test for 2 keep working."""

    prefix = ConfigError.prefix
    status = USAGE


@contextlib.contextmanager
def lock(run_dir, name="chief"):
    """One writer per run directory: an exclusive flock on RUN_DIR/.lock-<name> for the block.

    The kernel drops the lock when its process ends, however it ends (kill -9 included), so a
    dead run never blocks the next; the file keeps the holder's pid, host and command for the
    message. Multi-worker processes lock under their own names (chief, worker-<i>).
    """
    path = os.path.join(run_dir, f".lock-{name}")
    fd = _open_lock_file(run_dir, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirBusy(f"{run_dir} is in use by another training process ({holder}); "
                         "wait for it, stop it, or use another --run-dir") from None
    try:
        _sign(fd)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _open_lock_file(directory, path):
    try:
        os.makedirs(directory, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a regular file at that path, a read-only file system, no permission
        raise ConfigError(f"cannot use {directory} as the run directory ({e.strerror}: "
                          f"{e.filename}); expected a directory this user can write") from None


def _holder(fd):
    """Who holds the lock of `fd`, as the holder wrote it (`_sign`)."""
    return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"


def _sign(fd):
    """Write this process's pid, host and command into the lock file it holds, for others' messages."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}".encode(), 0)


class ExportBusy(UserError):
    """Another export into the same RUN_DIR/export held its lock for longer than this one would wait."""


# How long an export waits for another one into the same directory (writing the paper model's
# SavedModel takes tens of seconds on a CPU); `export --wait` changes it.
EXPORT_WAIT = 600.0


@contextlib.contextmanager
def export_lock(base, wait=EXPORT_WAIT, poll=0.2):
    """One export at a time into `base` (RUN_DIR/export): an exclusive flock on base/.lock for the block.

    A second export (the `export` command, training's final export, import-caffe's) waits: it says
    once whom it waits for, polls every `poll` s, and after `wait` s raises ExportBusy with one line.
    While it holds the lock nothing else writes into `base`, so the versions it finds are final and
    what a killed export left behind (.tmp-*, .old-*) is stale.
    """
    fd = _open_lock_file(base, os.path.join(base, ".lock"))
    try:
        deadline, said = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ExportBusy(f"{base} is being written by another export ({_holder(fd)}) for more than "
                                     f"{wait:g} s; expected it to finish first: rerun when it has, or pass a "
                                     "longer --wait") from None
                if not said:
                    print(f"waiting for another export into {base} to finish ({_holder(fd)}), "
                          f"up to {wait:g} s", flush=True)
                    said = True
                time.sleep(poll)
        _sign(fd)
        yield
    finally:
        os.close(fd)  # releases the lock

# Keys that decide which images are trained on and which validate: a run cannot resume across them.
SPLIT_KEYS = ("source", "val_examples", "train_examples", "synthetic_size", "tfds_name")


def check_same_run(config, run_dir):
    """A run directory resumes only the run it holds: the model and the data splits must match.

    Returns the other changes, {"section.key": (old, new)}, each reported in one line; the
    training loop applies them (a new train.lr overrides the restored learning rate).
    """
    path = os.path.join(run_dir, CONFIG)
    changes = {}
    if not os.path.isfile(path):
        return changes
    old = config_lib.load_config(path).to_dict()
    new = config.to_dict()
    for section in ("model", "data", "train", "distribute"):  # a run may resume under another strategy
        for key, value in new[section].items():
            if old[section][key] == value:
                continue
            change = f"{section}.{key}: {old[section][key]!r} -> {value!r}"
            if section == "model":
                raise ConfigError(f"{run_dir} holds a run with a different model ({change}); "
                                             "use another --run-dir")
            if section == "data" and key in SPLIT_KEYS:  # the restored data position and the held-out images belong to the old split
                raise ConfigError(f"{run_dir} holds a run with different data splits ({change}); "
                                             "use another --run-dir")
            print(f"note: resuming with a changed config, {change}")
            changes[f"{section}.{key}"] = (old[section][key], value)
    return changes


def init_weights_file(path):
    """`train.init_from` -> the .keras file it names: PATH itself, or PATH/model.keras of a run directory."""
    candidate = os.path.join(path, MODEL) if os.path.isdir(path) else path
    if not (os.path.lexists(candidate) and candidate.endswith(".keras")):
        raise ConfigError(f"train.init_from = {path!r}: no {candidate}; expected a run "
                                     f"directory holding {MODEL} or a .keras file")
    check_user_file(candidate, "model", "train.init_from ", ConfigError)  # a FIFO, a device, a loop: one line
    return candidate


def refuse_overwriting_a_model(run_dir):
    """A run directory with model.keras but no recovery checkpoint (an imported model, or a run whose
    checkpoints were deleted) would be trained from scratch and its model overwritten: refuse."""
    if os.path.isfile(os.path.join(run_dir, MODEL)) and not os.path.isdir(checkpoint_dir(run_dir, "last")):
        raise ConfigError(
            f"{run_dir} holds {MODEL} but no recovery checkpoint, so training would start afresh and "
            f"overwrite it; to fine-tune it use another --run-dir with --set train.init_from={run_dir}")


def write_config(config, run_dir):
    """Create the run directory, refuse a different run already in it (`check_same_run`), save
    config.yaml (what runs from now on). Returns the changes against the config it replaced."""
    os.makedirs(run_dir, exist_ok=True)
    changes = check_same_run(config, run_dir)
    config_lib.dump(config, os.path.join(run_dir, CONFIG))
    return changes


def read_precision(run_dir):
    """The recorded {"precision", "bf16_matmul_speedup"?} of a run, or None before its first start."""
    path = os.path.join(run_dir, PRECISION)
    return read_json(path) if os.path.isfile(path) else None


def write_precision(run_dir, recorded):
    write_json(os.path.join(run_dir, PRECISION), recorded)


def write_data(run_dir, data):
    """What the run's data depended on, from a `data.Data`: mean.npy, classes.json, stats.npz (a copy,
    file sources) and data.json (sizes, stats file, skipped files)."""
    np.save(os.path.join(run_dir, MEAN), data.mean)
    write_json(os.path.join(run_dir, CLASSES), list(data.class_names))
    if data.stats_file:
        shutil.copyfile(data.stats_file, os.path.join(run_dir, STATS))
    write_json(os.path.join(run_dir, DATA), {"train_size": data.train_size, "val_size": data.val_size,
                                              "test_size": data.test_size, "stats_file": data.stats_file,
                                              "skipped": list(data.skipped)}, indent=1)


def write_final(run_dir, model, metrics):
    """The end of a run: model.keras (weights and optimizer), then metrics.json."""
    model.save(os.path.join(run_dir, MODEL))
    write_json(os.path.join(run_dir, METRICS), metrics, indent=2)


# === Reading (every tool) ===

def read_config(run_dir, overrides=()):
    """The run's config.yaml, with `--set` overrides (e.g. data.path on another machine)."""
    return config_lib.load_config(_require(os.path.join(run_dir, CONFIG), "the run's config.yaml"), overrides)


def read_data(run_dir):
    """data.json: {"train_size", "val_size", "test_size", "stats_file", "skipped"}."""
    return read_json(_require(os.path.join(run_dir, DATA), "the data record data.json"))


def read_metrics(run_dir):
    return read_json(_require(os.path.join(run_dir, METRICS), "the final metrics metrics.json"))


@dataclass
class Run:
    run_dir: str
    config: object              # the run's resolved Config (config.yaml)
    model: object               # keras.Model, images -> logits
    mean: np.ndarray            # the mean image subtracted in training, (H, W, C) on the 0..255 scale
    class_names: tuple          # in label order
    source: str                 # the file the weights came from (model.keras or a checkpoint prefix)


def resolve_checkpoint(run_dir, checkpoint):
    """'last' / 'best' -> the newest checkpoint prefix in checkpoints/<name>; a path is returned as given."""
    import tensorflow as tf

    if checkpoint in ("last", "best"):
        directory = _require(checkpoint_dir(run_dir, checkpoint), f"the {checkpoint!r} checkpoint directory")
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise RunDirError(f"{directory} holds no checkpoint; expected one written during training")
        return prefix
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise RunDirError(f"checkpoint {checkpoint!r} not found (no {checkpoint}.index); "
                          "expected 'last', 'best' or a checkpoint prefix such as RUN/checkpoints/best/ckpt-3")
    return checkpoint


def load_run(run_dir, checkpoint=None, overrides=()):
    """The model of a run directory with what is needed to preprocess its inputs.

    checkpoint: None = model.keras (the final model; falls back to checkpoints/last while a run
    is still training), 'last', 'best', or a checkpoint prefix. `overrides`: `--set` values
    applied to the run's config (they cannot change the model: it is built from the same keys).
    """
    import keras
    import tensorflow as tf

    from alexnet_tf import layers  # noqa: F401  (registers the LRN layer for load_model)
    from alexnet_tf.model import build_model

    config = read_config(run_dir, overrides)
    mean = np.load(_require(os.path.join(run_dir, MEAN), "the mean image mean.npy"))
    class_names = tuple(read_json(_require(os.path.join(run_dir, CLASSES), "the class names classes.json")))
    final = os.path.join(run_dir, MODEL)
    if checkpoint is None and os.path.isfile(final):
        model, source = keras.saving.load_model(final, compile=False), final  # weights and layers; no optimizer needed
    else:
        source = resolve_checkpoint(run_dir, checkpoint or "last")
        model = build_model(config)
        # The training checkpoint also holds the optimizer and schedule state, which are not needed here.
        tf.train.Checkpoint(model=model).restore(source).expect_partial().assert_existing_objects_matched()
    return Run(run_dir, config, model, mean, class_names, source)
