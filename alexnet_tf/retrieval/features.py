"""The last hidden layer's vectors (fc7 after ReLU; dropout is off at inference) of images, cached
per split in RUN_DIR/features/ for as long as the weights and the images are the same."""

import hashlib
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

# the module, not its names: importing serving imports Keras, which registers this package's classes
# (registration.py) and so imports this module while serving is still half-initialised
from alexnet_tf import serving

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
    chunks = [blobs[i:i + serving.MAX_BATCH] for i in range(0, len(blobs), serving.MAX_BATCH)]  # the signatures' per-request cap
    return np.concatenate([features(classifier.preprocess_bytes(tf.constant(c)), training=False).numpy()
                           for c in chunks])


def cached_features(run, classifier, split, batch_size=256, progress=True, max_images=None, seed=0):
    """(features, labels, images) of a split of the run's dataset; features cached in RUN/features/.

    In-memory sources give their arrays (all of them, or `max_images` drawn at random with `seed`);
    file sources (imagenet, folder, tfds) stream their files through the serving transform, at most
    `max_images` (default FILE_SOURCE_MAX_IMAGES) drawn at random, and `images` holds
    THUMBNAIL x THUMBNAIL display copies. The cache is reused when it was computed from the same
    weights (fingerprint) and images.
    """
    from alexnet_tf.config import FILE_SOURCES

    if run.config.data.source in FILE_SOURCES:
        return _file_features(run, classifier, split, batch_size, progress, max_images, seed)
    from alexnet_tf.data import load_arrays

    arrays, _ = load_arrays(run.config)
    images, labels = arrays[split]
    if max_images and max_images < len(images):
        chosen = np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))
        images, labels = images[chosen], labels[chosen]
    meta = {"layer": FEATURE_LAYER, "weights": weights_fingerprint(classifier.model), "count": len(images),
            "images": hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()}
    cached = _read_cache(run, split, meta)
    if cached is not None:
        return cached, labels, images
    if progress:
        print(f"extracting {FEATURE_LAYER} features of {len(images)} {split} images")
    features = extract_features(classifier, images, batch_size, progress)
    _write_cache(run, split, meta, features)
    return features, labels, images


# File-source images are kept for display (panels, the projector's sprite, `codes --pixels`) as
# central squares of this side; a default cap keeps a whole ImageNet split (1.28 M images) out of reach
# of a command run without thinking.
THUMBNAIL = 96
FILE_SOURCE_MAX_IMAGES = 20_000


def _file_features(run, classifier, split, batch_size, progress, max_images, seed):
    from alexnet_tf.data import file_splits
    from alexnet_tf.data.decode import decode_image
    from alexnet_tf.data.preprocess import resize_central_square

    train, val, _, _ = file_splits(run.config, run.class_names)
    source = train if split == "train" else val
    limit = FILE_SOURCE_MAX_IMAGES if max_images is None else max_images
    if source.size > limit:
        if progress:
            print(f"{split}: {limit} of {source.size} images, drawn at random (--max-images)")
        source = source.subset(limit, seed)
    side = THUMBNAIL if classifier.resize_size > THUMBNAIL else classifier.resize_size
    meta = {"layer": FEATURE_LAYER, "weights": weights_fingerprint(classifier.model), "count": int(source.size),
            "images": source.identity, "thumbnail": side}
    cached = _read_cache(run, split, meta)
    thumbs = os.path.join(run.run_dir, "features", f"{split}_thumbnails.npz")
    if cached is not None and os.path.isfile(thumbs):
        with np.load(thumbs) as f:
            return cached, f["labels"], f["images"]

    def model_input_and_thumbnail(data, label):
        # one decode per file for both: the serving transform (Classifier.preprocess) and the display copy
        x = decode_image(data, classifier.channels, 0, classifier.background, min_side=classifier.resize_size)[None]
        thumb = tf.cast(tf.clip_by_value(tf.round(resize_central_square(x, side)[0]), 0, 255), tf.uint8)
        return classifier.preprocess(x)[0], thumb, label

    net = feature_model(classifier.model)
    features_net = tf.function(lambda inputs: net(inputs, training=False), reduce_retracing=True)
    batches = (source.dataset().map(model_input_and_thumbnail, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size).prefetch(2))
    labels, images, features = [], [], []
    bar = keras.utils.Progbar(source.size, unit_name="image", verbose=1 if sys.stdout.isatty() else 2) if progress else None
    if progress:
        print(f"extracting {FEATURE_LAYER} features of {source.size} {split} images")
    for inputs, t, y in batches:
        f = features_net(inputs)
        features.append(f.numpy())
        images.append(t.numpy())
        labels.append(y.numpy())
        if bar:
            bar.add(len(y))
    features = np.concatenate(features).astype(np.float32)
    labels, images = np.concatenate(labels), np.concatenate(images)
    _write_cache(run, split, meta, features)
    np.savez(thumbs, labels=labels, images=images)
    return features, labels, images


def _paths(run, split):
    directory = os.path.join(run.run_dir, "features")
    return directory, os.path.join(directory, f"{split}.npy"), os.path.join(directory, f"{split}.json")


def _read_cache(run, split, meta):
    _, path, meta_path = _paths(run, split)
    if os.path.isfile(path) and os.path.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f) == meta:
                return np.load(path)
    return None


def _write_cache(run, split, meta, features):
    directory, path, meta_path = _paths(run, split)
    os.makedirs(directory, exist_ok=True)
    np.save(path, features)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
