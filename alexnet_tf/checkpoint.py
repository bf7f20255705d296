"""Exact resume: everything the training loop needs to continue where a killed run stopped.

A recovery checkpoint holds the model's weights, the optimizer (momentum, iteration count, which is
also the position in a warm-up, learning rate), the plateau schedule (best value, epochs waited,
reductions so far), the epoch and the step within it, the running sums of the epoch's training
metrics, the dropout seed states, and the
position of the training data iterator (tf.data iterator checkpointing: the shuffle buffer and
prefetched batches are saved, so no example is repeated or skipped). Sharded input and data.service
keep no iterator: their position is the epoch and the step (train_input.py).

Layout of RUN_DIR/checkpoints/:
  last/ckpt-<global step>      recovery checkpoints of this process (the chief's in multi-worker runs)
  worker-<i>/ckpt-<step>       multi_worker: the recovery checkpoints of worker i > 0 (each worker keeps its own)
  best/ckpt-<epoch>            the model after the epoch with the best validation top-1 error

Writes are atomic: TensorFlow writes a checkpoint's data and then its index under the new name,
and only then does tf.train.CheckpointManager replace the small `checkpoint` pointer file (write to
a temporary file, then rename). A kill at any moment leaves the pointer on the previous complete
checkpoint; a half-written newer one is ignored and overwritten later. A write that fails (a full
disk, a quota) removes what it left behind (`ckpt-<n>_temp/`, a partial `ckpt-<n>.*`), so the disk is
not kept full by the failure itself, and raises CheckpointNotWritten: the previous checkpoint stays
the one to resume from.
"""

import errno
import glob
import math
import os
import shutil

import numpy as np
import tensorflow as tf

from alexnet_tf.errors import ConfigError, UserError
from alexnet_tf.train_steps import EpochSums

# Recovery checkpoints kept: two, so that after a kill during a write all workers of a multi-worker
# job still share one step they all completed (`TrainState.restore`).
KEEP = 2


class TrainState:
    """The loop's position and statistics as tf.Variables, and the checkpoints that save them."""

    def __init__(self, model, iterator, plateau, directory, best_directory=None, configured_lr=None):
        self.model = model
        # the rate train.lr configures at the run's global batch (lr_schedule.peak_lr) when the checkpoint
        # was written: a resumed run whose config gives another applies it instead of the restored
        # (possibly plateau-reduced) rate
        self.configured_lr = tf.Variable(float("nan") if configured_lr is None else configured_lr, dtype=tf.float64,
                                         trainable=False, name="configured_lr")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")        # epochs completed
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")          # steps done in the current epoch
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="wall_seconds")
        # the training metrics of the epoch so far: EpochSums as its 4-vector
        self.sums = tf.Variable(np.zeros(4), dtype=tf.float64, trainable=False, name="epoch_sums")
        self.best_value = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="checkpoint_best")
        # Keras does not make the dropout layers' seed generators checkpoint dependencies of the model.
        seeds = [v for v in model.variables if v.name == "seed_generator_state"]
        # the data position: the tf.data iterator (distribute.input replicated), or none where the epoch and
        # step are the position (train_input.py: sharded input, data.service)
        data = {"data": iterator} if iterator is not None else {}
        self.iterator = iterator
        self.recovery = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, **data, dropout_seeds=seeds,
            epoch=self.epoch, step=self.step, epoch_sums=self.sums, wall_seconds=self.wall_seconds,
            plateau_best=plateau.best, plateau_wait=plateau.wait, plateau_reductions=plateau.reductions,
            best_value=self.best_value, configured_lr=self.configured_lr)
        self.manager = tf.train.CheckpointManager(self.recovery, directory, max_to_keep=KEEP)
        self.best = None
        if best_directory:
            best = tf.train.Checkpoint(model=model, epoch=self.epoch, best_value=self.best_value)
            self.best = tf.train.CheckpointManager(best, best_directory, max_to_keep=1)

    @property
    def global_step(self):
        return int(self.model.optimizer.iterations.numpy())

    @property
    def epoch_sums(self):
        """The training metrics of the epoch so far, as restored (EpochSums)."""
        return EpochSums.from_vector(self.sums.numpy())

    def save(self, epoch, step, sums, wall_seconds):
        """Write a recovery checkpoint numbered by the global step, at `step` steps into epoch
        `epoch` (0-based; step 0 = the epoch has not started), with the epoch's `sums` so far
        (EpochSums). Returns its path, or None (and writes nothing) if a weight is
        not finite: the previous checkpoint stays the last good one."""
        if not weights_finite(self.model):
            return None
        self.epoch.assign(epoch)
        self.step.assign(step)
        self.sums.assign(sums.vector())
        self.wall_seconds.assign(wall_seconds)
        return _save(self.manager, self.global_step)

    def discard(self, path):
        """Remove recovery checkpoint `path` (its files and its entry in the pointer file), so that a
        rerun resumes from the one before: used for a checkpoint whose weights made the next step's
        loss explode (`healthy_loss`)."""
        kept = [p for p in self.manager.checkpoints if p != path]
        directory = self.manager.directory
        if kept:
            # TF 2 keeps the pointer-file writer only under compat.v1 (CheckpointManager uses the same function)
            tf.compat.v1.train.update_checkpoint_state(directory, kept[-1], all_model_checkpoint_paths=kept)
        else:
            _unlink(os.path.join(directory, "checkpoint"))
        for name in glob.glob(glob.escape(path) + ".*"):
            _unlink(name)
        self.manager = tf.train.CheckpointManager(self.recovery, directory, max_to_keep=KEEP)  # re-reads the pointer

    def save_best(self, epochs_done, value):
        """Keep the model in best/ if `value` (validation top-1 error) is the lowest so far."""
        if self.best is not None and value < self.best_value.numpy() and weights_finite(self.model):
            self.best_value.assign(value)
            self.epoch.assign(epochs_done)
            _save(self.best, epochs_done)

    def restore(self, agree=None):
        """Restore the newest recovery checkpoint; returns its path or None (fresh start).

        `agree(step) -> [step of every worker]` (multi_worker): the workers must resume from the
        same global step. A worker killed while writing checkpoint n resumes from n-1 while the
        others hold n, so the newest step that all of them have is the smallest latest one.
        """
        path = self.manager.latest_checkpoint
        if agree is not None:
            steps = agree(_number(path) if path else -1)
            target = min(steps)
            if target < 0:
                if max(steps) >= 0:
                    raise RuntimeError(f"multi_worker: some workers have recovery checkpoints and others none "
                                       f"(latest steps per worker: {steps}); expected all or none")
                return None
            candidates = [p for p in self.manager.checkpoints if _number(p) == target]
            if not candidates:
                raise RuntimeError(f"multi_worker: the workers' newest common checkpoint is step {target} "
                                   f"(latest steps per worker: {steps}) but {self.manager.directory} has only "
                                   f"{[_number(p) for p in self.manager.checkpoints]}")
            path = candidates[0]
            self._check_data_position(path)
            self.recovery.restore(path).assert_existing_objects_matched()
            return path
        # One process: the newest checkpoint that can be read. A truncated or bit-flipped file
        # (a full disk, a bad copy) costs the steps back to the one before, not the run.
        problems = []
        for path in reversed(self.manager.checkpoints):
            self._check_data_position(path)
            try:
                self.recovery.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:
                reason = (getattr(e, "message", None) or str(e)).strip().splitlines()[0][:200]
                problems.append(f"{path}: {reason}")
                print(f"note: recovery checkpoint {path} cannot be read ({reason}); trying the one before", flush=True)
                continue
            if problems:
                print(f"note: resuming from the older recovery checkpoint {path}", flush=True)
            return path
        if problems:
            raise UnreadableCheckpoint(f"no recovery checkpoint in {self.manager.directory} can be read ({'; '.join(problems)}); "
                                       f"to start this run afresh, move {self.manager.directory} aside")
        return None

    def _check_data_position(self, path):
        """A run whose input resumes from a tf.data iterator (replicated) cannot resume a checkpoint that has none."""
        if self.iterator is None:
            return
        try:
            names = [name for name, _ in tf.train.list_variables(path)]
        except (tf.errors.OpError, ValueError):
            return  # unreadable: restore() names it
        if not any(name.startswith("data/") for name in names):
            raise ConfigError(f"recovery checkpoint {path} holds no tf.data iterator position (it was written with "
                              "distribute.input = sharded or data.service, which resume from the epoch and step); "
                              "expected the same distribute.input and data.service as the run that wrote it")


class CheckpointNotWritten(UserError, RuntimeError):
    """A checkpoint could not be written (e.g. no space left); the one-line message names the file,
    the errno and the checkpoint that a rerun resumes from."""

    prefix = ""  # the message begins with what could not be written


def _save(manager, number):
    try:
        return manager.save(checkpoint_number=number)
    except (tf.errors.OpError, OSError) as e:
        prefix = os.path.join(manager.directory, f"ckpt-{number}")
        # the half-written files of this save only; a listed checkpoint of the same number (a save
        # repeated at one step) is left to restore()'s check, which falls back if it is damaged
        partial = glob.glob(glob.escape(prefix) + "_temp*")
        if prefix not in manager.checkpoints:
            partial += glob.glob(glob.escape(prefix) + ".*")
        for path in partial:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _unlink(path)
        previous = manager.latest_checkpoint
        resume = f"a rerun resumes from {previous}" if previous else "no earlier checkpoint exists"
        raise CheckpointNotWritten(f"could not write checkpoint {prefix} ({_reason(e)}); removed its partial files; "
                                   f"{resume}. Free space in {manager.directory} and rerun the same command") from e


def _reason(e):
    """'No space left on device (errno 28, ENOSPC)' from an OSError or from the text of a TensorFlow
    error (which carries the C library's message but no errno)."""
    code = getattr(e, "errno", None)
    if code is None:
        text = getattr(e, "message", None) or str(e)
        code = next((c for c in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)
                     if os.strerror(c) in text), None)
        if code is None:
            return f"{type(e).__name__}: {text.strip().splitlines()[0][:200] if text.strip() else ''}"
    return f"{os.strerror(code)}, errno {code} {errno.errorcode.get(code, '')}".rstrip()


def _unlink(path):
    try:
        os.remove(path)
    except OSError:
        pass


class UnreadableCheckpoint(UserError, RuntimeError):
    """Every recovery checkpoint of the run is damaged; the one-line message says how to start afresh."""

    prefix = ""  # the message begins with what could not be read


# A step whose mean cross-entropy exceeds EXPLODING * ln(C) gave the true class, on (geometric)
# average, a probability below C^-EXPLODING: far below chance (1/C), where no learning network goes
# back to; its weights are diverging even while the loss is still finite.
EXPLODING = 3.0


def healthy_loss(loss, num_classes):
    """True if a step's mean training loss is finite and <= EXPLODING * ln(num_classes)."""
    return bool(np.isfinite(loss)) and loss <= EXPLODING * math.log(num_classes)


def _number(path):
    return int(path.rsplit("-", 1)[1])


def weights_finite(model):
    return all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
