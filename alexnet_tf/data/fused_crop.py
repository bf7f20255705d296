"""Training crops decoded straight out of prepared JPEGs: libjpeg decodes only the model.image_size window
(`tf.io.decode_and_crop_jpeg`) instead of the whole data.resize square that is then cropped.

The window comes from the seed stream the host crop uses (`preprocess.random_window`, the same draws as
`preprocess.random_crop`), so for one train.seed both cut the same place, and the pixels are the
whole decode's: see MARGIN.
"""

import tensorflow as tf

from alexnet_tf.data import preprocess

# libjpeg upsamples 2x-subsampled chroma (4:2:0, 4:2:2) from the neighbouring samples; at the left and right
# edge of a cropped decode it has no neighbour and repeats the edge sample, so the window's first and last
# columns would differ from a whole decode (measured: up to 64 grey levels at sharp colour edges; 4:4:4
# JPEGs are unaffected). Decoding MARGIN more columns on each side, inside the image, and slicing them off
# gives the whole decode's pixels exactly: one chroma sample (2 px) is all the upsampling reads.
MARGIN = 2


def window(seed, size, side, crop):
    """(top, left) int32 scalars of the size x size training window in a side x side image: at random from
    `seed` (data.crop random, §4.1) or the centre (data.crop center), as `pipeline.augment` would crop."""
    if crop == "center":
        offset = tf.constant((side - size) // 2, tf.int32)  # preprocess.center_crop's rounding
        return offset, offset
    top, left = preprocess.random_window(1, side, side, size, seed)
    return top[0], left[0]


def decode_window(data, top, left, size):
    """uint8 (size, size, 3): the window at (top, left) of a JPEG, decoded without the rest of the image."""
    width = tf.io.extract_jpeg_shape(data)[1]
    start = tf.maximum(left - MARGIN, 0)
    stop = tf.minimum(left + size + MARGIN, width)
    image = tf.io.decode_and_crop_jpeg(data, tf.stack([top, start, size, stop - start]), channels=3)
    image = image[:, left - start:left - start + size]
    image.set_shape([size, size, 3])
    return image


def mean_window(mean, top, left, size):
    """The (size, size, C) part of the mean image under the window: subtracting it from the crop equals
    cropping the whole image after subtracting the whole mean (§2 then §4.1, `pipeline.augment`'s order)."""
    mean = tf.convert_to_tensor(mean, tf.float32)
    return tf.slice(mean, tf.stack([top, left, 0]), tf.stack([size, size, tf.shape(mean)[2]]))
