"""The last hidden layer's vectors (fc7 after ReLU; dropout is off at inference) of images, cached
per split in RUN_DIR/features/ for as long as the weights and the images are the same."""

import hashlib
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

FEATURE_LAYER = "fc7"


def feature_model(model):
    """images -> the input of fc8, i.e. the last hidden layer (fc7's two halves concatenated, after ReLU)."""
    return keras.Model(model.inputs, model.get_layer("fc8").input, name="features")


def weights_fingerprint(model):
    """A hash of the model's weights: the feature cache is valid only for the same weights."""
    digest = hashlib.sha1()
    for w in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return digest.hexdigest()


def extract_features(classifier, images, batch_size=256, progress=True):
    """(N, H, W, C) 0..255 images -> (N, D) float32 last-hidden-layer vectors, with the evaluation
    preprocessing of `classifier` (serving.Classifier), in batches."""
    features = feature_model(classifier.model)

    @tf.function(reduce_retracing=True)
    def run(batch):
        return features(classifier.preprocess(tf.cast(batch, tf.float32)), training=False)

    bar = keras.utils.Progbar(len(images), unit_name="image", verbose=1 if sys.stdout.isatty() else 2) if progress else None
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        out.append(run(batch).numpy())
        if bar:
            bar.add(len(batch))
    return np.concatenate(out).astype(np.float32)


def features_of_bytes(classifier, blobs):
    """Last-hidden-layer vectors of encoded images (any sizes), preprocessed as the serving signature does."""
    features = feature_model(classifier.model)
    return features(classifier.preprocess_bytes(tf.constant(blobs)), training=False).numpy()


def cached_features(run, classifier, split, batch_size=256, progress=True):
    """(features, labels, images) of a split of the run's dataset; features cached in RUN/features/.

    The cache is reused when it was computed from the same weights (fingerprint) and images.
    """
    from alexnet_tf.data import load_arrays

    arrays, _ = load_arrays(run.config)
    images, labels = arrays[split]
    directory = os.path.join(run.run_dir, "features")
    path, meta_path = os.path.join(directory, f"{split}.npy"), os.path.join(directory, f"{split}.json")
    meta = {"layer": FEATURE_LAYER, "weights": weights_fingerprint(classifier.model), "count": len(images),
            "images": hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()}
    if os.path.isfile(path) and os.path.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f) == meta:
                return np.load(path), labels, images
    if progress:
        print(f"extracting {FEATURE_LAYER} features of {len(images)} {split} images")
    features = extract_features(classifier, images, batch_size, progress)
    os.makedirs(directory, exist_ok=True)
    np.save(path, features)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return features, labels, images
