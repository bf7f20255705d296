"""What a user reads on the console: TensorFlow's start-up notices dropped and every other line kept (a
real process writing to file descriptor 2), the summary at the start of `python train.py`, and the
next commands at its end, which the command line itself must accept. (train.py's whole console, from a
real process, is checked in test_training.py's smoke run.)"""

import os
import shlex
import subprocess
import sys

import pytest

import alexnet_tf
from alexnet_tf import console
from alexnet_tf.__main__ import build_parser
from alexnet_tf.config import changes
from alexnet_tf.tf_startup import ABSL_PREINIT, is_startup_notice
from conftest import ROOT

DEFAULT = os.path.join(ROOT, "configs", "fashion_mnist.yaml")
CUINIT = ("E0000 00:00:1796547948.977860    4929 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)")
ONEDNN = ("I0000 00:00:1796547944.649868    4929 port.cc:153] oneDNN custom operations are on. You may see slightly "
          "different numerical results due to floating-point round-off errors from different computation orders.")
REAL_ERROR = "E0000 00:00:1796547950.000001    4929 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc:12"


def test_which_lines_are_start_up_notices():
    """Lines as TensorFlow 2.21 writes them: absl's pre-initialisation warning and INFO lines are
    notices; the failed cuInit only where no NVIDIA driver is installed; any other error, warning or
    text is not."""
    for driver in (False, True):
        assert is_startup_notice(ABSL_PREINIT, driver)
        assert is_startup_notice(ONEDNN, driver)
        assert not is_startup_notice(REAL_ERROR, driver)
        assert not is_startup_notice("W0000 00:00:1.5  12 gpu_device.cc:2344] Cannot dlopen some GPU libraries.", driver)
        assert not is_startup_notice("Traceback (most recent call last):", driver)
        assert not is_startup_notice("", driver)
    assert is_startup_notice(CUINIT, driver_present=False)
    assert not is_startup_notice(CUINIT, driver_present=True)  # a driver that fails to start is a real error


# A child whose descriptor 2 is filtered as tf_startup.start() filters it (TF_CPP_MIN_LOG_LEVEL 2) while
# TensorFlow starts, lists its devices (the CUDA probe), and more lines arrive: written straight to the
# descriptor as C++ code writes them, by Python, and by TensorFlow's own C++ (tf.print). After the block,
# a TensorFlow op fails and its traceback ends the run.
FILTERED_CHILD = f"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from alexnet_tf.tf_startup import filtered_stderr, is_startup_notice, nvidia_driver_present
driver = nvidia_driver_present()
with filtered_stderr(lambda line: is_startup_notice(line, driver)):
    import tensorflow as tf
    tf.config.list_physical_devices()
    for line in ({ABSL_PREINIT!r}, {ONEDNN!r}, {REAL_ERROR!r}):
        os.write(2, (line + "\\n").encode())
    print("a warning from Python", file=sys.stderr, flush=True)
    tf.print("a line from TensorFlow's C++", output_stream=sys.stderr)
    os.write(2, b"no newline at the end")
print("filtered:", driver, flush=True)
tf.io.read_file("/no/such/file")
"""


@pytest.mark.slow
def test_the_filter_drops_the_notices_and_passes_real_errors_on():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", FILTERED_CHILD], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert run.returncode == 1 and run.stdout.startswith("filtered:")
    lines = run.stderr.splitlines()
    assert lines[:4] == [REAL_ERROR, "a warning from Python", "a line from TensorFlow's C++",
                         "no newline at the endTraceback (most recent call last):"], run.stderr
    assert lines[-1].startswith("tensorflow.python.framework.errors_impl.NotFoundError: ") and "/no/such/file" in lines[-1]
    assert "absl::InitializeLog" not in run.stderr and "I0000" not in run.stderr and "oneDNN" not in run.stderr
    if run.stdout.strip() == "filtered: False":  # no NVIDIA driver here: TensorFlow's failed cuInit is a notice
        assert "cuInit" not in run.stderr


def test_the_summary_names_the_config_file_and_what_set_changed(tmp_path, monkeypatch):
    config = alexnet_tf.load_config(DEFAULT, ["train.epochs=1", "train.lr=0.05", "data.flip=false",
                                              "model.remove_conv=[3]"])
    # train.lr = 0.05 is the file's own value: no change
    assert changes(config, DEFAULT) == [("model.remove_conv", [], [3]), ("data.flip", True, False),
                                        ("train.epochs", 10, 1)]
    assert changes(alexnet_tf.load_config(DEFAULT), DEFAULT) == []
    assert changes(alexnet_tf.load_config(None, ["train.epochs=3"]), None) == [("train.epochs", 90, 3)]
    monkeypatch.chdir(ROOT)
    lines = console.start_lines(DEFAULT, changes(config, DEFAULT), os.path.join("runs", "x"))
    assert lines == ["config: configs/fashion_mnist.yaml, changed by --set:", "  model.remove_conv: [] -> [3]",
                     "  data.flip: true -> false", "  train.epochs: 10 -> 1",
                     "run directory: runs/x (the full config: runs/x/config.yaml)"]
    assert console.start_lines(DEFAULT, [], str(tmp_path / "r"))[0] == "config: configs/fashion_mnist.yaml (as written)"


def _commands(lines):
    """The alexnet_tf command lines among printed next-step lines: [(words after the tool), ...]."""
    tool = shlex.split(console.tool())
    found = []
    for line in lines[1:]:
        words = shlex.split(line.split("    # ")[0])
        if words[:len(tool)] == tool:
            found.append(words[len(tool):])
    return found


@pytest.mark.parametrize("overrides, exported, ten_crop", [
    ([], True, False),                                                           # the default run: 28 x 28
    (["data.upscale=36", "model.image_size=32", "model.conv1_kernel=5"], False, True),  # crops of larger images
])
def test_the_next_commands_are_ones_the_command_line_accepts(overrides, exported, ten_crop):
    config = alexnet_tf.load_config(DEFAULT, overrides)
    run_dir = "runs/my run"  # a space: the commands quote it
    lines = console.next_steps(config, run_dir, exported)
    assert lines[0] == "next:"
    assert lines[1].split("    # ")[0] == f"  {console.script('tensorboard')} --logdir 'runs/my run/tb'"
    commands = _commands(lines)
    assert [words[0] for words in commands] == ["evaluate", "predict"] + ([] if exported else ["export"])
    for words in commands:
        args = build_parser(words[0]).parse_args(words)
        assert args.run_dir == run_dir
    assert build_parser("evaluate").parse_args(commands[0]).ten_crop is ten_crop


def test_after_a_stop_the_rerun_and_the_curves():
    lines = console.stopped_steps("runs/r", ["python", "train.py", "--set", "train.epochs=3"], "resumes")
    assert lines == ["next:", f"  {console.script('tensorboard')} --logdir runs/r/tb    # the curves so far",
                     "  python train.py --set train.epochs=3    # resumes"]


@pytest.mark.slow
def test_a_tool_that_starts_tensorflow_prints_its_own_lines_only(tiny_run):
    """`python -m alexnet_tf evaluate --ten-crop` on a run of 28x28 images, in a shell that has not set
    TF_CPP_MIN_LOG_LEVEL: TensorFlow starts (the command loads the run) and stderr holds the refusal alone."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "alexnet_tf", "evaluate", "--run-dir", tiny_run, "--ten-crop"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("config error: --ten-crop: "), run.stderr
