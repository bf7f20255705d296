"""distribute.input = sharded: each worker reads and decodes only its own part of every epoch.

Worker i of k (a tf.distribute.InputContext: input_pipeline_id, num_input_pipelines) feeds B/k examples
of every global batch of B, as per-replica batches (`distribute_datasets_from_function` hands them to
its replicas). Its part of epoch e:

  element-level  in-memory arrays and folder file lists: epoch e's permutation of the N examples,
                 `index_shuffle(p, seed_e)` (the same on every worker, no buffer), at the positions
                 p = i, i+k, i+2k, ...: the workers' parts of an epoch are disjoint and cover it
  file-level     TFRecord shards (prepared, tfds, imagenet): worker i reads shards i, i+k, i+2k, ...
                 in an order drawn per epoch, through a shuffle buffer seeded per epoch (both from
                 train.seed, e and i); a part smaller than the worker's share of an epoch is read again

Every epoch gives each worker exactly steps x B/k examples, tagged with their epoch and their position
in it, and each example's augmentation seed is stateless_fold_in(train.seed, epoch, worker, position) (in-memory
arrays, augmented per batch: the batch's position):
the stream from step s of epoch e is a function of (train.seed, k, i, e, s). A resumed run rebuilds it
from its checkpoint's epoch and step (a tf.distribute iterator cannot be checkpointed); the positions
before the step are skipped before anything is decoded (file-level: their records are read, not decoded).

The epochs follow each other in one tf.data pipeline (file-level: per-epoch pipelines concatenated), with
no pause between epochs, and one spare epoch follows the last, in case a file that became unreadable after the scan left an epoch short.
`counter[e]` counts the examples decoded for epoch e; with ALEXNET_TF_INPUT_TRACE set to a directory,
every worker also appends what it decodes there (epoch, positions, example ids), one JSON line per call.
"""

import json
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.data.sources import FolderSplit

TRACE_ENV = "ALEXNET_TF_INPUT_TRACE"
# File-level reads: TFRecord shards open at once per worker (TFDS's default interleave cycle)
CYCLE = 16


def example_seed(seed, *keys):
    """A stateless seed (int64 [2]) for train.seed and `keys` (epoch, worker, position, ...): each key folded
    in turn (tf.random.experimental.stateless_fold_in), so every combination draws apart."""
    out = tf.constant([seed, 0], tf.int64)
    for key in keys:
        out = tf.cast(tf.random.experimental.stateless_fold_in(out, tf.cast(key, tf.int64)), tf.int64)
    return out


def worker_dataset(source, plan, context, start, counter=None):
    """Worker `context.input_pipeline_id`'s per-replica batches (images, labels) from `start` = (epoch, step)
    to the end of training (`plan`: batch, steps, epochs, seed, shuffle_buffer) and the spare epoch.
    `source`: pipeline.TrainSource. `counter`: an int64 variable of plan.epochs + 1 counts, or None."""
    k, i = context.num_input_pipelines, context.input_pipeline_id
    per_replica = context.get_per_replica_batch_size(plan.batch)
    local = plan.batch // k                         # this worker's examples of every global batch
    quota, first = tf.constant(plan.steps * local, tf.int64), tf.constant(start[1] * local, tf.int64)
    epochs = tf.data.Dataset.range(start[0], plan.epochs + 1)

    def positions(e):  # the positions of epoch e still to train: [first, quota) in the resumed epoch, else all
        return tf.data.Dataset.range(tf.where(e == start[0], first, 0), quota).map(lambda j: (e, j))

    trace = _tracer(i) if os.environ.get(TRACE_ENV) else None
    if source.arrays is not None:
        load = _array_loader(source, plan, k, i, per_replica, counter, trace)
        ds = epochs.flat_map(positions).batch(per_replica, drop_remainder=True).map(load, tf.data.AUTOTUNE)
    else:
        files = not isinstance(source.split, FolderSplit)
        elements = (_record_stream(source.split, plan, k, i, quota, start, start[1] * local) if files
                    else epochs.flat_map(positions))
        load = (_record_loader if files else _file_loader)(source, plan, k, i, counter, trace)
        ds = (elements.map(load, num_parallel_calls=tf.data.AUTOTUNE)
              .ignore_errors(log_warning=True)  # the safety net of pipeline.decoded (the spare epoch makes up for it)
              .batch(per_replica, drop_remainder=True))
    return ds.prefetch(tf.data.AUTOTUNE)


def _array_loader(source, plan, k, i, per_replica, counter, trace):
    """(epochs, positions) of one per-replica batch -> its augmented images and labels, augmented per batch."""
    x, y = source.arrays
    n = len(x)

    def load(e, j):
        index = tf.random.experimental.index_shuffle(i + j * k, example_seed(plan.seed, e[0]), n - 1)
        _count(counter, e[0], tf.size(j), trace, j, index)
        batch = (tf.gather(x, index), tf.gather(y, index))
        return source.transform(batch, example_seed(plan.seed, e[0], i, j[0] // per_replica))
    return load


def _file_loader(source, plan, k, i, counter, trace):
    """(epoch, position) -> the image file at that position of the epoch's permutation, read and augmented."""
    split = source.split
    paths, labels, n = tf.constant(split.paths.astype(str)), tf.constant(split.labels), split.size

    def load(e, j):
        index = tf.random.experimental.index_shuffle(i + j * k, example_seed(plan.seed, e), n - 1)
        _count(counter, e, 1, trace, j[None], index[None])
        xy = (tf.io.read_file(tf.gather(paths, index)), tf.gather(labels, index))
        return source.transform(xy, example_seed(plan.seed, e, i, j))
    return load


def shard_files(split):
    """[(path, records)] of a TFDS split's TFRecord shards, in TFDS's order."""
    return [(os.fspath(f.filename), f.examples_in_shard) for f in split.builder.info.splits[split.split].file_instructions]


def _record_stream(split, plan, k, i, quota, start, first):
    """(epoch, position, id, record) of this worker's TFRecord shards, its part of every epoch from `start`.

    One dataset per epoch, concatenated: the shard order and the shuffle buffer's seed are drawn per epoch in
    Python (a tf.data shuffle takes no tensor seed under a global seed of 0: TensorFlow compares the pair
    with a Python `==`), and the next epoch's dataset starts when this one ends."""
    mine = shard_files(split)[i::k]
    excluded = tf.constant(list(split.excluded), tf.string) if split.excluded else None

    def read(path, name):  # TFDS's tfds_id is <shard file name>__<index>
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda r, record: (tf.strings.join([name, tf.strings.as_string(r)], "__"), record))

    def epoch(e):
        rng = np.random.default_rng([plan.seed, e, i])
        paths = [mine[f][0] for f in rng.permutation(len(mine))]
        records = tf.data.Dataset.from_tensor_slices((paths, [os.path.basename(p) for p in paths])).interleave(
            read, cycle_length=min(CYCLE, len(mine)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if excluded is not None:
            records = records.filter(lambda rid, record: tf.logical_not(tf.reduce_any(tf.equal(rid, excluded))))
        records = records.shuffle(plan.shuffle_buffer, seed=int(rng.integers(2**31))).repeat().take(quota)
        return records.enumerate().skip(first if e == start[0] else 0).map(lambda j, r: (e, j, r[0], r[1]))

    stream = epoch(start[0])
    for e in range(start[0] + 1, plan.epochs + 1):
        stream = stream.concatenate(epoch(e))
    return stream


def _record_loader(source, plan, k, i, counter, trace):
    """(epoch, position, id, TFRecord) -> the record's image, augmented, and its label."""
    import tensorflow_datasets as tfds

    split = source.split
    features = split.builder.info.features

    def load(e, j, rid, record):
        example = features.deserialize_example(record, decoders={split.image_key: tfds.decode.SkipDecoding()})
        _count(counter, e, 1, trace, j[None], rid[None])
        xy = (example[split.image_key], tf.cast(example[split.label_key], tf.int32))
        return source.transform(xy, example_seed(plan.seed, e, i, j))
    return load


def _count(counter, epoch, n, trace, positions, ids):
    if counter is not None:
        counter.scatter_nd_add([[epoch]], [tf.cast(n, tf.int64)])
    if trace is not None:
        tf.py_function(trace, [epoch, positions, ids], [])


def _tracer(worker):
    """The trace writer of this process: one JSON line per call into ALEXNET_TF_INPUT_TRACE/worker-<i>.<pid>.jsonl."""
    path = os.path.join(os.environ[TRACE_ENV], f"worker-{worker}.{os.getpid()}.jsonl")

    def trace(epoch, positions, ids):
        ids = [v.decode() if isinstance(v, bytes) else int(v) for v in ids.numpy().tolist()]
        line = json.dumps({"worker": worker, "epoch": int(epoch), "positions": np.asarray(positions).tolist(), "ids": ids})
        with open(path, "a") as f:
            f.write(line + "\n")
    return trace


def part_size(source, k, i):
    """Examples in worker i's part of an epoch: N/k (element-level) or its shards' records (file-level)."""
    if source.arrays is not None or isinstance(source.split, FolderSplit):
        n = len(source.arrays[0]) if source.arrays is not None else source.split.size
        return len(range(i, n, k))
    mine = shard_files(source.split)[i::k]
    names = {os.path.basename(path) for path, _ in mine}
    excluded = [rid for rid in source.split.excluded if rid.rsplit("__", 1)[0] in names]
    return sum(records for _, records in mine) - len(excluded)
