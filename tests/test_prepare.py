"""`prepare` on a generated folder dataset: the prepared copy read back by TFDS itself has the folder's
labels, class order and pixels (within JPEG's error), leaves out and names the undecodable files, holds
the folder's statistics, resumes shard by shard to the same bytes, and trains through data.source prepared."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import alexnet_tf
from alexnet_tf.__main__ import main as cli
from alexnet_tf.data import decode, file_splits, make_datasets, prepared
from conftest import ROOT, run_main
from fake_images import encode, pixels

RESIZE, SHARD = 48, 4
# (split, class, file name, kind, (h, w)): shorter sides above and at RESIZE, landscape and portrait
FILES = [
    ("train", "cat", "a.jpg", "jpeg", (48, 72)), ("train", "cat", "b.JPEG", "cmyk", (96, 64)),
    ("train", "cat", "c.jpg", "grey", (60, 60)), ("train", "cat", "d.JPEG", "png", (48, 50)),
    ("train", "cat", "bad.jpg", "truncated", (48, 72)), ("train", "cat", "zero.jpg", "empty", (48, 48)),
    ("train", "dog", "e.png", "rgba_png", (100, 120)), ("train", "dog", "f.jpg", "jpeg", (96, 96)),
    ("train", "dog", "notes.txt", "text", (8, 8)), ("train", "dog", "g.jpg", "jpeg", (50, 48)),
    ("train", "eel", "h.jpg", "jpeg", (48, 48)), ("train", "eel", "i.png", "png", (64, 80)),
    ("train", "eel", "j.jpg", "jpeg", (150, 100)),
    ("val", "cat", "v1.jpg", "jpeg", (48, 60)), ("val", "dog", "v2.jpg", "truncated", (48, 48)),
    ("val", "eel", "v3.png", "png", (72, 48)), ("val", "eel", "v4.jpg", "grey", (48, 48)),
]
BAD = {"truncated", "empty", "text"}
SETTINGS = {"data.source": "folder", "data.resize": RESIZE, "model.image_size": 40, "model.geometry": "small",
            "model.num_classes": 3, "model.channels": 3, "model.width": 0.125, "model.fc_units": 16,
            "data.val_examples": 0, "data.batch_size": 3, "train.epochs": 1, "train.export": False}
# JPEG's error at quality 95 without chroma subsampling on these 48x48 squares of flat 10 px colour blocks
# (sharp edges: JPEG's hard case), the prepared copy against decode.load_image of the original, per image.
# Measured: mean absolute error 0.6-3.1 grey levels, largest single error 20 (ringing at block edges).
MEAN_ERROR, MAX_ERROR = 4.5, 32
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.yaml")  # its data and model keys are all set here


def sets(**extra):
    return [a for k, v in {**SETTINGS, **extra}.items() for a in ("--set", f"{k}={v}")]


def config(**extra):
    return alexnet_tf.load_config(None, [f"{k}={v}" for k, v in {**SETTINGS, **extra}.items()])


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def shards(out):
    return sorted(f for f in os.listdir(out) if f.startswith(prepared.NAME + "-"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for i, (split, cls, name, kind, (h, w)) in enumerate(FILES):
        os.makedirs(root / split / cls, exist_ok=True)
        (root / split / cls / name).write_bytes(encode(pixels(h, w, seed=i), kind))
    return root


@pytest.fixture(scope="module")
def out(folder, tmp_path_factory):
    """The folder prepared once by the command line, in this process."""
    out = tmp_path_factory.mktemp("prepared") / "out"
    status = cli(["prepare", "--set", f"data.path={folder}", *sets(), "--out", str(out), "--shard-images", str(SHARD),
                  "--config", CONFIG])
    assert status == 0
    return out


def test_tfds_reads_the_folder_s_labels_class_order_and_pixels(folder, out):
    builder = tfds.builder_from_directory(str(out))  # TFDS's own reader, not the package's
    assert builder.info.features["label"].names == ["cat", "dog", "eel"]  # the folder's sorted class folders
    good = {f"{s}/{c}/{n}": (["cat", "dog", "eel"].index(c), k) for s, c, n, k, _ in FILES if k not in BAD}
    seen, errors = {}, []
    for split in ("train", "val"):
        for r in builder.as_dataset(split=split).as_numpy_iterator():
            name = r["file_name"].decode()
            seen[name] = int(r["label"])
            assert name.startswith(split + "/") and r["image"].shape == (RESIZE, RESIZE, 3)
            reference = decode.load_image(tf.constant((folder / name).read_bytes()), RESIZE).numpy()
            errors.append(np.abs(r["image"].astype(int) - reference.astype(int)))
    assert seen == {name: label for name, (label, _) in good.items()}
    assert max(e.mean() for e in errors) <= MEAN_ERROR and max(e.max() for e in errors) <= MAX_ERROR
    assert [len(shards(out)), builder.info.splits["train"].num_shards] == [4 + 1, 4]  # 13 train images in 4s, 4 val


def test_undecodable_files_are_named_and_left_out(out):
    record = json.loads((out / prepared.RECORD).read_text())
    named = {s["name"]: s["reason"] for split in ("train", "val") for s in record["splits"][split]["skipped"]}
    assert sorted(named) == sorted(f"{s}/{c}/{n}" for s, c, n, k, _ in FILES if k in BAD)
    assert named["train/cat/zero.jpg"] == "empty file"
    assert named["train/dog/notes.txt"].startswith("Unknown image file format")
    assert [record["splits"][s]["images"] for s in ("train", "val")] == [10, 3]
    assert [record["splits"][s]["read"] for s in ("train", "val")] == [13, 4]


def test_the_record_holds_the_command_versions_and_classes(out):
    record = json.loads((out / prepared.RECORD).read_text())
    assert record["command"].startswith("alexnet-tf prepare --set data.path=") and "--shard-images 4" in record["command"]
    assert record["versions"]["tensorflow"] == tf.__version__ and record["versions"]["alexnet_tf"] == alexnet_tf.__version__
    assert record["class_names"] == ["cat", "dog", "eel"] and record["resize"] == RESIZE
    assert (record["quality"], record["subsampling"]) == (95, "444")
    assert {s: record["splits"][s]["source_split"] for s in ("train", "val")} == {"train": "train", "val": "val"}


def test_the_stats_are_the_original_images_mean_and_covariance(folder, out):
    """Against numpy over decode.load_image of every decodable original training image."""
    images = []
    for split, cls, name, kind, _ in FILES:
        if split == "train" and kind not in BAD:
            images.append(decode.load_image(tf.constant((folder / split / cls / name).read_bytes()), RESIZE).numpy())
    images = np.asarray(images, np.float64)
    stats = np.load(out / prepared.STATS)
    np.testing.assert_allclose(stats["mean_image"], images.mean(0), rtol=0, atol=1e-4)
    pixels_ = images.reshape(-1, 3)
    np.testing.assert_allclose(stats["covariance"], np.cov(pixels_.T, bias=True), rtol=1e-9)
    np.testing.assert_allclose(stats["eigval"], np.sort(np.linalg.eigvalsh(np.cov(pixels_.T, bias=True)))[::-1], rtol=1e-9)
    assert int(stats["images"]) == 10


@pytest.mark.slow
def test_a_rerun_skips_complete_shards_and_rewrites_the_others_identically(folder, out, tmp_path):
    """The rerun is another process, as after a kill: with another PYTHONHASHSEED, which orders a protobuf
    map (the Example's features) differently unless it is serialised deterministically."""
    argv = [sys.executable, "-m", "alexnet_tf", "prepare", "--config", CONFIG, "--set", f"data.path={folder}", *sets(),
            "--out", str(tmp_path / "copy"), "--shard-images", str(SHARD)]
    before = {n: sha256(out / n) for n in shards(out)}  # written by this process
    for hash_seed in ("1", "2"):
        shutil.rmtree(tmp_path / "copy", ignore_errors=True)
        shutil.copytree(out, tmp_path / "copy")
        copy, names = tmp_path / "copy", shards(out)
        os.remove(copy / names[0])                                   # a shard lost
        os.remove(copy / names[1])                                   # killed while writing: its temporary file left
        (copy / prepared.SHARDS / (names[1] + ".tmp")).write_bytes(b"half a shard")
        data = bytearray((copy / names[2]).read_bytes())             # damaged in place, same size
        data[len(data) // 2] ^= 0xFF
        (copy / names[2]).write_bytes(bytes(data))
        os.remove(copy / prepared.RECORD)
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{len(names) - 3} complete shards found in {copy}" in done.stdout
        assert {n: sha256(copy / n) for n in shards(copy)} == before
        np.testing.assert_array_equal(np.load(copy / prepared.STATS)["mean_image"], np.load(out / prepared.STATS)["mean_image"])
        assert not (copy / prepared.SHARDS / (names[1] + ".tmp")).exists()


def test_another_plan_or_a_foreign_directory_is_refused_in_one_line(folder, out, tmp_path, capsys):
    base = ["prepare", "--config", CONFIG, "--set", f"data.path={folder}", *sets()]
    status, _, err = run_main(capsys, cli, base + ["--out", out, "--shard-images", SHARD, "--quality", 90])
    assert status == 1 and err.strip().splitlines()[-1] == (
        f"error: {out} holds a prepare of other data or settings (quality differ); expected the same source and "
        "flags to resume it, or a new --out directory")
    (tmp_path / "mine.txt").write_text("keep me")
    status, _, err = run_main(capsys, cli, base + ["--out", tmp_path])
    assert status == 1 and err.strip().splitlines()[-1] == (
        f"error: {tmp_path} exists and is not a prepare in progress; expected a new or empty --out directory")
    status, _, err = run_main(capsys, cli, base + ["--out", tmp_path / "new", "--quality", 0])
    assert status == 2 and err.strip().splitlines()[-1] == "config error: --quality 0; expected a JPEG quality from 1 to 100"


def test_the_prepared_source_has_the_folder_s_splits_labels_and_classes(folder, out):
    train, val, names, skipped = file_splits(config(**{"data.source": "prepared", "data.path": out}))
    f_train, f_val, f_names, _ = file_splits(config(**{"data.path": folder, "data.cache_dir": out.parent / "cache"}))
    assert names == f_names == ("cat", "dog", "eel")
    assert (train.size, val.size) == (f_train.size, f_val.size) == (10, 3)
    assert sorted(s["name"] for s in skipped) == sorted(f"{s}/{c}/{n}" for s, c, n, k, _ in FILES if k in BAD)
    for split, f_split in ((train, f_train), (val, f_val)):
        labels = sorted(int(y) for _, y in split.dataset().as_numpy_iterator())
        assert labels == sorted(f_split.labels.tolist())


def test_config_errors_of_the_prepared_source(out, tmp_path):
    with pytest.raises(alexnet_tf.config.ConfigError, match=r"^config error: data.source = prepared needs data.path"):
        config(**{"data.source": "prepared"})
    with pytest.raises(alexnet_tf.config.ConfigError,
                       match=rf"^config error: data.resize = 64 but {out} holds {RESIZE}x{RESIZE} images; "
                             rf"expected data.resize = {RESIZE}"):
        file_splits(config(**{"data.source": "prepared", "data.path": out, "data.resize": 64}))
    from alexnet_tf.data.errors import DatasetNotFound
    with pytest.raises(DatasetNotFound, match=rf"{tmp_path}/prepare.json not found: {tmp_path} is not a prepared dataset"):
        file_splits(config(**{"data.source": "prepared", "data.path": tmp_path}))


@pytest.mark.slow
def test_one_epoch_trains_and_evaluates_from_the_prepared_source(out, tmp_path, capsys):
    from alexnet_tf import train_command
    status, stdout, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path / "run", *sets(**{"data.source": "prepared", "data.path": out, "data.lighting": True})])
    assert status == 0, err[-3000:]
    assert "training 3 steps/epoch x 1 epochs (batch 3, 10 training images); validating on 3" in stdout
    recorded = json.loads((tmp_path / "run" / "data.json").read_text())
    assert recorded["stats_file"] == str(out / prepared.STATS) and len(recorded["skipped"]) == 4
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["cat", "dog", "eel"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["val_loss"])
    status, stdout, err = run_main(capsys, cli, ["evaluate", "--run-dir", tmp_path / "run"])  # reads it too
    assert status == 0 and "\n3 validation images, weights " in stdout, err[-3000:]


def test_deterministic_mode_repeats_the_same_batches_from_prepared(out):
    settings = {"data.source": "prepared", "data.path": out, "train.deterministic": True, "data.lighting": True}
    a, b = (list(make_datasets(config(**settings)).train.take(4).as_numpy_iterator()) for _ in range(2))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = next(make_datasets(config(**settings, **{"train.seed": 1})).train.as_numpy_iterator())
    assert not np.array_equal(other[0], a[0][0])


def test_a_tfds_source_is_prepared_in_its_own_order_and_resumes_identically(out, tmp_path, capsys):
    """The prepared folder, laid out as a TFDS dataset (data_dir/name/version/), read as data.source tfds."""
    shutil.copytree(out, tmp_path / "tfds" / "copy" / "1.0.0", ignore=shutil.ignore_patterns(prepared.SHARDS))
    argv = ["prepare", "--config", CONFIG, *sets(**{"data.source": "tfds", "data.tfds_name": "copy",
                                                    "data.tfds_data_dir": tmp_path / "tfds", "data.tfds_val_split": "val"}),
            "--out", tmp_path / "again", "--shard-images", 3]
    assert run_main(capsys, cli, argv)[0] == 0
    source, again = (tfds.builder_from_directory(str(d)) for d in (out, tmp_path / "again"))
    for split in ("train", "val"):  # the TFDS dataset's order, read one file after another
        read = [[(r["file_name"], r["label"]) for r in b.as_dataset(split=split, shuffle_files=False,
                                                                     read_config=tfds.ReadConfig(interleave_cycle_length=1))
                 .as_numpy_iterator()] for b in (source, again)]
        assert read[0] == read[1] and len(read[0]) == {"train": 10, "val": 3}[split]
    names = shards(tmp_path / "again")
    before = {n: sha256(tmp_path / "again" / n) for n in names}
    os.remove(tmp_path / "again" / names[2])  # a middle shard: the rerun reads from its first record on
    status, stdout, _ = run_main(capsys, cli, argv)
    assert status == 0 and f"{len(names) - 1} complete shards found" in stdout
    assert {n: sha256(tmp_path / "again" / n) for n in shards(tmp_path / "again")} == before


def test_a_restored_prepared_iterator_continues_with_the_same_batches_across_epochs(out, tmp_path):
    """A recovery checkpoint's data position over TFDS shards (read in a shuffled file order): an iterator
    restored in a new pipeline gives the batches the original gives next, in a later epoch and after the
    next epoch starts (the file order of an epoch must not depend on how many epochs the pipeline ran)."""
    settings = {"data.source": "prepared", "data.path": out, "train.deterministic": True, "data.shuffle_buffer": 2}
    iterator = iter(make_datasets(config(**settings)).train)
    for _ in range(5):  # 10 training images in batches of 3: inside the second epoch
        next(iterator)
    path = tf.train.Checkpoint(data=iterator).write(str(tmp_path / "position"))
    expected = [[t.numpy() for t in next(iterator)] for _ in range(8)]
    restored = iter(make_datasets(config(**settings)).train)
    tf.train.Checkpoint(data=restored).read(path).assert_consumed()
    for batch in expected:
        for x, y in zip(batch, next(restored)):
            np.testing.assert_array_equal(x, y.numpy())
