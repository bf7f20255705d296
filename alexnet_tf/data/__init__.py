"""Input pipelines: a source gives uint8 arrays or encoded files; tf.data applies the paper's preprocessing.

File sources (imagenet, folder, tfds), per image: read -> decode the central square (fused
decode-and-crop for JPEG) -> rescale to data.resize (§2: 256) -> uint8; for training then subtract
the mean image -> crop model.image_size at random (§4.1) -> flip -> PCA lighting -> scale, still per
image, then batch. Validation is batched and centre-cropped. Every step is a TensorFlow op running
in parallel inside tf.data; no Python per image.
"""

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from alexnet_tf.config import FILE_SOURCES, ConfigError
from alexnet_tf.data import decode, fashion_mnist, preprocess, sources, synthetic
from alexnet_tf.data import stats as stats_lib


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
    stats_file: str = ""        # file sources: the .npz of mean image and RGB eigen-decomposition used
    skipped: tuple = ()         # file sources: undecodable files left out, [{"key", "name", "reason"}]
    test: tf.data.Dataset = None  # data.val_examples: the source's test split, one pass, batched; else None
    test_size: int = 0

    def record(self, run_dir):
        """Store what the run's data depended on: stats.npz (a copy) and data.json (sizes, stats file, skipped files)."""
        if self.stats_file:
            shutil.copyfile(self.stats_file, os.path.join(run_dir, "stats.npz"))
        with open(os.path.join(run_dir, "data.json"), "w") as f:
            json.dump({"train_size": self.train_size, "val_size": self.val_size, "test_size": self.test_size,
                       "stats_file": self.stats_file, "skipped": list(self.skipped)}, f, indent=1)


# The held-out validation split (data.val_examples) and the data.train_examples subset are drawn
# with this seed, not train.seed: every seed of a run or an ablation arm validates on the same
# images and trains on the same images, so seeds vary initialisation, order and augmentation only.
SUBSET_SEED = 0


def load_arrays(config):
    """The source's uint8 arrays and class names: {"train", "val"} and, with data.val_examples, "test".

    With data.val_examples = n, "val" is n training images held out (never trained on) and "test"
    the source's test split; without it "val" is the test split. "train" is then cut to
    data.train_examples if set.
    """
    d, m = config.data, config.model
    if d.source == "fashion_mnist":
        arrays, names = fashion_mnist.load(d.path), fashion_mnist.CLASS_NAMES
    elif d.source == "synthetic":
        arrays = synthetic.load(m.image_size, m.channels, m.num_classes, d.synthetic_size, config.train.seed)
        names = tuple(f"class_{i}" for i in range(m.num_classes))
    else:
        raise ValueError(f"data.source = {d.source!r}; expected fashion_mnist or synthetic")
    if d.val_examples:
        arrays["test"] = arrays["val"]
        arrays["train"], arrays["val"] = held_out(*arrays["train"], d.val_examples)
    if d.train_examples:
        arrays["train"] = training_subset(*arrays["train"], d.train_examples)
    return arrays, names


def held_out(images, labels, count):
    """(the rest, `count` held-out examples): a fixed random split (SUBSET_SEED), each part in the original order."""
    if not 0 < count < len(images):
        raise ConfigError(f"config error: data.val_examples = {count}; expected 1 to {len(images) - 1} "
                          f"for {len(images)} training images")
    order = np.random.default_rng(SUBSET_SEED).permutation(len(images))
    val, rest = np.sort(order[:count]), np.sort(order[count:])
    return (images[rest], labels[rest]), (images[val], labels[val])


def training_subset(images, labels, count):
    """A fixed random subset of `count` examples (SUBSET_SEED), kept in the original order."""
    if count > len(images):
        raise ConfigError(f"config error: data.train_examples = {count} exceeds the {len(images)} training images")
    keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(images))[:count])
    return images[keep], labels[keep]


def make_datasets(config):
    """Training and validation tf.data pipelines for `config`."""
    if config.data.source in FILE_SOURCES:
        return _file_datasets(config)
    return _array_datasets(config)


def _steps(config, train_size, val_size):
    d, t = config.data, config.train
    train_steps = train_size // d.batch_size
    if train_steps == 0:
        raise ValueError(f"data.batch_size = {d.batch_size} is larger than the training set ({train_size} images)")
    if t.steps_per_epoch:
        train_steps = min(train_steps, t.steps_per_epoch)
    val_steps = -(-val_size // d.batch_size)
    if t.val_steps:
        val_steps = min(val_steps, t.val_steps)
    return train_steps, val_steps


def _options(config):
    options = tf.data.Options()
    options.deterministic = config.train.deterministic
    return options


def _seeds(config):
    """One stateless seed (shape [2]) per batch; a new one for every batch of every epoch."""
    return tf.data.Dataset.random(seed=config.train.seed, rerandomize_each_iteration=True).batch(2)


def _array_datasets(config):
    d, t = config.data, config.train
    arrays, class_names = load_arrays(config)
    (x_train, y_train), (x_val, y_val) = arrays["train"], arrays["val"]
    mean = preprocess.mean_of(x_train, d.mean)
    lighting = None
    if d.lighting:
        acc = stats_lib.Accumulator()
        for i in range(0, len(x_train), 1024):
            acc.add(x_train[i:i + 1024])
        lighting = stats_lib.lighting_basis(acc.result(), d.pca)
    size = x_train.shape[1]

    def normalize(images):
        x = preprocess.subtract_mean(images, mean)
        return x * d.scale if d.scale != 1.0 else x

    def augment(images, labels, seed):
        x = normalize(images)
        if d.random_crop:
            x = preprocess.random_crop(preprocess.pad(x, d.random_crop), size, seed)
        if d.flip:
            x = preprocess.random_flip(x, seed + [1, 0])
        if lighting is not None:
            x = preprocess.pca_lighting(x, lighting[0] * d.scale, lighting[1], d.lighting_std, seed + [2, 0])
        return x, labels

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(min(d.shuffle_buffer, len(x_train)), seed=t.seed, reshuffle_each_iteration=True)
             .repeat()
             .batch(d.batch_size, drop_remainder=True))
    train = (tf.data.Dataset.zip(train, _seeds(config))
             .map(lambda xy, s: augment(xy[0], xy[1], s), num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE)
             .with_options(_options(config)))
    def evaluation(x, y):
        return (tf.data.Dataset.from_tensor_slices((x, y))
                .batch(d.batch_size)
                .map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    test = arrays.get("test")
    train_steps, val_steps = _steps(config, len(x_train), len(x_val))
    return Data(train, evaluation(x_val, y_val), train_steps, val_steps, len(x_train), len(x_val), mean,
                tuple(class_names), test=None if test is None else evaluation(*test),
                test_size=0 if test is None else len(test[0]))


# === File sources ===

def decoded(split, config, shuffle=False):
    """(uint8 (resize, resize, 3) image, label) per element of an EncodedSplit, decoded in parallel.

    `ignore_errors` is the safety net for a file that became unreadable after the scan: it is
    dropped (TensorFlow logs the error) instead of stopping the run.
    """
    d = config.data
    ds = split.dataset(shuffle=shuffle, seed=config.train.seed, buffer=d.shuffle_buffer)
    if shuffle:
        ds = ds.repeat()
    return (ds.map(lambda data, label: (decode.load_image(data, d.resize), label), num_parallel_calls=tf.data.AUTOTUNE)
              .ignore_errors(log_warning=True))


def file_splits(config, class_names=None):
    """(train, val, class_names, skipped): the source's splits with undecodable files left out (data.scan)."""
    train, val, names = sources.load(config, class_names)
    if config.model.num_classes != len(names):
        raise ConfigError(f"config error: model.num_classes = {config.model.num_classes} but the data has {len(names)} classes; "
                          f"expected model.num_classes = {len(names)}")
    skipped = []
    if config.data.scan:
        train, bad_train = sources.skip_undecodable(train, config, "training")
        val, bad_val = sources.skip_undecodable(val, config, "validation")
        skipped = bad_train + bad_val
    return train, val, names, skipped


def stats_path(config, train):
    d = config.data
    if d.stats_file:
        return os.path.expanduser(d.stats_file)
    count = d.stats_images if 0 < d.stats_images < train.size else train.size
    key = sources._digest(train.identity, d.resize, count)
    return os.path.join(sources.cache_dir(config), f"stats-{d.source}-{d.resize}-{count}-{key}.npz")


def training_stats(config, train, recompute=False):
    """The mean image and RGB eigen-decomposition of the training images: loaded from the cache
    file, or computed (with a progress bar) and cached. Returns (stats dict, path)."""
    d = config.data
    path = stats_path(config, train)
    if os.path.isfile(path) and not recompute:
        print(f"stats: {path}")
        return stats_lib.load(path), path
    if d.stats_file and not recompute and not os.path.isfile(path):
        print(f"stats file {path} does not exist yet: computing it")
    split = train.subset(d.stats_images) if 0 < d.stats_images < train.size else train
    print(f"computing the mean image and RGB covariance of {split.size} training images at {d.resize}x{d.resize} -> {path}",
          flush=True)
    batches = decoded(split, config).batch(64).map(lambda x, y: x).prefetch(tf.data.AUTOTUNE)
    stats = stats_lib.compute(batches.as_numpy_iterator(), split.size)
    stats_lib.save(stats, path)
    return stats, path


def _file_datasets(config):
    d, m = config.data, config.model
    train_split, val_split, class_names, skipped = file_splits(config)
    stats, path = None, ""
    if d.mean != "none" or (d.lighting and d.pca == "stats"):
        stats, path = training_stats(config, train_split)
    mean = (stats_lib.mean_to_subtract(stats, d.mean) if stats is not None
            else np.zeros((d.resize, d.resize, 3), np.float32))
    lighting = stats_lib.lighting_basis(stats, d.pca) if d.lighting else None

    def augment(image, label, seed):
        """One decoded uint8 (256, 256, 3) image -> its training crop. The batch functions of
        `preprocess` run on a batch of one: per image, slicing is cheaper than gathering crops
        out of a whole float batch, and the work spreads over tf.data's parallel calls."""
        x = preprocess.subtract_mean(image[None], mean)            # (1, 256, 256, 3)
        if d.crop == "random":
            x = preprocess.random_crop(x, m.image_size, seed)       # (1, 224, 224, 3), §4.1
        else:
            x = preprocess.center_crop(x, m.image_size)
        if d.flip:
            x = preprocess.random_flip(x, seed + [1, 0])
        if lighting is not None:
            x = preprocess.pca_lighting(x, lighting[0], lighting[1], d.lighting_std, seed + [2, 0])
        return (x[0] * d.scale if d.scale != 1.0 else x[0]), label

    seeds = tf.data.Dataset.random(seed=config.train.seed, rerandomize_each_iteration=True).batch(2)  # one per image
    train = (tf.data.Dataset.zip(train_split.dataset(shuffle=True, seed=config.train.seed, buffer=d.shuffle_buffer).repeat(), seeds)
             .map(lambda xy, s: augment(decode.load_image(xy[0], d.resize), xy[1], s), num_parallel_calls=tf.data.AUTOTUNE)
             .ignore_errors(log_warning=True)  # the safety net of `decoded`
             .batch(d.batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE)
             .with_options(_options(config)))
    val = (decoded(val_split, config)
           .batch(d.batch_size)
           .map(lambda x, y: (normalize_for_eval(x, mean, d.scale, m.image_size), y), num_parallel_calls=tf.data.AUTOTUNE)
           .prefetch(tf.data.AUTOTUNE)
           .with_options(_options(config)))
    train_steps, val_steps = _steps(config, train_split.size, val_split.size)
    return Data(train, val, train_steps, val_steps, train_split.size, val_split.size, mean, class_names,
                stats_file=path, skipped=tuple(skipped))


def normalize_for_eval(images, mean, scale, crop=None):
    """Mean subtraction and scaling as in training; the central `crop` x `crop` patch if crop is given."""
    x = preprocess.subtract_mean(images, mean)
    if crop is not None:
        x = preprocess.center_crop(x, crop)
    return x * scale if scale != 1.0 else x


def eval_images(config, mean, class_names, split="val"):
    """(batches of whole normalised images (B, H, W, C), labels, size) of `split` for evaluation.

    split "val": the validation split; "test": the test split that data.val_examples set apart
    (in-memory sources only). File sources give data.resize x data.resize images (the 10 crops are
    taken from them); in-memory sources their arrays. `mean` and `class_names` are a run's
    (mean.npy, classes.json).
    """
    d = config.data
    if split == "test" and (d.source in FILE_SOURCES or not d.val_examples):
        raise ConfigError(f"config error: this run has no separate test split (data.source = {d.source}, data.val_examples = "
                          f"{d.val_examples}): its validation split is the one to evaluate; expected --split val")
    if d.source in FILE_SOURCES:
        _, val, _, _ = file_splits(config, class_names)
        images, size = decoded(val, config), val.size
    else:
        arrays, _ = load_arrays(config)
        x, y = arrays[split]
        images, size = tf.data.Dataset.from_tensor_slices((x, y)), len(x)
    batches = (images.batch(d.batch_size)
               .map(lambda x, y: (normalize_for_eval(x, mean, d.scale), y), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    return batches, size
