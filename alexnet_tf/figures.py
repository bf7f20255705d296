"""Figures written as PNG files: learning curves from TensorBoard logs, the conv1 filter grid (Fig. 3)."""

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_tf.arguments import add_run_arguments  # noqa: E402
from alexnet_tf.tblogs import read_scalars  # noqa: E402


def plot_curves(runs, out, curves=(("train", "epoch_top1_error"), ("validation", "epoch_top1_error")),
                title="", xlabel="epoch"):
    """One panel per (split, tag); one line per run. `runs` maps a label to a run directory."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (split, tag) in zip(axes[0], curves):
        for label, run_dir in runs.items():
            steps, values = read_scalars(run_dir, split, tag)
            ax.plot(steps + (1 if tag.startswith("epoch_") else 0), values, marker="." if len(steps) < 40 else None,
                    label=label)
        ax.set_title(f"{split} {tag.removeprefix('epoch_').removeprefix('batch_')}")
        ax.set_xlabel(xlabel if tag.startswith("epoch_") else "step")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


FIGURE_ASPECT = 5  # a tower's block about 5 times as wide as high: the paper's 48 kernels 16 x 3, 18 as 9 x 2
FILTER_DPI = 100
TOWER_LABEL_INCHES = 0.3  # above each tower's block, for its label


def filter_figure(kernels_per_tower, title):
    """The conv1 kernels, one labelled block per tower (the paper's Fig. 3: GPU 1's kernels above GPU 2's),
    each tower's kernels in whole rows, a kernel >= KERNEL_PIXELS a side at FILTER_DPI. The title sits above
    the figure's box; save with a tight bounding box (save_tight) to keep it."""
    from alexnet_tf.callbacks import kernel_columns, kernel_scale, tower_grid

    cols = kernel_columns(np.shape(kernels_per_tower[0])[-1], FIGURE_ASPECT)
    grids = [tower_grid(k, cols, kernel_scale(k)) for k in kernels_per_tower]
    h, w = (np.array(grids[0].shape[:2]) / FILTER_DPI).tolist()
    height = len(grids) * (h + TOWER_LABEL_INCHES)
    fig = plt.figure(figsize=(w, height), dpi=FILTER_DPI)
    for i, grid in enumerate(grids):
        ax = fig.add_axes([0, 1 - (i + 1) * (h + TOWER_LABEL_INCHES) / height, 1, h / height])
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        paper = f" (GPU {i + 1} in the paper)" if len(grids) > 1 else ""
        ax.set_title(f"tower {i + 1}{paper}: {np.shape(kernels_per_tower[i])[-1]} kernels", fontsize=10, loc="left")
    fig.suptitle(title, fontsize=11, y=1 + 0.05 / height, va="bottom")
    return fig


def save_tight(fig, out, dpi=FILTER_DPI):
    """Save with the bounding box of everything drawn (titles outside the figure's box included); returns
    the PNG's (width, height) in pixels."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    from PIL import Image

    with Image.open(out) as image:
        return image.size


def _save(fig, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# === Fig. 4: predictions and nearest neighbours ===

PANEL_DPI = 100
PREDICTION_CELL = (2.8, 3.4)   # inches per image: the image on top, its top-5 bars below
NEIGHBOUR_CELL = 1.3           # inches per thumbnail


def _show(ax, image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
    ax.set_xticks([])
    ax.set_yticks([])


def short(name, limit=26):
    """A file name cut in the middle to fit under a thumbnail."""
    name = str(name)
    return name if len(name) <= limit else name[:limit // 2 - 1] + "..." + name[-(limit // 2 - 2):]


def prediction_figure(images, top_names, top_probabilities, names=None, true_labels=None, cols=4):
    """Each image with the bars of its top-5 classes (the paper's Fig. 4 left).

    images: list of (H, W, C) 0..255 arrays; top_names / top_probabilities: (N, k); names: the file name
    (or "val[i]") of each image, written above it; true_labels: class names or None per image. The true
    label is written under the image; its bar, when it is in the top k, is drawn in red (as in the paper),
    the others in grey. The figure is cols x rows cells of PREDICTION_CELL inches.
    """
    n = len(images)
    cols = min(cols, n)
    rows = -(-n // cols)
    width, height = PREDICTION_CELL
    fig = plt.figure(figsize=(cols * width, rows * height), dpi=PANEL_DPI)
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[1.4, 1.0] * rows, hspace=0.5, wspace=0.75,
                            left=0.28 / cols, right=0.97, top=1 - 0.25 / (rows * height),
                            bottom=0.3 / (rows * height))  # room for the last row's tick labels
    for i in range(n):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        _show(ax, images[i])
        if names is not None:
            ax.set_title(short(names[i]), fontsize=8)
        true = true_labels[i] if true_labels is not None else None
        if true is not None:
            ax.set_xlabel(str(true), fontsize=9)
        bars = fig.add_subplot(grid[2 * r + 1, c])
        labels = [str(s) for s in top_names[i]]
        probs = np.asarray(top_probabilities[i], float)
        colors = ["tab:red" if name == true else "0.6" for name in labels]
        y = np.arange(len(labels))[::-1]
        bars.barh(y, probs, color=colors)
        bars.set_yticks(y)
        bars.set_yticklabels(labels, fontsize=8)
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    return fig


def prediction_panel(images, top_names, top_probabilities, out, names=None, true_labels=None, cols=4):
    """prediction_figure saved as a PNG; returns its (width, height) in pixels."""
    fig = prediction_figure(images, top_names, top_probabilities, names, true_labels, cols)
    return _save_exact(fig, out)


SAME, OTHER, UNKNOWN = "tab:green", "tab:red", "0.35"  # a neighbour's label: the query's class, another, not known
TITLE_INCHES, LABEL_INCHES = 0.55, 0.22  # the band above the panel for its title, below each row for labels


def neighbours_figure(queries, neighbours, distance, query_names=None, query_labels=None, neighbour_labels=None):
    """Query images in the first column, their nearest training images to the right (Fig. 4 right).

    queries: list of (H, W, C) 0..255 arrays; neighbours: list (per query) of lists of arrays; distance:
    what ranked them ("Euclidean distance of fc7 vectors"), said in the title; query_names (files) are written
    above the queries. Labels are written under each image; a neighbour's is green when it is the query's
    class, red when another, grey when the query's class is not known (None).
    """
    rows, k = len(queries), max(len(n) for n in neighbours)
    cell = NEIGHBOUR_CELL
    width, height = (1 + k) * cell, TITLE_INCHES + rows * (cell + LABEL_INCHES)
    fig, axes = plt.subplots(rows, 1 + k, figsize=(width, height), dpi=PANEL_DPI, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - TITLE_INCHES / height, bottom=LABEL_INCHES / height,
                        wspace=0.08, hspace=(LABEL_INCHES + 0.1) / cell)
    known = query_labels is not None and any(q is not None for q in query_labels)
    fig.suptitle(f"the {k} nearest training images of each query (left, blue) by {distance}\n"
                 + ("green: the query's class, red: another class" if known else
                    "the queries' classes are not known: labels in grey"), fontsize=8, y=1 - 0.06 / height, va="top")
    for r in range(rows):
        query_label = query_labels[r] if query_labels is not None else None
        for c in range(1 + k):
            ax = axes[r, c]
            ax.axis("off")
            if c == 0:
                _show(ax, queries[r])
                ax.axis("on")
                for side in ax.spines.values():
                    side.set_color("tab:blue")
                    side.set_linewidth(2)
                if query_names is not None:
                    ax.set_title(short(query_names[r], 20), fontsize=6, color="tab:blue", pad=2)
                if query_label is not None:
                    ax.set_xlabel(str(query_label), fontsize=7, color="tab:blue")
            elif c - 1 < len(neighbours[r]):
                _show(ax, neighbours[r][c - 1])
                ax.axis("on")
                for side in ax.spines.values():
                    side.set_visible(False)
                if neighbour_labels is not None:
                    label = neighbour_labels[r][c - 1]
                    color = UNKNOWN if query_label is None else SAME if label == query_label else OTHER
                    ax.set_xlabel(str(label), fontsize=7, color=color)
    return fig


def neighbours_panel(queries, neighbours, out, distance, query_names=None, query_labels=None, neighbour_labels=None):
    """neighbours_figure saved as a PNG; returns its (width, height) in pixels."""
    return _save_exact(neighbours_figure(queries, neighbours, distance, query_names, query_labels, neighbour_labels),
                       out)


def _save_exact(fig, out):
    """Save at the figure's own size (no tight bounding box), so the pixel size is known in advance;
    returns it, (width, height) in pixels."""
    width, height = fig.get_size_inches() * PANEL_DPI
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=PANEL_DPI)
    plt.close(fig)
    return int(round(width)), int(round(height))


# === The `curves` and `filters` commands ===

DEFAULT_CURVES = ("train:epoch_top1_error", "validation:epoch_top1_error")  # without --curve

def add_curves_arguments(parser):
    """The `curves` command's arguments."""
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR",
                        help="run directories; LABEL= names a run in the legend (default: its directory's name)")
    parser.add_argument("--out", required=True, metavar="PNG", help="the PNG to write")
    parser.add_argument("--curve", action="append", metavar="SPLIT:TAG",
                        help="e.g. validation:epoch_top1_error, train:batch_loss (repeatable)")
    parser.add_argument("--title", default="", help="the figure's title (default: none)")


def curves_command(args):
    """`python -m alexnet_tf curves`: learning curves of runs (default: top-1 error, training and validation)."""
    runs = {}
    for item in args.runs:
        label, _, path = item.rpartition("=")
        runs[label or os.path.basename(os.path.normpath(path))] = path
    curves = [tuple(c.split(":", 1)) for c in args.curve or DEFAULT_CURVES]
    plot_curves(runs, args.out, curves=curves, title=args.title)
    print(f"wrote {args.out}")


def add_filters_arguments(parser):
    """The `filters` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, metavar="PNG", help="the PNG to write")


def filters_command(args):
    """`python -m alexnet_tf filters`: the conv1 filters of a run as a PNG (Fig. 3)."""
    size = save_tight(run_filter_figure(args.run_dir, args.checkpoint), args.out)
    print(f"wrote {args.out} ({size[0]}x{size[1]} px)")


def run_filter_figure(run_dir, checkpoint=None):
    """filter_figure of a run's conv1, titled with the run, the weights and the kernels' shape."""
    from alexnet_tf.callbacks import conv1_kernels
    from alexnet_tf.run_dir import load_run

    kernels = conv1_kernels(load_run(run_dir, checkpoint).model)
    return filter_figure(kernels, filter_title(run_dir, checkpoint, kernels))


def filter_title(run_dir, checkpoint, kernels_per_tower):
    """The filter figure's title: the run, its weights, the kernels' count and shape."""
    h, w, c, n = np.shape(kernels_per_tower[0])
    towers = f"{len(kernels_per_tower)} towers x {n}" if len(kernels_per_tower) > 1 else f"{n}"
    return (f"conv1 kernels of {os.path.normpath(run_dir)} ({checkpoint or 'model.keras'})\n"
            f"{towers} kernels of {h}x{w}x{c}, each scaled to [0, 1] on its own")
