"""The report's figures (matplotlib, PNG): the paper's Fig. 1 on our data, error curves of every
arm, final errors per arm with every seed, and dropout's gap opening up. Each takes the study's
results ({arm name: ArmRuns}) and returns its figure, or None when the arms it needs have no run."""

import math
import os

import numpy as np

from alexnet_tf.ablation.measure import SMOOTH, smoothed
from alexnet_tf.ablation.stats import mean_std
from alexnet_tf.ablation.study import STEP_METRICS, THRESHOLD


def _have(results, *arms):
    return all(name in results and results[name].runs for name in arms)


def fig1_relu_tanh(results, plt, threshold=THRESHOLD, rate="the study's schedule"):
    """The paper's Fig. 1: training error per step of ReLU (base) and tanh, one line per seed, with the
    threshold the claim reads."""
    if not _have(results, "base", "tanh"):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style, label in (("base", "-", "ReLU"), ("tanh", "--", "tanh")):
        for i, run in enumerate(results[name].runs):
            steps, errors = run.curve  # drawn as the claims read it: the trailing mean over measure.SMOOTH logs
            ax.plot(steps / run.steps_per_epoch, smoothed(errors), style, color="tab:blue" if name == "base" else "tab:red",
                    alpha=0.8, lw=1, label=label if i == 0 else None)
    ax.axhline(threshold, color="0.4", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[1], threshold, f" {threshold:.0%}", va="center", ha="left", fontsize=8)
    ax.set(xlabel="epochs", ylabel=f"training error rate, trailing {SMOOTH}-step mean", ylim=(0, 1),
           title=f"Fig. 1 on Fashion-MNIST, {rate}: ReLU (solid), tanh (dashed), per seed")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def curves(present, plt):
    """Training and validation error per epoch, mean over seeds, of every arm in `present` ([(name, ArmRuns)])."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, r in present:
        for ax, split in zip(axes, ("train", "validation")):
            runs_curves = [run.epoch_curves[split] for run in r.runs]
            length = min(len(s) for s, _ in runs_curves)
            mean = np.mean([v[:length] for _, v in runs_curves], axis=0)
            ax.plot(np.arange(1, length + 1), mean, marker=".", lw=1.2 if n != "base" else 2.4, label=n)
    axes[0].set_title("training error as trained (dropout, flips), epoch mean")
    axes[1].set_title("validation top-1 error")
    for ax in axes:
        ax.set(xlabel="epoch", ylabel="top-1 error")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8, ncol=2)
    return fig


def val_error_per_arm(present, plt):
    """Final validation error per arm of `present` ([(name, ArmRuns)]): mean ± std bars, a dot per seed."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [n for n, _ in present]
    for i, (n, r) in enumerate(present):
        v = 100 * np.array(r.values("val_top1_error"))
        m, s, _ = mean_std(v)
        ax.bar(i, m, color="tab:blue" if n == "base" else "0.7", yerr=None if math.isnan(s) else s, capsize=4)
        ax.plot(np.full(len(v), i), v, "k.", ms=4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    low = min(100 * min(r.values("val_top1_error")) for _, r in present)
    ax.set_ylim(max(0, low - 2), None)
    ax.set(ylabel="validation top-1 error (%)", title="final validation error per arm (mean ± std, dots: seeds)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def dropout(results, plt):
    """§4.2: training (as trained) and validation error per epoch with and without dropout, per seed."""
    if not _have(results, "base", "no_dropout"):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in (("base", "tab:blue"), ("no_dropout", "tab:orange")):
        for i, run in enumerate(results[name].runs):
            for split, style in (("train", "--"), ("validation", "-")):
                steps, values = run.epoch_curves[split]
                ax.plot(steps + 1, values, style, color=color, lw=1,
                        label=f"{'dropout 0.5' if name == 'base' else 'no dropout'}, {split}" if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="top-1 error", title="dropout (§4.2): training error as trained (dashed) vs validation (solid)")
    ax.title.set_fontsize(9)
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def make_figures(results, fig_dir, constant=None):
    """The PNGs of the report in `fig_dir` (with `constant`, claim 1b's runs, also theirs); returns [(caption, path)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(n, r) for n, r in results.items() if r.runs]
    figures = [
        ("fig1_relu_tanh.png", "Training error of ReLU (solid) and tanh (dashed) networks, per seed (cf. the paper's Fig. 1)",
         lambda: fig1_relu_tanh(results, plt)),
        ("fig1_relu_tanh_constant_lr.png", "Claim 1b: training error of ReLU (solid) and tanh (dashed) at a constant "
         "learning rate, per seed, and the 25 % it is read at", lambda: fig1_relu_tanh(constant or {}, plt, STEP_METRICS[
             "steps_to_25"], "constant learning rate")),
        ("curves.png", "Training and validation error per epoch, mean over seeds, every arm (log scale)",
         lambda: curves(present, plt) if present else None),
        ("val_error_per_arm.png", "Final validation top-1 error per arm: mean ± std, one dot per seed",
         lambda: val_error_per_arm(present, plt) if present else None),
        ("dropout.png", "Dropout vs none: training error as trained (dashed, with dropout active) and validation error "
         "(solid) per epoch, per seed", lambda: dropout(results, plt)),
    ]
    os.makedirs(fig_dir, exist_ok=True)
    made = []
    for name, caption, draw in figures:
        fig = draw()
        if fig is None:
            continue
        path = os.path.join(fig_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((caption, path))
    return made
