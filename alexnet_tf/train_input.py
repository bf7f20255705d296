"""The training loop's input under each input mode (input_modes.py): the iterator a training step takes its
batch from, when it is (re)built, and what a recovery checkpoint keeps of the data position.

  replicated  one tf.data iterator over `Data.train` for the whole run, saved in every recovery checkpoint
  sharded     `strategy.distribute_datasets_from_function` over data/sharding.py's worker streams, built once
              from the checkpoint's (epoch, step); each worker writes its decode counts to input_stats.json
  service     one tf.data service job per epoch (data/service.py), built at the start of every epoch
"""

import os
from collections import namedtuple

import keras
import tensorflow as tf

from alexnet_tf import run_dir as run_dir_lib
from alexnet_tf.data import service, sharding
from alexnet_tf.errors import ConfigError, UserError
from alexnet_tf.input_modes import input_mode, wait_for_dispatcher

INPUT_STATS = "input_stats.json"

# What data/sharding.py and data/service.py build their streams from.
Plan = namedtuple("Plan", "batch steps epochs seed shuffle_buffer")


def make_feed(config, data, dist, run_dir):
    """The feed of a run's training data (`data`: pipeline.Data) under `dist` (distribute.Distribution)."""
    mode = input_mode(config)
    if mode == "replicated":
        return Replicated(data)
    d, t = config.data, config.train
    plan = Plan(d.batch_size, data.train_steps, t.epochs, t.seed, d.shuffle_buffer)
    options = tf.data.Options()
    options.deterministic = t.deterministic
    if mode == "sharded":
        return Sharded(data.source, plan, options, dist, input_stats_path(run_dir, dist))
    return Service(data.source, plan, options, d.service)


class Replicated:
    """Every process reads `Data.train`, the global batches; each replica takes its slice (Distribution.split)."""

    take = None          # make_steps's own: the next global batch, split over the replicas
    callbacks = ()

    def __init__(self, data):
        self.iterator = iter(data.train)
        self.position = self.iterator   # the tf.data iterator's state goes into every recovery checkpoint

    def start(self, epoch, step):
        """Nothing to build: the one iterator runs through every epoch."""


class Sharded:
    """Each worker reads its part (data/sharding.py), as per-replica batches through distribute_datasets_from_function."""

    position = None      # the checkpoint's epoch and step are the position

    def __init__(self, source, plan, options, dist, stats_path):
        if plan.batch % dist.replicas:
            raise ConfigError(f"data.batch_size = {plan.batch} with distribute.input = sharded over {dist.replicas} "
                              f"replicas; expected a multiple of {dist.replicas} (each replica takes an equal part)")
        self.source, self.plan, self.options, self.dist = source, plan, options, dist
        part = sharding.part_size(source, dist.workers, dist.worker)
        share = plan.steps * plan.batch // dist.workers
        if part == 0:
            raise UserError(f"distribute.input = sharded: worker {dist.worker} of {dist.workers} has no training examples "
                            f"(its TFRecord shards: {sharding.shard_files(source.split)[dist.worker::dist.workers]}); "
                            "expected at least one shard per worker (prepare with a smaller --shard-images) or "
                            "distribute.input = replicated")
        size = len(source.arrays[0]) if source.arrays is not None else source.split.size
        print(f"input: sharded, worker {dist.worker} of {dist.workers} decodes {share} examples per epoch from its part "
              f"({part} of the {size} training examples)"
              + ("; its part is smaller than its share, so some of its examples repeat within an epoch" if part < share else ""))
        # a plain variable on this host (not mirrored): the workers count apart
        self.counter = tf.Variable(tf.zeros([plan.epochs + 1], tf.int64), trainable=False, name="examples_decoded")
        self.stats = InputStats(stats_path, dist.worker, dist.workers, self.counter)
        self.callbacks = (self.stats,)
        self.iterator = None

    def start(self, epoch, step):
        """The distributed iterator from (epoch, step) on, built once per process: the epochs follow in it."""
        if self.iterator is not None:
            return
        self.stats.resumed(epoch, step)

        def dataset(context):
            return sharding.worker_dataset(self.source, self.plan, context, (epoch, step), self.counter).with_options(
                self.options)
        self.iterator = iter(self.dist.strategy.distribute_datasets_from_function(dataset))

    def take(self, iterator):
        """(per-replica images, per-replica labels, global batch size) of the next step (inside the tf.function)."""
        images, labels = next(iterator)
        return images, labels, tf.constant(self.plan.batch, tf.float32)


class Service:
    """One tf.data service job per epoch (data/service.py); the batches are global, split like `Replicated`'s."""

    position = None
    take = None
    callbacks = ()

    def __init__(self, source, plan, options, address):
        wait_for_dispatcher(address, 10, f"data.service = {address}")
        self.source, self.plan, self.options, self.address = source, plan, options, address
        self.iterator = None
        print(f"input: the tf.data service at {address} decodes the training examples (distributed_epoch)")

    def start(self, epoch, step):
        self.iterator = iter(service.epoch_dataset(self.source, self.plan, self.address, epoch, step)
                             .with_options(self.options))


def input_stats_path(run_dir, dist):
    """RUN_DIR/input_stats.json of the chief; RUN_DIR/checkpoints/worker-<i>/input_stats.json of worker i > 0."""
    where = run_dir if dist.is_chief else run_dir_lib.checkpoint_dir(run_dir, f"worker-{dist.worker}")
    return os.path.join(where, INPUT_STATS)


class InputStats(keras.callbacks.Callback):
    """Writes {"worker", "workers", "examples_decoded": [per epoch], "from_step": [per epoch]} after every epoch.
    A count covers the epoch from `from_step` on (0 = the whole epoch in one process); the epochs before a
    resumed one keep the counts the earlier process wrote."""

    def __init__(self, path, worker, workers, counter):
        super().__init__()
        self.path, self.worker, self.workers, self.counter = path, worker, workers, counter
        self.earlier, self.start = {"examples_decoded": [], "from_step": []}, (0, 0)

    def resumed(self, epoch, step):
        if epoch and os.path.isfile(self.path):
            written = run_dir_lib.read_json(self.path)
            self.earlier = {k: (written.get(k, []) + [None] * epoch)[:epoch] for k in self.earlier}
        self.start = (epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        first, done = self.start[0], epoch + 1
        counts = self.counter.numpy().tolist()[first:done]
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        run_dir_lib.write_json(self.path, {
            "worker": self.worker, "workers": self.workers,
            "examples_decoded": self.earlier["examples_decoded"] + counts,
            "from_step": self.earlier["from_step"] + [self.start[1]] + [0] * (len(counts) - 1)}, indent=1)
