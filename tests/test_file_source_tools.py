"""Every tool that reads a run works on a run trained from image files (data.source = folder): the
commands README lists, on a one-epoch run of generated images, checked against the evaluation
pipeline and the run's own files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.__main__ import main
from fake_images import encode, pixels

CLASSES = ("apple", "bear", "cloud")
PER_CLASS = {"train": 8, "val": 3}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for split, count in PER_CLASS.items():
        for c, cls in enumerate(CLASSES):
            os.makedirs(root / split / cls)
            for i in range(count):
                h, w = (48, 64) if i % 2 else (64, 48)
                kind = "png" if i == 1 else "jpeg"
                (root / split / cls / f"{cls}_{i}.{'png' if kind == 'png' else 'jpg'}").write_bytes(
                    encode(pixels(h, w, seed=1000 * c + 10 * i + (split == "val")), kind))
    run_dir = tmp_path_factory.mktemp("folder_run")
    sets = {"data.source": "folder", "data.path": str(root), "data.cache_dir": str(run_dir / "cache"),
            "data.resize": 40, "data.batch_size": 6, "model.image_size": 32, "model.geometry": "small",
            "model.num_classes": 3, "model.channels": 3, "data.val_examples": 0, "model.width": 0.125, "model.fc_units": 32, "train.epochs": 1,
            "train.precision": "float32"}  # exact comparisons (auto may pick bfloat16 on this CPU)
    from alexnet_tf import train_command  # train.py's main, in this process (no second TensorFlow start)
    assert train_command.main(["--run-dir", str(run_dir), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]) == 0
    return str(run_dir), root


def fc7_of_the_evaluation_pipeline(run_dir):
    """The reference: fc7 of the validation images as `evaluate` prepares them (eval_images)."""
    import keras

    from alexnet_tf.data import eval_images
    from alexnet_tf.run_dir import load_run
    run = load_run(run_dir)
    batches, _ = eval_images(run.config, run.mean, run.class_names, "val")
    net = keras.Model(run.model.inputs, run.model.get_layer("fc8").input)
    from alexnet_tf.data import preprocess
    out, labels = [], []
    for images, y in batches:
        out.append(net(preprocess.center_crop(images, run.config.model.image_size), training=False).numpy())
        labels.append(y.numpy())
    return np.concatenate(out), np.concatenate(labels)


@pytest.mark.slow
def test_features_of_a_folder_run_are_the_evaluation_pipelines(folder_run):
    run_dir, _ = folder_run
    assert main(["features", "--run-dir", run_dir]) == 0
    features = np.load(os.path.join(run_dir, "features", "val.npy"))
    reference, labels = fc7_of_the_evaluation_pipeline(run_dir)
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5)
    thumbs = np.load(os.path.join(run_dir, "features", "val_thumbnails.npz"))
    np.testing.assert_array_equal(thumbs["labels"], labels)
    assert thumbs["images"].shape == (9, 40, 40, 3) and thumbs["images"].dtype == np.uint8  # resize 40 < 96
    train = np.load(os.path.join(run_dir, "features", "train.npy"))
    assert train.shape == (24, 32)
    # --max-images: a random subset, cached under its own key
    assert main(["features", "--run-dir", run_dir, "--split", "train", "--max-images", "5"]) == 0
    assert np.load(os.path.join(run_dir, "features", "train.npy")).shape == (5, 32)


@pytest.mark.slow
def test_every_tool_runs_on_a_folder_run(folder_run, tmp_path, capsys):
    run_dir, root = folder_run
    out = tmp_path
    assert main(["evaluate", "--run-dir", run_dir, "--ten-crop"]) == 0
    evaluation = json.load(open(os.path.join(run_dir, "evaluation.json")))
    assert evaluation["images"] == 9 and set(evaluation) >= {"center", "ten_crop"}
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    # validation during training and `evaluate` go through the same transform
    assert evaluation["center"]["top1_error"] == pytest.approx(metrics["val_top1_error"], abs=1e-6)

    capsys.readouterr()
    assert main(["predict", "--run-dir", run_dir, "--val", "4", "--out", str(out / "pred.png")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(true: ") == 4 and sum(printed.count(f"(true: {c})") for c in CLASSES) == 4
    image = str(next((root / "val" / "bear").iterdir()))
    assert main(["predict", "--run-dir", run_dir, image]) == 0
    assert "(true: bear)" in capsys.readouterr().out  # the label from the folder's name

    assert main(["filters", "--run-dir", run_dir, "--out", str(out / "filters.png")]) == 0
    assert main(["neighbours", "--run-dir", run_dir, "--queries", "3", "--k", "4", "--out", str(out / "nn.png")]) == 0
    assert main(["projector", "--run-dir", run_dir, "--count", "10", "--log-dir", str(out / "proj")]) == 0
    assert len(open(out / "proj" / "metadata.tsv").read().splitlines()) == 11  # header + 10 vectors
    assert main(["codes", "--run-dir", run_dir, "--bits", "8", "--k", "1", "3", "--epochs", "1", "--pixels"]) == 0
    report = json.load(open(os.path.join(run_dir, "retrieval", "report.json")))
    assert {r["method"].split(" (")[0] for r in report} >= {"euclidean fc7", "euclidean pixels", "hamming autoencoder"}
    assert main(["export", "--run-dir", run_dir]) == 0
    assert main(["curves", run_dir, "--out", str(out / "curves.png")]) == 0
    for png in ("pred.png", "filters.png", "nn.png", "curves.png"):
        assert tf.io.decode_png(open(out / png, "rb").read()).shape[0] > 50, png

    # the neighbours' panel ranks by fc7 distance: a training image's nearest training image is itself
    from alexnet_tf import retrieval
    from alexnet_tf.run_dir import load_run
    from alexnet_tf.serving import Classifier
    run = load_run(run_dir)
    features, labels, images = retrieval.cached_features(run, Classifier.from_run(run), "train", progress=False)
    idx, dist = retrieval.nearest(features[:5], features, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))
    assert images.shape[0] == len(labels) == 24


def test_a_tool_that_needs_arrays_names_the_source():
    from alexnet_tf.config import ConfigError
    from alexnet_tf.data import load_arrays
    with pytest.raises(ConfigError, match="data.source = folder keeps its images in files"):
        load_arrays(alexnet_tf.load_config(None, ["data.source=folder", "data.path=/nowhere"]))
