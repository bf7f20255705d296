"""Top-1 / top-5 error on the validation split with the paper's two test protocols (§4.1):
the centre patch, and the 10 patches (4 corners + centre, and their mirror images) with the
network's softmax averaged over them. The `evaluate` command is evaluate_command.py.
"""

import numpy as np
import tensorflow as tf

from alexnet_tf.data import preprocess


def center_probabilities(model, images, size):
    """Softmax of the central size x size patch: (B, H, W, C) -> (B, classes)."""
    logits = model(preprocess.center_crop(images, size), training=False)
    return tf.nn.softmax(tf.cast(logits, tf.float32))


def ten_crop_probabilities(model, images, size):
    """Softmax averaged over the 10 patches of `preprocess.ten_crops`: (B, H, W, C) -> (B, classes)."""
    crops = preprocess.ten_crops(images, size)                     # (10, B, size, size, C)
    total = 0.0
    for i in range(10):  # one patch position at a time: memory stays at one batch of crops
        total += tf.nn.softmax(tf.cast(model(crops[i], training=False), tf.float32))
    return total / 10.0


def top_k_errors(probabilities, labels, ks=(1, 5)):
    """{k: fraction of images whose label is not among the k most probable classes}.

    The classes are ranked by a stable sort, so of tied probabilities the lower class index ranks
    first: the order of the class_ids the exported SavedModel serves. (The training loop's in-graph
    rule, `optim.top_k_misses`, counts every class tied with the k-th as within the top k.)
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    return {k: float(1.0 - (ranked[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def evaluate(model, batches, size, ten_crop=False, steps=None, total=None, progress=True):
    """Both protocols over `batches` of whole normalised images (B, H, W, C) and labels.

    Returns {"images": n, "center": {"top1_error", "top5_error"}, "ten_crop": {...}} (ten_crop
    only if asked).
    """
    from keras.utils import Progbar

    @tf.function(reduce_retracing=True)
    def predict(images):
        center = center_probabilities(model, images, size)
        return center, (ten_crop_probabilities(model, images, size) if ten_crop else center)

    labels, center, ten = [], [], []
    bar = Progbar(total, unit_name="image") if progress else None
    for step, (images, y) in enumerate(batches):
        if steps is not None and step >= steps:
            break
        c, t = predict(images)
        labels.append(np.asarray(y))
        center.append(np.asarray(c))
        ten.append(np.asarray(t))
        if bar is not None:
            bar.add(len(y))
    labels = np.concatenate(labels)
    top5 = min(5, center[0].shape[-1])
    results = {"images": int(len(labels))}
    protocols = [("center", center)] + ([("ten_crop", ten)] if ten_crop else [])
    for name, probs in protocols:
        errors = top_k_errors(np.concatenate(probs), labels, ks=(1, top5))
        results[name] = {"top1_error": errors[1], "top5_error": errors[top5]}
    return results
