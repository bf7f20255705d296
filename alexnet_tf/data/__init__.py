"""Input pipelines: a source gives uint8 arrays or files; tf.data applies the paper's preprocessing."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from alexnet_tf.data import fashion_mnist, preprocess, synthetic


@dataclass
class Data:
    train: tf.data.Dataset      # infinite, batched (images, labels)
    val: tf.data.Dataset        # one pass, batched
    train_steps: int            # steps in one epoch (after train.steps_per_epoch)
    val_steps: int
    train_size: int
    val_size: int
    mean: np.ndarray            # what was subtracted, (H, W, C) on the 0..255 scale
    class_names: tuple


def load_arrays(config):
    """The source's uint8 arrays and class names."""
    d, m = config.data, config.model
    if d.source == "fashion_mnist":
        return fashion_mnist.load(d.path), fashion_mnist.CLASS_NAMES
    if d.source == "synthetic":
        arrays = synthetic.load(m.image_size, m.channels, m.num_classes, d.synthetic_size, config.train.seed)
        return arrays, tuple(f"class_{i}" for i in range(m.num_classes))
    raise ValueError(f"data.source = {d.source!r}; expected fashion_mnist or synthetic")


def make_datasets(config):
    """Training and validation tf.data pipelines for `config`."""
    d, t = config.data, config.train
    arrays, class_names = load_arrays(config)
    (x_train, y_train), (x_val, y_val) = arrays["train"], arrays["val"]
    mean = preprocess.mean_of(x_train, d.mean)
    size = x_train.shape[1]
    options = tf.data.Options()
    options.deterministic = t.deterministic

    def normalize(images):
        x = preprocess.subtract_mean(images, mean)
        return x * d.scale if d.scale != 1.0 else x

    def augment(images, labels, seed):
        x = normalize(images)
        if d.random_crop:
            x = preprocess.random_crop(preprocess.pad(x, d.random_crop), size, seed)
        if d.flip:
            x = preprocess.random_flip(x, seed + [1, 0])
        return x, labels

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(min(d.shuffle_buffer, len(x_train)), seed=t.seed, reshuffle_each_iteration=True)
             .repeat()
             .batch(d.batch_size, drop_remainder=True))
    seeds = tf.data.Dataset.random(seed=t.seed, rerandomize_each_iteration=True).batch(2)
    train = (tf.data.Dataset.zip(train, seeds)
             .map(lambda xy, s: augment(xy[0], xy[1], s), num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE)
             .with_options(options))
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val))
           .batch(d.batch_size)
           .map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
           .prefetch(tf.data.AUTOTUNE))

    train_steps = len(x_train) // d.batch_size
    if train_steps == 0:
        raise ValueError(f"data.batch_size = {d.batch_size} is larger than the training set ({len(x_train)} images)")
    if t.steps_per_epoch:
        train_steps = min(train_steps, t.steps_per_epoch)
    val_steps = -(-len(x_val) // d.batch_size)
    if t.val_steps:
        val_steps = min(val_steps, t.val_steps)
    return Data(train, val, train_steps, val_steps, len(x_train), len(x_val), mean, tuple(class_names))
