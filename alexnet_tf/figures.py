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


def save_filter_grid(kernels_per_tower, out, scale=8):
    """The conv1 kernels as a PNG: one block per tower (Fig. 3)."""
    from alexnet_tf.callbacks import filter_grid

    grid = filter_grid(kernels_per_tower, scale=scale)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plt.imsave(out, grid)
    return grid.shape


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


def prediction_panel(images, top_names, top_probabilities, out, true_labels=None, cols=4):
    """Each image with the bars of its top-5 classes (the paper's Fig. 4 left).

    images: list of (H, W, C) 0..255 arrays; top_names / top_probabilities: (N, k); true_labels:
    class names or None per image. The true label is written under the image; its bar, when it is
    in the top k, is drawn in red (as in the paper), the others in grey.
    Returns the PNG's (width, height) in pixels: cols x rows cells of PREDICTION_CELL inches.
    """
    n = len(images)
    cols = min(cols, n)
    rows = -(-n // cols)
    width, height = PREDICTION_CELL
    fig = plt.figure(figsize=(cols * width, rows * height), dpi=PANEL_DPI)
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[1.4, 1.0] * rows, hspace=0.45, wspace=0.75,
                            left=0.28 / cols, right=0.97, top=0.97, bottom=0.03)
    for i in range(n):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        _show(ax, images[i])
        true = true_labels[i] if true_labels is not None else None
        if true is not None:
            ax.set_xlabel(str(true), fontsize=9)
        bars = fig.add_subplot(grid[2 * r + 1, c])
        names = [str(s) for s in top_names[i]]
        probs = np.asarray(top_probabilities[i], float)
        colors = ["tab:red" if name == true else "0.6" for name in names]
        y = np.arange(len(names))[::-1]
        bars.barh(y, probs, color=colors)
        bars.set_yticks(y)
        bars.set_yticklabels(names, fontsize=8)
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    _save_exact(fig, out)
    return int(round(cols * width * PANEL_DPI)), int(round(rows * height * PANEL_DPI))


def neighbours_panel(queries, neighbours, out, query_labels=None, neighbour_labels=None):
    """Query images in the first column, their nearest training images to the right (Fig. 4 right).

    queries: list of (H, W, C) 0..255 arrays; neighbours: list (per query) of lists of arrays;
    labels (optional) are written under each image, green when a neighbour's label is the query's.
    Returns the PNG's (width, height) in pixels: (1 + k) x queries cells of NEIGHBOUR_CELL inches.
    """
    rows, k = len(queries), max(len(n) for n in neighbours)
    cell = NEIGHBOUR_CELL
    fig, axes = plt.subplots(rows, 1 + k, figsize=((1 + k) * cell, rows * cell), dpi=PANEL_DPI, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.03, wspace=0.08, hspace=0.35)
    for r in range(rows):
        for c in range(1 + k):
            ax = axes[r, c]
            ax.axis("off")
            if c == 0:
                _show(ax, queries[r])
                ax.axis("on")
                for side in ax.spines.values():
                    side.set_color("tab:blue")
                    side.set_linewidth(2)
                if query_labels is not None:
                    ax.set_xlabel(str(query_labels[r]), fontsize=7, color="tab:blue")
            elif c - 1 < len(neighbours[r]):
                _show(ax, neighbours[r][c - 1])
                ax.axis("on")
                for side in ax.spines.values():
                    side.set_visible(False)
                if neighbour_labels is not None:
                    label = neighbour_labels[r][c - 1]
                    same = query_labels is not None and label == query_labels[r]
                    ax.set_xlabel(str(label), fontsize=7, color="tab:green" if same else "tab:red")
    _save_exact(fig, out)
    return int(round((1 + k) * cell * PANEL_DPI)), int(round(rows * cell * PANEL_DPI))


def _save_exact(fig, out):
    """Save at the figure's own size (no tight bounding box), so the pixel size is known in advance."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=PANEL_DPI)
    plt.close(fig)


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
    """`python -m alexnet_tf filters`: the conv1 filters of a run as a PNG grid."""
    from alexnet_tf.callbacks import conv1_kernels
    from alexnet_tf.run_dir import load_run

    shape = save_filter_grid(conv1_kernels(load_run(args.run_dir, args.checkpoint).model), args.out)
    print(f"wrote {args.out} ({shape[1]}x{shape[0]} px)")
