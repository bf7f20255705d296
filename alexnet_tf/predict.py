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
from alexnet_tf.user_files import check_user_file, read_user_file


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


def _function(classifier, ten_crop):
    return tf.function(classifier.classify_bytes_ten_crop if ten_crop else classifier.classify_bytes)


def _predict_batch(fn, classifier, blobs, names, true_labels):
    """Predictions for one batch of encoded images (at most the signature's per-request cap)."""
    result = _classify(fn, blobs, names)
    return [Prediction(name=names[j],
                       image=decode_image(blobs[j], classifier.channels, j, classifier.background,
                                          min_side=classifier.resize_size).numpy(),
                       class_ids=result["class_ids"][j].numpy(),
                       class_names=[s.decode() for s in result["class_names"][j].numpy()],
                       probabilities=result["probabilities"][j].numpy(),
                       true_label=None if true_labels is None else true_labels[j])
            for j in range(len(blobs))]


def _batch_size(batch_size, ten_crop):
    return min(batch_size, MAX_BATCH // 10 if ten_crop else MAX_BATCH)  # the signatures' per-request cap


def predict_bytes(classifier, blobs, names, true_labels=None, ten_crop=False, batch_size=64):
    """Predictions for encoded images (list of bytes)."""
    fn, step, out = _function(classifier, ten_crop), _batch_size(batch_size, ten_crop), []
    for start in range(0, len(blobs), step):
        part = slice(start, start + step)
        out += _predict_batch(fn, classifier, blobs[part], names[part], None if true_labels is None else true_labels[part])
    return out


# The most bytes of image files predict_files holds at once: a batch ends before it would exceed this
# (one file of up to user_files.LIMITS["image"] always fits), so many large files never add up.
BATCH_BYTES = 256 * 1024 * 1024


def _file_batches(sizes, count):
    """Lists of indices into `sizes`: at most `count` files and BATCH_BYTES bytes each (or one file)."""
    batch, total = [], 0
    for i, size in enumerate(sizes):
        if batch and (len(batch) == count or total + size > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(i)
        total += size
    if batch:
        yield batch


def predict_files(classifier, paths, labels=None, ten_crop=False, batch_size=64):
    """Predictions for image files; true labels from `labels` (one per file) or the parent folder.

    Every path is checked (a regular file within user_files' image limit) before any is read; the
    files are then read batch by batch, so at most BATCH_BYTES of them are held at once."""
    class_names = [s.decode() for s in classifier.class_names.numpy()]
    if labels is not None and len(labels) != len(paths):
        raise LabelError(f"{len(labels)} labels for {len(paths)} images; expected one label per image")
    sizes = [check_user_file(p, "image", error=ImageFileError) for p in paths]
    true = [parse_label(l, class_names) for l in labels] if labels else [true_label_from_path(p, class_names) for p in paths]
    fn, out = _function(classifier, ten_crop), []
    for batch in _file_batches(sizes, _batch_size(batch_size, ten_crop)):
        blobs = [read_user_file(paths[i], "image", error=ImageFileError) for i in batch]
        out += _predict_batch(fn, classifier, blobs, [os.path.basename(paths[i]) for i in batch], [true[i] for i in batch])
    return out


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
