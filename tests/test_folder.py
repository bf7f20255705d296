"""The folder source with every kind of odd and bad file: odd-but-valid images decode to the right
RGB pixels, undecodable files are skipped with one warning each and a count, good images are never lost."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.data import decode, file_splits, make_datasets
from conftest import run_main
from fake_images import encode, expected, pixels

# (class, file name, kind, (h, w)); every good image has its shorter side = RESIZE (no rescaling)
# except "big", which is shrunk by 2.
RESIZE = 40
FILES = [
    ("cat", "plain.jpg", "jpeg", (40, 60)),
    ("cat", "cmyk.JPEG", "cmyk", (60, 40)),
    ("cat", "grey.jpg", "grey", (40, 40)),
    ("cat", "really_a_png.JPEG", "png", (40, 50)),
    ("cat", "alpha.png", "rgba_png", (50, 40)),
    ("cat", "truncated.jpg", "truncated", (40, 60)),
    ("cat", "zero.jpg", "empty", (40, 40)),
    ("cat", "notes.txt", "text", (40, 40)),
    ("dog", "big.png", "png", (80, 120)),
    ("dog", "a.jpg", "jpeg", (40, 40)),
    ("dog", "b.jpg", "jpeg", (50, 40)),
    ("dog", "c.jpg", "jpeg", (40, 45)),
]
VAL = [("cat", "v1.jpg", "jpeg", (40, 40)), ("cat", "v2.jpg", "truncated", (40, 40)),
       ("dog", "v3.JPEG", "cmyk", (40, 50)), ("dog", "v4.jpg", "grey", (45, 40))]
BAD = ("truncated", "empty", "text")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    truth = {}
    for i, (split, files) in enumerate((("train", FILES), ("val", VAL))):
        for j, (cls, name, kind, (h, w)) in enumerate(files):
            os.makedirs(root / split / cls, exist_ok=True)
            rgb = pixels(h, w, seed=100 * i + j)
            (root / split / cls / name).write_bytes(encode(rgb, kind))
            truth[str(root / split / cls / name)] = (expected(rgb, kind), kind)
    return root, truth


def config(root, tmp_path, **extra):
    overrides = {"data.source": "folder", "data.path": str(root), "data.cache_dir": str(tmp_path / "cache"),
                 "data.resize": RESIZE, "data.batch_size": 3, "data.mean": "none", "model.image_size": 32,
                 "model.geometry": "small", "model.num_classes": 2, "model.channels": 3}
    overrides.update(extra)
    return alexnet_tf.load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def central_square(rgb):
    h, w = rgb.shape[:2]
    s = min(h, w)
    return rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def test_odd_images_decode_to_their_rgb_pixels(folder):
    root, truth = folder
    for path, (rgb, kind) in truth.items():
        if kind in BAD:
            continue
        data = open(path, "rb").read()
        for image in (decode.load_image(tf.constant(data), RESIZE),                        # eager
                      next(iter(tf.data.Dataset.from_tensors(data).map(lambda b: decode.load_image(b, RESIZE))))):
            image = np.asarray(image).astype(int)
            assert image.shape == (RESIZE, RESIZE, 3), path
            reference = central_square(rgb).astype(int)
            if reference.shape[0] != RESIZE:  # "big": 80x120 -> central 80x80 -> 40x40: 10 px blocks become 5 px
                image, reference = image[2::5, 2::5], reference[5::10, 5::10]  # block centres, away from block edges
            error = np.abs(image - reference)
            if kind.endswith("png"):
                assert error.max() <= 1, path
            else:  # JPEG quantisation (and libjpeg's CMYK conversion) on flat 10 px blocks
                assert error.mean() < 4 and np.percentile(error, 99) < 40, (path, error.mean())
        if kind == "grey":
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_bad_files_are_named_counted_and_skipped(folder, tmp_path, capsys):
    root, truth = folder
    cfg = config(root, tmp_path)
    train, val, classes, skipped = file_splits(cfg)
    out = capsys.readouterr()
    assert classes == ("cat", "dog")
    bad_train = [p for p, (_, k) in truth.items() if k in BAD and "/train/" in p]
    bad_val = [p for p, (_, k) in truth.items() if k in BAD and "/val/" in p]
    assert len(bad_train) == 3 and len(bad_val) == 1
    warnings = [line for line in out.err.splitlines() if line.startswith("warning: skipping ")]
    assert sorted(w.split(" ")[2].rstrip(":") for w in warnings) == sorted(bad_train + bad_val)
    assert "zero.jpg: empty file" in out.err
    assert "notes.txt: Unknown image file format" in out.err and "truncated.jpg: jpeg::Uncompress failed" in out.err
    assert "training: 9 images, 3 undecodable skipped" in out.err
    assert "validation: 3 images, 1 undecodable skipped" in out.err
    assert (train.size, val.size) == (9, 3) and len(skipped) == 4
    # A second time the scan comes from the cache and says the same.
    file_splits(cfg)
    again = capsys.readouterr()
    assert "checking that" not in again.out and again.err.count("warning: skipping ") == 4


def test_every_good_image_reaches_the_pipelines(folder, tmp_path, capsys):
    root, truth = folder
    # deterministic: parallel decoding may otherwise let an image of epoch 2 overtake one of epoch 1
    cfg = config(root, tmp_path, **{"data.mean": "channel", "train.deterministic": True})
    data = make_datasets(cfg)
    assert (data.train_size, data.val_size, data.train_steps, data.val_steps) == (9, 3, 3, 1)
    # one epoch of training batches holds each good training image once: 5 cats (plain, cmyk, grey,
    # the PNG named .JPEG, the RGBA PNG) and 4 dogs
    labels = np.concatenate([y.numpy() for _, y in data.train.take(3)])
    np.testing.assert_array_equal(np.bincount(labels, minlength=2), [5, 4])
    x, y = next(iter(data.train))
    assert x.shape == (3, 32, 32, 3) and x.dtype == tf.float32
    vx, vy = next(iter(data.val))
    np.testing.assert_array_equal(np.sort(vy.numpy()), [0, 1, 1])
    # the one validation cat is the centre 32x32 of its 40x40 image minus the per-channel mean
    mean = data.mean[0, 0]
    v1 = truth[str(root / "val" / "cat" / "v1.jpg")][0].astype(np.float32)
    cat = np.asarray(vx[int(np.argmin(vy))])
    error = np.abs(cat - (v1[4:36, 4:36] - mean))  # JPEG error only: mean ~1, a few px of ringing at block edges
    assert error.mean() < 3 and np.percentile(error, 99) < 12
    assert data.stats_file and os.path.isfile(data.stats_file)


def our_lines(stderr):
    """stderr without TensorFlow's own C++ log lines (printed by TF itself whatever TF_CPP_MIN_LOG_LEVEL says)."""
    return [line for line in stderr.strip().splitlines()
            if not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)]


def test_missing_folder_is_one_line(tmp_path, capsys):
    from alexnet_tf import train_command
    status, _, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path / "run", "--set", "data.source=folder", "--set", f"data.path={tmp_path / 'nowhere'}",
        "--set", "model.image_size=32", "--set", "model.geometry=small", "--set", "model.num_classes=2",
        "--set", "data.resize=40", "--set", "model.channels=3", "--set", "data.val_examples=0"])
    assert status == 1
    lines = our_lines(err)
    assert len(lines) == 1 and f"folder {tmp_path / 'nowhere' / 'train'} not found" in lines[0], err
    assert "train/<class>/<image>" in lines[0]


def test_a_folder_smaller_than_one_batch_is_one_line(folder, tmp_path, capsys):
    """9 good training images and a batch of 10: no step fits (batches drop their remainder); exit 2, one line."""
    from alexnet_tf import train_command
    root, _ = folder
    args = ["--run-dir", tmp_path / "run"]
    for k, v in {"data.source": "folder", "data.path": root, "data.cache_dir": tmp_path / "cache", "data.resize": RESIZE,
                 "data.batch_size": 10, "model.image_size": 32, "model.geometry": "small", "model.num_classes": 2,
                 "model.channels": 3, "model.width": 0.125, "model.fc_units": 16, "data.val_examples": 0}.items():
        args += ["--set", f"{k}={v}"]
    status, _, err = run_main(capsys, train_command.main, args)
    assert status == 2, err[-3000:]
    assert our_lines(err)[-1] == (f"config error: data.batch_size = 10 is larger than the 9 training images of "
                                  f"data.source = folder in {root}; expected 1 to 9")


def test_deterministic_mode_repeats_the_same_batches(folder, tmp_path):
    root, _ = folder
    first = [make_datasets(config(root, tmp_path, **{"train.deterministic": True, "data.lighting": True}))
             for _ in range(2)]
    a, b = (list(d.train.take(4)) for d in first)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = make_datasets(config(root, tmp_path, **{"train.deterministic": True, "train.seed": 1}))
    assert not np.array_equal(next(iter(other.train))[0], a[0][0])


@pytest.mark.slow
def test_train_py_on_the_folder_records_the_skipped_files(folder, tmp_path, capsys):
    """train.py's main in this process: its warnings and data.json are what is checked."""
    from alexnet_tf import train_command
    root, _ = folder
    run_dir = tmp_path / "run"
    args = ["--run-dir", run_dir]
    for k, v in {"data.source": "folder", "data.path": root, "data.cache_dir": tmp_path / "cache", "data.resize": RESIZE,
                 "data.batch_size": 3, "model.image_size": 32, "model.geometry": "small", "model.num_classes": 2,
                 "model.channels": 3, "model.width": 0.125, "model.fc_units": 16, "train.epochs": 1,
                 "train.deterministic": True, "data.lighting": True, "data.val_examples": 0}.items():
        args += ["--set", f"{k}={v}"]
    status, _, err = run_main(capsys, train_command.main, args)
    assert status == 0, err[-3000:]
    assert err.count("warning: skipping ") == 4
    recorded = json.loads((run_dir / "data.json").read_text())
    assert (recorded["train_size"], recorded["val_size"]) == (9, 3)
    assert sorted(os.path.basename(s["name"]) for s in recorded["skipped"]) == ["notes.txt", "truncated.jpg", "v2.jpg", "zero.jpg"]
    assert json.loads((run_dir / "classes.json").read_text()) == ["cat", "dog"]
    assert np.load(run_dir / "stats.npz")["mean_image"].shape == (RESIZE, RESIZE, 3)


def test_an_empty_training_class_folder_is_one_warning(tmp_path, capsys):
    """A class folder in train/ with no files: its class still gets an output (the classes are the
    folder names) but no example; one warning names the folder, the index and the name."""
    from alexnet_tf.data.sources import folder_source
    for split, name in (("train", "cat"), ("val", "cat"), ("val", "dog")):
        os.makedirs(tmp_path / split / name, exist_ok=True)
        (tmp_path / split / name / "a.png").write_bytes(encode(pixels(8, 8, 3), "png"))
    os.makedirs(tmp_path / "train" / "dog")  # empty
    train, val, classes = folder_source(str(tmp_path))
    assert classes == ("cat", "dog") and list(train.labels) == [0] and sorted(val.labels) == [0, 1]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: training class folder {tmp_path / 'train' / 'dog'} holds no files: "
                        f"class 1 ('dog') is never trained"]
