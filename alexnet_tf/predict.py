"""Top-5 predictions for image files or validation images (the paper's Fig. 4 left).

Images go through `serving.Classifier.classify_bytes`, the function behind the SavedModel's
serving_default signature, so these predictions are the ones the exported model serves. The `predict`
command is predict_command.py.
"""

import os
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from alexnet_tf.errors import UserError
from alexnet_tf.serving import MAX_BATCH, decode_image


@dataclass
class Prediction:
    name: str                 # file name, or "val[i]"
    image: np.ndarray         # the decoded image (H, W, channels), 0..255, for display
    class_ids: np.ndarray     # (k,)
    class_names: list         # (k,)
    probabilities: np.ndarray  # (k,)
    true_label: object = None  # class name, or None when unknown


def true_label_from_path(path, class_names):
    """The class whose name is the image's parent directory (ImageNet-style folders), else None.

    Names are compared case-insensitively, with '/' in a class name matching '_' ("T-shirt/top").
    """
    folder = os.path.basename(os.path.dirname(os.path.abspath(path))).lower()
    for name in class_names:
        if folder == str(name).lower().replace("/", "_"):
            return name
    return None


class LabelError(UserError, ValueError):
    """A --label that names no class, or a label count that does not match the images."""


class ImageFileError(UserError, ValueError):
    """An image file that cannot be read, or whose bytes are not an image the model's decoder reads."""


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:  # missing, a directory, no permission: one line naming the file
        raise ImageFileError(f"cannot read {path} ({e.strerror}); expected an image file (JPEG, PNG, GIF, BMP "
                             "or WebP)") from None


def _classify(fn, blobs, names):
    """fn(blobs) for one batch; a decoding failure names the file instead of the batch element."""
    try:
        return fn(tf.constant(blobs))
    except tf.errors.InvalidArgumentError as e:
        found = re.search(r"image_bytes\[(\d+)\] ([^\n]*)", e.message)
        if found is None:
            raise
        raise ImageFileError(f"{names[int(found.group(1))]} {found.group(2).rstrip('.]')}") from None


def parse_label(text, class_names):
    """A class name (case-insensitive) or an integer class id -> the class name."""
    lowered = {str(c).lower(): c for c in class_names}
    if text.lower() in lowered:
        return lowered[text.lower()]
    if text.isdigit() and int(text) < len(class_names):
        return class_names[int(text)]
    raise LabelError(f"label {text!r} is neither a class name nor a class id < {len(class_names)}; "
                     f"classes: {', '.join(map(str, class_names[:20]))}{' ...' if len(class_names) > 20 else ''}")


def predict_bytes(classifier, blobs, names, true_labels=None, ten_crop=False, batch_size=64):
    """Predictions for encoded images (list of bytes)."""
    fn = tf.function(classifier.classify_bytes_ten_crop if ten_crop else classifier.classify_bytes)
    batch_size = min(batch_size, MAX_BATCH // 10 if ten_crop else MAX_BATCH)  # the signatures' per-request cap
    out = []
    for start in range(0, len(blobs), batch_size):
        result = _classify(fn, blobs[start:start + batch_size], names[start:start + batch_size])
        for j in range(len(blobs[start:start + batch_size])):
            i = start + j
            out.append(Prediction(
                name=names[i],
                image=decode_image(blobs[i], classifier.channels, i, classifier.background,
                                   min_side=classifier.resize_size).numpy(),
                class_ids=result["class_ids"][j].numpy(),
                class_names=[s.decode() for s in result["class_names"][j].numpy()],
                probabilities=result["probabilities"][j].numpy(),
                true_label=None if true_labels is None else true_labels[i]))
    return out


def predict_files(classifier, paths, labels=None, ten_crop=False):
    """Predictions for image files; true labels from `labels` (one per file) or the parent folder."""
    class_names = [s.decode() for s in classifier.class_names.numpy()]
    if labels is not None and len(labels) != len(paths):
        raise LabelError(f"{len(labels)} labels for {len(paths)} images; expected one label per image")
    blobs = [_read(p) for p in paths]
    true = [parse_label(l, class_names) for l in labels] if labels else [true_label_from_path(p, class_names) for p in paths]
    return predict_bytes(classifier, blobs, [os.path.basename(p) for p in paths], true, ten_crop)


def validation_samples(run, count, seed=0):
    """`count` random validation images of the run's dataset as encoded bytes, with names and true labels.

    In-memory sources: their arrays, PNG-encoded; file sources (imagenet, folder, tfds): the files'
    own bytes, drawn at random from the validation split.
    """
    from alexnet_tf.config import FILE_SOURCES

    if run.config.data.source in FILE_SOURCES:
        from alexnet_tf.data import file_splits

        _, val, class_names, _ = file_splits(run.config, run.class_names)
        sample = val.subset(min(count, val.size), seed)
        blobs, labels = [], []
        for data, label in sample.dataset():
            blobs.append(data.numpy())
            labels.append(class_names[int(label)])
        return blobs, [f"val[{i}]" for i in range(len(blobs))], labels
    from alexnet_tf.data import load_arrays

    arrays, class_names = load_arrays(run.config)
    images, labels = arrays["val"]
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False))
    blobs = [tf.io.encode_png(images[i]).numpy() for i in chosen]
    return blobs, [f"val[{i}]" for i in chosen], [class_names[labels[i]] for i in chosen]


def format_predictions(predictions):
    """Plain text: one block per image, its top-k names and probabilities."""
    lines = []
    for p in predictions:
        lines.append(p.name + (f"  (true: {p.true_label})" if p.true_label is not None else ""))
        for name, prob in zip(p.class_names, p.probabilities):
            mark = "*" if name == p.true_label else " "
            lines.append(f"  {mark} {prob:7.2%}  {name}")
    return "\n".join(lines)
