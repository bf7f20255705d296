"""The tf.data pipelines: one augmentation function, one seed stream, one evaluation transform.

In-memory sources (fashion_mnist, synthetic): uint8 arrays -> shuffle -> batch -> `augment` per
batch. File sources (imagenet, folder, tfds), per image: read -> decode the central square (fused
decode-and-crop for JPEG) -> rescale to data.resize (§2: 256) -> uint8 -> `augment` per image
(slicing one image is cheaper than gathering crops out of a whole float batch, and the work spreads
over tf.data's parallel calls) -> batch. Source prepared (already data.resize squares): draw the
crop's window, decode only it (fused_crop.py) -> `augment` the rest -> batch. With data.augment_on
device, tf.data stops at the uint8 crop and the draws of the rest, which the training step applies
(device_augment.py). Evaluation: in-memory validation and test batches go
through `normalize_for_eval`; file-source images through `eval_decoded`, the SavedModel's own
decoder and transform (`decode.decode_image`, `preprocess.eval_normalise`).
Every step is a TensorFlow op running in parallel inside tf.data; no Python per image.
"""

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from alexnet_tf.config import FILE_SOURCES
from alexnet_tf.errors import ConfigError
from alexnet_tf.data import decode, device_augment, fused_crop, prepared, preprocess, sources
from alexnet_tf.data import stats as stats_lib
from alexnet_tf.data.splits import file_splits, load_arrays


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
    source: object = None       # TrainSource: what distribute.input sharded and data.service build their streams from
    device_augment: object = None  # data.augment_on device: the DeviceAugment the training step applies to `train`'s images


@dataclass
class TrainSource:
    """The training examples and their transform, for the inputs that order the examples themselves
    (data/sharding.py, data/service.py) instead of reading `Data.train`."""

    transform: object           # (xy, seed) -> (network input, label): of a batch (arrays) or of one image (files)
    arrays: tuple = None        # in-memory sources: (x_train, y_train), augmented per batch
    split: object = None        # file sources: the training EncodedSplit (FolderSplit, TfdsSplit), per image


# === The transforms ===

def augment(images, seed, mean, *, scale=1.0, pad=0, crop=None, size=None, flip=False, lighting=None,
            lighting_std=0.1):
    """A batch (B, H, W, C) of 0..255 training images -> the network's inputs, in the paper's order:

        x = images - mean                        (§2)
        x = pad(x, pad)                          (in-memory sources: data.random_crop)
        x = crop(x, size)                        'random' (§4.1) or 'center'; None = keep the size
        x = flip(x)                              left-right with probability 1/2 (§4.1)
        x = x + P (alpha * lambda)               PCA lighting (§4.1), lighting = (amplitudes, eigvec)
        x = x * scale                            (data.scale)

    `seed` (shape [2]) decides every random draw: the crop uses it, the flip seed + [1, 0], the
    lighting seed + [2, 0].
    """
    x = preprocess.subtract_mean(images, mean)
    if pad:
        x = preprocess.pad(x, pad)
    if crop == "random":
        x = preprocess.random_crop(x, size, seed)
    elif crop == "center":
        x = preprocess.center_crop(x, size)
    if flip:
        x = preprocess.random_flip(x, seed + [1, 0])
    if lighting is not None:
        x = preprocess.pca_lighting(x, lighting[0], lighting[1], lighting_std, seed + [2, 0])
    return x * scale if scale != 1.0 else x


def normalize_for_eval(images, mean, scale, crop=None):
    """Mean subtraction and scaling as in training; the central `crop` x `crop` patch if crop is given."""
    x = preprocess.subtract_mean(images, mean)
    if crop is not None:
        x = preprocess.center_crop(x, crop)
    return x * scale if scale != 1.0 else x


def seeds(seed):
    """The seed stream: one stateless seed (shape [2]) per element it is zipped with (a batch of an
    in-memory source, an image of a file source), new for every element of every epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


# === Assembly ===

def make_datasets(config):
    """Training, validation (and with data.val_examples, test) tf.data pipelines for `config`."""
    if config.data.source in FILE_SOURCES:
        return _file_datasets(config)
    return _array_datasets(config)


def _array_datasets(config):
    d, m = config.data, config.model
    arrays, class_names = load_arrays(config)
    (x_train, y_train), (x_val, y_val) = arrays["train"], arrays["val"]
    mean = _upscaled_mean(preprocess.mean_of(x_train, d.mean), d.upscale)
    lighting = None
    if d.lighting:
        acc = stats_lib.Accumulator()
        for i in range(0, len(x_train), 1024):
            acc.add(x_train[i:i + 1024])
        lighting = stats_lib.lighting_basis(acc.result(), d.pca)
    # data.upscale: rescaled images, random model.image_size crops (§4.1); else data.random_crop's pad-and-crop
    crop = "random" if d.random_crop or d.upscale else None
    size = m.image_size if d.upscale else x_train.shape[1]
    device = device_augment.for_config(config, mean, lighting, size)  # (not cropped: config_checks)

    def train_batch(xy, seed):
        if device is not None:
            return device.host(xy[0], seed), xy[1]
        images = preprocess.upscale(xy[0], d.upscale) if d.upscale else xy[0]
        x = augment(images, seed, mean, scale=d.scale, pad=d.random_crop, crop=crop, size=size, flip=d.flip,
                    lighting=lighting, lighting_std=d.lighting_std)
        return x, xy[1]

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(min(d.shuffle_buffer, len(x_train)), seed=config.train.seed, reshuffle_each_iteration=True)
             .repeat()
             .batch(d.batch_size, drop_remainder=True))
    train = (tf.data.Dataset.zip(train, seeds(config.train.seed))
             .map(train_batch, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE)
             .with_options(_options(config)))

    def evaluation(x, y):  # in the arrays' order, whatever train.deterministic says; the centre crop
        return _evaluation(tf.data.Dataset.from_tensor_slices((x, y)), d.batch_size, mean, d.scale, d.upscale,
                           m.image_size if d.upscale else None)

    test = arrays.get("test")
    train_steps, val_steps = _steps(config, len(x_train), len(x_val))
    return Data(train, evaluation(x_val, y_val), train_steps, val_steps, len(x_train), len(x_val), mean,
                tuple(class_names), test=None if test is None else evaluation(*test),
                test_size=0 if test is None else len(test[0]), source=TrainSource(train_batch, arrays=(x_train, y_train)),
                device_augment=device)


def _upscaled_mean(mean, upscale):
    """The mean image at data.upscale's size (exact: bilinear rescaling is linear), or as it is."""
    return preprocess.upscale(mean[None], upscale)[0].numpy() if upscale else mean


def _file_datasets(config):
    d, m = config.data, config.model
    train_split, val_split, class_names, skipped = file_splits(config)
    stats, stats_file = None, ""
    if d.mean != "none" or (d.lighting and d.pca == "stats"):
        stats, stats_file = training_stats(config, train_split)
    mean = (stats_lib.mean_to_subtract(stats, d.mean) if stats is not None
            else np.zeros((d.resize, d.resize, 3), np.float32))
    lighting = stats_lib.lighting_basis(stats, d.pca) if d.lighting else None
    device = device_augment.for_config(config, mean, lighting, m.image_size)
    transform = _train_image(config, mean, lighting) if device is None else device_augment.crop_transform(config, device)

    train = (tf.data.Dataset.zip(train_split.dataset(shuffle=True, seed=config.train.seed, buffer=d.shuffle_buffer).repeat(),
                                 seeds(config.train.seed))
             .map(transform, num_parallel_calls=tf.data.AUTOTUNE)
             .ignore_errors(log_warning=True)  # the safety net of `decoded`
             .batch(d.batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE)
             .with_options(_options(config)))
    val = (eval_decoded(val_split, config, mean).batch(d.batch_size)
           .map(lambda x, y: (preprocess.center_crop(x, m.image_size), y), num_parallel_calls=tf.data.AUTOTUNE)
           .prefetch(tf.data.AUTOTUNE).with_options(_options(config)))
    train_steps, val_steps = _steps(config, train_split.size, val_split.size)
    return Data(train, val, train_steps, val_steps, train_split.size, val_split.size, mean, class_names,
                stats_file=stats_file, skipped=tuple(skipped), source=TrainSource(transform, split=train_split),
                device_augment=device)


def _train_image(config, mean, lighting):
    """((encoded bytes, label), seed) -> (network input, label) of a file source. Prepared JPEGs, all
    data.resize square, decode only the crop's window (fused_crop.py); others decode the §2 square first."""
    d, m = config.data, config.model
    options = dict(scale=d.scale, flip=d.flip, lighting=lighting, lighting_std=d.lighting_std)

    def whole(xy, seed):
        image = decode.load_image(xy[0], d.resize)[None]                    # (1, 256, 256, 3) uint8
        x = augment(image, seed, mean, crop=d.crop, size=m.image_size, **options)  # (1, 224, 224, 3)
        return x[0], xy[1]

    def fused(xy, seed):
        top, left = fused_crop.window(seed, m.image_size, d.resize, d.crop)
        image = fused_crop.decode_window(xy[0], top, left, m.image_size)[None]  # (1, 224, 224, 3) uint8
        x = augment(image, seed, fused_crop.mean_window(mean, top, left, m.image_size), **options)
        return x[0], xy[1]

    return fused if d.source == "prepared" else whole


def _evaluation(images, batch_size, mean, scale, upscale=0, crop=None):
    """Batched (normalised images, labels) of a one-pass in-memory dataset of (image, label), rescaled to
    `upscale` (data.upscale, 0 = as they are) and centre-cropped to `crop` (None = whole)."""
    def normalise(x, y):
        return normalize_for_eval(preprocess.upscale(x, upscale) if upscale else x, mean, scale, crop), y
    return images.batch(batch_size).map(normalise, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _steps(config, train_size, val_size):
    d, t = config.data, config.train
    train_steps = train_size // d.batch_size
    if train_steps == 0:  # batches drop their remainder: an epoch of no steps would train nothing
        where = f" in {d.path}" if d.source == "folder" else ""
        raise ConfigError(f"data.batch_size = {d.batch_size} is larger than the {train_size} training "
                          f"images of data.source = {d.source}{where}; expected 1 to {max(train_size, 1)}")
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


# === File sources: decoding and the training set's statistics ===

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


def eval_decoded(split, config, mean):
    """(whole normalised image (resize, resize, C), label) per element of an EncodedSplit, through the
    evaluation transform the SavedModel serves (`decode.decode_image`, `preprocess.eval_normalise`):
    validation, `evaluate` and the served model see the same pixels. The training images go through
    `decode.load_image` instead (a partial JPEG decode to uint8, cheaper per step)."""
    d = config.data

    def normalise(data, label):
        image = decode.decode_image(data, config.model.channels, min_side=d.resize)[None]  # (1, H, W, C) float32
        return preprocess.eval_normalise(image, mean, resize_size=d.resize, scale=d.scale)[0], label

    return (split.dataset(shuffle=False, seed=config.train.seed, buffer=d.shuffle_buffer)
            .map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors(log_warning=True))


def stats_path(config, train, recompute=False):
    d = config.data
    if d.stats_file:
        return os.path.expanduser(d.stats_file)
    if d.source == "prepared" and not 0 < d.stats_images < train.size and not recompute:
        return prepared.stats_file(d.path)  # computed by `prepare` from the original images
    count = d.stats_images if 0 < d.stats_images < train.size else train.size
    key = sources._digest(train.identity, d.resize, count)
    return os.path.join(sources.cache_dir(config), f"stats-{d.source}-{d.resize}-{count}-{key}.npz")


def training_stats(config, train, recompute=False):
    """The mean image and RGB eigen-decomposition of the training images: loaded from the cache
    file, or computed (with a progress bar) and cached. Returns (stats dict, path)."""
    d = config.data
    path = stats_path(config, train, recompute)
    if os.path.lexists(path) and not recompute:  # a FIFO or a directory there is refused in one line, not replaced
        print(f"stats: {path}")
        return stats_lib.load(path), path
    if d.stats_file and not recompute:  # (it does not exist: lexists above)
        print(f"stats file {path} does not exist yet: computing it")
    split = train.subset(d.stats_images) if 0 < d.stats_images < train.size else train
    print(f"computing the mean image and RGB covariance of {split.size} training images at {d.resize}x{d.resize} -> {path}",
          flush=True)
    batches = decoded(split, config).batch(64).map(lambda x, y: x).prefetch(tf.data.AUTOTUNE)
    stats = stats_lib.compute(batches.as_numpy_iterator(), split.size)
    stats_lib.save(stats, path)
    return stats, path


# === Evaluation of a finished run ===

def eval_images(config, mean, class_names, split="val"):
    """(batches of whole normalised images (B, H, W, C), labels, size) of `split` for evaluation.

    split "val": the validation split; "test": the test split that data.val_examples set apart
    (in-memory sources only). File sources give data.resize x data.resize images (the 10 crops are
    taken from them); in-memory sources their arrays, rescaled to data.upscale if set. `mean` and `class_names` are a run's
    (mean.npy, classes.json).
    """
    d = config.data
    if split == "test" and (d.source in FILE_SOURCES or not d.val_examples):
        raise ConfigError(f"this run has no separate test split (data.source = {d.source}, data.val_examples = "
                          f"{d.val_examples}): its validation split is the one to evaluate; expected --split val")
    if d.source in FILE_SOURCES:
        _, val, _, _ = file_splits(config, class_names)
        batches = eval_decoded(val, config, mean).batch(d.batch_size).prefetch(tf.data.AUTOTUNE)
        return batches, val.size
    arrays, _ = load_arrays(config)
    x, y = arrays[split]
    return _evaluation(tf.data.Dataset.from_tensor_slices((x, y)), d.batch_size, mean, d.scale, d.upscale), len(x)
