"""The images the test protocols crop from, and when the paper's ten patches exist.

§4.1 tests on the centre patch or on ten patches: the four corners and the centre of a larger image,
and their mirror images. From an image no larger than the model's input all ten are the whole image
or its mirror, and their average is not that protocol: `evaluate --ten-crop` and `predict --ten-crop`
both refuse it then, with the same line. No TensorFlow here: train.py names the next commands with it.
"""

from alexnet_tf.config_checks import FILE_SOURCES
from alexnet_tf.errors import ConfigError


def eval_resize_size(config):
    """The side images are rescaled to (shorter side) before `predict`'s and the SavedModel's crop:
    §2's 256 for 224 crops.

    File sources (the ImageNet input pipeline) use their `data.resize`; in-memory sources hold
    images of the model's size (or data.upscale's): Fashion-MNIST (small geometry) resizes straight to
    the model's input, the ImageNet geometry rescales to 256/224 of the crop, as in the paper.
    """
    m, d = config.model, config.data
    if d.source in FILE_SOURCES:
        return d.resize
    if d.upscale:  # in-memory images rescaled to data.upscale for training
        return d.upscale
    if m.geometry == "imagenet":
        return round(m.image_size * 256 / 224)
    return m.image_size


def evaluation_side(config):
    """The side of the images `evaluate` crops: a file source's data.resize squares, else the
    in-memory arrays (model.image_size, or data.upscale when set)."""
    d = config.data
    if d.source in FILE_SOURCES:
        return d.resize
    return d.upscale or config.model.image_size


def ten_crops_exist(config, side):
    return side > config.model.image_size


def check_ten_crop(config, side):
    """ConfigError unless the images of side `side` the command crops are larger than the model's input."""
    if ten_crops_exist(config, side):
        return
    s = config.model.image_size
    raise ConfigError(f"--ten-crop: this run's model takes {s}x{s} crops of {side}x{side} images, so the ten "
                      "patches would all be the whole image or its mirror image; expected a run whose images are "
                      "larger than model.image_size (data.upscale > model.image_size, or a file source with "
                      "data.resize > model.image_size)")
