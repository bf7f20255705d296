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
    return flip_where(images, flip_draws(tf.shape(images)[0], seed))


def flip_draws(batch, seed):
    """(batch,) bool: which images `random_flip` mirrors for this seed."""
    return tf.reshape(tf.random.stateless_uniform([batch, 1, 1, 1], seed) < 0.5, [batch])


def flip_where(images, flips):
    """Mirror left-right the images whose `flips` (batch,) bool is true."""
    return tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)


def random_crop(images, size, seed):
    """A size x size window at a uniformly random position in each image (§4.1)."""
    shape = tf.shape(images)
    top, left = random_window(shape[0], shape[1], shape[2], size, seed)
    return crop_at(images, top, left, size)


def random_window(batch, height, width, size, seed):
    """(top, left), each (batch,) int32: where `random_crop` cuts each image. The fused decode-and-crop of
    prepared JPEGs (fused_crop.py) draws its window here too, so both crop the same place for one seed."""
    top = tf.random.stateless_uniform([batch], seed, 0, height - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seed + [0, 1], 0, width - size + 1, dtype=tf.int32)
    return top, left


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


def upscale(images, size):
    """Bilinear rescaling of (B, h, w, C) images to (B, size, size, C) float32 on the same 0..255 scale.

    Linear in the pixels, so upscale(mean of images) = mean of upscale(images): the mean image can be
    computed at the arrays' size and rescaled (data.upscale).
    """
    return tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear")


def pad(images, amount):
    """Zero-pad height and width by `amount` on every side (zero = the mean after subtraction)."""
    return tf.pad(images, [[0, 0], [amount, amount], [amount, amount], [0, 0]])


# === Evaluation (test-time) transform ===

def resize_central_square(images, size):
    """§2: rescale the shorter side to `size` and keep the central size x size patch; float32.

    (B, H, W, C) -> (B, size, size, C). Implemented as "central square, then resize to
    size x size" (the scale factor is size / shorter side either way; this decodes and resizes
    less), bilinear with antialiasing so that large photos shrunk to small geometries keep their
    content instead of aliasing. An image already size x size passes unchanged.
    """
    shape = tf.shape(images)
    side = tf.minimum(shape[1], shape[2])
    top, left = (shape[1] - side) // 2, (shape[2] - side) // 2
    square = images[:, top:top + side, left:left + side, :]
    return tf.image.resize(tf.cast(square, tf.float32), [size, size], method="bilinear", antialias=True)


def pca_lighting(images, amplitudes, eigvec, std, seed):
    """§4.1: add [p1 p2 p3][a1 s1, a2 s2, a3 s3]^T to every pixel of each image, a_i ~ N(0, std).

    amplitudes: (3,) the s_i; eigvec: (3, 3) with p_i as columns. One draw of the a_i per image
    per call, i.e. per presentation of the image.
    """
    return add_shift(images, lighting_shift(tf.shape(images)[0], amplitudes, eigvec, std, seed))


def lighting_shift(batch, amplitudes, eigvec, std, seed):
    """(batch, 3) float32: the RGB shift [p1 p2 p3][a1 s1, a2 s2, a3 s3]^T that `pca_lighting` adds to each image."""
    alpha = tf.random.stateless_normal([batch, 3], seed, stddev=std)           # (B, 3)
    return tf.matmul(alpha * tf.cast(amplitudes, tf.float32), tf.cast(eigvec, tf.float32), transpose_b=True)


def add_shift(images, shift):
    """Each image (B, H, W, 3) plus its (B, 3) RGB shift, float32."""
    return tf.cast(images, tf.float32) + shift[:, None, None, :]


def ten_crops(images, size):
    """The paper's 10 test patches (§4.1): 4 corners and the centre, then the same 5 mirrored.

    (B, H, W, C) -> (10, B, size, size, C), in the order top-left, top-right, bottom-left,
    bottom-right, centre, then their left-right mirror images.
    """
    shape = tf.shape(images)
    bottom, right = shape[1] - size, shape[2] - size
    crops = [images[:, :size, :size], images[:, :size, right:right + size],
             images[:, bottom:bottom + size, :size], images[:, bottom:bottom + size, right:right + size],
             center_crop(images, size)]
    crops += [tf.reverse(c, axis=[2]) for c in crops]
    return tf.stack(crops)


def eval_normalise(images, mean, *, resize_size, scale=1.0):
    """Steps 1, 2 and 4 of `eval_preprocess`: whole normalised images (B, resize_size, resize_size, C),
    from which the centre or the ten patches are cropped (cropping commutes with the scaling)."""
    x = resize_central_square(images, resize_size)                  # (B, R, R, C)
    mean = tf.convert_to_tensor(mean, tf.float32)
    if tuple(mean.shape[:2]) != (resize_size, resize_size):
        mean = tf.image.resize(mean, [resize_size, resize_size], method="bilinear", antialias=True)
    x = subtract_mean(x, mean)
    return x * scale if scale != 1.0 else x


def eval_preprocess(images, mean, *, image_size, resize_size, scale=1.0, crops="center"):
    """The evaluation transform for a batch of same-size images of any size on the 0..255 scale.

    1. rescale the shorter side to `resize_size` and keep the central square (§2: 256x256);
    2. subtract the training set's mean image (bilinearly resized to resize_size if its size differs);
    3. crop `image_size`: the centre ('center') or the paper's ten patches ('ten', §4.1);
    4. multiply by `scale` (data.scale).

    Validation during training and `evaluate` on image files, `predict`, retrieval and the
    SavedModel all go through this transform after `decode.decode_image`. For small geometries
    (Fashion-MNIST) resize_size == image_size and a 28x28 input passes steps 1 and 3 unchanged,
    so this equals the in-memory validation pipeline of `make_datasets`.
    Returns (B, image_size, image_size, C), or (10, B, image_size, image_size, C) for crops='ten'.
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops={crops!r}; expected 'center' or 'ten'")
    if resize_size < image_size:
        raise ValueError(f"resize_size={resize_size} is smaller than image_size={image_size}; expected >= image_size")
    x = eval_normalise(images, mean, resize_size=resize_size, scale=scale)
    return center_crop(x, image_size) if crops == "center" else ten_crops(x, image_size)
