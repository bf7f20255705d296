"""What `python train.py` prints around a run: a short summary at the start (the config file and what
`--set` changed in it, the run directory), and at the end the commands a user runs next, with the run
directory filled in and written so that they run from this shell as printed.

No TensorFlow here: the start lines are printed before it starts.
"""

import os
import shlex
import shutil
import sys

import yaml

from alexnet_tf.crops import evaluation_side, ten_crops_exist


def shown_path(path):
    """`path` relative to the working directory when it lies inside it, else as given."""
    relative = os.path.relpath(os.path.abspath(path))
    return relative if not relative.startswith(os.pardir) else path


def start_lines(config_path, changed, run_dir):
    """The summary printed before TensorFlow starts: the config file, each value `--set` changed in it
    (config.changes), and the run directory with the full config's place."""
    lines = [f"config: {shown_path(config_path)}" + (", changed by --set:" if changed else " (as written)")]
    lines += [f"  {key}: {_value(old)} -> {_value(new)}" for key, old, new in changed]
    run = shown_path(run_dir)
    lines.append(f"run directory: {run} (the full config: {os.path.join(run, 'config.yaml')})")
    return lines


def result_lines(metrics, run_dir):
    """The errors of a finished run (metrics.json's dict): validation, and the test split if it has one."""
    lines = [f"val top-1 error {metrics['val_top1_error']:.4f}, top-5 error {metrics['val_top5_error']:.4f}, "
             f"loss {metrics['val_loss']:.4f} after {metrics['epochs_completed']} epochs, "
             f"{metrics['wall_seconds']:.0f} s; run directory {shown_path(run_dir)}"]
    if "test_top1_error" in metrics:
        lines.append(f"test top-1 error {metrics['test_top1_error']:.4f}, top-5 error {metrics['test_top5_error']:.4f} "
                     f"on the {metrics['test_images']} test images (evaluated once, after training)")
    return lines


def _value(value):
    """A config value as YAML writes it (true, 0.5, fashion_mnist, [3]), cut to 60 characters."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def script(name):
    """How to run console script `name` of this Python environment from this shell: its bare name when
    PATH finds this environment's copy first, else its path (relative when inside the working directory)."""
    here = os.path.dirname(os.path.abspath(sys.executable))
    found = shutil.which(name)
    if found and os.path.dirname(os.path.abspath(found)) == here:
        return name
    own = os.path.join(here, name)
    return shown_path(own) if os.path.exists(own) else name


def python():
    """This Python as a shell command: `python` when PATH finds this environment's, else its path."""
    return "python" if script("python") == "python" else shown_path(sys.executable)


def tool():
    """The command that runs `python -m alexnet_tf` in this environment: `alexnet-tf` or `PYTHON -m alexnet_tf`."""
    return "alexnet-tf" if script("alexnet-tf") == "alexnet-tf" else f"{python()} -m alexnet_tf"


def next_steps(config, run_dir, exported):
    """The commands to run after a finished run: its curves, its error, its predictions (and its export
    when training did not write one)."""
    run, alexnet = shlex.quote(shown_path(run_dir)), tool()
    ten = " --ten-crop" if ten_crops_exist(config, evaluation_side(config)) else ""
    lines = ["next:",
             f"  {script('tensorboard')} --logdir {shlex.quote(os.path.join(shown_path(run_dir), 'tb'))}"
             "    # curves and conv1 filters",
             f"  {alexnet} evaluate --run-dir {run}{ten}    # top-1/top-5 error -> evaluation.json",
             f"  {alexnet} predict --run-dir {run} --val 8 --out predictions.png    # or image files: IMAGE ..."]
    if not exported:
        lines.append(f"  {alexnet} export --run-dir {run}    # a TF Serving SavedModel")
    return lines


def stopped_steps(run_dir, rerun, why):
    """The commands after a run stopped before its end: its curves so far, and the command line
    `rerun` (a list of words) that continues it from its last checkpoint, `why` said after it."""
    return ["next:",
            f"  {script('tensorboard')} --logdir {shlex.quote(os.path.join(shown_path(run_dir), 'tb'))}"
            "    # the curves so far",
            f"  {shlex.join(rerun)}    # {why}"]
