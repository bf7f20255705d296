"""The paper's learning rule (§5), metrics, `compile_model`, and the training run."""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from alexnet_tf import callbacks as cb
from alexnet_tf import config as config_lib
from alexnet_tf.data import make_datasets
from alexnet_tf.model import build_model


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.SGD):
    """SGD with momentum and weight decay inside the momentum, exactly as in the paper (§5):

        v <- momentum * v - weight_decay * lr * w - lr * dL/dw
        w <- w + v

    Keras's own `SGD(weight_decay=...)` decays the weights outside the momentum
    (w -= lr * wd * w, decoupled), which is a different rule.

    Weight decay applies to the kernels (the paper's "w"; cuda-convnet and Caffe's
    bvlc_alexnet do not decay biases). `decay_biases=True` decays every variable.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, paper_weight_decay=0.0005, decay_biases=False, **kwargs):
        kwargs.pop("weight_decay", None)  # the decoupled variant stays off
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.paper_weight_decay = paper_weight_decay
        self.decay_biases = decay_biases

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decayed = [self.decay_biases or _is_kernel(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self.paper_weight_decay and self._decayed[self._get_variable_index(variable)]:
            decay = ops.cast(self.paper_weight_decay, variable.dtype)
            gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(decay, variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(paper_weight_decay=self.paper_weight_decay, decay_biases=self.decay_biases)
        return config


def _is_kernel(variable):
    return variable.path.split("/")[-1] == "kernel"


@keras.saving.register_keras_serializable(package="alexnet_tf")
class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """1 - top-k accuracy: the error rates the paper reports."""

    def __init__(self, k=1, name=None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}_error", **kwargs)

    def result(self):
        return 1.0 - super().result()


def make_optimizer(train):
    return PaperSGD(learning_rate=train.lr, momentum=train.momentum,
                    paper_weight_decay=train.weight_decay, decay_biases=train.decay_biases)


def compile_model(model, config, **compile_kwargs):
    """Compile with the paper's optimizer, cross-entropy from logits and top-1/top-5 error."""
    top5 = min(5, model.output.shape[-1])
    model.compile(
        optimizer=make_optimizer(config.train),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[TopKError(1), TopKError(top5, name="top5_error")],
        **compile_kwargs,
    )
    return model


# === The training run ===

def resolve_precision(precision, cpu_flags=None):
    """'auto' -> mixed_bfloat16 on CPUs with AMX (and GPUs with compute capability >= 8.0), else float32.

    AVX512-BF16 alone is not enough: on this project's 2-core VM (AVX512-BF16, AMX not exposed)
    oneDNN's bfloat16 convolutions and matmuls measured 0.3-0.9x the float32 speed.
    `cpu_flags` (the text of /proc/cpuinfo) is read from the machine when not given.
    """
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if cc >= (8, 0) else "float32"
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpu_flags = f.read()
        except OSError:
            cpu_flags = ""
    return "mixed_bfloat16" if "amx_bf16" in cpu_flags.split() else "float32"


def train(config, run_dir, verbose=None):
    """Train `config` in `run_dir` (resuming from its last checkpoint if there is one).

    Writes config.yaml, TensorBoard logs (tb/), checkpoints (checkpoints/last, checkpoints/best),
    model.keras, a TF Serving SavedModel (export/<version>/) and metrics.json. Returns the metrics
    dict. Raises TrainingDiverged on NaN/inf loss.
    """
    start = time.time()
    os.makedirs(run_dir, exist_ok=True)
    _check_same_run(config, run_dir)
    config_lib.dump(config, os.path.join(run_dir, "config.yaml"))
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = resolve_precision(config.train.precision)
    keras.mixed_precision.set_global_policy(precision)
    print(f"precision: {precision}" + (" (auto)" if config.train.precision == "auto" else ""))

    data = make_datasets(config)
    np.save(os.path.join(run_dir, "mean.npy"), data.mean)
    with open(os.path.join(run_dir, "classes.json"), "w") as f:
        json.dump(list(data.class_names), f)
    data.record(run_dir)  # stats.npz (file sources) and data.json: sizes, stats file, skipped files
    model = build_model(config)
    compile_model(model, config)
    model.optimizer.build(model.trainable_variables)

    # === Resume ===
    plateau = cb.DivideLROnPlateau(config.train.lr_patience, config.train.lr_max_reductions,
                                   config.train.lr_min_delta)
    nan_guard = cb.StopOnNaN()
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                               epoch=tf.Variable(0, dtype=tf.int64), wall_seconds=tf.Variable(0.0, dtype=tf.float64),
                               plateau_best=plateau.best, plateau_wait=plateau.wait,
                               plateau_reductions=plateau.reductions)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    saver = cb.EpochCheckpoint(ckpt, ckpt_dir, nan_guard)
    latest = tf.train.latest_checkpoint(os.path.join(ckpt_dir, "last"))
    wall_before = 0.0
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
        wall_before = float(ckpt.wall_seconds.numpy())
        print(f"resuming from {latest}: {int(ckpt.epoch.numpy())} of {config.train.epochs} epochs done, "
              f"learning rate {float(model.optimizer.learning_rate.numpy()):.3g}")
    initial_epoch = int(ckpt.epoch.numpy())

    wall = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ckpt.wall_seconds.assign(wall_before + time.time() - start))
    tb_dir = os.path.join(run_dir, "tb")
    callbacks = [
        cb.TensorBoard(tb_dir, write_graph=False, profile_batch=0,
                       update_freq=config.train.log_every or "epoch"),  # logs the lr used in the epoch
        nan_guard,
        plateau,
        cb.Conv1Filters(os.path.join(tb_dir, "train")),
        wall,
        saver,
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    print(f"training {data.train_steps} steps/epoch x {config.train.epochs} epochs "
          f"(batch {config.data.batch_size}, {data.train_size} training images); validating on {data.val_size}")
    if initial_epoch < config.train.epochs:
        model.fit(data.train, epochs=config.train.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=data.train_steps, validation_data=data.val, validation_steps=data.val_steps,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    if nan_guard.failed:
        batch, loss = nan_guard.failed
        done = int(ckpt.epoch.numpy())
        kept = (f"the last good checkpoint ({done} epochs) is in {os.path.join(ckpt_dir, 'last')}" if done
                else "no checkpoint had been written yet")
        raise TrainingDiverged(f"training stopped: loss became {loss} at batch {batch + 1} of epoch {done + 1}; "
                               f"{kept}. Lower train.lr or check the data.")

    # === Final evaluation and artefacts ===
    results = model.evaluate(data.val, steps=data.val_steps, verbose=0, return_dict=True)
    model.save(os.path.join(run_dir, "model.keras"))
    metrics = {
        "val_top1_error": float(results["top1_error"]),
        "val_top5_error": float(results["top5_error"]),
        "val_loss": float(results["loss"]),
        "epochs_completed": int(ckpt.epoch.numpy()),
        "wall_seconds": round(wall_before + time.time() - start, 1),
        "precision": precision,
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
    }
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    from alexnet_tf.export import export_trained  # after metrics.json: a failed export loses nothing
    print(f"SavedModel for TF Serving: {export_trained(run_dir, config, model, data.mean, data.class_names)}")
    print(f"val top-1 error {metrics['val_top1_error']:.4f}, top-5 error {metrics['val_top5_error']:.4f}, "
          f"loss {metrics['val_loss']:.4f} after {metrics['epochs_completed']} epochs, "
          f"{metrics['wall_seconds']:.0f} s; run directory {run_dir}")
    return metrics


def _check_same_run(config, run_dir):
    """A run directory resumes only the run it holds: the model must match; other changes are reported."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    old = config_lib.load_config(path).to_dict()
    new = config.to_dict()
    for section in ("model", "data", "train"):
        for key, value in new[section].items():
            if old[section][key] == value:
                continue
            change = f"{section}.{key}: {old[section][key]!r} -> {value!r}"
            if section == "model":
                raise config_lib.ConfigError(f"config error: {run_dir} holds a run with a different model ({change}); "
                                             "use another --run-dir")
            print(f"note: resuming with a changed config, {change}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""
