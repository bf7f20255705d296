"""Training callbacks: the paper's learning-rate rule, the conv1 filter image, NaN guard, TensorBoard."""

import math

import keras
import numpy as np
import tensorflow as tf


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, with the epoch summaries always written and batch summaries
    numbered by the global step across resumes.

    With an integer `update_freq`, Keras 3.15 leaves a `record_if(step % update_freq == 0)`
    context active between batches, which also gates the epoch-end summaries (and those of any
    other callback): they are silently dropped unless the step count happens to be a multiple of
    update_freq. Remove `on_epoch_end` once Keras resets the context at epoch end.

    Keras numbers batch summaries from 0 at every `on_train_begin`; `initial_step` (the global
    step of a resumed run) continues the numbering instead.
    """

    def __init__(self, *args, initial_step=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_step = initial_step

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._global_train_batch = self.initial_step

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)


class DivideLROnPlateau(keras.callbacks.Callback):
    """Divide the learning rate by 10 when validation top-1 error stops improving (§5), or, with
    `at_epochs` (train.lr_drop_epochs), after each of those epochs whatever the validation error does.

    Unlike keras.callbacks.ReduceLROnPlateau, the state (best error, epochs waited, reductions
    so far) lives in tf.Variables so the checkpoint saves and restores it, and the number of
    reductions is capped (the paper: three times). Fixed epochs make the learning-rate history the
    same for every run of a comparison: when the plateau rule fires depends on the noise of each
    run's validation error, which then dominates the spread of short runs (docs/ablation.md).
    """

    def __init__(self, patience=2, max_reductions=3, min_delta=0.0, monitor="val_top1_error", factor=0.1,
                 at_epochs=()):
        super().__init__()
        self.patience, self.max_reductions, self.min_delta = patience, max_reductions, min_delta
        self.monitor, self.factor, self.at_epochs = monitor, factor, tuple(at_epochs)
        self.best = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="plateau_best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.reductions = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_reductions")

    def on_epoch_end(self, epoch, logs=None):
        if self.at_epochs:
            if epoch + 1 in self.at_epochs:
                self._divide(epoch, "a fixed drop (train.lr_drop_epochs)", len(self.at_epochs))
            return
        logs = logs if logs is not None else {}
        current = logs.get(self.monitor)
        if current is None:
            return
        if current < self.best.numpy() - self.min_delta:
            self.best.assign(current)
            self.wait.assign(0)
        else:
            self.wait.assign_add(1)
            if self.wait.numpy() >= self.patience and self.reductions.numpy() < self.max_reductions:
                self._divide(epoch, f"{self.monitor} has not improved for {self.patience} epochs", self.max_reductions)
                self.wait.assign(0)

    def _divide(self, epoch, why, of):
        lr = self.model.optimizer.learning_rate
        new_lr = float(lr.numpy()) * self.factor
        lr.assign(new_lr)
        self.reductions.assign_add(1)
        print(f"\nepoch {epoch + 1}: {why}; learning rate divided by {1 / self.factor:g} to {new_lr:.3g} "
              f"(reduction {int(self.reductions.numpy())} of {of})")


# TensorBoard fits an image to its card (about 320 px wide, 215 px high in the Time Series tab, 350 px wide
# in IMAGES, measured in Chromium at 1280x900: tests/test_browser.py) unless the user ticks "actual size". What a
# kernel looks like there depends on how many kernels share a row, so each tower gets its own image laid out to the
# card's shape (CARD_ASPECT); KERNEL_PIXELS is the kernel's side at actual size (nearest-neighbour blocks).
KERNEL_PIXELS = 48
CARD_ASPECT = 1.5


def kernel_columns(n, aspect):
    """Columns for n kernels in a block about `aspect` times as wide as high: a divisor of n when one is
    within a factor 1.5 of the ideal (every row full: 18 -> 6 x 3 at 1.5, 9 x 2 at 5; 48 -> 8 x 6, 16 x 3),
    else the ideal itself, rounded."""
    ideal = math.sqrt(aspect * n)
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    best = min(divisors, key=lambda d: abs(math.log(d / ideal)))
    return best if abs(math.log(best / ideal)) <= math.log(1.5) else max(1, min(n, round(ideal)))


def tower_grid(kernels, cols, scale=1, gap=1):
    """One tower's conv1 kernels, (h, w, in_channels, n), as an RGB image of `cols` kernels a row.

    Each kernel is scaled to [0, 1] on its own; grey kernels (1 input channel) are repeated over RGB;
    kernels are separated by `gap` black pixels; each weight becomes a scale x scale block."""
    k = np.asarray(kernels, np.float32)
    if k.shape[2] == 1:
        k = np.repeat(k, 3, axis=2)
    k = k[:, :, :3]
    h, w, _, n = k.shape
    lo = k.reshape(-1, n).min(0)
    hi = k.reshape(-1, n).max(0)
    k = (k - lo) / np.maximum(hi - lo, 1e-12)
    rows = -(-n // cols)
    block = np.zeros((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        block[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = k[..., i]
    return np.kron(block, np.ones((scale, scale, 1), np.float32))  # nearest-neighbour upscaling


def kernel_scale(kernels):
    """The nearest-neighbour factor that draws a kernel >= KERNEL_PIXELS a side."""
    return -(-KERNEL_PIXELS // max(np.shape(kernels)[:2]))


def conv1_kernels(model):
    """conv1's kernels, one array per tower, in tower order."""
    layers = sorted((l for l in model.layers if l.name.startswith("conv1_")), key=lambda l: l.name)
    return [l.kernel.numpy() for l in layers]


class Conv1Filters(keras.callbacks.Callback):
    """Writes the conv1 kernels to TensorBoard every epoch, one image per tower (tags `conv1_filters/tower_1`,
    ...: the paper's Fig. 3 shows the two GPUs' kernels apart, and one image per tower keeps the kernels large
    in TensorBoard's cards).

    keras.callbacks.TensorBoard(write_images=True) skips 4-D conv kernels, hence this callback.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        with self.writer.as_default(), tf.summary.record_if(True):  # see TensorBoard above
            for i, kernels in enumerate(conv1_kernels(self.model)):
                grid = tower_grid(kernels, kernel_columns(kernels.shape[-1], CARD_ASPECT), kernel_scale(kernels))
                tf.summary.image(f"conv1_filters/tower_{i + 1}", grid[None], step=epoch,
                                 description=f"conv1 kernels of tower {i + 1} (GPU {i + 1} in the paper's Fig. 3), "
                                             "each scaled to [0, 1] on its own")
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite; sets `self.failed`."""

    def __init__(self):
        super().__init__()
        self.failed = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.failed = (batch, float(loss))
            self.model.stop_training = True
