"""The training crop decoded straight out of a prepared JPEG (fused_crop.py) is today's crop: for one seed
the same window as `preprocess.random_crop` of the whole decoded image, with the same pixels, and the
same network input after the mean, flip, lighting and scale."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.data import fused_crop, pipeline, preprocess
from fake_images import pixels

SIDE, SIZE = 256, 224
SEEDS = [tf.constant([s, 7 * s + 1], tf.int64) for s in range(40)]


def jpeg(seed, subsampling):
    """A SIDE x SIDE JPEG of flat 10 px colour blocks: sharp colour edges, the hard case for 4:2:0."""
    return tf.io.encode_jpeg(pixels(SIDE, SIDE, seed), quality=95, chroma_downsampling=subsampling == "420")


def fused(data, seed, crop="random"):
    top, left = fused_crop.window(seed, SIZE, SIDE, crop)
    return fused_crop.decode_window(data, top, left, SIZE).numpy()


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_the_fused_window_is_the_host_crop_of_the_whole_decode_bit_for_bit(subsampling):
    for i in range(3):
        data = jpeg(i, subsampling)
        whole = tf.io.decode_jpeg(data, channels=3)[None]
        for seed in SEEDS:
            np.testing.assert_array_equal(fused(data, seed), preprocess.random_crop(whole, SIZE, seed)[0].numpy())
        np.testing.assert_array_equal(fused(data, SEEDS[0], "center"), preprocess.center_crop(whole, SIZE)[0].numpy())


def test_without_the_margin_4_2_0_crops_differ_in_their_edge_columns(monkeypatch):
    """Why fused_crop decodes MARGIN extra columns: libjpeg's cropped decode repeats the edge chroma sample."""
    monkeypatch.setattr(fused_crop, "MARGIN", 0)
    data = jpeg(0, "420")
    whole = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)
    columns, worst = set(), 0
    for top, left in [(0, 0), (16, 16), (8, 8), (0, 32), (5, 16)]:
        crop = fused_crop.decode_window(data, tf.constant(top), tf.constant(left), SIZE).numpy().astype(int)
        diff = np.abs(crop - whole[top:top + SIZE, left:left + SIZE]).max(axis=(0, 2))
        columns |= set(np.flatnonzero(diff).tolist())
        worst = max(worst, diff.max())
    assert columns == {0, SIZE - 1} and worst > 8


def test_the_fused_training_image_is_today_s_training_image():
    """pipeline's fused path (source prepared) against its whole-decode path (any other file source) on the
    same bytes and seeds, with the mean image, flip, PCA lighting and a scale: identical float32 inputs."""
    config = alexnet_tf.load_config(None, ["data.source=prepared", "data.path=unused", "data.lighting=true",
                                           "data.scale=0.02", "data.val_examples=0"])
    whole_config = dataclasses.replace(config, data=dataclasses.replace(config.data, source="folder"))
    mean = np.random.default_rng(0).uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
    lighting = (np.array([60.0, 10.0, 4.0], np.float32), np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0])
    fused_image = pipeline._train_image(config, mean, lighting)
    whole_image = pipeline._train_image(whole_config, mean, lighting)
    data = jpeg(5, "420")
    for seed in SEEDS[:20]:
        (a, ya), (b, yb) = fused_image((data, 3), seed), whole_image((data, 3), seed)
        assert a.shape == (SIZE, SIZE, 3) and int(ya) == int(yb) == 3
        np.testing.assert_array_equal(a.numpy(), b.numpy())
