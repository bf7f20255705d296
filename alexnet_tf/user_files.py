"""The one way a file that a user names is opened: checked with stat before it is opened, bounded by a size
limit per kind of file, read with a bounded read.

Every command argument and config key that names a file goes through `check_user_file` (when another
library reads the file) or `read_user_file` (the bytes): predict's and neighbours' images, import-caffe's
--caffemodel, --prototxt, --mean and --synset-words, neighbours' --encoder, the --config file, the
data.stats_file and train.init_from keys; the folder source's listing (data/folder_listing.py) applies
`examine` and the image limit to every entry. Refused, with one line naming the file, why, and what was
expected:

- anything that is not a regular file, told apart by `os.stat` before any open: a FIFO (opening one
  for reading blocks until a writer comes), a device (/dev/zero and /dev/urandom never end), a
  directory, a socket, a missing file, a symbolic link loop (ELOOP);
- a file above its kind's size limit (LIMITS), from the same stat: a 2 GB sparse file named .jpg costs
  nothing to refuse.

The read itself asks for at most limit + 1 bytes, from a descriptor opened with O_NONBLOCK and checked
again with fstat, so a path swapped for a FIFO or a device between the stat and the open, or a file
that grows while it is read, is still refused and never read without bound.

Which error: a command argument of a command that reads it at run time raises the caller's error
(exit 1: `FileRefused` by default, predict's `ImageFileError`, import-caffe's `CaffeFileError`); a
config key or --config raises ConfigError (exit 2), as every other bad config value, before heavy work.

TensorFlow-free: the config loader uses it before TensorFlow starts.
"""

import errno
import os
import stat
from dataclasses import dataclass

from alexnet_tf.errors import UserError

MiB = 1 << 20


@dataclass(frozen=True)
class Kind:
    limit: int        # bytes; a larger file is refused without being read
    expected: str     # what the message says was expected


# The size limit of each kind of file, and why it is that (docs/distribute.md's Faults table lists them).
LIMITS = {
    # 64 MiB: above any image the decoders accept, short of a contrived one (decode.MAX_PIXELS = 4096^2
    # pixels is 64 MiB as uncompressed RGBA; a 400 MP JPEG, decode.MAX_JPEG_PIXELS, at ~1 bit per pixel
    # is ~50 MB), and predict holds at most 256 MiB of files at once (predict.BATCH_BYTES).
    "image": Kind(64 * MiB, "an image file (JPEG, PNG, GIF, BMP or WebP)"),
    # 1 GiB: bvlc_alexnet.caffemodel is 243,862,414 bytes; this leaves 4x for a wider net.
    "caffemodel": Kind(1024 * MiB, "a Caffe .caffemodel"),
    # bvlc_alexnet's deploy.prototxt is a few kB; text parsed by hand in Python.
    "prototxt": Kind(1 * MiB, "a Caffe .prototxt net definition"),
    # imagenet_mean.binaryproto is 786 kB (1x3x256x256 float32).
    "mean": Kind(64 * MiB, "a Caffe .binaryproto mean"),
    # synset_words.txt is 31 kB for 1000 classes; 4 MiB holds ImageNet-21k's word list several times.
    "words": Kind(4 * MiB, "a word list with one line per class"),
    # a config is a few kB; YAML is parsed whole, so the limit also bounds the parse.
    "config": Kind(1_000_000, "a YAML config"),
    # the stats .npz is 0.8 MB at data.resize 256 (a float32 mean image); 256 MiB allows resize 4096.
    "stats": Kind(256 * MiB, "a stats .npz (python -m alexnet_tf stats)"),
    # the paper model's weights are 244 MB in float32; the config check bounds a model by the RAM anyway.
    "model": Kind(4096 * MiB, "a Keras .keras model file"),
}


class FileRefused(UserError, ValueError):
    """A file named on the command line that is not a regular file, cannot be opened, or is larger than
    its kind's limit (user_files.LIMITS)."""


_NOT_REGULAR = (  # (test of st_mode, why) for what os.stat can find where a file was expected
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _why_not_regular(mode):
    for test, why in _NOT_REGULAR:
        if test(mode):
            return why
    return None if stat.S_ISREG(mode) else "not a regular file"


def _os_reason(e):
    return "a symbolic link loop" if e.errno == errno.ELOOP else (e.strerror or str(e))


def examine(path):
    """(why, stat result): why `path` is not a regular file, in a few words ("a FIFO", "a symbolic link
    loop", "No such file or directory"; None if it is one), and its os.stat (None if that failed).
    Never opens it; the size limit is the caller's to compare (LIMITS)."""
    try:
        st = os.stat(path)  # follows symbolic links: a loop is ELOOP, a dangling link ENOENT
    except OSError as e:
        return _os_reason(e), None
    return _why_not_regular(st.st_mode), st


def _cannot_read(path, kind, why, label, error):
    return error(f"cannot read {label}{path} ({why}); expected {LIMITS[kind].expected}")


def check_user_file(path, kind, label="", error=FileRefused):
    """The size of `path` once it is known to be a regular `kind` file within its limit; raises `error`
    with one line otherwise (`label`, e.g. "--caffemodel ", goes before the path in it)."""
    why, st = examine(path)
    if why is not None:
        raise _cannot_read(path, kind, why, label, error)
    if st.st_size > LIMITS[kind].limit:
        raise error(f"{label}{path} is {st.st_size:,} bytes; expected {LIMITS[kind].expected} of at most "
                    f"{LIMITS[kind].limit:,} bytes")
    return st.st_size


def read_user_file(path, kind, label="", error=FileRefused):
    """The bytes of a regular `kind` file (check_user_file's checks), read with at most limit + 1 bytes
    asked for; raises `error` with one line instead."""
    size = check_user_file(path, kind, label, error)
    limit = LIMITS[kind].limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO swapped in never blocks the open
    except OSError as e:
        raise _cannot_read(path, kind, _os_reason(e), label, error) from None
    try:
        why = _why_not_regular(os.fstat(fd).st_mode)  # what was opened, not what was stat'ed before
        if why is not None:
            raise _cannot_read(path, kind, why, label, error)
        chunks, total = [], 0
        while total <= limit:
            # The whole file (plus one byte, to see whether it grew) in the first read, as a rule.
            chunk = os.read(fd, min(limit + 1 - total, max(size + 1 - total, MiB)))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise _cannot_read(path, kind, _os_reason(e), label, error) from None
    finally:
        os.close(fd)
    if total > limit:  # it grew past the limit while it was read
        raise error(f"{label}{path} grew to more than {limit:,} bytes while it was read; expected {LIMITS[kind].expected} "
                    f"of at most {limit:,} bytes")
    return b"".join(chunks)  # one chunk (the rule) is returned as it is, without a copy
