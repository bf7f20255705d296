"""Encoded image bytes -> the paper's 256x256 RGB image (§2), in TensorFlow ops only; finding undecodable files.

Odd-but-valid images decode to 3 channels: grey JPEGs are repeated over RGB, CMYK JPEGs are
converted by libjpeg, PNGs (also when named .JPEG), GIFs, BMPs and WebPs go through
`decode_image`, alpha is dropped. Truncated, empty and non-image files make the decode op fail;
`find_undecodable` names them once before training and the pipelines drop them. The evaluation
decoder (`decode_image`, also the SavedModel's) checks a JPEG's marker structure first
(jpeg_markers.py), so that a damaged request fails without libjpeg printing about it on stderr.
"""

import re

import numpy as np
import tensorflow as tf

from alexnet_tf.data import jpeg_markers


def central_square(height, width):
    """(top, left, side) of the largest centred square of a height x width image."""
    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def decode_square(data, min_side=None):
    """Encoded bytes -> the central square of the image, uint8 (side, side, 3), side = the shorter side.

    JPEGs are decoded with `decode_and_crop_jpeg`, so libjpeg skips the rows outside the
    square (the fused decode-and-crop); anything else is decoded whole and sliced. More than
    MAX_PIXELS declared in the header, or decoded, fails (the pre-scan reports it; ignore_errors drops it).
    `min_side` (the training resize): a JPEG above DCT_SCALE_ABOVE pixels is decoded at the smallest
    scale 1/2^k whose shorter side stays >= min_side and then cropped, and may declare up to
    MAX_JPEG_PIXELS, as in `decode_image`: a huge photo in a folder dataset costs its reduced size.
    """
    height, width = header_size(data)  # a decompression bomb is refused before decoding, as in decode_image

    def cropped():
        top, left, side = central_square(tf.cast(height, tf.int32), tf.cast(width, tf.int32))
        return tf.io.decode_and_crop_jpeg(data, tf.stack([top, left, side, side]), channels=3)

    def scaled(ratio):
        image = tf.io.decode_jpeg(data, channels=3, ratio=ratio)
        top, left, side = central_square(tf.shape(image)[0], tf.shape(image)[1])
        return image[top:top + side, left:left + side]

    def jpeg():
        if not min_side:
            return cropped()
        return tf.switch_case(_jpeg_scale_index(data, height, width, min_side),
                              [cropped, *[lambda r=r: scaled(r) for r in (2, 4, 8)]])

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)  # uint8; first GIF frame
        shape = tf.shape(image)
        top, left, side = central_square(shape[0], shape[1])
        return image[top:top + side, left:left + side]

    index = _jpeg_scale_index(data, height, width, min_side) if min_side else tf.constant(0)
    h, w = _scaled_size(height, width, index)
    # what the decode produces: a JPEG's central square (index 0: decode-and-crop) or its reduced whole
    decoded = tf.where(tf.io.is_jpeg(data) & (index == 0), tf.minimum(height, width) ** 2, h * w)
    with tf.control_dependencies(_size_checks(data, height, width, decoded, min_side, "the image", ())):
        image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def load_image(data, size):
    """§2: rescale the shorter side to `size` and keep the central size x size patch; uint8 (size, size, 3).

    Cropping the central square first and resizing it to size x size is the same operation as
    resize-then-crop (the scale factor is size / shorter side either way) up to a sub-pixel shift
    and the outermost pixels, and it decodes less. Bilinear with antialiasing when shrinking.
    """
    square = decode_square(data, min_side=size)

    def resize():
        image = tf.image.resize(square, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    # Images already at size x size (a pre-resized copy) skip the resize, which would return them unchanged.
    image = tf.cond(tf.shape(square)[0] == size, lambda: square, resize)
    image.set_shape([size, size, 3])
    return image


# Transparent pixels (PNG/BMP/GIF alpha) are composited over this grey level (0..255), as a
# browser shows them on a white page.
ALPHA_BACKGROUND = 255.0
# Leading bytes of the formats accepted (checked before decoding, to name the problem).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")  # RIFF: WebP


# The most pixels an image is decoded to: 4096 x 4096 (16.8 MP). A header declaring more is refused
# before any pixel is decoded, unless it is a JPEG that can be decoded downscaled (below), whose
# reduced size must then be within it. A 60 kB PNG can declare 65535x65535 (4.3 gigapixels, 17 GB as
# RGBA), and a PNG has no reduced decode: what it declares is what it costs. In the evaluation
# decoder (decode_image, then preprocess's float32 resize) one decoded pixel costs up to ~80 bytes at
# its peak (RGBA: the uint8 decode, the float32 copy, the alpha composite), so one image costs at most
# ~1.3 GB there; docs/serving.md gives the measurement.
MAX_PIXELS = 4096 * 4096
# JPEGs that the decoders downscale in the DCT domain (`min_side`, DCT_SCALE_ABOVE) may declare up
# to this many: phone cameras reach 200 MP, and at 1/8 scale 400 MP decode to 6.25 MP.
MAX_JPEG_PIXELS = 400_000_000


def header_size(data):
    """(height, width) as int64 from the header of a JPEG (its SOF marker), PNG (IHDR), GIF (logical
    screen), BMP (info header) or WebP (VP8, VP8L or VP8X chunk), without decoding the pixels;
    (0, 0) for anything else (which the decoder then refuses)."""
    return _header(data)[1:]


def _header(data, scan_jpeg=False):
    """(JPEG problem code, height, width). With `scan_jpeg` a JPEG's size comes from jpeg_markers.scan,
    which also checks its marker structure (code 0: fine), instead of libjpeg (tf.io.extract_jpeg_shape,
    which prints on stderr when the header is damaged); every other format has code 0. The training
    decoder keeps libjpeg's header reader: its files are checked once by the pre-scan, and the scan
    costs about a millisecond per image (docs/serving.md)."""
    head = tf.strings.join([tf.strings.substr(data, 0, 32), b"\0" * 32])  # a short file reads as zeros
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)  # the first 64 bytes, one int64 each

    def le(offset, n):  # little-endian unsigned integer of n bytes
        return sum(b[offset + i] * (1 << (8 * i)) for i in range(n))

    def be(offset, n):
        return sum(b[offset + i] * (1 << (8 * (n - 1 - i))) for i in range(n))

    def jpeg():
        if scan_jpeg:
            return jpeg_markers.scan(data)
        shape = tf.io.extract_jpeg_shape(data)
        return tf.constant(0, tf.int32), tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)

    def bmp():  # signed 32-bit; a top-down BMP stores a negative height
        def signed(v):
            return tf.abs(tf.where(v >= 1 << 31, v - (1 << 32), v))
        return signed(le(22, 4)), signed(le(18, 4))

    def webp():
        chunk = tf.strings.substr(head, 12, 4)
        return tf.case([
            (chunk == b"VP8 ", lambda: (le(28, 2) % (1 << 14), le(26, 2) % (1 << 14))),
            (chunk == b"VP8L", lambda: ((b[22] // 64 + b[23] * 4 + (b[24] % 16) * 1024) + 1,
                                        (b[21] + (b[22] % 64) * 256) + 1)),
            (chunk == b"VP8X", lambda: (le(27, 3) + 1, le(24, 3) + 1))],
            default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))

    def fine(read):  # a format other than JPEG: no problem code of its own
        return lambda: (tf.constant(0, tf.int32), *read())

    branches = [
        (b"\xff\xd8\xff", jpeg),
        (b"\x89PNG", fine(lambda: (be(20, 4), be(16, 4)))),
        (b"GIF8", fine(lambda: (le(8, 2), le(6, 2)))),
        (b"BM", fine(bmp)),
        (b"RIFF", fine(webp)),
    ]
    found = (tf.constant(0, tf.int32), tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    for magic, read in reversed(branches):
        found = tf.cond(tf.strings.substr(head, 0, len(magic)) == magic, read, lambda found=found: found)
    return found


# A JPEG of more pixels than this (MAX_PIXELS, the decode limit) is decoded at 1/2, 1/4 or 1/8 scale in
# the DCT domain (libjpeg's `ratio`), as far as its shorter side stays >= min_side: a 12,000 x 12,000
# photo then decodes to 1,500 x 1,500 (7 MB of pixels instead of 432 MB) before the usual resize.
# Smaller images (every ILSVRC-2012 photo) decode at full size, so their pixels are unchanged.
DCT_SCALE_ABOVE = MAX_PIXELS


def _pixel_limit(data, min_side):
    """MAX_PIXELS, or MAX_JPEG_PIXELS for a JPEG that is decoded downscaled (min_side given)."""
    limit = tf.constant(MAX_PIXELS, tf.int64)
    if min_side:
        limit = tf.where(tf.io.is_jpeg(data), tf.constant(MAX_JPEG_PIXELS, tf.int64), limit)
    return limit


def _scaled_size(height, width, index):
    """(height, width) of a JPEG decoded at scale 1/2^index (libjpeg rounds a scaled side up)."""
    ratio = tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.cast(index, tf.int64))
    return (height + ratio - 1) // ratio, (width + ratio - 1) // ratio


def _size_checks(data, height, width, decoded, min_side, subject, args):
    """Assert ops that refuse, before decoding, an image whose header declares more than its limit
    (_pixel_limit), or one whose `decoded` pixels (what its decode produces: a JPEG's reduced size,
    which a thin JPEG's shorter side keeps large) exceed MAX_PIXELS. `subject` names the image in the
    message, formatted with `args`; only the first check that fails speaks."""
    limit = _pixel_limit(data, min_side)
    declared_ok = height * width <= limit
    return [
        tf.debugging.Assert(declared_ok, [tf.strings.format(
            subject + " declares {}x{} pixels (width x height); the limit is {} pixels", (*args, width, height, limit))]),
        tf.debugging.Assert(~declared_ok | (decoded <= MAX_PIXELS), [tf.strings.format(
            subject + " declares {}x{} pixels (width x height), {} pixels decoded at the smallest scale its shorter "
            "side allows; the limit is {} pixels decoded", (*args, width, height, decoded, MAX_PIXELS))])]


def _jpeg_scale_index(data, height, width, min_side):
    """0, 1, 2, 3 for decoding `data` at scale 1, 1/2, 1/4, 1/8 (see DCT_SCALE_ABOVE)."""
    large = tf.io.is_jpeg(data) & (height * width > DCT_SCALE_ABOVE)
    short = tf.minimum(height, width)
    return sum(tf.cast(large & (short // k >= min_side), tf.int32) for k in (2, 4, 8))


def decode_image(data, channels, index=0, background=ALPHA_BACKGROUND, min_side=None):
    """The evaluation decoder (validation, `evaluate`, `predict`, retrieval, the SavedModel): one encoded
    JPEG/PNG/GIF/BMP/WebP string -> (H, W, channels) float32 on the 0..255 scale.

    Grey images are repeated over RGB for 3-channel models, colour images are converted to grey
    (ITU-R 601 luma, as PIL and tf.image do) for 1-channel models; CMYK JPEGs decode to RGB;
    an alpha channel is composited over `background`; an animated GIF gives its first frame.
    Raises InvalidArgumentError naming the element when the bytes are not one of these formats, when
    a JPEG's marker structure is damaged (jpeg_markers.scan: cut short, unknown markers), or when the
    header declares more than MAX_PIXELS pixels (4096^2; checked before decoding, so memory is bounded
    by MAX_PIXELS decoded pixels).
    `min_side`: the side the caller resizes the shorter side to; a JPEG above DCT_SCALE_ABOVE pixels is
    then decoded at the smallest scale 1/2^k (k <= 3) whose shorter side is still >= min_side, and a
    JPEG may declare up to MAX_JPEG_PIXELS as long as that reduced size is within MAX_PIXELS.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}; expected 1 (grey) or 3 (RGB)")
    head = tf.strings.substr(data, 0, 4)
    known = tf.reduce_any([tf.strings.substr(head, 0, len(m)) == m for m in _MAGIC])
    check = tf.debugging.Assert(known, [
        tf.strings.format("image_bytes[{}] ({} bytes) is not a JPEG, PNG, GIF, BMP or WebP image",
                          (index, tf.strings.length(data)))])
    with tf.control_dependencies([check]):
        problem, height, width = _header(data, scan_jpeg=True)
    whole = tf.debugging.Assert(tf.equal(problem, 0), [tf.strings.join([  # join: format would quote the text
        tf.strings.format("image_bytes[{}] ({} bytes) is a damaged JPEG: ", (index, tf.strings.length(data))),
        jpeg_markers.problem_text(problem)])])
    h, w = _scaled_size(height, width, _jpeg_scale_index(data, height, width, min_side) if min_side else 0)
    with tf.control_dependencies([whole, *_size_checks(data, height, width, h * w, min_side, "image_bytes[{}]", (index,))]):
        def full():
            return tf.io.decode_image(data, channels=0, expand_animations=False)  # (H, W, 1|2|3|4) uint8
        if min_side:
            scaled = [lambda r=r: tf.io.decode_jpeg(data, channels=0, ratio=r) for r in (2, 4, 8)]
            image = tf.switch_case(_jpeg_scale_index(data, height, width, min_side), [full, *scaled])
        else:
            image = full()
    x = tf.cast(image, tf.float32)
    has_alpha = tf.equal(tf.shape(x)[-1] % 2, 0)  # 2 = grey + alpha, 4 = RGBA

    def composite():
        alpha = x[..., -1:] / 255.0
        return x[..., :-1] * alpha + background * (1.0 - alpha)

    x = tf.cond(has_alpha, composite, lambda: x)  # (H, W, 1|3)
    if channels == 1:
        luma = tf.constant([0.2989, 0.5870, 0.1140])
        x = tf.cond(tf.shape(x)[-1] == 3, lambda: tf.reduce_sum(x * luma, -1, keepdims=True), lambda: x)
    else:
        x = tf.cond(tf.shape(x)[-1] == 1, lambda: tf.tile(x, [1, 1, 3]), lambda: x)
    return tf.ensure_shape(x, [None, None, channels])


def decode_error(data):
    """Why `decode_square` fails on these bytes (one line), or None if it does not. Eager; for reports."""
    if len(data) == 0:
        return "empty file"
    try:
        decode_square(tf.constant(data), min_side=1)  # as training decodes it (min_side), at the cheapest scale
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
        return index, tf.reduce_max(decode_square(data, min_side=1))  # see decode_error

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
