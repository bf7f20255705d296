"""Data sources and preprocessing: known dataset properties, numpy references, eager and in tf.data."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import fashion_mnist, preprocess


def test_fashion_mnist_known_properties():
    data = fashion_mnist.load()
    (x, y), (xv, yv) = data["train"], data["val"]
    assert x.shape == (60000, 28, 28, 1) and xv.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yv), [1000] * 10)
    assert x.max() == 255 and x.min() == 0
    # The mean training pixel of Fashion-MNIST is 0.2860 on the [0, 1] scale (widely quoted constant).
    assert abs(x.mean() / 255 - 0.2860) < 5e-4


def test_idx_reader_against_a_hand_made_file(tmp_path):
    payload = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in payload.shape)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + payload.tobytes())
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(path)), payload)


def test_missing_dataset_names_where_it_looked(tmp_path):
    with pytest.raises(fashion_mnist.DatasetNotFound) as err:
        fashion_mnist.load(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def images(shape=(4, 6, 7, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def in_tf_data(fn, *arrays):
    """Apply fn inside a tf.data pipeline (graph mode), as training does."""
    ds = tf.data.Dataset.from_tensors(arrays).map(fn)
    return next(iter(ds))


def test_mean_image_and_channel_mean():
    x = images((10, 5, 5, 3))
    np.testing.assert_allclose(preprocess.mean_of(x, "image"), x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(preprocess.mean_of(x, "channel")[2, 3], x.reshape(-1, 3).mean(0), rtol=1e-6)
    mean = preprocess.mean_of(x, "image")
    expected = x.astype(np.float32) - mean
    np.testing.assert_allclose(preprocess.subtract_mean(x, mean), expected)
    np.testing.assert_allclose(in_tf_data(lambda a: preprocess.subtract_mean(a, mean), x), expected)


def test_random_flip_mirrors_exactly_the_chosen_images():
    x = images()
    seed = tf.constant([3, 4], tf.int64)
    for out in (preprocess.random_flip(x, seed), in_tf_data(lambda a, s: preprocess.random_flip(a, s), x, seed)):
        out = np.asarray(out)
        flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)]
        kept = [np.array_equal(o, xi) for o, xi in zip(out, x)]
        assert all(f != k for f, k in zip(flipped, kept))  # each image is either mirrored or untouched
    # the choice is a fair coin: over many images about half are mirrored
    many = images((2000, 2, 3, 1))
    out = np.asarray(preprocess.random_flip(many, seed))
    rate = np.mean([not np.array_equal(o, m) for o, m in zip(out, many)])
    assert 0.45 < rate < 0.55


def test_random_crop_is_a_window_of_the_input():
    x = images((64, 9, 9, 2))
    seed = tf.constant([1, 2], tf.int64)
    for out in (preprocess.random_crop(x, 5, seed), in_tf_data(lambda a, s: preprocess.random_crop(a, 5, s), x, seed)):
        out = np.asarray(out)
        assert out.shape == (64, 5, 5, 2)
        offsets = set()
        for o, xi in zip(out, x):
            found = [(i, j) for i in range(5) for j in range(5) if np.array_equal(xi[i:i + 5, j:j + 5], o)]
            assert found, "crop is not a window of its image"
            offsets.add(found[0])
        assert len(offsets) > 10  # positions vary across the batch
    # deterministic for a given seed
    np.testing.assert_array_equal(preprocess.random_crop(x, 5, seed), preprocess.random_crop(x, 5, seed))


def test_center_crop_and_pad():
    x = images((2, 8, 9, 1))
    np.testing.assert_array_equal(preprocess.center_crop(x, 4), x[:, 2:6, 2:6])
    np.testing.assert_array_equal(in_tf_data(lambda a: preprocess.center_crop(a, 4), x), x[:, 2:6, 2:6])
    padded = np.asarray(preprocess.pad(x.astype(np.float32), 2))
    np.testing.assert_array_equal(padded, np.pad(x.astype(np.float32), ((0, 0), (2, 2), (2, 2), (0, 0))))


def test_pipeline_batches_and_normalisation():
    import alexnet_tf
    from alexnet_tf.data import make_datasets
    from conftest import tiny_overrides
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"data.flip": False, "data.scale": 0.5}))
    data = make_datasets(cfg)
    from alexnet_tf.data import synthetic
    (x, y), (xv, yv) = (lambda a: (a["train"], a["val"]))(synthetic.load(28, 1, 10, 64, 0))
    assert (data.train_steps, data.val_steps) == (4, 4)
    vx, vy = next(iter(data.val))
    np.testing.assert_allclose(vx, (xv[:16].astype(np.float32) - x.astype(np.float64).mean(0)) * 0.5, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(vy, yv[:16])
    # one epoch of training batches is a permutation of the training set
    seen = np.concatenate([b[1].numpy() for b in data.train.take(4)])
    np.testing.assert_array_equal(np.sort(seen), np.sort(y))
