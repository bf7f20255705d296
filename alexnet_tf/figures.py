"""Figures written as PNG files: learning curves from TensorBoard logs, the conv1 filter grid (Fig. 3)."""

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_scalars(run_dir, split, tag):
    """(steps, values) of a scalar that Keras's TensorBoard callback wrote to run_dir/tb/<split>."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tensorflow as tf

    acc = EventAccumulator(os.path.join(run_dir, "tb", split), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        raise KeyError(f"{run_dir}: no TensorBoard scalar {tag!r} in tb/{split}; found {sorted(acc.Tags()['tensors'])}")
    events = acc.Tensors(tag)
    steps = np.array([e.step for e in events])
    values = np.array([float(tf.make_ndarray(e.tensor_proto)) for e in events])
    order = np.argsort(steps, kind="stable")
    # a resumed run may rewrite steps: keep the last value written for each step
    last = {s: v for s, v in zip(steps[order], values[order])}
    return np.array(list(last)), np.array(list(last.values()))


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
