"""data.augment_on = device: tf.data delivers uint8 crops, and the mean, flip, PCA lighting and scale of
`pipeline.augment` run as the first ops of the compiled training step, on the replica's device.

A batch then crosses to the device as uint8 (a quarter of float32), and the host only reads, decodes and
crops. The work splits in two:

  host (tf.data)    the crop's window (the draws of the host path's crop, fused into the JPEG decode for
                    source prepared), and the per-image random numbers the rest needs, drawn from the same
                    seed as `pipeline.augment` draws them: the flip bit (seed + [1, 0]) and the lighting's
                    RGB shift (seed + [2, 0]: the three alphas times the eigenvalues, through the eigenvectors)
  device (the step) x = (crop - the mean image under the window), mirrored where the flip bit is set,
                    plus the RGB shift, times data.scale: `pipeline.augment`'s ops in its order

Each float op is IEEE-rounded elementwise (cast of uint8, subtraction, addition, product), so the device
computes the network input the host path computes, bit for bit. The lighting's 3x3 product is the one op
that is not elementwise (a device BLAS may sum its three terms in another order than the host's), so it
stays on the host with the alphas it is made of: three floats per image either way.
"""

import numpy as np
import tensorflow as tf

from alexnet_tf.data import decode, fused_crop, preprocess

PIXELS, TOP, LEFT, FLIP, SHIFT = "pixels", "top", "left", "flip", "shift"


class DeviceAugment:
    """The device's part of the augmentation (`__call__`) and the host's draws for it (`host`, `one`).

    mean: the (H, W, C) mean image the host path subtracts; size: the side of the crops. A mean larger
    than the crops is cut under each crop's window (file sources), one of the crops' size is subtracted
    whole (in-memory sources, which are not cropped under data.augment_on device)."""

    def __init__(self, mean, size, *, scale=1.0, flip=False, lighting=None, lighting_std=0.1):
        self.mean, self.size, self.scale = np.asarray(mean, np.float32), size, scale
        self.flip, self.lighting, self.lighting_std = flip, lighting, lighting_std
        self.windowed = self.mean.shape[:2] != (size, size)

    def host(self, pixels, seed, top=None, left=None):
        """The element tf.data delivers for a batch of uint8 crops (B, size, size, C) cut at (top, left), each
        (B,) int32 (windowed only): {pixels, top, left, flip (B,) bool, shift (B, 3) float32}."""
        batch = tf.shape(pixels)[0]
        out = {PIXELS: pixels}
        if self.windowed:
            out.update({TOP: top, LEFT: left})
        if self.flip:
            out[FLIP] = preprocess.flip_draws(batch, seed + [1, 0])
        if self.lighting is not None:
            out[SHIFT] = preprocess.lighting_shift(batch, self.lighting[0], self.lighting[1], self.lighting_std,
                                                   seed + [2, 0])
        return out

    def one(self, pixels, seed, top, left):
        """`host` of one image (size, size, C) and its window's int32 scalars: per-image tensors."""
        batch = self.host(pixels[None], seed, top[None], left[None])
        return {key: value[0] for key, value in batch.items()}

    def __call__(self, inputs):
        """The network's float32 inputs (B, size, size, C) of a batch of `host` elements, as `pipeline.augment` gives them."""
        mean = self._mean_windows(inputs[TOP], inputs[LEFT]) if self.windowed else self.mean
        x = preprocess.subtract_mean(inputs[PIXELS], mean)
        if self.flip:
            x = preprocess.flip_where(x, inputs[FLIP])
        if self.lighting is not None:
            x = preprocess.add_shift(x, inputs[SHIFT])
        return x * self.scale if self.scale != 1.0 else x

    def _mean_windows(self, top, left):
        """(B, size, size, C): the mean image under each crop's window (a gather: the values are copied)."""
        rows = top[:, None] + tf.range(self.size)[None, :]    # (B, size)
        cols = left[:, None] + tf.range(self.size)[None, :]
        mean = tf.gather(tf.constant(self.mean), rows)         # (B, size, W, C)
        return tf.gather(mean, cols, axis=2, batch_dims=1)


def for_config(config, mean, lighting, size):
    """The run's DeviceAugment (data.augment_on device) or None (host)."""
    d = config.data
    if d.augment_on != "device":
        return None
    return DeviceAugment(mean, size, scale=d.scale, flip=d.flip, lighting=lighting, lighting_std=d.lighting_std)


def crop_transform(config, augment):
    """((encoded bytes, label), seed) -> (`augment.one` of the image's uint8 crop, label) for a file source: the
    window `pipeline._train_image` crops for this seed, decoded alone (source prepared, fused_crop.py) or cut
    out of the decoded data.resize square."""
    d, size = config.data, config.model.image_size

    def transform(xy, seed):
        top, left = fused_crop.window(seed, size, d.resize, d.crop)
        if d.source == "prepared":
            pixels = fused_crop.decode_window(xy[0], top, left, size)
        else:
            pixels = tf.slice(decode.load_image(xy[0], d.resize), tf.stack([top, left, 0]), [size, size, -1])
        return augment.one(pixels, seed, top, left), xy[1]
    return transform


def apply(augment, images):
    """Network inputs of a batch from `Data.train`: `augment`'s of a device element, or the images themselves."""
    return images if augment is None else augment(images)
