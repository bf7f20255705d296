"""The training run: one loop for every strategy (default, mirrored, towers, multi_worker), with exact resume."""

import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from alexnet_tf import callbacks as cb
from alexnet_tf import distribute, machine, serving
from alexnet_tf import run_dir as run_dir_lib
from alexnet_tf.checkpoint import TrainState, healthy_loss
from alexnet_tf.config import ConfigError
from alexnet_tf.data import make_datasets
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model, resolve_precision


# === The training run ===

def _init_weights(model, path):
    """Fine-tuning (`train.init_from`): copy the weights of `path`'s layers onto this model's layers of
    the same name and shapes; the others (fc8 for another class count) keep their initialisation."""
    source = {layer.name: layer for layer in keras.saving.load_model(path, compile=False).layers}
    copied, kept = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        theirs = source.get(layer.name)
        if theirs is not None and [w.shape for w in theirs.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(theirs.get_weights())
            copied.append(layer.name)
        else:
            kept.append(layer.name)
    if not copied:
        raise ConfigError(f"config error: train.init_from = {path}: no layer of it fits this model (names or shapes "
                          "differ); expected a run of the same model config")
    print(f"weights of {len(copied)} layers from {path}" + (f"; initialised afresh: {', '.join(kept)}" if kept else ""))


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
    with run_dir_lib.lock(run_dir, "chief" if dist.is_chief else f"worker-{dist.worker}"), _StopSignals() as stop:
        return _train(config, run_dir, verbose, callbacks, start, dist, stop)


def _train(config, run_dir, verbose, callbacks, start, dist, stop):
    chief = dist.is_chief
    init_file = run_dir_lib.init_weights_file(config.train.init_from) if config.train.init_from else None
    if chief:
        run_dir_lib.refuse_overwriting_a_model(run_dir)
        run_dir_lib.write_config(config, run_dir)
    else:
        os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision, why = _run_precision(config, run_dir, dist)
    keras.mixed_precision.set_global_policy(precision)
    print(f"precision: {precision}{why}; {machine.describe()}")
    if dist.kind != "default":
        print(dist.describe())

    # === Data ===
    data = make_datasets(config)
    if chief:
        run_dir_lib.write_data(run_dir, data)  # mean.npy, classes.json, data.json (and stats.npz)
    train_iterator = iter(data.train)  # one per process; its position is part of the recovery checkpoint

    # === Model and optimizer ===
    with dist.scope():
        model = build_model(config, tower_devices=dist.tower_devices)
        compile_model(model, config)
        model.optimizer.build(model.trainable_variables)

    # === Resume ===
    plateau = cb.DivideLROnPlateau(config.train.lr_patience, config.train.lr_max_reductions,
                                   config.train.lr_min_delta, at_epochs=config.train.lr_drop_epochs)
    state = TrainState(model, train_iterator, plateau,
                       run_dir_lib.checkpoint_dir(run_dir, "last" if chief else f"worker-{dist.worker}"),
                       run_dir_lib.checkpoint_dir(run_dir, "best") if chief else None, configured_lr=config.train.lr)
    restored = state.restore(agree=dist.all_gather if dist.workers > 1 else None)
    if not restored and init_file:
        _init_weights(model, init_file)
    was = float(state.configured_lr.numpy())
    if restored and math.isfinite(was) and was != config.train.lr:
        # the restored optimizer would keep its own rate; the new config's wins, and the plateau
        # count starts over (every worker compares the same two numbers, so all agree)
        restored_lr = float(model.optimizer.learning_rate.numpy())
        model.optimizer.learning_rate.assign(config.train.lr)
        plateau.wait.assign(0)
        state.configured_lr.assign(config.train.lr)
        print(f"train.lr changed from {was:g} to {config.train.lr:g}: training continues at {config.train.lr:g} "
              f"(the checkpoint's rate was {restored_lr:.3g}); the plateau count restarts")
    epoch, step = int(state.epoch.numpy()), int(state.step.numpy())
    wall_before = float(state.wall_seconds.numpy())
    sums = state.sums.numpy()
    if restored:
        print(f"resuming from {restored}: {epoch} of {config.train.epochs} epochs done"
              + (f" and {step} of {data.train_steps} steps of epoch {epoch + 1}" if step else "")
              + f", learning rate {float(model.optimizer.learning_rate.numpy()):.3g}")

    # === Callbacks, called as model.fit calls them ===
    nan_guard = cb.StopOnNaN()
    tb_dir = run_dir_lib.tb_dir(run_dir)
    callback_list = [nan_guard, plateau, *callbacks]
    if chief:
        tensorboard = cb.TensorBoard(tb_dir, write_graph=False, profile_batch=tuple(config.train.profile_steps) or 0, initial_step=state.global_step,
                                     update_freq=config.train.log_every or "epoch")  # logs the lr used in the epoch
        callback_list = [tensorboard, nan_guard, plateau, cb.Conv1Filters(os.path.join(tb_dir, "train")), *callbacks]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    callback_list = keras.callbacks.CallbackList(callback_list, add_history=True, add_progbar=verbose != 0, model=model,
                                                 verbose=verbose, epochs=config.train.epochs, steps=data.train_steps)
    print(f"training {data.train_steps} steps/epoch x {config.train.epochs} epochs "
          f"(batch {config.data.batch_size}, {data.train_size} training images); validating on {data.val_size}"
          + (f" held out of the training images; testing once at the end on {data.test_size}" if data.test is not None else ""))

    # === Train loop ===
    train_step, eval_step = make_steps(model, dist, config.train.jit_compile)
    every = config.train.checkpoint_every
    val_logs = None
    # healthy: the last step's loss was finite and not exploding (checkpoint.healthy_loss); only then
    # is a checkpoint written. just_saved: the one written after the last step, still to be judged.
    healthy, just_saved = True, None
    model.stop_training = False

    def signalled(epoch_end=False):
        """The signal to stop for, or None. Under multi_worker a signal reaches one worker (a preempted
        VM): every worker learns of it at the same step, so all save that step and leave together,
        and the rerun resumes from it on every worker (the protocol of TF's PreemptionCheckpointHandler,
        with the job's own all-gather of one int per worker, every SIGNAL_CHECK_STEPS global steps and
        at each epoch end)."""
        if dist.workers > 1:
            if not epoch_end and state.global_step % SIGNAL_CHECK_STEPS:
                return None
            return next((s for s in dist.all_gather(stop.signum or 0) if s), None)
        return stop.signum

    with dist.placement(model):
        callback_list.on_train_begin()
        while epoch < config.train.epochs and not model.stop_training:
            callback_list.on_epoch_begin(epoch)
            logs = _logs(sums)
            while step < data.train_steps:
                callback_list.on_train_batch_begin(step)
                step_sums = train_step(train_iterator).numpy()
                sums = sums + step_sums
                healthy = healthy_loss(step_sums[0] / max(step_sums[3], 1.0), config.model.num_classes)
                if not healthy and just_saved:  # this step's loss judged the weights that checkpoint holds
                    state.discard(just_saved)
                    print(f"note: the loss exploded after {just_saved} was written; removed it, "
                          f"so a rerun resumes from {state.manager.latest_checkpoint or 'the start'}", flush=True)
                just_saved = None
                logs = _logs(sums)
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
                step += 1
                signum = signalled()
                if signum is not None:  # SIGTERM / SIGINT: this step is done; save and leave
                    saved = state.save(epoch, step, sums, wall_before + time.time() - start) if healthy else None
                    raise Interrupted(signum, saved or state.manager.latest_checkpoint)
                if every and state.global_step % every == 0 and step < data.train_steps and healthy:
                    just_saved = state.save(epoch, step, sums, wall_before + time.time() - start)
            if model.stop_training:
                break
            val_logs = evaluate(eval_step, data.val.take(data.val_steps))  # (model.fit calls no test callbacks here either)
            epoch, step, sums = epoch + 1, 0, np.zeros(4)
            callback_list.on_epoch_end(epoch - 1, {**logs, **{"val_" + k: v for k, v in val_logs.items()}})
            if not model.stop_training:  # after the callbacks: the plateau rule may have changed the learning rate
                state.save_best(epoch, val_logs["top1_error"])
                saved = just_saved = state.save(epoch, step, sums, wall_before + time.time() - start) if healthy else None
                signum = signalled(epoch_end=True) if epoch < config.train.epochs else None
                if signum is not None:  # a signal during validation
                    raise Interrupted(signum, saved or state.manager.latest_checkpoint)
        callback_list.on_train_end()
    if nan_guard.failed:
        batch, loss = nan_guard.failed
        last = state.manager.latest_checkpoint
        kept = (f"the last checkpoint written before the loss exploded is {last}" if last
                else "no checkpoint had been written before the loss exploded")
        raise TrainingDiverged(f"training stopped: loss became {loss} at batch {batch + 1} of epoch {epoch + 1}; "
                               f"{kept}. Lower train.lr or check the data.")

    # === Final evaluation and artefacts (the chief only) ===
    test_logs = None
    with dist.placement(model):
        if val_logs is None:  # nothing was trained in this process: evaluate the restored model
            val_logs = evaluate(eval_step, data.val.take(data.val_steps))
        if data.test is not None:  # the held-out test split, looked at once, after training
            test_logs = evaluate(eval_step, data.test)
    if not chief:
        dist.barrier()  # leave together with the chief (a worker that exits early looks like a crash to the others)
        print(f"worker {dist.worker}: done; the chief writes the model and metrics")
        return None
    final = _plain_copy(model, config) if dist.kind != "default" else model
    metrics = {
        "val_top1_error": val_logs["top1_error"],
        "val_top5_error": val_logs["top5_error"],
        "val_loss": val_logs["loss"],
        "epochs_completed": epoch,
        "wall_seconds": round(wall_before + time.time() - start, 1),
        "precision": precision,
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
        "strategy": dist.kind,
        "replicas": dist.replicas,
        **machine.summary(),
    }
    if test_logs is not None:
        metrics.update(test_top1_error=test_logs["top1_error"], test_top5_error=test_logs["top5_error"],
                       test_loss=test_logs["loss"], test_images=data.test_size)
    run_dir_lib.write_final(run_dir, final, metrics)
    if config.train.export:  # after metrics.json: a failed export loses nothing
        saved = serving.save(serving.Classifier.from_config(final, config, data.mean, data.class_names),
                             run_dir_lib.export_dir(run_dir))
        print(f"SavedModel for TF Serving: {saved}")
    print(f"val top-1 error {metrics['val_top1_error']:.4f}, top-5 error {metrics['val_top5_error']:.4f}, "
          f"loss {metrics['val_loss']:.4f} after {metrics['epochs_completed']} epochs, "
          f"{metrics['wall_seconds']:.0f} s; run directory {run_dir}")
    if test_logs is not None:
        print(f"test top-1 error {metrics['test_top1_error']:.4f}, top-5 error {metrics['test_top5_error']:.4f} "
              f"on the {data.test_size} test images (evaluated once, after training)")
    dist.barrier()
    return metrics


def make_steps(model, dist, jit_compile=False):
    """The compiled training and evaluation steps of `model` under `dist`.

    train_step(iterator): takes the next global batch, gives each replica its slice, and applies the
    paper's update with the gradient of the global batch's mean loss (each replica's loss is its
    examples' loss sum divided by the *global* batch size; the optimizer all-reduces the gradients by
    summing them). Both steps return the batch's summed statistics, reduced over replicas and
    workers: (loss sum, top-1 errors, top-5 errors, examples), as float64.
    """
    optimizer, variables = model.optimizer, model.trainable_variables
    top5 = min(5, model.output.shape[-1])
    strategy = dist.strategy

    def batch_sums(labels, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        wrong1 = 1.0 - ops.cast(ops.in_top_k(labels, logits, 1), "float32")
        wrong5 = 1.0 - ops.cast(ops.in_top_k(labels, logits, top5), "float32")
        count = ops.cast(ops.shape(labels)[0], "float32")
        return per_example, ops.stack([ops.sum(per_example), ops.sum(wrong1), ops.sum(wrong5), count])

    def replica_train(images, labels, global_batch):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example, sums = batch_sums(labels, logits)
            loss = ops.sum(per_example) / global_batch
            scaled = optimizer.scale_loss(loss)  # mixed_float16: loss scaling (identity otherwise)
        optimizer.apply_gradients(zip(dist.gradients(scaled, variables, tape), variables))
        return sums

    def replica_eval(images, labels):
        return batch_sums(labels, model(images, training=False))[1]

    if jit_compile:  # XLA on each replica's forward, backward and update (GPUs; slower on CPU)
        replica_train = tf.function(replica_train, jit_compile=True)

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        global_batch = tf.cast(tf.shape(labels)[0], tf.float32)
        images, labels = dist.split((images, labels))
        sums = strategy.run(replica_train, args=(images, labels, global_batch))
        return tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None), tf.float64)

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        images, labels = dist.split((images, labels))
        sums = strategy.run(replica_eval, args=(images, labels))
        return tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None), tf.float64)

    return train_step, eval_step


def evaluate(eval_step, dataset):
    """Loss, top-1 and top-5 error over one pass of a batched (images, labels) dataset."""
    sums = np.zeros(4)
    for images, labels in dataset:
        sums += eval_step(images, labels).numpy()
    return _logs(sums)


def _logs(sums):
    """(loss sum, top-1 errors, top-5 errors, examples) -> the means Keras reports."""
    loss, top1, top5, count = sums
    count = max(count, 1.0)
    return {"loss": loss / count, "top1_error": top1 / count, "top5_error": top5 / count}


def _plain_copy(model, config):
    """The trained model rebuilt outside any strategy or device placement (for model.keras and the export)."""
    plain = compile_model(build_model(config), config)
    plain.set_weights(model.get_weights())
    plain.optimizer.build(plain.trainable_variables)
    for mine, theirs in zip(plain.optimizer.variables, model.optimizer.variables):
        mine.assign(theirs.numpy())
    return plain


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last checkpoint written before the loss exploded."""


# multi_worker: how often the workers all-gather their signal flags. One all-gather costs 5.7 ms on
# 2 local processes (AMD EPYC, docs/distribute.md), 4 % of the default run's 0.13 s step if done every
# step; every 10 steps it is 0.4 %, and a signalled job still stops within 10 steps (seconds).
SIGNAL_CHECK_STEPS = 10


class Interrupted(RuntimeError):
    """SIGTERM or SIGINT stopped the run after a step, with a recovery checkpoint written.

    `status` is the exit status a shell reports for that signal (128 + its number: 143, 130), so a
    scheduler sees the job did not finish; rerunning the same command resumes with no step lost.
    """

    def __init__(self, signum, checkpoint):
        self.signum, self.checkpoint, self.status = signum, checkpoint, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after saving {checkpoint}; rerun the same command to resume"
                         if checkpoint else f"{name}: stopped before any checkpoint was written")


class _StopSignals:
    """While training: SIGTERM and SIGINT only set `signum`; the loop saves at the end of the step.

    A second signal during the save changes nothing (the handler only records it), so the save is
    never cut short. Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum, self.previous = None, {}

    def _handle(self, signum, frame):
        if self.signum is None:
            print(f"\n{signal.Signals(signum).name} received: saving a recovery checkpoint after this step",
                  file=sys.stderr, flush=True)
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
