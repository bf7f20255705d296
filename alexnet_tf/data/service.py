"""data.service: the training pipeline decoded on the workers of a tf.data service, one job per epoch.

Each epoch is its own dataset, sent to the dispatcher (`tf.data.experimental.service.distribute`,
processing_mode "distributed_epoch"): its source is the epoch's order of the examples, which the
dispatcher hands out as splits; reading, decoding and augmentation run on the service's workers,
whichever takes a split next. The training process batches what comes back:

  in-memory arrays, folder files   the source is epoch e's permutation of the example indices
  prepared TFRecord shards         the source is epoch e's order of the shard files; each worker reads
                                   the shards it is given through a shuffle buffer of its own

Every example's augmentation seed is stateless_fold_in(train.seed, epoch, example id), so an example
is augmented the same whichever worker decodes it; the order in which examples arrive is not
reproducible. A job visits every example of the epoch once (a service worker restarted mid-epoch loses
the splits it held: tf.data promises at most once); the training process takes the epoch's steps x B
of them, and should a pass come up short, the next pass (a new job) makes the epoch up.

A run resumed at step s of epoch e starts a new job for epoch e and trains its remaining steps - s
batches from it: the model, optimizer and step are the checkpoint's exactly, but the examples of the
interrupted epoch's first s steps are drawn again from the whole epoch (some repeat, others are not
seen in that epoch). docs/distribute.md gives what was measured.
"""

import os

import numpy as np
import tensorflow as tf

from alexnet_tf.data import sharding
from alexnet_tf.data.sources import FolderSplit

# Examples cross from a service worker to the training process in groups of this many (one RPC each; the
# last group of a worker's part of an epoch may be smaller): batches of B could not be formed on the
# workers without dropping each worker's remainder, which would change the number of steps of an epoch.
TRANSFER = 8
# A shard read by a service worker is read through a shuffle buffer of this many records at most (each
# worker holds one per split it reads): data.shuffle_buffer is per process, and the service has many.
SHUFFLE_RECORDS = 10_000


def epoch_dataset(source, plan, service, epoch, start_step):
    """The global batches (images, labels) of epoch `epoch` from step `start_step`: its examples decoded by
    the tf.data service at `service` (grpc://HOST:PORT). `plan`: batch, steps, seed, shuffle_buffer."""
    elements = examples(source, plan, epoch, skip=start_step * plan.batch).batch(TRANSFER)
    ds = elements.apply(tf.data.experimental.service.distribute("distributed_epoch", service)).unbatch()
    ds = ds.repeat().batch(plan.batch, drop_remainder=True).take(plan.steps - start_step)
    if os.environ.get(sharding.TRACE_ENV):
        trace = sharding._tracer(0)

        def traced(b, batch):
            positions = (start_step + b) * plan.batch + tf.range(plan.batch, dtype=tf.int64)
            tf.py_function(trace, [epoch, positions, batch[2]], [])
            return batch
        ds = ds.enumerate().map(traced)
    return ds.map(lambda image, label, example: (image, label)).prefetch(tf.data.AUTOTUNE)


def examples(source, plan, epoch, skip=0):
    """(network input, label, example id) of the training examples from position `skip` of epoch `epoch`'s order,
    in a dataset whose source the dispatcher can split: arrays and folder files by index (id: the index),
    prepared shards by file (id: tfds_id; from the first file not wholly before `skip`)."""
    order = np.random.default_rng([plan.seed, epoch]).permutation(
        len(source.arrays[0]) if source.arrays is not None else source.split.size).astype(np.int64)[skip:]
    if source.arrays is not None:
        x, y = source.arrays

        def element(index):
            image, label = source.transform((tf.gather(x, index)[None], tf.gather(y, index)[None]),
                                            sharding.example_seed(plan.seed, epoch, index))
            return tf.nest.map_structure(lambda t: t[0], image), label[0], index  # (a dict under data.augment_on device)
        return tf.data.Dataset.from_tensor_slices(order).map(element, num_parallel_calls=tf.data.AUTOTUNE)
    split = source.split
    if isinstance(split, FolderSplit):
        paths, labels = tf.constant(split.paths.astype(str)), tf.constant(split.labels)

        def read(index):
            image, label = source.transform((tf.io.read_file(tf.gather(paths, index)), tf.gather(labels, index)),
                                            sharding.example_seed(plan.seed, epoch, index))
            return image, label, index
        return (tf.data.Dataset.from_tensor_slices(order).map(read, num_parallel_calls=tf.data.AUTOTUNE)
                .ignore_errors(log_warning=True))
    return _records(source, plan, epoch, skip)


def _records(source, plan, epoch, skip):
    """Prepared TFRecord shards: the shard files in the epoch's order, each read, shuffled and decoded by a worker."""
    import tensorflow_datasets as tfds

    split = source.split
    files = sharding.shard_files(split)
    ordered = [files[f] for f in np.random.default_rng([plan.seed, epoch]).permutation(len(files))]
    before = np.cumsum([count for _, count in ordered])
    paths = [path for (path, _), done in zip(ordered, before) if done > skip]
    names = [os.path.basename(p) for p in paths]
    features = split.builder.info.features

    def read(path, name):
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda r, record: (tf.strings.join([name, tf.strings.as_string(r)], "__"), record))

    def element(rid, record):
        example = features.deserialize_example(record, decoders={split.image_key: tfds.decode.SkipDecoding()})
        seed = sharding.example_seed(plan.seed, epoch, tf.strings.to_hash_bucket_fast(rid, 2**62))
        image, label = source.transform((example[split.image_key], tf.cast(example[split.label_key], tf.int32)), seed)
        return image, label, rid

    return (tf.data.Dataset.from_tensor_slices((paths, names))
            .interleave(read, cycle_length=sharding.CYCLE, num_parallel_calls=tf.data.AUTOTUNE)
            .shuffle(min(plan.shuffle_buffer, SHUFFLE_RECORDS), seed=plan.seed + epoch)
            .map(element, num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors(log_warning=True))
