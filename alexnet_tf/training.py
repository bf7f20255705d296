"""The training run: one loop for every strategy (default, mirrored, towers, hybrid, multi_worker), with exact resume."""

import os
import sys
import time
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from alexnet_tf import callbacks as cb
from alexnet_tf import console, distribute, fine_tuning, hybrid, lr_schedule, machine, serving
from alexnet_tf import run_dir as run_dir_lib
from alexnet_tf.checkpoint import TrainState, healthy_loss
from alexnet_tf.errors import UserError
from alexnet_tf.data import make_datasets
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model, resolve_precision
from alexnet_tf.stop_signals import SIGNAL_CHECK_STEPS, Interrupted, StopSignals as _StopSignals
from alexnet_tf.train_input import make_feed
from alexnet_tf.tf_startup import describe_devices
from alexnet_tf.train_steps import EpochSums, evaluate, make_steps


# === The training run ===

def train(config, run_dir, verbose=None, callbacks=()):
    """Train `config` in `run_dir`, continuing exactly where a previous run in it stopped.

    One process per run directory (and worker): a second one raises run_dir.RunDirBusy. SIGTERM
    and SIGINT finish the current step, write a recovery checkpoint and raise Interrupted.

    Writes config.yaml, TensorBoard logs (tb/), checkpoints (checkpoints/last every
    train.checkpoint_every steps and after every epoch, checkpoints/best), model.keras, a TF Serving
    SavedModel (export/<version>/) and metrics.json; in multi-worker runs only the chief writes
    these, and every other worker only its own recovery checkpoints (checkpoints/worker-<i>/).
    `callbacks`: extra Keras callbacks, called like model.fit calls them. Returns the metrics dict
    (None on a non-chief worker). Raises TrainingDiverged on NaN/inf loss, and one of
    distribute.PEER_ERRORS when a multi-worker peer is lost.
    """
    start = time.time()
    # === Devices and strategy (before anything else initialises TensorFlow) ===
    dist = distribute.setup(config.distribute, config.model.towers)
    init = fine_tuning.load_init_model(config.train.init_from)  # before the run directory is touched
    with run_dir_lib.lock(run_dir, "chief" if dist.is_chief else f"worker-{dist.worker}"), _StopSignals() as stop:
        run = _set_up(config, run_dir, dist, stop, start)
        run.init_file, run.init_model = init
        _resume(run)
        _callbacks(run, verbose, (*callbacks, *run.feed.callbacks))
        _loop(run)
        return _finish(run)


@dataclass
class _Run:
    """One training run's parts, handed from step to step: set-up -> resume -> callbacks -> loop -> finish."""

    config: object
    run_dir: str
    dist: object                   # distribute.Distribution
    stop: object                   # stop_signals.StopSignals
    started: float                 # time.time() when `train` was called
    init_file: str = None          # train.init_from's model.keras
    init_model: object = None      # ... loaded (safe mode), until its weights are copied
    precision: str = None
    data: object = None            # data.Datasets
    model: object = None
    feed: object = None            # train_input.py: the training batches and what a checkpoint keeps of their position
    plateau: object = None         # callbacks.DivideLROnPlateau
    state: TrainState = None
    callbacks: object = None       # keras.callbacks.CallbackList
    nan_guard: object = None       # callbacks.StopOnNaN
    train_step: object = None
    eval_step: object = None
    wall_before: float = 0.0       # seconds the run trained in earlier processes (from the checkpoint)
    epoch: int = 0                 # epochs completed
    step: int = 0                  # steps done in the current epoch
    sums: EpochSums = field(default_factory=EpochSums)  # of the current epoch so far
    val_logs: dict = None          # the last validation
    # healthy: the last step's loss was finite and not exploding (checkpoint.healthy_loss); only then
    # is a checkpoint written. just_saved: the one written after the last step, still to be judged.
    healthy: bool = True
    just_saved: str = None

    def elapsed(self):
        """Seconds this run has trained, over all its processes (a resumed run counts the earlier ones)."""
        return self.wall_before + time.time() - self.started


# === Config, seed and precision ===

def _set_up(config, run_dir, dist, stop, start):
    """The run directory's config, the seed, op determinism and the precision; then the data, the
    model and its optimizer (built under the strategy's scope)."""
    run = _Run(config, run_dir, dist, stop, start)
    if dist.is_chief:
        run_dir_lib.refuse_overwriting_a_model(run_dir)
        run_dir_lib.write_config(config, run_dir)
    else:
        os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    run.precision, why = _run_precision(config, run_dir, dist)
    keras.mixed_precision.set_global_policy(run.precision)
    print(f"machine: {machine.describe()}; TensorFlow sees {describe_devices(tf.config.list_physical_devices())}")
    print(f"precision: {run.precision}{why}")
    if dist.kind != "default":
        print(dist.describe())

    # === Data ===
    run.data = make_datasets(config)
    if dist.is_chief:
        run_dir_lib.write_data(run_dir, run.data)  # mean.npy, classes.json, data.json (and stats.npz)
    run.feed = make_feed(config, run.data, dist, run_dir)  # per distribute.input / data.service

    # === Model and optimizer ===
    with dist.scope():
        run.model = build_model(config, tower_devices=dist.tower_devices)
        compile_model(run.model, config, steps_per_epoch=run.data.train_steps)
        run.model.optimizer.build(run.model.trainable_variables)
    if schedule := lr_schedule.describe(config, run.data.train_steps):
        print(schedule)
    return run


def _run_precision(config, run_dir, dist):
    """(policy, explanation) for this run. `auto` is resolved once per run, by the chief, and kept in
    RUN_DIR/precision.json: a resumed run and every worker of a multi-worker run use the same policy
    (the matmul probe could answer differently on a noisy machine, and workers must agree)."""
    if config.train.precision != "auto":
        return config.train.precision, ""
    recorded = run_dir_lib.read_precision(run_dir) if dist.is_chief else None
    resumed = recorded is not None
    if dist.is_chief and not resumed:
        details = {}
        recorded = {"precision": resolve_precision("auto", details=details), **details}
        run_dir_lib.write_precision(run_dir, recorded)
    elif not dist.is_chief:
        recorded = {"precision": "float32"}  # the chief decides (below); a worker's own probe would be discarded
    precision = recorded["precision"]
    if dist.workers > 1:  # the chief's choice for everyone
        precision = "mixed_bfloat16" if dist.all_gather(int(precision == "mixed_bfloat16"))[0] else "float32"
    speedup = recorded.get("bf16_matmul_speedup")
    why = f": bfloat16 matmul {speedup:.2f}x float32 here" if speedup is not None and dist.is_chief else ""
    return precision, f" (auto{', as resolved when this run started' if resumed else ''}{why})"


# === Resume ===

def _resume(run):
    """The newest recovery checkpoint restored into the model, optimizer, data iterator, plateau
    schedule and the loop's position; without one, train.init_from's weights or a fresh start."""
    config, dist, model = run.config, run.dist, run.model
    run.plateau = cb.DivideLROnPlateau(config.train.lr_patience, config.train.lr_max_reductions,
                                       config.train.lr_min_delta, at_epochs=config.train.lr_drop_epochs)
    run.state = state = TrainState(
        model, run.feed.position, run.plateau,
        run_dir_lib.checkpoint_dir(run.run_dir, "last" if dist.is_chief else f"worker-{dist.worker}"),
        run_dir_lib.checkpoint_dir(run.run_dir, "best") if dist.is_chief else None,
        configured_lr=lr_schedule.peak_lr(config))
    restored = state.restore(agree=dist.all_gather if dist.workers > 1 else None)
    if not restored and run.init_model is not None:
        fine_tuning.copy_weights(model, run.init_model, run.init_file)
    run.init_model = None  # its memory back
    if restored:
        lr_schedule.apply_a_changed_rate(config, state, model.optimizer, run.plateau)
    run.epoch, run.step = int(state.epoch.numpy()), int(state.step.numpy())
    run.wall_before = float(state.wall_seconds.numpy())
    run.sums = state.epoch_sums
    if restored:
        print(f"resuming from {restored}: {run.epoch} of {config.train.epochs} epochs done"
              + (f" and {run.step} of {run.data.train_steps} steps of epoch {run.epoch + 1}" if run.step else "")
              + f", learning rate {float(model.optimizer.learning_rate.numpy()):.3g}")




# === Callbacks, called as model.fit calls them ===

def _callbacks(run, verbose, extra):
    """The run's CallbackList: the NaN guard, the plateau rule, `extra`, and on the chief TensorBoard
    and the conv1 filter image."""
    config, data = run.config, run.data
    run.nan_guard = cb.StopOnNaN()
    tb_dir = run_dir_lib.tb_dir(run.run_dir)
    callbacks = [run.nan_guard, run.plateau, *extra]
    if run.dist.is_chief:
        tensorboard = cb.TensorBoard(tb_dir, write_graph=False, profile_batch=tuple(config.train.profile_steps) or 0,
                                     initial_step=run.state.global_step,
                                     update_freq=config.train.log_every or "epoch")  # logs the lr used in the epoch
        callbacks = [tensorboard, run.nan_guard, run.plateau, cb.Conv1Filters(os.path.join(tb_dir, "train")), *extra]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    run.callbacks = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=run.model,
                                                 verbose=verbose, epochs=config.train.epochs, steps=data.train_steps)
    print(f"training {data.train_steps} steps/epoch x {config.train.epochs} epochs "
          f"(batch {config.data.batch_size}, {data.train_size} training images); validating on {data.val_size}"
          + (f" held out of the training images; testing once at the end on {data.test_size}" if data.test is not None else ""))


# === Train loop ===

def _loop(run):
    """Epochs until train.epochs are done or a callback stops training; TrainingDiverged if the loss
    became NaN or infinite."""
    steps = hybrid.make_steps if run.dist.kind == "hybrid" else make_steps  # hybrid: its own placement of every op
    run.train_step, run.eval_step = steps(run.model, run.dist, run.config.train.jit_compile, take=run.feed.take,
                                          augment=run.data.device_augment)
    run.model.stop_training = False
    with run.dist.placement(run.model):
        run.callbacks.on_train_begin()
        while run.epoch < run.config.train.epochs and not run.model.stop_training:
            _epoch(run)
        run.callbacks.on_train_end()
    if run.nan_guard.failed:
        batch, loss = run.nan_guard.failed
        last = run.state.manager.latest_checkpoint
        kept = (f"the last checkpoint written before the loss exploded is {last}" if last
                else "no checkpoint had been written before the loss exploded")
        raise TrainingDiverged(f"training stopped: loss became {loss} at batch {batch + 1} of epoch {run.epoch + 1}; "
                               f"{kept}. Lower train.lr or check the data.")


def _epoch(run):
    """The rest of epoch `run.epoch`: its steps, validation, the best and the recovery checkpoint.
    Returns early, the epoch unfinished, when a callback stops training."""
    run.callbacks.on_epoch_begin(run.epoch)
    run.feed.start(run.epoch, run.step)
    logs = run.sums.logs()
    while run.step < run.data.train_steps:
        logs = _step(run)
        if run.model.stop_training:
            return
    data = run.data
    run.val_logs = evaluate(run.eval_step, data.val.take(data.val_steps))  # (model.fit calls no test callbacks here either)
    run.epoch, run.step, run.sums = run.epoch + 1, 0, EpochSums()
    run.callbacks.on_epoch_end(run.epoch - 1, {**logs, **{"val_" + k: v for k, v in run.val_logs.items()}})
    if run.model.stop_training:
        return
    # after the callbacks: the plateau rule may have changed the learning rate
    run.state.save_best(run.epoch, run.val_logs["top1_error"])
    saved = _save_if_healthy(run)
    signum = _signalled(run, epoch_end=True) if run.epoch < run.config.train.epochs else None
    if signum is not None:  # a signal during validation
        raise Interrupted(signum, saved or run.state.manager.latest_checkpoint)


def _step(run):
    """One training step, then: the judgement of the checkpoint before it, the callbacks, a signal's
    recovery checkpoint and exit, and the recovery checkpoint every train.checkpoint_every global
    steps. Returns the epoch's logs so far."""
    run.callbacks.on_train_batch_begin(run.step)
    step_sums = EpochSums.from_vector(run.train_step(run.feed.iterator).numpy())
    run.sums = run.sums + step_sums
    _judge_last_checkpoint(run, step_sums.mean_loss)
    logs = run.sums.logs()
    run.callbacks.on_train_batch_end(run.step, logs)
    if run.model.stop_training:
        return logs
    run.step += 1
    signum = _signalled(run)
    if signum is not None:  # SIGTERM / SIGINT: this step is done; save and leave
        raise Interrupted(signum, _save_if_healthy(run) or run.state.manager.latest_checkpoint)
    every = run.config.train.checkpoint_every
    if every and run.state.global_step % every == 0 and run.step < run.data.train_steps:
        _save_if_healthy(run)
    return logs


def _judge_last_checkpoint(run, step_loss):
    """The checkpoint-health rule. A step's loss judges the weights it started from, which the
    checkpoint written just before it holds: a loss that is not finite or is exploding
    (checkpoint.healthy_loss) removes that checkpoint, so a rerun resumes from the one before, and
    no checkpoint is written until a step is healthy again."""
    run.healthy = healthy_loss(step_loss, run.config.model.num_classes)
    if not run.healthy and run.just_saved:
        run.state.discard(run.just_saved)
        print(f"note: the loss exploded after {run.just_saved} was written; removed it, "
              f"so a rerun resumes from {run.state.manager.latest_checkpoint or 'the start'}", flush=True)
    run.just_saved = None


def _save_if_healthy(run):
    """A recovery checkpoint of the loop's position, if the last step was healthy; its path or None."""
    run.just_saved = run.state.save(run.epoch, run.step, run.sums, run.elapsed()) if run.healthy else None
    return run.just_saved


def _signalled(run, epoch_end=False):
    """The signal to stop for, or None. Under multi_worker a signal reaches one worker (a preempted
    VM): every worker learns of it at the same step, so all save that step and leave together,
    and the rerun resumes from it on every worker (the protocol of TF's PreemptionCheckpointHandler,
    with the job's own all-gather of one int per worker, every SIGNAL_CHECK_STEPS global steps and
    at each epoch end)."""
    if run.dist.workers > 1:
        if not epoch_end and run.state.global_step % SIGNAL_CHECK_STEPS:
            return None
        return next((s for s in run.dist.all_gather(run.stop.signum or 0) if s), None)
    return run.stop.signum


# === Final evaluation and artefacts (the chief only) ===

def _finish(run):
    """The final validation (if this process trained none) and the test split, once; then, on the
    chief, metrics.json, model.keras, the export and the result lines. Returns the metrics (None on
    another worker)."""
    dist, data, model = run.dist, run.data, run.model
    test_logs = None
    with dist.placement(model):
        if run.val_logs is None:  # nothing was trained in this process: evaluate the restored model
            run.val_logs = evaluate(run.eval_step, data.val.take(data.val_steps))
        if data.test is not None:  # the held-out test split, looked at once, after training
            test_logs = evaluate(run.eval_step, data.test)
    if not dist.is_chief:
        dist.barrier()  # leave together with the chief (a worker that exits early looks like a crash to the others)
        print(f"worker {dist.worker}: done; the chief writes the model and metrics")
        return None
    final = _plain_copy(model, run.config, data.train_steps) if dist.kind != "default" else model
    metrics = _metrics(run, test_logs)
    run_dir_lib.write_final(run.run_dir, final, metrics)
    if run.config.train.export:  # after metrics.json: a failed export loses nothing
        saved = serving.save(serving.Classifier.from_config(final, run.config, data.mean, data.class_names),
                             run_dir_lib.export_dir(run.run_dir))
        print(f"SavedModel for TF Serving: {saved}")
    print("\n".join(console.result_lines(metrics, run.run_dir)))
    dist.barrier()
    return metrics


def _metrics(run, test_logs):
    """metrics.json's dict."""
    metrics = {
        "val_top1_error": run.val_logs["top1_error"],
        "val_top5_error": run.val_logs["top5_error"],
        "val_loss": run.val_logs["loss"],
        "epochs_completed": run.epoch,
        "wall_seconds": round(run.elapsed(), 1),
        "precision": run.precision,
        "learning_rate": float(run.model.optimizer.learning_rate.numpy()),
        "strategy": run.dist.kind,
        "replicas": run.dist.replicas,
        **machine.summary(),
    }
    if test_logs is not None:
        metrics.update(test_top1_error=test_logs["top1_error"], test_top5_error=test_logs["top5_error"],
                       test_loss=test_logs["loss"], test_images=run.data.test_size)
    return metrics


def _plain_copy(model, config, steps_per_epoch):
    """The trained model rebuilt outside any strategy or device placement (for model.keras and the export)."""
    plain = compile_model(build_model(config), config, steps_per_epoch=steps_per_epoch)
    plain.set_weights(model.get_weights())
    plain.optimizer.build(plain.trainable_variables)
    for mine, theirs in zip(plain.optimizer.variables, model.optimizer.variables):
        mine.assign(theirs.numpy())
    return plain


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the message names the last checkpoint written before the loss exploded."""

    prefix = ""  # the message begins "training stopped: "
