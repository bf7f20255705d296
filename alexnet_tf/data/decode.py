"""Encoded image bytes -> the paper's 256x256 RGB image (§2), in TensorFlow ops only; finding undecodable files.

Odd-but-valid images decode to 3 channels: grey JPEGs are repeated over RGB, CMYK JPEGs are
converted by libjpeg, PNGs (also when named .JPEG), GIFs, BMPs and WebPs go through
`decode_image`, alpha is dropped. Truncated, empty and non-image files make the decode op fail;
`find_undecodable` names them once before training and the pipelines drop them.
"""

import re

import numpy as np
import tensorflow as tf


def central_square(height, width):
    """(top, left, side) of the largest centred square of a height x width image."""
    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def decode_square(data):
    """Encoded bytes -> the central square of the image, uint8 (side, side, 3), side = the shorter side.

    JPEGs are decoded with `decode_and_crop_jpeg`, so libjpeg skips the rows outside the
    square (the fused decode-and-crop); anything else is decoded whole and sliced.
    """
    def jpeg():
        shape = tf.io.extract_jpeg_shape(data)
        top, left, side = central_square(shape[0], shape[1])
        return tf.io.decode_and_crop_jpeg(data, tf.stack([top, left, side, side]), channels=3)

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)  # uint8; first GIF frame
        shape = tf.shape(image)
        top, left, side = central_square(shape[0], shape[1])
        return image[top:top + side, left:left + side]

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def load_image(data, size):
    """§2: rescale the shorter side to `size` and keep the central size x size patch; uint8 (size, size, 3).

    Cropping the central square first and resizing it to size x size is the same operation as
    resize-then-crop (the scale factor is size / shorter side either way) up to a sub-pixel shift
    and the outermost pixels, and it decodes less. Bilinear with antialiasing when shrinking.
    """
    square = decode_square(data)

    def resize():
        image = tf.image.resize(square, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    # Images already at size x size (a pre-resized copy) skip the resize, which would return them unchanged.
    image = tf.cond(tf.shape(square)[0] == size, lambda: square, resize)
    image.set_shape([size, size, 3])
    return image


def decode_error(data):
    """Why `decode_square` fails on these bytes (one line), or None if it does not. Eager; for reports."""
    if len(data) == 0:
        return "empty file"
    try:
        decode_square(tf.constant(data))
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        message = e.message.strip().splitlines()[-1]
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)  # TF's op-location prefix
        return re.sub(r"\s*\[Op:\w+\].*$", "", message)
    return None


def find_undecodable(keys_and_bytes, count, progress=None):
    """Decode every element of a tf.data of (index, encoded bytes) once; return the indices that fail.

    Runs in parallel inside tf.data: failing elements are dropped by `ignore_errors`, and the
    missing indices are the undecodable ones. `progress` (a keras Progbar or None) is advanced
    per element.
    """
    def decode(index, data):
        # A value that depends on the pixels, so the decode cannot be pruned from the graph.
        return index, tf.reduce_max(decode_square(data))

    decoded = (keys_and_bytes
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .batch(256)
               .prefetch(tf.data.AUTOTUNE))
    seen = np.zeros(count, bool)
    for indices, _ in decoded:
        seen[indices.numpy()] = True
        if progress is not None:
            progress.add(len(indices))
    bad = np.flatnonzero(~seen)
    if progress is not None and len(bad):
        progress.add(len(bad))  # so the bar ends at 100 %
    return bad
