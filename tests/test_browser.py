"""TensorBoard as README and docs/retrieval.md start it, seen in a real headless Chromium: the scalars, the
conv1 filter images and the projector of a tiny run appear in the rendered pages, not only in the files.

Needs Debian's `chromium` (scripts/get_chromium.sh, which `make test` runs); without it the
browser test fails with the line saying how to install it.
"""

import re

import keras
import pytest

import alexnet_tf
from alexnet_tf.__main__ import main
from browser import Chromium, TensorBoard, shows
from conftest import tiny_overrides

pytestmark = pytest.mark.slow

PROJECTED = 50          # vectors the projector command writes (--count)
FC_UNITS = 32           # tiny_overrides' model.fc_units: the vectors' length
EMBEDDING = "embedding/.ATTRIBUTES/VARIABLE_VALUE"  # the projector's name of the checkpoint tensor
KERNEL_NATURAL = 48     # a 3x3 kernel drawn at 16 px a weight (callbacks.kernel_scale)
KERNEL_SHOWN = 32       # the least a kernel may measure on the screen without "actual size"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """runs/ with one finished run, runs/tiny, and its projector export: the layout of `python train.py`
    followed by `alexnet-tf projector --run-dir runs/...`. Width 0.375: the default run's 18 conv1 kernels
    per tower."""
    from alexnet_tf.training import train

    root = tmp_path_factory.mktemp("runs")
    run_dir = root / "tiny"
    keras.mixed_precision.set_global_policy("float32")
    train(alexnet_tf.load_config(None, tiny_overrides(**{"model.width": 0.375})), str(run_dir), verbose=0)
    assert main(["projector", "--run-dir", str(run_dir), "--count", str(PROJECTED)]) == 0
    return root


def shown_kernel_sides(text):
    """The side, in screen pixels, of a kernel in each filter image of a rendered page (PAGE_TEXT's IMG
    lines): the smaller of the image's two scale factors (object-fit contain in Time Series, a box of the
    image's own shape in IMAGES) times the kernel's side at actual size."""
    shown = re.findall(r"IMG natural (\d+)x(\d+) shown ([\d.]+)x([\d.]+)", text)
    return [KERNEL_NATURAL * min(float(sw) / int(nw), float(sh) / int(nh)) for nw, nh, sw, sh in shown]


def test_tensorboard_started_as_readme_says_shows_scalars_filters_and_projector(logdir, tmp_path):
    expected = {
        "#timeseries": ["tiny/tb/train", "tiny/tb/validation", "epoch_top1_error", "epoch_loss",
                        "conv1_filters/tower_1", "conv1_filters/tower_2", "IMG natural"],
        "#scalars": ["epoch_top1_error", "epoch_top5_error", "epoch_learning_rate", "epoch_loss"],
        "#images": ["conv1_filters/tower_1", "conv1_filters/tower_2", "IMG natural"],
        "#projector": [EMBEDDING, f"{PROJECTED}x{FC_UNITS}", "class"],
    }
    with TensorBoard(logdir, tmp_path / "tensorboard.log") as board, Chromium(tmp_path / "chromium") as browser:
        # TensorBoard reads the logs, and the projector decides whether it has anything to show, in the
        # background after the start; a page opened (or reloaded) after that shows them.
        runs = board.wait_for("data/runs", lambda runs: {"tiny/tb/train", "tiny/tb/validation"} <= set(runs))
        assert {"tiny/tb/train", "tiny/tb/validation"} <= set(runs), runs
        for page, strings in expected.items():
            if page == "#projector":
                listing = board.wait_for("data/plugins_listing", lambda p: p["projector"]["enabled"])
                assert listing["projector"]["enabled"], f"the projector plugin found no embedding under {logdir}"
            # the filter pages once both towers' images have loaded
            images = page in ("#timeseries", "#images")
            text = browser.page_text(board.url + page, strings, lambda t: not images or len(shown_kernel_sides(t)) >= 2)
            missing = [s for s in strings if not shows(text, s)]
            assert not missing, f"{page}: {missing} not in the rendered page; it reads:\n{text[-3000:]}"
            if images:
                sides = shown_kernel_sides(text)
                assert len(sides) == 2 and min(sides) >= KERNEL_SHOWN, (page, sides)


def test_the_projector_is_found_from_the_run_directorys_tb(logdir, tmp_path):
    """docs/retrieval.md's `tensorboard --logdir $R/tb`: the projector run, with the vectors' shape."""
    with TensorBoard(logdir / "tiny" / "tb", tmp_path / "tensorboard.log") as board:
        runs = board.wait_for("data/plugin/projector/runs", lambda runs: runs)
        assert runs == ["projector"]
        info = board.get("data/plugin/projector/info?run=projector")
        embedding = info["embeddings"][0]
        assert embedding["tensorName"] == EMBEDDING and embedding["tensorShape"] == [PROJECTED, FC_UNITS]
        assert embedding["metadataPath"] == "metadata.tsv" and embedding["sprite"]["imagePath"] == "sprite.png"
