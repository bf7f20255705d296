"""`benchmark --feed`: how many images per second and per core the host can feed to a GPU, four ways, on
generated ILSVRC-like JPEGs (500x375, quality 90, textured so that they weigh about what ILSVRC's do):

  (a) full_size        today's pipeline on the full-size JPEGs: read, decode the central square, rescale to
                       data.resize, crop, mean, flip, lighting, scale (host augmentation)
  (b) prepared_host    the same images prepared once (`prepare`: 256x256 JPEG shards): read, the fused
                       decode of the crop's window (fused_crop.py), the rest of the augmentation on the host
  (c) prepared_device  the same shards with data.augment_on device: read, fused decode, the draws; the
                       arithmetic the training step does on the device is not part of the feed
  (d) bare_decode      the limit: tf.io.decode_and_crop_jpeg of the same prepared bytes, held in memory,
                       into 224x224 uint8, in a tight tf.data loop

Each pipeline is the training pipeline's own per-image transform (`Data.source.transform`) over one shuffled
epoch, read PASSES times; every image it delivers is counted, and the clock starts when the first batch
arrives (the rate is over the images after it). Per core = the rate over the cores this process may use,
which tf.data's AUTOTUNE spreads its work over. docs/speed.md ("Feeding a GPU") has the figures.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from alexnet_tf import machine
from alexnet_tf.config import load_config
from alexnet_tf.data import make_datasets, pipeline
from alexnet_tf.data.prepare import prepare
from alexnet_tf.perf.benchmark import write_fake_imagenet_folder

PASSES = 2
NOISE = 23.0  # write_fake_imagenet_folder's texture that makes the JPEGs ~110 kB, ILSVRC-2012's mean
PHASES = ("full_size", "prepared_host", "prepared_device", "bare_decode")
# The goals: (c) within 15 % of the bare decode, and 3x today's pipeline.
GOALS = {"device_vs_bare": 0.85, "device_vs_full_size": 3.0}


def run(config_path, sets, images, as_json=False):
    """Generate `images` JPEGs in a temporary folder (removed at the end), prepare them, time (a)-(d); print
    the report (one JSON document with `as_json`, everything else then goes to stderr). Returns the result."""
    root = tempfile.mkdtemp(prefix="alexnet_feed_")
    try:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result = measure(config_path, sets, images, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1) if as_json else report(result), flush=True)
    return result


def measure(config_path, sets, images, root):
    """The result of `run`: the four rates, the counts, the ratios, the machine and the images' mean size."""
    classes = max(1, min(10, images))
    folder, out = os.path.join(root, "images"), os.path.join(root, "prepared")
    print(f"writing {images} ILSVRC-like JPEGs (500x375, quality 90) in {classes} classes to {folder}", flush=True)
    bar = _Progress("writing", images)
    write_fake_imagenet_folder(folder, images, classes=classes, noise=NOISE, progress=bar.update)
    bar.done()
    sizes = [e.stat().st_size for d in os.scandir(os.path.join(folder, "train")) for e in os.scandir(d.path)]
    print(f"mean JPEG size: {np.mean(sizes) / 1000:.1f} kB", flush=True)
    forced = [f"data.path={folder}", f"data.cache_dir={os.path.join(root, 'cache')}", f"model.num_classes={classes}"]
    base = load_config(config_path, list(sets) + ["data.source=folder", *forced])
    prepare(base, out, shard_images=max(1, images // 16), command="benchmark --feed")
    prepared = ["data.source=prepared", f"data.path={out}", f"data.cache_dir={os.path.join(root, 'cache')}",
                f"model.num_classes={classes}"]
    configs = {"full_size": base, "prepared_host": load_config(config_path, list(sets) + prepared),
               "prepared_device": load_config(config_path, list(sets) + prepared + ["data.augment_on=device"])}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = {"cpu": machine.cpu_model(), "cores": cores, "images": len(sizes), "mean_jpeg_bytes": float(np.mean(sizes)),
              "batch": base.data.batch_size, "passes": PASSES, "consumed": {}, "timed": {}, "seconds": {}}
    for phase, config in configs.items():
        source = make_datasets(config).source
        _time(result, phase, _epoch(config, source), cores)
    _time(result, "bare_decode", _bare(configs["prepared_device"], source.split), cores)  # the shards (b), (c) read
    result["device_vs_bare"] = result["prepared_device"] / result["bare_decode"]
    result["device_vs_full_size"] = result["prepared_device"] / result["full_size"]
    return result


def _epoch(config, source):
    """One shuffled epoch of the training pipeline's per-image transform (`pipeline._file_datasets`'s), batched,
    read PASSES times."""
    d = config.data
    ds = tf.data.Dataset.zip(source.split.dataset(shuffle=True, seed=config.train.seed, buffer=d.shuffle_buffer),
                             pipeline.seeds(config.train.seed))
    return (ds.map(source.transform, num_parallel_calls=tf.data.AUTOTUNE).batch(d.batch_size)
            .repeat(PASSES).prefetch(tf.data.AUTOTUNE).with_options(pipeline._options(config)))


def _bare(config, split):
    """(d): the prepared training JPEGs' bytes in memory, each decoded to its central 224x224 window."""
    d, size = config.data, config.model.image_size
    encoded = [data for data, _ in split.dataset(shuffle=False).as_numpy_iterator()]
    offset = (d.resize - size) // 2
    window = tf.constant([offset, offset, size, size])

    def decode(data):
        return tf.io.decode_and_crop_jpeg(data, window, channels=3), tf.zeros([], tf.int32)
    return (tf.data.Dataset.from_tensor_slices(encoded).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(d.batch_size).repeat(PASSES).prefetch(tf.data.AUTOTUNE).with_options(pipeline._options(config)))


def _time(result, phase, dataset, cores):
    """Iterate `dataset`, counting the images of every batch it delivers; the rate per core from the first batch on."""
    progress = _Progress(phase, result["images"] * PASSES)
    consumed = timed = 0
    start = None
    for _, labels in dataset:
        count = int(labels.shape[0])
        consumed += count
        if start is None:
            start = time.perf_counter()  # after the first batch: the pipeline's start-up is not its rate
        else:
            timed += count
        progress.update(consumed)
    seconds = time.perf_counter() - start
    progress.done()
    result["consumed"][phase], result["timed"][phase], result["seconds"][phase] = consumed, timed, seconds
    result[phase] = timed / seconds / cores


class _Progress:
    """'(c) prepared_device: 512/2048 images' on stderr, rewritten in place at most twice a second."""

    def __init__(self, phase, total):
        self.label = f"({'abcd'[PHASES.index(phase)]}) {phase}" if phase in PHASES else phase
        self.total, self.shown = total, 0.0

    def update(self, done):
        if time.monotonic() - self.shown >= 0.5:
            self.shown = time.monotonic()
            print(f"\r{self.label}: {done}/{self.total} images", end="", file=sys.stderr, flush=True)

    def done(self):
        print(f"\r{self.label}: {self.total}/{self.total} images{' ' * 8}", file=sys.stderr, flush=True)


def report(result):
    """The text form: (a)-(d) per core, the two ratios against their goals, the machine."""
    lines = [f"feed of {result['images']} ILSVRC-like JPEGs (500x375, quality 90, mean {result['mean_jpeg_bytes'] / 1000:.1f} kB), "
             f"batch {result['batch']}, {result['passes']} passes; img/s per core of {result['cores']} cores:"]
    for letter, phase in zip("abcd", PHASES):
        lines.append(f"  ({letter}) {phase:<16} {result[phase]:8.1f}   ({result['timed'][phase]} images in "
                     f"{result['seconds'][phase]:.1f} s after the first batch)")
    for key, what in (("device_vs_bare", "(c)/(d)"), ("device_vs_full_size", "(c)/(a)")):
        goal = GOALS[key]
        lines.append(f"  {what} = {result[key]:.2f}  (goal >= {goal:g}: {'met' if result[key] >= goal else 'NOT met'})")
    lines.append(f"  CPU: {result['cpu']}")
    return "\n".join(lines)
