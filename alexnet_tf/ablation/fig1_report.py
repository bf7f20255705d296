"""The numbers of `python -m alexnet_tf fig1` (fig1.py): the learning rate each activation trains at (chosen from the
sweep alone), steps to 25 % training error of ReLU and tanh over paired seeds, the LRN test-error comparison, and
the plot in the style of the paper's Fig. 1."""

import math

import numpy as np

from alexnet_tf.ablation.measure import SMOOTH, smoothed, steps_to
from alexnet_tf.ablation.stats import mean_std, paired
from alexnet_tf.errors import UserError

THRESHOLD = 0.25


def reached(run, threshold=THRESHOLD):
    """Steps to `threshold` of one run record (measure.steps_to on its exact per-step counts), or None."""
    wrong = run["wrong"]
    return steps_to(np.arange(1, len(wrong) + 1), np.asarray(wrong) / run["batch"], threshold, run["batch"])


def stable(run, threshold=THRESHOLD):
    """The run trains stably: every loss finite, all its steps taken, and its last SMOOTH steps together at or
    below `threshold` (a rate that gets there and then oscillates back up is not stable)."""
    wrong = run["wrong"]
    if not run["finite"] or len(wrong) < run["steps"]:
        return False
    return sum(wrong[-SMOOTH:]) <= math.floor(threshold * run["batch"] * SMOOTH)


def choose_lr(by_lr):
    """The fastest stable rate of one activation's sweep ({lr: [run record per sweep seed]}): among the rates
    whose every sweep run is stable (and so reached the threshold), the one with the fewest mean log steps to
    it; a tie goes to the smaller rate. The rule reads the sweep only, never a comparison run."""
    speed = {lr: np.mean([math.log(reached(r)) for r in runs]) for lr, runs in by_lr.items()
             if all(stable(r) for r in runs)}
    if not speed:
        raise UserError(f"no rate of {sorted(by_lr)} trains stably to {THRESHOLD:.0%}; expected at least one: "
                        "widen fig1.SWEEP_LRS")
    return min(speed, key=lambda lr: (speed[lr], lr))


def _interval(test, transform=lambda v: v):
    return {"mean": transform(test.diff), "low": transform(test.low), "high": transform(test.high), "t": test.t,
            "df": test.df, "p": test.p, "n": test.n_a}


def steps_comparison(compare):
    """ReLU vs tanh: per seed steps to 25 % (a run that never reached it counts as all its steps: a bound), and the
    paired test on log steps, as the ratio tanh / ReLU of geometric means with its 95 % interval."""
    steps = {act: [reached(r) or len(r["wrong"]) for r in runs] for act, runs in compare.items()}
    never = {act: sum(reached(r) is None for r in runs) for act, runs in compare.items()}
    test = paired(np.log(steps["relu"]), np.log(steps["tanh"]))
    return {"steps": steps, "never_reached": never, "seeds": [r["seed"] for r in compare["relu"]],
            "ratio": _interval(test, math.exp), "log_ratio": _interval(test)}


def lrn_comparison(lrn):
    """Test top-1 error with LRN (lrn[True]) and without (lrn[False]) over paired seeds: the difference without
    minus with, in fractions, with its 95 % interval (the paper: 13 % - 11 % = +2 pp on CIFAR-10)."""
    if not lrn[True]:
        return None
    errors = {"with": [r["test_top1_error"] for r in lrn[True]], "without": [r["test_top1_error"] for r in lrn[False]]}
    return {"test_top1_error": errors, "seeds": [r["seed"] for r in lrn[True]],
            "mean_sd": {k: mean_std(v)[:2] for k, v in errors.items()},
            "difference": _interval(paired(errors["with"], errors["without"])),
            "steps": lrn[True][0]["steps"]}


def summarise(sweep, chosen, compare, lrn, command):
    """summary.json: the sweep's steps per rate, the chosen rates, both comparisons, time and the command."""
    runs = [r for a in sweep.values() for rs in a.values() for r in rs] + [r for rs in compare.values() for r in rs] + \
        [r for rs in lrn.values() for r in rs]
    return {
        "command": command,
        "sweep": {act: {f"{lr:g}": {"steps_to_25": [reached(r) for r in rs], "stable": [stable(r) for r in rs]}
                        for lr, rs in by_lr.items()} for act, by_lr in sweep.items()},
        "chosen_lr": chosen,
        "steps_to_25": steps_comparison(compare),
        "lrn": lrn_comparison(lrn),
        "machines": sorted({r["machine"] for r in runs}),
        "wall_seconds": sum(r["wall_seconds"] for r in runs), "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
    }


def text(summary):
    """A few lines for the terminal."""
    s, lines = summary["steps_to_25"], [f"chosen rates: {summary['chosen_lr']}"]
    r = s["ratio"]
    lines.append(f"steps to 25 %: ReLU {s['steps']['relu']}, tanh {s['steps']['tanh']}; tanh / ReLU x{r['mean']:.2f} "
                 f"[x{r['low']:.2f}, x{r['high']:.2f}], p = {r['p']:.3g}")
    if summary["lrn"]:
        d = summary["lrn"]["difference"]
        lines.append(f"test error without - with LRN: {100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] "
                     f"pp, p = {d['p']:.3g}")
    return "\n".join(lines)


def plot(compare, chosen, out, per_epoch):
    """The paper's Fig. 1 in its style: training error rate against epochs, ReLU solid, tanh dashed; one thin line
    per seed (SMOOTH-step trailing mean of the exact per-step errors) and a thick one for the mean over seeds;
    `per_epoch`: steps per epoch."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for act, style, label in (("relu", "-", "ReLU"), ("tanh", "--", "tanh")):
        curves = [smoothed(np.asarray(r["wrong"]) / r["batch"]) for r in compare[act]]
        n = min(len(c) for c in curves)
        epochs = np.arange(1, n + 1) / per_epoch
        for c in curves:
            ax.plot(epochs, c[:n], style, color="k", lw=0.4, alpha=0.25)
        ax.plot(epochs, np.mean([c[:n] for c in curves], axis=0), style, color="k", lw=1.6,
                label=f"{label} (lr {chosen[act]:g}), mean of {len(curves)} seeds")
    ax.axhline(THRESHOLD, color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="epochs", ylabel="training error rate", ylim=(0, 0.9),
           title="Fig. 1 on Fashion-MNIST: four-layer CNN (cuda-convnet layers-18pct), ReLU vs tanh")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
