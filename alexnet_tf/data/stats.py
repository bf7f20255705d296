"""Training-set statistics: the mean image (§2) and the eigen-decomposition of the RGB covariance (§4.1).

Pixels are on the 0..255 scale. The covariance is over every pixel of every image:
    C = E[x x^T] - E[x] E[x]^T,  x = the (R, G, B) value of one pixel,
and C p_i = lambda_i p_i with lambda_1 >= lambda_2 >= lambda_3. The result is an .npz file:
mean_image (H, W, 3), pixel_mean (3,), covariance (3, 3), eigval (3,), eigvec (3, 3) with the
eigenvectors as columns, images (how many were averaged).
"""

import io
import os

import numpy as np

from alexnet_tf.errors import ConfigError
from alexnet_tf.user_files import read_user_file

# facebookarchive/fb.resnet.torch (datasets/imagenet.lua), ImageNet, pixels on the [0, 1] scale:
# the lighting offset there is eigvec @ (alpha * FB_RESNET_EIGVAL), so these are amplitudes.
FB_RESNET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
FB_RESNET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],    # R
                             [-0.5808, -0.0045, -0.8140],   # G
                             [-0.5836, -0.6948, 0.4203]])   # B; columns are p_1, p_2, p_3


class Accumulator:
    """Running sums over batches of uint8 images (B, H, W, C), in float64."""

    def __init__(self):
        self.images = 0
        self.image_sum = None     # (H, W, C): per-pixel sums for the mean image
        self.pixels = 0
        self.pixel_sum = None     # (C,)
        self.outer_sum = None     # (C, C): sum of x x^T over pixels

    @classmethod
    def from_sums(cls, images, image_sum, pixel_sum, outer_sum):
        """An accumulator holding sums made elsewhere (`prepare` keeps exact integer sums per shard)."""
        acc = cls()
        acc.images, acc.pixels = int(images), int(images) * int(np.prod(np.shape(image_sum)[:-1]))
        acc.image_sum, acc.pixel_sum, acc.outer_sum = (np.asarray(a, np.float64) for a in (image_sum, pixel_sum, outer_sum))
        return acc

    def add(self, batch):
        batch = np.asarray(batch)
        x = batch.reshape(-1, batch.shape[-1]).astype(np.float64)    # (B*H*W, C)
        if self.image_sum is None:
            self.image_sum = np.zeros(batch.shape[1:], np.float64)
            self.pixel_sum = np.zeros(batch.shape[-1], np.float64)
            self.outer_sum = np.zeros((batch.shape[-1],) * 2, np.float64)
        self.images += len(batch)
        self.image_sum += batch.sum(axis=0, dtype=np.float64)
        self.pixels += len(x)
        self.pixel_sum += x.sum(axis=0)
        self.outer_sum += x.T @ x

    def result(self):
        """The statistics as a dict of numpy arrays (what `save` writes)."""
        if not self.images:
            raise ValueError("no images were accumulated")
        mu = self.pixel_sum / self.pixels
        covariance = self.outer_sum / self.pixels - np.outer(mu, mu)
        eigval, eigvec = np.linalg.eigh(covariance)          # ascending
        # A covariance of rank < 3 (grey images: R = G = B, rank 1) has zero eigenvalues, which eigh returns
        # as round-off of either sign (-2e-12 for 1.7e4): set them to 0, so sqrt(lambda) is 0, not nan.
        eigval = np.where(eigval > 1e-9 * max(eigval.max(), 0.0), eigval, 0.0)
        order = np.argsort(eigval, kind="stable")[::-1]
        eigvec = eigvec[:, order]
        eigvec *= np.where(eigvec.sum(axis=0) < 0, -1.0, 1.0)  # a fixed sign: components sum to >= 0
        return dict(mean_image=(self.image_sum / self.images).astype(np.float32), pixel_mean=mu,
                    covariance=covariance, eigval=eigval[order], eigvec=eigvec, images=np.int64(self.images))


def compute(batches, total, progress=True):
    """Statistics over a tf.data (or iterable) of uint8 image batches holding `total` images, with a progress bar."""
    from keras.utils import Progbar

    bar = Progbar(total, unit_name="image") if progress else None
    acc = Accumulator()
    for batch in batches:
        batch = np.asarray(batch)
        acc.add(batch)
        if bar is not None:
            bar.add(len(batch))
    return acc.result()


def save(stats, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **stats)
    os.replace(tmp, path)  # a killed computation never leaves a half-written cache


def load(path):
    """A stats .npz (data.stats_file or the cache in data.cache_dir, both config keys: ConfigError), read
    through user_files: a regular file within its size limit."""
    with np.load(io.BytesIO(read_user_file(path, "stats", "stats file ", ConfigError))) as f:
        return {k: f[k] for k in f.files}


def mean_to_subtract(stats, kind):
    """(H, W, C) float32 on the 0..255 scale: the mean image (§2), the per-channel mean, or zeros."""
    image = stats["mean_image"].astype(np.float32)
    if kind == "image":
        return image
    if kind == "channel":
        return np.broadcast_to(image.mean(axis=(0, 1)), image.shape).astype(np.float32)
    if kind == "none":
        return np.zeros_like(image)
    raise ValueError(f"mean kind {kind!r}; expected 'image', 'channel' or 'none'")


def lighting_basis(stats, pca):
    """(amplitudes (3,), eigenvectors (3, 3) as columns) for PCA lighting on the 0..255 scale.

    stats: amplitude_i = sqrt(lambda_i), the standard deviation of the pixels along p_i (what
    Krizhevsky's cuda-convnet2 multiplies alpha by, `color_stdevs`); the paper's text writes
    lambda_i, which depends on the pixel scale (see docs/data.md). fb_resnet: fb.resnet.torch's
    published amplitudes for [0, 1] pixels, times 255.
    """
    if pca == "fb_resnet":
        return (255.0 * FB_RESNET_EIGVAL).astype(np.float32), FB_RESNET_EIGVEC.astype(np.float32)
    if pca == "stats":
        return np.sqrt(np.maximum(stats["eigval"], 0.0)).astype(np.float32), stats["eigvec"].astype(np.float32)
    raise ValueError(f"data.pca = {pca!r}; expected 'stats' or 'fb_resnet'")
