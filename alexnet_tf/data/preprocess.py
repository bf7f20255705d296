"""Preprocessing as small pure functions on batches (B, H, W, C); each works eagerly and in tf.data.

Pixels stay on the paper's scale: raw 0..255 values minus the training set's mean (§2).
Random functions are stateless: the same `seed` (a shape-[2] int tensor) gives the same result.
"""

import numpy as np
import tensorflow as tf


def mean_of(images, kind):
    """Mean of uint8 training images (N, H, W, C): per pixel ('image', §2), per channel, or zeros."""
    images = np.asarray(images)
    if kind == "image":
        return images.mean(axis=0, dtype=np.float64).astype(np.float32)
    if kind == "channel":
        return np.broadcast_to(images.mean(axis=(0, 1, 2), dtype=np.float64), images.shape[1:]).astype(np.float32)
    if kind == "none":
        return np.zeros(images.shape[1:], np.float32)
    raise ValueError(f"mean kind {kind!r}; expected 'image', 'channel' or 'none'")


def subtract_mean(images, mean):
    """uint8 (or float) images on the 0..255 scale minus the mean: float32."""
    return tf.cast(images, tf.float32) - tf.cast(mean, tf.float32)


def random_flip(images, seed):
    """Mirror each image left-right with probability 1/2 (§4.1)."""
    batch = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([batch, 1, 1, 1], seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def random_crop(images, size, seed):
    """A size x size window at a uniformly random position in each image (§4.1)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    top = tf.random.stateless_uniform([batch], seed, 0, height - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seed + [0, 1], 0, width - size + 1, dtype=tf.int32)
    return crop_at(images, top, left, size)


def crop_at(images, top, left, size):
    """Per-image crops: image b's window starts at (top[b], left[b])."""
    rows = top[:, None] + tf.range(size)[None, :]    # (B, size)
    cols = left[:, None] + tf.range(size)[None, :]
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def center_crop(images, size):
    """The central size x size window (rounded towards the top-left when the margin is odd)."""
    shape = tf.shape(images)
    top, left = (shape[1] - size) // 2, (shape[2] - size) // 2
    return images[:, top:top + size, left:left + size, :]


def pad(images, amount):
    """Zero-pad height and width by `amount` on every side (zero = the mean after subtraction)."""
    return tf.pad(images, [[0, 0], [amount, amount], [amount, amount], [0, 0]])


# === Evaluation (test-time) transform ===

def resize_shorter_side(images, size):
    """Resize (B, H, W, C) images so that their shorter side is `size`, keeping the aspect ratio (§2).

    Bilinear with antialiasing (a triangle filter as wide as the scale factor), so large photos
    shrunk to small geometries keep their content instead of aliasing. Returns float32.
    """
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    shorter = tf.minimum(height, width)
    new_height = tf.where(height == shorter, size, _scaled(height, size, shorter))
    new_width = tf.where(width == shorter, size, _scaled(width, size, shorter))
    return tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_height, new_width]),
                           method="bilinear", antialias=True)


def _scaled(side, size, shorter):
    return tf.cast(tf.round(tf.cast(side, tf.float64) * size / tf.cast(shorter, tf.float64)), tf.int32)


def ten_crops(images, size):
    """The paper's ten test patches (§4.1): four corners and the centre, then their mirror images.

    (B, H, W, C) -> (B, 10, size, size, C).
    """
    shape = tf.shape(images)
    bottom, right = shape[1] - size, shape[2] - size
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right)]
    patches = [images[:, t:t + size, l:l + size, :] for t, l in corners] + [center_crop(images, size)]
    patches += [tf.reverse(p, axis=[2]) for p in patches]
    return tf.stack(patches, axis=1)


def eval_preprocess(images, mean, *, image_size, resize_size, scale=1.0, crops="center"):
    """The evaluation transform for a batch of same-size images of any size on the 0..255 scale.

    1. resize the shorter side to `resize_size` and keep the central square (§2: 256x256);
    2. subtract the training set's mean image (bilinearly resized to resize_size if its size differs);
    3. crop `image_size`: the centre ('center') or the paper's ten patches ('ten', §4.1);
    4. multiply by `scale` (data.scale).

    For small geometries (Fashion-MNIST) resize_size == image_size and a 28x28 input passes
    steps 1 and 3 unchanged, so this equals the validation pipeline of `make_datasets`.
    Returns (B, image_size, image_size, C), or (B, 10, image_size, image_size, C) for crops='ten'.
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops={crops!r}; expected 'center' or 'ten'")
    if resize_size < image_size:
        raise ValueError(f"resize_size={resize_size} is smaller than image_size={image_size}; expected >= image_size")
    x = center_crop(resize_shorter_side(images, resize_size), resize_size)  # (B, R, R, C)
    mean = tf.convert_to_tensor(mean, tf.float32)
    if tuple(mean.shape[:2]) != (resize_size, resize_size):
        mean = tf.image.resize(mean, [resize_size, resize_size], method="bilinear", antialias=True)
    x = subtract_mean(x, mean)
    x = center_crop(x, image_size) if crops == "center" else ten_crops(x, image_size)
    return x * scale if scale != 1.0 else x
