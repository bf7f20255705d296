"""Which images train, validate and test: the in-memory sources' arrays and the file sources' splits.

With data.val_examples = n, "val" is n training images held out (never trained on) and "test" the
source's test split; without it "val" is the test split. data.train_examples keeps a fixed subset.
"""

import numpy as np

from alexnet_tf.errors import ConfigError
from alexnet_tf.data import fashion_mnist, prepared, sources, synthetic


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
        raise ConfigError(f"data.source = {d.source} keeps its images in files, not arrays; "
                          "expected fashion_mnist or synthetic here (file sources are read by file_splits)")
    if d.val_examples:
        arrays["test"] = arrays["val"]
        arrays["train"], arrays["val"] = held_out(*arrays["train"], d.val_examples)
    if d.train_examples:
        arrays["train"] = training_subset(*arrays["train"], d.train_examples)
    return arrays, names


def held_out(images, labels, count):
    """(the rest, `count` held-out examples): a fixed random split (SUBSET_SEED), each part in the original order."""
    if not 0 < count < len(images):
        raise ConfigError(f"data.val_examples = {count}; expected 1 to {len(images) - 1} "
                          f"for {len(images)} training images")
    order = np.random.default_rng(SUBSET_SEED).permutation(len(images))
    val, rest = np.sort(order[:count]), np.sort(order[count:])
    return (images[rest], labels[rest]), (images[val], labels[val])


def training_subset(images, labels, count):
    """A fixed random subset of `count` examples (SUBSET_SEED), kept in the original order."""
    if count > len(images):
        raise ConfigError(f"data.train_examples = {count} exceeds the {len(images)} training images")
    keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(images))[:count])
    return images[keep], labels[keep]


def file_splits(config, class_names=None):
    """(train, val, class_names, skipped): the source's splits without the entries its listing left out and
    (data.scan) without the undecodable files; `skipped` lists both (source prepared: `prepare` left them out
    and named them in its record)."""
    if config.data.source == "prepared":
        train, val, names = prepared.prepared_source(config, class_names)
    else:
        train, val, names = sources.load(config, class_names)
    if config.model.num_classes != len(names):
        raise ConfigError(f"model.num_classes = {config.model.num_classes} but the data has {len(names)} classes; "
                          f"expected model.num_classes = {len(names)}")
    if config.data.source == "prepared":
        return train, val, names, prepared.skipped(config.data.path)
    skipped = list(train.refused) + list(val.refused)  # what the folder listing left out (folder_listing.py)
    if config.data.scan:
        train, bad_train = sources.skip_undecodable(train, config, "training")
        val, bad_val = sources.skip_undecodable(val, config, "validation")
        skipped += bad_train + bad_val
    return train, val, names, skipped
