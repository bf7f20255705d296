"""Images per second of the training input pipeline alone, of the model's training step alone (on a
batch already in memory), and of training fed by the pipeline: is the pipeline the bottleneck?

`python -m alexnet_tf benchmark [--config PATH] [--set section.key=value ...] [--steps 20] [--train-steps 5]
 [--fake-images N] [--fake-side 256] [--pipeline-only]` (the command's arguments and handler:
benchmark_command.py)
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.data import make_datasets
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model, resolve_precision


def pipeline_rate(dataset, batch_size, steps, warmup=3):
    """Images/s of iterating a batched tf.data pipeline (after `warmup` batches fill the buffers)."""
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - start)


class _StepTimer(keras.callbacks.Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.end = time.perf_counter()


def training_rate(model, dataset, batch_size, steps, warmup=2):
    """Images/s of `model.fit` on `dataset`, over `steps` batches after `warmup` (the first traces the step)."""
    timer = _StepTimer(warmup)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer], shuffle=False)
    return steps * batch_size / (timer.end - timer.start)


def write_fake_imagenet_folder(root, images, classes=1000, seed=0, side=None, noise=14.0, progress=None):
    """`images` JPEGs shaped like ILSVRC-2012's (500x375 / 375x500, quality 90, photo-like smooth regions plus
    a grey texture of standard deviation `noise`) in root/train/<class>/ (class i % classes), and one per class
    (at most `images`) in root/val/. Mean size (30 images): noise 14 (what docs/speed.md's pipeline figures were
    measured on) ~95 kB; noise 23 ~110 kB, ILSVRC-2012's mean (138 GB over 1.28 M training images).
    `progress(done)`, if given, is called after each training image.

    For benchmarks on machines without ImageNet: decoding cost depends on pixel count and
    compressed size, which these match. side=256 writes side x side images instead: the
    pre-resized copy a fast input pipeline would read (docs/speed.md, "Feeding a GPU").
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", min(images, classes))):
        for i in range(count):
            cls = f"n{i % classes:08d}"
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            h, w = (side, side) if side else ((375, 500) if i % 3 else (500, 375))
            coarse = rng.integers(0, 256, (h // 25 + 2, w // 25 + 2, 3)).astype(np.float32)
            smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
            texture = rng.normal(0, noise, (h, w, 1)).astype(np.float32)
            pixels = np.clip(smooth + texture, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, split, cls, f"{cls}_{i}.JPEG"), quality=90)
            if progress is not None and split == "train":
                progress(i + 1)
    return root


def run(config, steps=20, train_steps=5, pipeline_only=False):
    """Print the images/s of `config`'s training input pipeline (`steps` batches), then, unless
    `pipeline_only`, of the training step alone and fed by the pipeline (`train_steps` steps each)."""
    d = config.data
    data = make_datasets(config)
    pipeline = pipeline_rate(data.train, d.batch_size, steps)
    print(f"input pipeline alone: {pipeline:.0f} img/s ({steps} batches of {d.batch_size}, "
          f"data.source {d.source}, {os.cpu_count()} CPU cores)", flush=True)
    if pipeline_only:
        return

    precision = resolve_precision(config.train.precision)
    keras.mixed_precision.set_global_policy(precision)
    model = compile_model(build_model(config), config)
    m = config.model
    x = tf.random.stateless_normal([d.batch_size, m.image_size, m.image_size, m.channels], [0, 0], stddev=50.0)
    y = tf.zeros([d.batch_size], tf.int32)
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()
    step = training_rate(model, in_memory, d.batch_size, train_steps)
    print(f"training step alone:   {step:.0f} img/s ({train_steps} steps, batch already in memory, {precision})", flush=True)
    fed = training_rate(model, _network_inputs(data), d.batch_size, train_steps)
    print(f"training fed by the pipeline: {fed:.0f} img/s (both on the same cores)")
    print(f"pipeline / training step = {pipeline / step:.2f} ({'not the bottleneck' if pipeline >= step else 'THE BOTTLENECK'})")


def _network_inputs(data):
    """`Data.train` as `model.fit` takes it: with data.augment_on device, its uint8 crops augmented inside tf.data
    (on the CPU; the training loop's step does it on the device)."""
    if data.device_augment is None:
        return data.train
    return data.train.map(lambda x, y: (data.device_augment(x), y))
