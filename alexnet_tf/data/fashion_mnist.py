"""Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test 28x28 grey images, 10 classes.

Found offline in the Debian/Ubuntu package `dataset-fashion-mnist`, in Keras's cache, or in a
configured directory; Keras's loader downloads it only as a last resort (machines with internet).
"""

import gzip
import math
import os
import zlib

import numpy as np

from alexnet_tf.config_checks import FASHION_MNIST_SIZES
from alexnet_tf.data.errors import DatasetDamaged, DatasetNotFound

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SEARCH_DIRS = ("/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist")
# Every copy of Fashion-MNIST holds exactly these (Xiao et al. 2017): a file that differs is damaged.
SIZES = FASHION_MNIST_SIZES
REINSTALL = "expected the original file: reinstall it (apt-get install --reinstall dataset-fashion-mnist) or set data.path"


def read_idx(path):
    """Read a gzipped IDX file (the MNIST format): magic 0x0000 08 <ndim>, ndim big-endian uint32
    sizes, then prod(sizes) uint8 values. A damaged file raises DatasetDamaged naming it."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile (an OSError): CRC or header; EOFError: cut short
        raise DatasetDamaged(f"{path}: damaged gzip file ({type(e).__name__}: {e}); {REINSTALL}") from None
    magic = int.from_bytes(data[0:4], "big") if len(data) >= 4 else 0
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise DatasetDamaged(f"{path}: not an unsigned-byte IDX file (magic {magic:#x}, expected 0x8NN); {REINSTALL}")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = len(data) - 4 - 4 * ndim
    if payload != math.prod(shape):
        raise DatasetDamaged(f"{path}: {payload} bytes after the header, expected {math.prod(shape)} for shape "
                             f"{tuple(shape)}; {REINSTALL}")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_dir(path=""):
    """The first directory holding all four files: `path` if given, else the standard places."""
    candidates = [path] if path else list(SEARCH_DIRS)
    for d in candidates:
        d = os.path.expanduser(d)
        if all(os.path.isfile(os.path.join(d, name)) for pair in FILES.values() for name in pair):
            return d
    return None


def load(path=""):
    """Return {'train': (images, labels), 'val': (images, labels)}; images (N, 28, 28, 1) uint8."""
    d = find_dir(path)
    if d is None and not path:
        d = _keras_download()
    if d is None:
        where = path or " or ".join(SEARCH_DIRS)
        raise DatasetNotFound(
            f"Fashion-MNIST not found in {where} (need {', '.join(n for p in FILES.values() for n in p)}); "
            "install it with `apt-get install dataset-fashion-mnist` or set data.path to a directory holding the files")
    out = {}
    for split, (images, labels) in FILES.items():
        x = read_idx(os.path.join(d, images))
        y = read_idx(os.path.join(d, labels))
        if x.shape != (SIZES[split], 28, 28):
            raise DatasetDamaged(f"{os.path.join(d, images)}: images of shape {x.shape}, expected "
                                 f"({SIZES[split]}, 28, 28); {REINSTALL}")
        if y.shape != (SIZES[split],) or y.max() > 9:
            raise DatasetDamaged(f"{os.path.join(d, labels)}: {y.size} labels of at most {y.max()}, expected "
                                 f"{SIZES[split]} labels in 0..9; {REINSTALL}")
        out[split] = (x[..., None], y.astype(np.int32))
    return out


def _keras_download():
    """Keras's own loader: reads ~/.keras/datasets/fashion-mnist or downloads it (needs internet)."""
    try:
        import keras
        keras.datasets.fashion_mnist.load_data()
    except Exception:  # no internet: the caller reports where we looked
        return None
    return find_dir(SEARCH_DIRS[1])
