"""Source imagenet end to end on tiny fake ILSVRC-2012 tars in the real layout: TFDS's own
imagenet2012 builder prepares them offline, odd images decode correctly, the stats command,
`train.py` with the paper config (the full-size model, 2 steps) and `evaluate --ten-crop`."""

import json
import os

import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.data import decode, sources
from conftest import ROOT, run_main
from fake_images import write_fake_ilsvrc
from test_folder import our_lines

PAPER_CONFIG = os.path.join(ROOT, "configs", "alexnet_imagenet.yaml")
# Per synset: (file name, kind, (h, w)). n01739381_1309 is on TFDS's list of the 22 CMYK JPEGs and
# n02105855_2933 is the PNG named .JPEG: the builder re-encodes both as RGB JPEG.
TRAIN = {
    "n01440764": [("n01440764_10026.JPEG", "jpeg", (40, 60)), ("n01440764_77.JPEG", "grey", (60, 40))],
    "n01739381": [("n01739381_1309.JPEG", "cmyk", (40, 50)), ("n01739381_5.JPEG", "jpeg", (40, 40))],
    "n02105855": [("n02105855_2933.JPEG", "png", (50, 40)), ("n02105855_8.JPEG", "jpeg", (45, 40))],
}
# The validation tar is flat; its labels come from TFDS's list. A CMYK JPEG here is not on TFDS's
# list (it only fixes training images), so our decoder converts it.
VAL = ["jpeg", "cmyk", "grey", "jpeg"]


def tfds_file(name):
    import tensorflow_datasets as tfds
    return os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", name)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    truth = write_fake_ilsvrc(str(root / "manual"), TRAIN, VAL)
    overrides = [f"data.manual_dir={root / 'manual'}", f"data.tfds_data_dir={root / 'tfds'}",
                 f"data.cache_dir={root / 'cache'}"]
    return root, truth, overrides


def test_tfds_builder_prepares_the_fake_tars_offline(fake):
    root, truth, overrides = fake
    config = alexnet_tf.load_config(PAPER_CONFIG, overrides)
    train, val, classes = sources.tfds_source(config)   # runs imagenet2012's download_and_prepare
    synsets = open(tfds_file("labels.txt")).read().split()
    val_labels = open(tfds_file("validation_labels.txt")).read().split()
    assert classes == tuple(synsets) and len(classes) == 1000
    assert (train.size, val.size) == (6, 4)
    seen = {}
    for split in (train, val):
        for record in split._records():
            name = record["file_name"].numpy().decode()
            seen[name] = int(record["label"])
            image = np.asarray(decode.load_image(record["image"], 40)).astype(int)
            h, w = truth[name].shape[:2]
            s = min(h, w)
            reference = truth[name][(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].astype(int)
            assert s == 40 and image.shape == (40, 40, 3)
            error = np.abs(image - reference)
            # The builder re-encodes its CMYK and PNG files with 4:2:0 chroma subsampling: more error
            # at the colour-block edges. A wrong colour conversion would be off by ~100.
            budget = 8 if name in ("n01739381_1309.JPEG", "n02105855_2933.JPEG") else 4
            assert error.mean() < budget and np.percentile(error, 99) < 60, (name, error.mean())
    for synset, files in TRAIN.items():
        for name, _, _ in files:
            assert seen[name] == synsets.index(synset), name
    for i in range(len(VAL)):  # ILSVRC2012_val_00000001.JPEG is line 1 of TFDS's validation labels
        assert seen[f"ILSVRC2012_val_{i + 1:08d}.JPEG"] == synsets.index(val_labels[i])


@pytest.mark.slow
def test_stats_then_train_two_steps_of_the_paper_model_then_evaluate(fake, tmp_path, capsys):
    """`stats`, train.py and `evaluate`, each through its command-line `main` in this process. The SavedModel
    export, which the export tests check, is left out (at the paper's size it is most of a run's time)."""
    from alexnet_tf import train_command
    from alexnet_tf.__main__ import main
    root, truth, overrides = fake
    sets = [a for o in overrides for a in ("--set", o)]
    status, out, err = run_main(capsys, main, ["stats", "--config", PAPER_CONFIG, *sets])
    assert status == 0, err[-3000:]
    assert "6 training images" in out and "eigenvalues of the RGB covariance" in out
    path = out.strip().splitlines()[-1].removeprefix("wrote ")
    assert os.path.isfile(path) and path.startswith(str(root / "cache"))

    run_dir = tmp_path / "run"
    small = ["data.batch_size=2", "train.epochs=1", "train.steps_per_epoch=2", "train.val_steps=1", "data.shuffle_buffer=8",
             "train.export=false"]
    status, trained, err = run_main(capsys, train_command.main, ["--config", PAPER_CONFIG, "--run-dir", run_dir, *sets,
                                                                 *[a for o in small for a in ("--set", o)]])
    assert status == 0, err[-3000:]
    assert f"stats: {path}" in trained  # the cached file, not a recomputation
    assert "training 2 steps/epoch x 1 epochs (batch 2, 6 training images); validating on 4" in trained
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 1
    assert json.loads((run_dir / "classes.json").read_text()) == open(tfds_file("labels.txt")).read().split()
    recorded = np.load(run_dir / "stats.npz")
    np.testing.assert_array_equal(recorded["mean_image"], np.load(path)["mean_image"])
    np.testing.assert_array_equal(np.load(run_dir / "mean.npy"), recorded["mean_image"])  # data.mean: image
    assert recorded["mean_image"].shape == (256, 256, 3) and int(recorded["images"]) == 6
    assert json.loads((run_dir / "data.json").read_text())["stats_file"] == path

    status, evaluated, err = run_main(capsys, main, ["evaluate", "--run-dir", run_dir, "--ten-crop"])
    assert status == 0, err[-3000:]
    results = json.loads((run_dir / "evaluation.json").read_text())
    assert results["images"] == 4 and set(results) >= {"center", "ten_crop"}
    for protocol in ("center", "ten_crop"):
        # 4 images: every error is a multiple of 1/4
        for k in ("top1_error", "top5_error"):
            assert results[protocol][k] * 4 == pytest.approx(round(results[protocol][k] * 4))
    assert "centre crop" in evaluated and "10 crops (softmax averaged)" in evaluated


def test_missing_tar_is_one_line(tmp_path, capsys):
    from alexnet_tf import train_command
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"")
    status, _, err = run_main(capsys, train_command.main, [
        "--config", PAPER_CONFIG, "--run-dir", tmp_path / "run",
        "--set", f"data.manual_dir={manual}", "--set", f"data.tfds_data_dir={tmp_path / 'tfds'}"])
    assert status == 1
    lines = our_lines(err)
    assert lines == [f"ILSVRC2012_img_val.tar not found in {manual}: data.source = imagenet needs "
                     "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there (set data.manual_dir)"], err
