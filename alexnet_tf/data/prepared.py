"""The prepared dataset on disk: what `alexnet-tf prepare` writes (prepare.py) and `data.source: prepared` reads.

    DIR/prepared-<split>.tfrecord-<i>-of-<n>   TFRecord shards of tf.train.Example {image: the §2 square
                                               as JPEG bytes, label: int64, file_name: bytes}; split train, val
    DIR/dataset_info.json, features.json, label.labels.txt
                                               TFDS's metadata: `tfds.builder_from_directory(DIR)` reads it
    DIR/stats.npz                              the training images' mean image and RGB eigen-decomposition
                                               (data/stats.py's format), from the same pass
    DIR/prepare.json                           the record: command, versions, source, splits, classes
    DIR/shards/                                one record per finished shard, for resuming (prepare.py)

The feature names are TFDS's imagenet2012 ones, so the reader is the `tfds` source's `TfdsSplit`.
"""

import json
import os

from alexnet_tf.errors import ConfigError, shown
from alexnet_tf.data.errors import DatasetNotFound
from alexnet_tf.data.sources import TfdsSplit

NAME = "prepared"
SPLITS = ("train", "val")
RECORD, STATS, SHARDS = "prepare.json", "stats.npz", "shards"
IMAGE, LABEL, FILE_NAME = "image", "label", "file_name"


def shard_name(split, index, count):
    """TFDS's default file-name template, {DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}."""
    return f"{NAME}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def features(class_names, side):
    """The tfds.features of one record."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        IMAGE: tfds.features.Image(shape=(side, side, 3), encoding_format="jpeg"),
        LABEL: tfds.features.ClassLabel(names=list(class_names)),
        FILE_NAME: tfds.features.Text(),
    })


def read_record(root):
    """DIR/prepare.json of a finished `prepare`, or DatasetNotFound (one line) naming what is missing."""
    root = os.path.abspath(os.path.expanduser(root))
    path = os.path.join(root, RECORD)
    if not os.path.isfile(path):
        unfinished = os.path.isdir(os.path.join(root, SHARDS))
        raise DatasetNotFound(f"{path} not found: {root} is {'an unfinished' if unfinished else 'not a'} prepared "
                              f"dataset; expected the output of `alexnet-tf prepare --out {root}`"
                              + (" (rerun that command to finish it)" if unfinished else ""))
    with open(path) as f:
        return json.load(f)


def prepared_source(config, class_names=None):
    """(train, val, class_names) of data.source prepared: TfdsSplits over the shards in data.path."""
    import tensorflow_datasets as tfds

    d = config.data
    root = os.path.abspath(os.path.expanduser(d.path))
    record = read_record(root)
    if record["resize"] != d.resize:
        raise ConfigError(f"data.resize = {d.resize} but {root} holds {record['resize']}x{record['resize']} images; "
                          f"expected data.resize = {record['resize']} (or prepare again with that data.resize)")
    names = tuple(record["class_names"])
    if class_names is not None and tuple(class_names) != names:
        raise DatasetNotFound(f"the run's classes {shown(list(class_names))} are not the {len(names)} classes of "
                              f"{root} {shown(list(names))}; expected the prepared copy of the run's dataset")
    builder = tfds.builder_from_directory(root)
    return (TfdsSplit(builder, "train", IMAGE, LABEL), TfdsSplit(builder, "val", IMAGE, LABEL), names)


def skipped(root):
    """The files `prepare` left out as undecodable, [{"key", "name", "reason"}] over both splits."""
    record = read_record(root)
    return [s for split in SPLITS for s in record["splits"][split]["skipped"]]


def stats_file(root):
    return os.path.join(os.path.abspath(os.path.expanduser(root)), STATS)
