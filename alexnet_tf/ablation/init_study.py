"""The paper's initialisation at the paper's geometry: `python -m alexnet_tf init-study`.

Three runs of configs/init_paper_geometry.yaml (Fashion-MNIST rescaled to 256, random 224 crops, the
full two-tower network and recipe) that differ only in their initialisation (INITS). Each is trained
by train.py in a subprocess (resumable: a rerun continues from the last checkpoint), its test split
is evaluated once more with the paper's 10 crops, and the learning curves of the three go into one
figure. The printed table is what docs/init_study.md records.

"Learns" is read off the training error the optimiser sees, per step (train.log_every = 1; the exact
per-batch values recovered from Keras's running epoch means, measure.windowed):

    smoothed(s) = mean of the batch errors of steps s - SMOOTH + 1 .. s       (SMOOTH = 20, measure.py)
    steps to learn = the first s with smoothed(s) <= LEARNS (or none within the run), compared as whole counts

Chance is 90 % (10 classes); LEARNS = 80 % is far enough below it that a 20-step mean of 128-image
batches (standard error ~0.8 pp at 90 %) does not reach it by luck.
"""

import os
import subprocess
import sys

import numpy as np

from alexnet_tf.ablation.measure import SMOOTH, smoothed, steps_per_epoch, steps_to, training_error_curve
from alexnet_tf.ablation.processes import train_subprocess
from alexnet_tf.ablation.study import ROOT
from alexnet_tf.config import load_config
from alexnet_tf.errors import UserError
from alexnet_tf.run_dir import read_json, read_metrics, write_json

CONFIG = os.path.join(ROOT, "configs", "init_paper_geometry.yaml")
INITS = (
    ("paper", "N(0, 0.01) weights, biases 1 in conv2, conv4, conv5, fc6, fc7 (§5)", ()),
    ("caffe", "N(0, 0.01) weights, biases 0.1 there (Caffe's bvlc_alexnet)", ("model.hidden_bias=0.1",)),
    ("he_normal", "He-normal weights, biases 0, pixels x 1/255", (
        "model.weight_init=he_normal", "model.hidden_bias=0.0", "data.scale=0.00392156862745098")),
)
LEARNS = 0.80


def summarise(run_dir):
    """The numbers of one finished run: curve, steps to learn, validation and test errors."""
    from alexnet_tf import tblogs

    config = load_config(os.path.join(run_dir, "config.yaml"))
    spe = steps_per_epoch(config, run_dir)
    steps, errors = training_error_curve(run_dir, spe)
    metrics = read_metrics(run_dir)
    val_steps, val_errors = tblogs.read_scalars(run_dir, "validation", "epoch_top1_error")
    path = os.path.join(run_dir, "evaluation_test.json")
    ten = read_json(path) if os.path.isfile(path) else {}
    return {
        "steps": [int(s) for s in steps], "train_errors": [float(e) for e in errors],
        "val_steps": [int((s + 1) * spe) for s in val_steps], "val_errors": [float(e) for e in val_errors],
        "steps_to_learn": steps_to(steps, errors, LEARNS, config.data.batch_size),
        "final_train_error": float(np.mean(errors[-SMOOTH:])) if len(errors) else float("nan"),
        "val_top1_error": metrics["val_top1_error"], "test_top1_error": metrics.get("test_top1_error"),
        "test_images": metrics.get("test_images"), "wall_seconds": metrics.get("wall_seconds"),
        "ten_crop": ten.get("ten_crop"), "ten_crop_center": ten.get("center"), "ten_crop_images": ten.get("images"),
    }


def plot(summaries, out):
    """Two panels: the 20-step mean training error per step, and the held-out validation error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, s in summaries.items():
        axes[0].plot(s["steps"], 100 * smoothed(s["train_errors"]), label=name)
        axes[1].plot(s["val_steps"], 100 * np.asarray(s["val_errors"]), marker=".", label=name)
    for ax, title in zip(axes, (f"training error, {SMOOTH}-step mean (dropout, crops, flips on)",
                                "held-out validation error (centre crop)")):
        ax.axhline(90, color="grey", lw=0.8, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (batch 128)")
        ax.set_ylabel("top-1 error (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Fashion-MNIST at the paper's geometry (256 -> 224 crops, full two-tower AlexNet): three initialisations",
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table(summaries):
    """The markdown table of docs/init_study.md."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"
    rows = ["| init | steps to a 20-step mean training error <= 80 % | training error, last 20 steps | "
            "val top-1 (held out) | test top-1, centre (all) | test top-1, 10 crops (first N) | wall |",
            "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        learned = s["steps_to_learn"]
        ten = s["ten_crop"] or {}
        centre = s["ten_crop_center"] or {}
        reached = learned if learned is not None else f"not within {s['steps'][-1] if s['steps'] else 0}"
        rows.append(f"| {name} | {reached} | "
                    f"{pct(s['final_train_error'])} | {pct(s['val_top1_error'])} | {pct(s['test_top1_error'])} "
                    f"({s['test_images']}) | {pct(ten.get('top1_error'))} (centre {pct(centre.get('top1_error'))}; "
                    f"N = {s['ten_crop_images']}) | {s['wall_seconds'] / 60:.1f} min |")
    return "\n".join(rows)


def add_arguments(p):
    """The `init-study` command's arguments."""
    p.add_argument("--runs-dir", default=os.path.join("runs", "init_study"), help="one run directory per initialisation")
    p.add_argument("--config", default=None, help="default: configs/init_paper_geometry.yaml")
    p.add_argument("--inits", help="comma-separated subset: paper,caffe,he_normal (default: all three)")
    p.add_argument("--ten-crop-batches", type=int, default=8,
                   help="test batches of 128 evaluated with the paper's 10 crops after training (0 = skip)")
    p.add_argument("--out", default=os.path.join("docs", "init_study.png"), help="the learning-curve figure")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override applied to every run; repeatable")


def main(args):
    """`python -m alexnet_tf init-study` (arguments: add_arguments)."""
    runs_dir, config_path = os.path.abspath(args.runs_dir), os.path.abspath(args.config or CONFIG)
    names = [n for n, _, _ in INITS]
    chosen = args.inits.split(",") if args.inits else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise UserError(f"unknown init(s) {', '.join(unknown)}; expected some of {', '.join(names)}")
    for name, _, overrides in INITS:  # every config is checked before the first heavy run
        load_config(config_path, list(args.set) + list(overrides))
    from alexnet_tf.machine import cpu_model
    print(f"init study: {', '.join(chosen)} in {runs_dir} ({os.path.relpath(config_path)}); CPU {cpu_model()}, "
          f"{os.cpu_count()} cores")
    summaries = {}
    for name, what, overrides in INITS:
        if name not in chosen:
            continue
        run_dir = os.path.join(runs_dir, name)
        if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
            print(f"{name} ({what}): training in {run_dir} (tail -f train.log there)", flush=True)
            rc, wall, _, last = train_subprocess(run_dir, list(args.set) + list(overrides), config_path)
            if rc != 0:
                raise UserError(f"{name}: train.py ended with status {rc}: {last}; run the same command to resume")
            print(f"{name}: trained in {wall / 60:.1f} min", flush=True)
        if args.ten_crop_batches and not os.path.isfile(os.path.join(run_dir, "evaluation_test.json")):
            cmd = [sys.executable, "-m", "alexnet_tf", "evaluate", "--run-dir", run_dir, "--split", "test", "--ten-crop",
                   "--steps", str(args.ten_crop_batches)]
            print(f"{name}: 10-crop evaluation of {args.ten_crop_batches} test batches", flush=True)
            with open(os.path.join(run_dir, "evaluate.log"), "a") as log:
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            if rc != 0:
                raise UserError(f"{name}: the 10-crop evaluation ended with status {rc}; see {run_dir}/evaluate.log")
        summaries[name] = summarise(run_dir)
    write_json(os.path.join(runs_dir, "summary.json"), summaries, indent=1)
    plot(summaries, args.out)
    print(table(summaries))
    print(f"wrote {args.out} and {os.path.join(runs_dir, 'summary.json')}")
