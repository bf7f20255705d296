"""File sources: a folder of class directories, ILSVRC-2012 through TFDS's `imagenet2012` builder, any
prepared TFDS dataset. Each split is an `EncodedSplit` of encoded image bytes and labels; decoding,
rescaling and cropping happen later, inside tf.data (`decode.load_image`).
"""

import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf

from alexnet_tf.data import folder_listing
from alexnet_tf.data.decode import decode_error, find_undecodable
from alexnet_tf.data.errors import DatasetNotFound
from alexnet_tf.user_files import read_user_file

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _digest(*parts):
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FolderSplit:
    """Files listed on disk: `paths[i]` has label `labels[i]`."""

    def __init__(self, paths, labels, identity, refused=()):
        self.paths, self.labels = np.asarray(paths, dtype=object), np.asarray(labels, np.int32)
        self.identity = identity  # what the contents depend on: names, sizes and modification times
        self.size = len(self.paths)
        self.refused = tuple(refused)  # entries the listing left out: {"key", "name", "reason"}

    def dataset(self, shuffle=False, seed=0, buffer=None):
        """(encoded bytes, label) per file. File names are small, so the shuffle covers the whole split."""
        ds = tf.data.Dataset.from_tensor_slices((self.paths.astype(str), self.labels))
        if shuffle:
            ds = ds.shuffle(self.size, seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda path, label: (tf.io.read_file(path), label), num_parallel_calls=tf.data.AUTOTUNE)

    def indexed(self):
        """(index, encoded bytes) in listing order: what `find_undecodable` scans."""
        ds = tf.data.Dataset.from_tensor_slices((tf.range(self.size, dtype=tf.int64), self.paths.astype(str)))
        return ds.map(lambda i, path: (i, tf.io.read_file(path)), num_parallel_calls=tf.data.AUTOTUNE)

    def describe(self, indices):
        """[(key, name shown to the user, bytes)] of these elements."""
        return [(self.paths[i], self.paths[i], read_user_file(self.paths[i], "image")) for i in indices]

    def without(self, keys):
        keep = ~np.isin(self.paths, list(keys))
        return FolderSplit(self.paths[keep], self.labels[keep], _digest(self.identity, sorted(keys)))

    def subset(self, count, seed=0):
        """`count` files drawn at random (for stats over part of the training set)."""
        pick = np.sort(np.random.default_rng(seed).choice(self.size, count, replace=False))
        return FolderSplit(self.paths[pick], self.labels[pick], _digest(self.identity, "subset", count, seed))


def folder_source(root, class_names=None, follow_outside=False):
    """`root/train/<class>/*` and `root/val/<class>/*` -> (train, val, class_names).

    Classes are the sorted directory names under train/ (or `class_names`, e.g. a run's
    classes.json); a validation class that is not a training class is an error. Which entries are
    files to read: folder_listing.py (`follow_outside`: data.follow_symlinks_outside).
    """
    root = os.path.abspath(os.path.expanduser(root))
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DatasetNotFound(f"folder {os.path.join(root, split)} not found: data.source = folder expects "
                                  f"{root}/train/<class>/<image> and {root}/val/<class>/<image>")
    if class_names is None:
        class_names = sorted(e.name for e in os.scandir(os.path.join(root, "train")) if folder_listing.is_dir(e))
    index = {name: i for i, name in enumerate(class_names)}
    splits = []
    for split in ("train", "val"):
        top = os.path.join(root, split)
        listing = folder_listing.list_split(top, index, os.path.realpath(root), follow_outside, split == "train")
        if not listing.paths:
            raise DatasetNotFound(f"no images in {top}: data.source = folder expects {top}/<class>/<image>")
        splits.append(FolderSplit(listing.paths, listing.labels, _digest("folder", top, class_names, listing.signature),
                                  listing.refused))
    return splits[0], splits[1], tuple(class_names)


class TfdsSplit:
    """One split of a prepared TFDS dataset, read as encoded bytes (`SkipDecoding`)."""

    refused = ()  # records are never left out before the pre-scan

    def __init__(self, builder, split, image_key, label_key, excluded=()):
        self.builder, self.split, self.image_key, self.label_key = builder, split, image_key, label_key
        self.excluded = tuple(excluded)  # tfds_id of records to leave out (undecodable)
        self.name_key = "file_name" if "file_name" in builder.info.features else "tfds_id"
        self.size = builder.info.splits[split].num_examples - len(self.excluded)
        self.identity = _digest("tfds", builder.name, str(builder.version), builder.data_dir, split,
                                builder.info.splits[split].num_examples, self.excluded)

    def _records(self, shuffle=False, seed=0):
        import tensorflow_datasets as tfds
        # One file order for every epoch: with the files reshuffled per iteration, an iterator restored from a
        # recovery checkpoint reads the later epochs' files in other orders than the uninterrupted run (TFDS's
        # shuffle seeds each iteration anew), and resume is not exact. The records are still reshuffled per
        # epoch, by `dataset`'s buffer.
        ds = self.builder.as_dataset(
            split=self.split, shuffle_files=shuffle,
            read_config=tfds.ReadConfig(add_tfds_id=True, shuffle_seed=seed, shuffle_reshuffle_each_iteration=False),
            decoders={self.image_key: tfds.decode.SkipDecoding()})
        if self.excluded:
            excluded = tf.constant(self.excluded)
            ds = ds.filter(lambda r: tf.logical_not(tf.reduce_any(tf.equal(r["tfds_id"], excluded))))
        return ds

    def dataset(self, shuffle=False, seed=0, buffer=1):
        ds = self._records(shuffle, seed)
        if shuffle:  # record files are shuffled by TFDS; records within the buffer here (encoded bytes)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda r: (r[self.image_key], tf.cast(r[self.label_key], tf.int32)))

    def indexed(self):
        return self._records().enumerate().map(lambda i, r: (i, r[self.image_key]))

    def describe(self, indices):
        wanted, out = set(int(i) for i in indices), []
        if not wanted:
            return out
        for i, r in self._records().enumerate():
            if int(i) in wanted:
                out.append((r["tfds_id"].numpy().decode(), r[self.name_key].numpy().decode(), r[self.image_key].numpy()))
        return out

    def without(self, keys):
        return TfdsSplit(self.builder, self.split, self.image_key, self.label_key, self.excluded + tuple(keys))

    def subset(self, count, seed=0):
        return _Taken(self, count, seed)


class _Taken:
    """The first `count` records of a shuffled TFDS split (TFDS records are stored grouped by class)."""

    def __init__(self, split, count, seed):
        self.inner, self.size, self.seed = split, count, seed
        self.identity = _digest(split.identity, "subset", count, seed)

    def dataset(self, shuffle=False, seed=0, buffer=1):
        return self.inner.dataset(shuffle=True, seed=self.seed, buffer=10000).take(self.size)


def tfds_source(config):
    """(train, val, class_names) of source imagenet (prepared from the manual tars on first use) or tfds."""
    import tensorflow_datasets as tfds

    d = config.data
    data_dir = os.path.expanduser(d.tfds_data_dir) if d.tfds_data_dir else None
    name = "imagenet2012" if d.source == "imagenet" else d.tfds_name
    from absl import logging as absl_logging
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # "Variant folder ... has no dataset_info.json" before the first prepare
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetNotFound(f"data.tfds_name = {name!r} is not a TFDS dataset; expected a name from tfds.list_builders()") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        if d.source != "imagenet":
            raise DatasetNotFound(f"TFDS dataset {name} is not prepared in {builder.data_dir}; prepare it first with "
                                  f"tfds.builder({name!r}, data_dir=...).download_and_prepare(), or set data.tfds_data_dir")
        root = data_dir or os.path.expanduser(tfds.core.constants.DATA_DIR)
        manual = os.path.expanduser(d.manual_dir) if d.manual_dir else os.path.join(root, "downloads", "manual")
        for tar in IMAGENET_TARS:
            if not os.path.isfile(os.path.join(manual, tar)):
                raise DatasetNotFound(f"{tar} not found in {manual}: data.source = imagenet needs "
                                      f"{' and '.join(IMAGENET_TARS)} there (set data.manual_dir)")
        print(f"preparing imagenet2012 in {builder.data_dir} from the tars in {manual} (once)", flush=True)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False))
    if not builder.info.supervised_keys:
        raise DatasetNotFound(f"TFDS dataset {name} has no (image, label) supervised keys; expected an image classification dataset")
    image_key, label_key = builder.info.supervised_keys
    val_split = d.tfds_val_split or ("validation" if "validation" in builder.info.splits else "test")
    for split in ("train", val_split):
        if split not in builder.info.splits:
            raise DatasetNotFound(f"TFDS dataset {name} has no split {split!r}; it has {', '.join(builder.info.splits)}")
    classes = tuple(builder.info.features[label_key].names)
    return (TfdsSplit(builder, "train", image_key, label_key), TfdsSplit(builder, val_split, image_key, label_key), classes)


def load(config, class_names=None):
    """(train, val, class_names) for a file source."""
    if config.data.source == "folder":
        return folder_source(config.data.path, class_names, config.data.follow_symlinks_outside)
    return tfds_source(config)


def cache_dir(config):
    return os.path.expanduser(config.data.cache_dir or "~/.cache/alexnet_tf")


def skip_undecodable(split, config, label):
    """Decode every image of `split` once (the result is cached), print one warning per undecodable
    file and a count, and return the split without them.

    Returns (split, skipped) with skipped = [{"key", "name", "reason"}].
    """
    from keras.utils import Progbar

    path = os.path.join(cache_dir(config), f"scan-{split.identity}.json")
    if os.path.isfile(path):
        with open(path) as f:
            skipped = json.load(f)["skipped"]
    else:
        print(f"checking that the {split.size} {label} images decode (once; cached in {path})", flush=True)
        bad = find_undecodable(split.indexed(), split.size, Progbar(split.size, unit_name="image"))
        skipped = [dict(key=key, name=name, reason=decode_error(data) or "failed to decode")
                   for key, name, data in split.describe(bad)]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"images": split.size, "skipped": skipped}, f, indent=1)
    for s in skipped:
        print(f"warning: skipping {s['name']}: {s['reason']}", file=sys.stderr)
    print(f"{label}: {split.size - len(skipped)} images, {len(skipped)} undecodable skipped", file=sys.stderr if skipped else sys.stdout)
    return (split.without([s["key"] for s in skipped]) if skipped else split), skipped
