"""A JPEG's marker structure checked in TensorFlow ops, before libjpeg sees the bytes.

libjpeg reports a damaged file by printing a line on stderr itself ("Input file read error",
"Improper call to JPEG library in state 201", "Unsupported marker type 0x78") before TensorFlow
turns the failure into InvalidArgument, and TensorFlow logs "Premature end of JPEG data" for a file
cut inside its compressed data: a server would print one such line per bad request. `scan` walks the
marker segments from SOI to the first SOS as libjpeg's jdmarker.c reads them, so that a file libjpeg
would refuse for its structure is refused first, by the caller's tf.debugging.Assert, which logs
nothing; on the way it reads the frame size from the SOF header (what tf.io.extract_jpeg_shape
returns, without libjpeg). Not checked: the contents of the tables (DQT, DHT) and of the compressed
data; a file damaged there still reaches libjpeg, which then prints (a warning, if it decodes).

Layout (ITU T.81 B.1): FF D8, then segments FF <marker> [<length: 2 bytes, big-endian, counting
itself> <payload>], FF fill bytes allowed before a marker, up to SOS (FF DA); then the compressed
data, which never holds FF D9 except as the end marker (an FF in the data is written FF 00).

The loop only follows the chain of segments (a few ops per segment: a graph loop's cost is per op and
iteration); everything about the segments it visited is checked at once afterwards.
"""

import numpy as np
import tensorflow as tf

# Why a JPEG is refused, by the code `scan` returns (0 = nothing found).
PROBLEMS = (
    "",
    "its headers end before any image data (no SOS marker)",
    "no marker where one is expected",
    "a marker segment runs past the end of the file",
    "a marker libjpeg does not accept",
    "a frame header (SOF) that is not 8-bit with 1 to 4 components and a nonzero size",
    "no frame header (SOF), or more than one, before the image data",
    "a scan header (SOS) of the wrong length",
    "no end marker (FF D9) after the image data: the file is cut short",
    "more marker segments than jpeg_markers.MAX_SEGMENTS before the image data",
)
# Marker segments followed before the first SOS: real files have a few dozen (APPn metadata, tables).
MAX_SEGMENTS = 1000

# What each marker byte (the one after FF) is, for the walk.
BAD, FILL, STANDALONE, SEGMENT, SOF, SOS = range(6)
_KINDS = np.full(256, BAD, np.int32)
_KINDS[0xFF] = FILL                                    # fill bytes before a marker
_KINDS[[0x01, *range(0xD0, 0xD8)]] = STANDALONE        # TEM, RST0-7: no length
_KINDS[[0xC4, 0xCC, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE]] = SEGMENT  # DHT DAC DQT DNL DRI APPn COM
# Frame headers libjpeg(-turbo) reads: baseline, extended, progressive, lossless and their arithmetic-coded
# forms; it refuses SOF5-7, SOF13-15 (hierarchical) and JPG (C8), which stay BAD, as do a second SOI and EOI.
_KINDS[[0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB]] = SOF
_KINDS[0xDA] = SOS


def scan(data):
    """(problem code, height, width) of the JPEG bytes `data` (a scalar string starting FF D8 FF):
    code 0 and the SOF header's height and width (int64), or a code of PROBLEMS and zeros."""
    b = tf.io.decode_raw(data, tf.uint8)
    n = tf.size(b)
    padded = tf.cast(tf.concat([b, tf.zeros([10], tf.uint8)], 0), tf.int32)  # reads just past the end give 0
    kinds = tf.constant(_KINDS)

    def read(pos, offsets):  # the bytes at pos + offsets; a position past the end reads the zeros after it
        return tf.gather(padded, tf.minimum(pos, n) + tf.constant(offsets))

    def follow(pos, count, visited):
        """One marker at `pos`: record it and move to the next (its kind decides how far)."""
        m, hi, lo = tf.unstack(read(pos, [1, 2, 3]))
        kind = tf.gather(kinds, m)
        step = tf.where(kind == FILL, 1, tf.where(kind == STANDALONE, 2, 2 + hi * 256 + lo))
        return pos + step, count + 1, visited.write(count, pos)

    def going(pos, count, visited):  # stop at SOS, past the end, or on something not a segment to follow
        here = read(pos, [0, 1])
        kind = tf.gather(kinds, here[1])
        return (pos + 1 < n) & tf.equal(here[0], 0xFF) & (kind != SOS) & (kind != BAD) & (count < MAX_SEGMENTS)

    start = tf.constant(2, tf.int32)
    end, count, visited = tf.while_loop(going, follow, (start, tf.constant(0, tf.int32),
                                                        tf.TensorArray(tf.int32, size=0, dynamic_size=True)))
    visited = visited.stack()                                              # where each segment started (its FF)
    last = read(end, [0, 1, 2, 3, 4])                                      # the stop: FF DA <length> <scans>
    sos_length = last[2] * 256 + last[3]

    kind_of = tf.gather(kinds, tf.gather(padded, visited + 1))
    length_of = tf.gather(padded, visited + 2) * 256 + tf.gather(padded, visited + 3)
    is_sof = tf.equal(kind_of, SOF)
    cut = tf.reduce_any(((kind_of == SEGMENT) | is_sof) & ((length_of < 2) | (visited + 2 + length_of > n)))
    # the first SOF's length (2 bytes), precision, height (2), width (2), component count; zeros without one
    frame = read(tf.reduce_min(tf.where(is_sof, visited, n)), list(range(2, 10)))
    parts, height, width = frame[7], frame[3] * 256 + frame[4], frame[5] * 256 + frame[6]
    good_frame = (tf.equal(frame[2], 8) & (parts >= 1) & (parts <= 4) & tf.equal(frame[0] * 256 + frame[1], 8 + 3 * parts)
                  & (height > 0) & (width > 0))
    # after the SOS header: an FF D9 somewhere (the compressed data cannot hold one before its end)
    tail = b[tf.minimum(end + 2 + sos_length, n):]
    ended = tf.reduce_any(tf.equal(tail[:-1], tf.constant(0xFF, tf.uint8)) & tf.equal(tail[1:], tf.constant(0xD9, tf.uint8)))

    checks = [  # (found, code of PROBLEMS), the first found one is reported
        (cut, 3), (count >= MAX_SEGMENTS, 9), (end + 1 >= n, 1), (tf.not_equal(last[0], 0xFF), 2),
        (tf.equal(last[1], 0xD9), 1), (tf.not_equal(tf.gather(kinds, last[1]), SOS), 4),
        (tf.not_equal(tf.reduce_sum(tf.cast(is_sof, tf.int32)), 1), 6), (~good_frame, 5),
        ((last[4] < 1) | (last[4] > 4) | tf.not_equal(sos_length, 6 + 2 * last[4]) | (end + 2 + sos_length > n), 7),
        (~ended, 8), (tf.constant(True), 0)]
    first = tf.argmax(tf.cast(tf.stack([found for found, _ in checks]), tf.int32), output_type=tf.int32)
    problem = tf.gather(tf.constant([code for _, code in checks], tf.int32), first)
    ok = tf.equal(problem, 0)
    return problem, tf.cast(tf.where(ok, height, 0), tf.int64), tf.cast(tf.where(ok, width, 0), tf.int64)


def problem_text(code):
    """The reason for a `scan` code, as a string tensor."""
    return tf.gather(tf.constant(PROBLEMS), code)
