"""Training-set statistics: the RGB covariance eigen-decomposition recovers a known covariance, the
mean image is numpy's, and the stats file is cached and reused."""

import os

import numpy as np
import pytest
from PIL import Image

import alexnet_tf
from alexnet_tf.data import file_splits, stats as stats_lib, training_stats


def known_covariance():
    """A rotation of diag(600, 100, 25): eigenvectors are the rotation's columns."""
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    return q @ np.diag([600.0, 100.0, 25.0]) @ q.T, np.array([600.0, 100.0, 25.0]), q


def synthetic_pixels(n, size=16, seed=0):
    """uint8 images whose pixels are N((128, 128, 128), C) rounded: covariance C + I/12 (rounding)."""
    cov, _, _ = known_covariance()
    z = np.random.default_rng(seed).multivariate_normal([128.0] * 3, cov, size=(n, size, size))
    assert z.min() > 0 and z.max() < 255  # 5 standard deviations fit: no clipping bias
    return np.round(z).astype(np.uint8)


def same_direction(u, v):
    return abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))


def test_accumulator_matches_numpy_and_recovers_the_known_covariance():
    x = synthetic_pixels(200)
    acc = stats_lib.Accumulator()
    for i in range(0, 200, 32):  # batches of uneven size
        acc.add(x[i:i + 32])
    s = acc.result()
    pixels = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(s["covariance"], np.cov(pixels.T, bias=True), rtol=1e-9)   # numpy, same data
    np.testing.assert_allclose(s["mean_image"], x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s["pixel_mean"], pixels.mean(axis=0), rtol=1e-12)
    cov, eigval, eigvec = known_covariance()
    # 51,200 pixels: eigenvalues within a few % of the known ones (+ 1/12 from rounding), same directions
    np.testing.assert_allclose(s["eigval"], eigval + 1 / 12, rtol=0.03)
    for i in range(3):
        assert same_direction(s["eigvec"][:, i], eigvec[:, i]) > 0.995
    np.testing.assert_allclose(s["eigvec"].T @ s["eigvec"], np.eye(3), atol=1e-12)
    # C p_i = lambda_i p_i
    np.testing.assert_allclose(s["covariance"] @ s["eigvec"], s["eigvec"] * s["eigval"], atol=1e-8)


def test_stats_of_a_folder_through_the_pipeline_with_cache(tmp_path, capsys):
    x = synthetic_pixels(48, seed=3)
    for i, image in enumerate(x):  # PNG is lossless; 16x16 with data.resize 16 is not rescaled
        os.makedirs(tmp_path / "data" / "train" / f"c{i % 2}", exist_ok=True)
        os.makedirs(tmp_path / "data" / "val" / f"c{i % 2}", exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / "train" / f"c{i % 2}" / f"{i}.png")
    Image.fromarray(x[0]).save(tmp_path / "data" / "val" / "c0" / "v.png")
    cfg = alexnet_tf.load_config(None, [
        "data.source=folder", f"data.path={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.resize=16", "model.image_size=16", "model.geometry=small", "model.num_classes=2", "model.channels=3"])
    train, _, _, _ = file_splits(cfg)
    s, path = training_stats(cfg, train)
    out = capsys.readouterr().out
    assert "computing the mean image and RGB covariance of 48 training images" in out and "48/48" in out  # progress bar
    np.testing.assert_allclose(s["mean_image"], x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s["covariance"], np.cov(x.reshape(-1, 3).T.astype(np.float64), bias=True), rtol=1e-9)
    assert int(s["images"]) == 48
    # the second call reads the cached file
    again, path2 = training_stats(cfg, train)
    assert path2 == path and f"stats: {path}" in capsys.readouterr().out
    np.testing.assert_array_equal(again["eigvec"], s["eigvec"])
    # a subset: data.stats_images images drawn at random, in its own cache file
    sub = alexnet_tf.load_config(None, [f"{k}={v}" for k, v in {
        "data.source": "folder", "data.path": tmp_path / "data", "data.cache_dir": tmp_path / "cache", "data.resize": 16,
        "model.image_size": 16, "model.geometry": "small", "model.num_classes": 2, "model.channels": 3,
        "data.stats_images": 10}.items()])
    s10, path10 = training_stats(sub, train)
    assert path10 != path and int(s10["images"]) == 10


def test_lighting_amplitudes():
    s = {"eigval": np.array([400.0, 25.0, 4.0]), "eigvec": np.eye(3)}
    amplitudes, vectors = stats_lib.lighting_basis(s, "stats")
    np.testing.assert_allclose(amplitudes, [20.0, 5.0, 2.0])  # standard deviations along p_i
    amplitudes, vectors = stats_lib.lighting_basis(s, "fb_resnet")
    np.testing.assert_allclose(amplitudes, [0.2175 * 255, 0.0188 * 255, 0.0045 * 255], rtol=1e-6)
    np.testing.assert_allclose(vectors[:, 0], [-0.5675, -0.5808, -0.5836])  # column p_1, rows R, G, B
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=2e-4)    # the published vectors are orthonormal


def test_grey_images_have_one_colour_direction_and_no_nan(tmp_path, capsys):
    """Grey images read as RGB: every pixel is (v, v, v), so by hand the covariance is var(v) times the
    all-ones matrix, with eigenvalues 3 var(v), 0, 0 and p_1 = (1, 1, 1) / sqrt(3). The `stats` command
    prints amplitudes sqrt(3 var(v)), 0, 0: no nan and no RuntimeWarning."""
    import warnings

    from alexnet_tf.__main__ import main
    grey = np.random.default_rng(4).integers(0, 256, (30, 16, 16), dtype=np.uint8)
    for i, image in enumerate(grey):  # 8-bit grey PNGs (mode L), decoded to RGB by the pipeline
        for split in ("train", "val"):
            os.makedirs(tmp_path / "data" / split / f"c{i % 2}", exist_ok=True)
        Image.fromarray(image, mode="L").save(tmp_path / "data" / "train" / f"c{i % 2}" / f"{i}.png")
    Image.fromarray(grey[0], mode="L").save(tmp_path / "data" / "val" / "c0" / "v.png")
    config = tmp_path / "grey.yaml"
    config.write_text(f"model: {{image_size: 16, geometry: small, num_classes: 2, channels: 3}}\n"
                      f"data: {{source: folder, path: {tmp_path / 'data'}, cache_dir: {tmp_path / 'cache'}, resize: 16}}\n")
    variance = grey.astype(np.float64).var()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(["stats", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    amplitudes = next(line for line in out.splitlines() if line.startswith("sqrt(eigenvalues)"))
    printed = [float(v) for v in amplitudes.split("[")[1].rstrip("]").split()]
    assert printed[1:] == [0.0, 0.0] and printed[0] == pytest.approx(np.sqrt(3 * variance), abs=1e-3)
    s = stats_lib.load(out.strip().splitlines()[-1].removeprefix("wrote "))
    np.testing.assert_allclose(s["covariance"], variance * np.ones((3, 3)), rtol=1e-9)
    assert s["eigval"][0] == pytest.approx(3 * variance, rel=1e-12) and s["eigval"][1:].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(s["eigvec"][:, 0], np.full(3, 1 / np.sqrt(3)), rtol=1e-9)
    np.testing.assert_allclose(s["eigvec"].T @ s["eigvec"], np.eye(3), atol=1e-12)
