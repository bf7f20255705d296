"""What the figures tell a reader, read from the matplotlib figures the commands save and from the image
TensorBoard is given: titles, tower labels, file names, colours, the distance used, nothing cut off."""

import os

import keras
import matplotlib.colors as mcolors
import matplotlib.text
from matplotlib.backends.backend_agg import FigureCanvasAgg
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import figures
from alexnet_tf.__main__ import main
from alexnet_tf.callbacks import Conv1Filters
from conftest import ROOT

GREEN, RED = mcolors.to_rgb("tab:green"), mcolors.to_rgb("tab:red")


@pytest.fixture
def saved_figures(monkeypatch):
    """The panels' figures as the commands save them (kept here for reading, then saved as usual)."""
    saved, save = [], figures._save_exact

    def keep(fig, out):
        saved.append(fig)
        return save(fig, out)
    monkeypatch.setattr(figures, "_save_exact", keep)
    return saved


def texts_outside(fig):
    """The texts of a figure that do not lie wholly inside it (cut off in the PNG)."""
    canvas = FigureCanvasAgg(fig)  # the commands closed the figure (pyplot keeps no canvas for it)
    canvas.draw()
    renderer, box = canvas.get_renderer(), fig.bbox
    outside = []
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text().strip():
            extent = text.get_window_extent(renderer)
            if min(extent.x0 - box.x0, extent.y0 - box.y0, box.x1 - extent.x1, box.y1 - extent.y1) < -0.5:
                outside.append(text.get_text())
    return outside


def scaled(kernel):
    """A kernel (h, w, channels) scaled to [0, 1] on its own, as the figures draw it, grey repeated over RGB."""
    k = (kernel - kernel.min()) / (kernel.max() - kernel.min())
    return np.repeat(k, 3, axis=2) if k.shape[2] == 1 else k


def cell(image, row, col, side, scale, gap=1):
    """The kernel at (row, col) of a tower image with `gap`-pixel borders, every weight a scale x scale block,
    read back at one pixel per weight."""
    top, left = (gap + row * (side + gap)) * scale, (gap + col * (side + gap)) * scale
    return image[top:top + side * scale:scale, left:left + side * scale:scale]


# === Fig. 3: the conv1 filters ===

def test_filter_figure_titles_and_labels_each_tower_with_whole_rows():
    rng = np.random.default_rng(0)
    towers = [rng.normal(size=(5, 5, 1, 18)), rng.normal(size=(5, 5, 1, 18))]  # the default run's conv1
    fig = figures.filter_figure(towers, "conv1 kernels of runs/x")
    assert fig.get_suptitle() == "conv1 kernels of runs/x"
    assert [ax.get_title(loc="left") for ax in fig.axes] == [
        "tower 1 (GPU 1 in the paper): 18 kernels", "tower 2 (GPU 2 in the paper): 18 kernels"]
    fig.canvas.draw()
    for ax, kernels in zip(fig.axes, towers):
        image = np.asarray(ax.images[0].get_array())
        # 9 kernels a row, 2 full rows (not 16 + 2), each weight a 10 x 10 block: a kernel is 50 px a side
        assert image.shape == ((2 * 6 + 1) * 10, (9 * 6 + 1) * 10, 3)
        assert ax.get_window_extent().width == pytest.approx(image.shape[1])  # one figure pixel per image pixel
        for i in range(18):
            np.testing.assert_allclose(cell(image, i // 9, i % 9, 5, 10), scaled(kernels[..., i]), atol=1e-6)
    figures.plt.close(fig)


def test_filters_command_names_the_run_and_the_kernels(tiny_run, tmp_path, capsys):
    fig = figures.run_filter_figure(tiny_run, "best")
    assert fig.get_suptitle() == (f"conv1 kernels of {tiny_run} (best)\n"
                                  "2 towers x 6 kernels of 3x3x3, each scaled to [0, 1] on its own")
    figures.plt.close(fig)
    out = tmp_path / "filters.png"
    assert main(["filters", "--run-dir", tiny_run, "--out", str(out)]) == 0
    with Image.open(out) as png:
        size = png.size
    assert capsys.readouterr().out.strip().endswith(f"wrote {out} ({size[0]}x{size[1]} px)")
    # 6 kernels a row of 3x3 weights at 16 px each (a kernel 48 px), two towers, their labels and the title
    assert size[0] >= (6 * 4 + 1) * 16 and size[1] >= 2 * (4 + 1) * 16 + 60


def test_the_filter_figure_in_docs_is_of_the_default_run(tmp_path):
    """docs/fig3_filters.png is `filters --run-dir runs/fashion_mnist` of a model of the default config
    (its kernels' count and shape set the PNG's size), not of an older network."""
    import alexnet_tf
    from alexnet_tf.callbacks import conv1_kernels
    from alexnet_tf.model import build_model
    from alexnet_tf.train_command import DEFAULT_CONFIG

    kernels = conv1_kernels(build_model(alexnet_tf.load_config(DEFAULT_CONFIG)))
    title = figures.filter_title("runs/fashion_mnist", None, kernels)
    size = figures.save_tight(figures.filter_figure(kernels, title), tmp_path / "fig3.png")
    with Image.open(os.path.join(ROOT, "docs", "fig3_filters.png")) as png:
        assert png.size == size


def test_tensorboard_gets_one_image_per_tower_of_whole_rows(tmp_path):
    x = keras.Input((28, 28, 1))
    towers = [keras.layers.Conv2D(18, 5, name=f"conv1_{i}")(x) for i in range(2)]
    model = keras.Model(x, keras.layers.Concatenate()(towers))
    callback = Conv1Filters(str(tmp_path))
    callback.set_model(model)
    callback.on_epoch_end(0)
    callback.on_train_end()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    assert sorted(events.Tags()["tensors"]) == ["conv1_filters/tower_1", "conv1_filters/tower_2"]
    for i in range(2):
        width, height, png = events.Tensors(f"conv1_filters/tower_{i + 1}")[0].tensor_proto.string_val
        image = tf.io.decode_png(png).numpy() / 255
        # 6 kernels a row, 3 rows (about the 3:2 of TensorBoard's card), each weight 10 x 10 px
        assert (int(width), int(height)) == ((6 * 6 + 1) * 10, (3 * 6 + 1) * 10) and image.shape[:2] == (190, 370)
        kernels = model.get_layer(f"conv1_{i}").kernel.numpy()
        for k in range(18):
            np.testing.assert_allclose(cell(image, k // 6, k % 6, 5, 10), scaled(kernels[..., k]),
                                       atol=1 / 255 + 1e-6)  # the PNG's 8 bits


# === Fig. 4: predictions and neighbours ===

def image_files(tmp_path):
    """Two images in a folder named after class 3 (their class is known) and one outside (not known)."""
    folder = tmp_path / "class_3"
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = [folder / "img0.png", folder / "img1.png", tmp_path / "holiday_photo_with_a_long_name.png"]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path)
    return [str(p) for p in paths]


def test_predict_panel_names_every_image(tiny_run, tmp_path, saved_figures, capsys):
    paths = image_files(tmp_path)
    out = tmp_path / "pred.png"
    assert main(["predict", "--run-dir", tiny_run, paths[0], paths[2], "--val", "2", "--out", str(out)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")][:4]
    validation_names = [line.split()[0] for line in printed[2:]]
    titles = [ax.get_title() for ax in saved_figures[0].axes if ax.images]
    assert titles == ["img0.png", "holiday_phot...ng_name.png", *validation_names]  # long names cut in the middle
    assert all(name.startswith("val[") for name in validation_names)
    assert texts_outside(saved_figures[0]) == []


def neighbour_rows(fig, k):
    """(query title, query label, [(neighbour label, colour), ...]) per row of a neighbours figure."""
    rows = []
    for r in range(len(fig.axes) // (1 + k)):
        query, *others = fig.axes[r * (1 + k):(r + 1) * (1 + k)]
        rows.append((query.get_title(), query.get_xlabel(),
                     [(ax.get_xlabel(), mcolors.to_rgb(ax.xaxis.label.get_color())) for ax in others]))
    return rows


def test_neighbours_panel_of_files_colours_by_the_known_class_and_says_its_distance(tiny_run, tmp_path,
                                                                                    saved_figures):
    paths = image_files(tmp_path)
    assert main(["neighbours", "--run-dir", tiny_run, *paths, "--k", "4", "--out", str(tmp_path / "nn.png")]) == 0
    fig = saved_figures[0]
    rows = neighbour_rows(fig, 4)
    assert [(title, label) for title, label, _ in rows] == [
        ("img0.png", "class_3"), ("img1.png", "class_3"), ("holiday_p...name.png", "")]
    for _, label, neighbours in rows[:2]:  # the class is known: green exactly where the labels agree
        assert [colour for _, colour in neighbours] == [GREEN if n == label else RED for n, _ in neighbours]
    assert all(colour not in (GREEN, RED) for _, colour in rows[2][2])  # not known: neither
    assert texts_outside(fig) == []
    assert "by Euclidean distance of 32-d fc7 vectors" in fig.get_suptitle()


def test_neighbours_panel_says_hamming_distance_with_an_encoder(tiny_run, tmp_path, saved_figures):
    from alexnet_tf import retrieval
    from alexnet_tf.retrieval.codes import train_autoencoder
    from alexnet_tf.run_dir import load_run
    from alexnet_tf.serving import Classifier

    run = load_run(tiny_run)
    features, _, _ = retrieval.cached_features(run, Classifier.from_run(run), "train", progress=False)
    encoder = train_autoencoder(features, bits=8, epochs=1, hidden=16)
    encoder.save(tmp_path / "enc.keras")
    assert main(["neighbours", "--run-dir", tiny_run, "--queries", "3", "--k", "4", "--encoder",
                 str(tmp_path / "enc.keras"), "--out", str(tmp_path / "nn.png")]) == 0
    fig = saved_figures[0]
    assert "by Hamming distance of 8-bit codes (enc.keras)" in fig.get_suptitle()
    for _, label, neighbours in neighbour_rows(fig, 4):  # validation queries: their classes are known
        assert label and [colour for _, colour in neighbours] == [GREEN if n == label else RED for n, _ in neighbours]
    assert texts_outside(fig) == []
    assert os.path.getsize(tmp_path / "nn.png") > 0
