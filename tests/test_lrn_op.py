"""The fused LRN op (alexnet_tf/ops) against the pure-TF layer and the float64 numpy formula.

The library must be built (`make test` runs `make setup`, which builds it): without it every test
here fails instead of skipping. Tolerances, float32: the forward output within 1e-6 of the reference
relative to each value; the gradient within 1e-6 relative to the gradient's largest value, since
its two terms (g d^-beta and the window sum) cancel where it crosses zero. bfloat16: both compute in
float32 and round once, so they differ by at most one bfloat16 step (2^-7 relative).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.ops import fused_lrn
from conftest import ROOT, run_main, tiny_overrides
from test_layers import activations, lrn_grad_numpy, lrn_numpy
from test_resume import crash_at_step, same_weights, weights

MISSING = {"ALEXNET_TF_LRN_LIBRARY": "/nonexistent/lrn_op.so"}


@pytest.fixture(autouse=True)
def built():
    assert fused_lrn.library() is not None, f"{fused_lrn.unavailable_reason()}: run `make setup`"


def run(kernel, a, g, dtype="float32", **layer_args):
    """(output, dL/da for output gradient g) of the layer with `kernel`, under the `dtype` policy."""
    layer = LocalResponseNormalization(kernel=kernel, dtype=dtype, **layer_args)
    x = tf.constant(a, layer.compute_dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grad = tape.gradient(y, x, output_gradients=tf.constant(g, layer.compute_dtype))
    return np.asarray(tf.cast(y, tf.float32)), np.asarray(tf.cast(grad, tf.float32))


def assert_close(fused, reference, bound):
    (y, dy), (y_ref, dy_ref) = fused, reference
    assert np.all(np.abs(y - y_ref) <= bound * np.abs(y_ref)), np.max(np.abs(y - y_ref) / np.abs(y_ref))
    assert np.max(np.abs(dy - dy_ref)) <= bound * np.max(np.abs(dy_ref)), np.max(np.abs(dy - dy_ref))


CASES = [  # (layer arguments, input channels)
    (dict(), 24),                                   # one tower's own channels (the paper's towers)
    (dict(output_channels=(0, 12)), 24),            # lrn_across_towers: tower 0 of both towers' maps
    (dict(output_channels=(12, 24)), 24),           # tower 1
    (dict(output_channels=(5, 9)), 13),             # a slice away from both edges
    (dict(size=3, beta=0.6), 10),                   # another window and the pow path
    (dict(size=7), 5),                              # a window wider than the channels
]


@pytest.mark.parametrize("convention", ["paper", "caffe"])
@pytest.mark.parametrize("args,channels", CASES)
def test_float32_matches_the_reference_and_numpy(convention, args, channels):
    a = activations((3, 5, 7, channels))
    start, stop = args.get("output_channels", (0, channels))
    g = np.random.default_rng(1).normal(0, 1, a.shape[:-1] + (stop - start,)).astype("float32")
    layer_args = dict(convention=convention, **args)
    fused, reference = run("fused", a, g, **layer_args), run("reference", a, g, **layer_args)
    assert_close(fused, reference, 1e-6)
    # and the independent formula in float64 (the gradient through a zero-padded output gradient)
    lrn = LocalResponseNormalization(**layer_args)
    constants = dict(n=lrn.size, k=lrn.k, alpha=lrn.alpha_eff, beta=lrn.beta)
    padded = np.zeros(a.shape, np.float32)
    padded[..., start:stop] = g
    expected = lrn_numpy(a, **constants)[..., start:stop], lrn_grad_numpy(a, padded, **constants)
    assert_close(fused, expected, 1e-6)


@pytest.mark.parametrize("args,channels", CASES[:3])
def test_bfloat16_within_one_bfloat16_step(args, channels):
    a = np.asarray(tf.cast(tf.cast(activations((4, 6, 6, channels)), tf.bfloat16), tf.float32))
    start, stop = args.get("output_channels", (0, channels))
    g = np.random.default_rng(2).normal(0, 1, a.shape[:-1] + (stop - start,)).astype("float32")
    fused = run("fused", a, g, dtype="mixed_bfloat16", **args)
    assert_close(fused, run("reference", a, g, dtype="mixed_bfloat16", **args), 2 ** -7)
    # one rounding of the float32 result: half a bfloat16 step from the exact formula (on bfloat16 inputs)
    assert np.all(np.abs(fused[0] - lrn_numpy(a)[..., start:stop]) <= 2 ** -8 * np.abs(fused[0]))


def test_the_model_traces_the_op_in_training_and_the_formula_for_export():
    model = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides(**{"model.lrn_across_towers": True})))

    def op_types(jit_compile=False):
        fn = tf.function(lambda x: model(x, training=True), jit_compile=jit_compile)
        return {op.type for op in fn.get_concrete_function(tf.TensorSpec((2, 28, 28, 1))).graph.get_operations()}

    assert {"AlexnetLrn", "Conv2D"} <= op_types()
    with fused_lrn.reference_only():
        assert "AlexnetLrn" not in op_types() and "Conv2D" in op_types()
    types = op_types(jit_compile=True)
    assert "AlexnetLrn" not in types and "Conv2D" in types  # the op has no XLA kernel


def test_reference_and_fused_models_agree(tmp_path):
    """One training step of the two-tower model, across towers, with either kernel from the same weights."""
    overrides = tiny_overrides(**{"model.lrn_across_towers": True, "model.dropout": 0.0})
    models = {}
    for kernel in ("reference", "fused"):
        keras.utils.set_random_seed(0)
        models[kernel] = alexnet_tf.build_model(alexnet_tf.load_config(None, overrides + [f"model.lrn_kernel={kernel}"]))
    x = tf.constant(np.random.default_rng(0).normal(0, 60, (4, 28, 28, 1)).astype("float32"))
    results = {}
    for kernel, model in models.items():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True)))
        results[kernel] = [loss.numpy()] + [np.asarray(v) for v in tape.gradient(loss, model.trainable_variables)]
    for fused, reference in zip(results["fused"], results["reference"]):
        np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-6 * np.max(np.abs(reference)))


def test_a_fused_kernel_under_xla_is_a_config_error():
    with pytest.raises(alexnet_tf.config.ConfigError, match="model.lrn_kernel = fused with train.jit_compile"):
        alexnet_tf.load_config(None, ["model.lrn_kernel=fused", "train.jit_compile=true"])


def train_py(tmp_path, *sets, env=None):
    args = [sys.executable, os.path.join(ROOT, "train.py"), "--run-dir", str(tmp_path / "run")]
    for o in [*tiny_overrides(), *sets]:
        args += ["--set", o]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_without_the_library_one_line_and_training_works(tmp_path):
    done = train_py(tmp_path, env=MISSING)
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in (done.stdout + done.stderr).splitlines() if "fused LRN op" in line]
    assert notes == ["note: the fused LRN op is not built (/nonexistent/lrn_op.so missing; `make setup` builds it); "
                     "LRN runs as the pure-TensorFlow layer (same results, slower)"], notes
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_completed"] == 1


def test_without_the_library_fused_is_a_one_line_config_error(tmp_path, capsys, monkeypatch):
    from alexnet_tf import train_command
    monkeypatch.setenv(*next(iter(MISSING.items())))
    monkeypatch.setattr(fused_lrn, "_loaded", {})  # as in a process that never loaded it
    args = ["--run-dir", tmp_path / "run"] + [a for o in tiny_overrides(**{"model.lrn_kernel": "fused"})
                                               for a in ("--set", o)]
    status, out, err = run_main(capsys, train_command.main, args)
    assert status != 0 and err.strip().splitlines()[-1].startswith(
        "config error: model.lrn_kernel = fused, but the fused LRN op is not built (/nonexistent/lrn_op.so missing"), err


FRESH_LOAD = """
import json, sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])  # before anything of alexnet_tf is imported
pixels = np.load(sys.argv[2])
served = loaded.signatures["pixels"](images=tf.constant(pixels))["probabilities"].numpy().tolist()
import alexnet_tf, keras
model = keras.saving.load_model(sys.argv[3], compile=False)
from alexnet_tf.ops import fused_lrn
logits = np.asarray(model(pixels / 255.0)).tolist()
print(json.dumps(dict(served=served, logits=logits, never_loaded=fused_lrn.library() is None)))
"""


@pytest.mark.slow
def test_the_export_and_model_keras_load_where_the_op_never_was(tmp_path):
    """Trained with the op; the SavedModel and model.keras load and predict in a fresh process that
    cannot load the library (ALEXNET_TF_LRN_LIBRARY names no file)."""
    from alexnet_tf.run_dir import load_run
    done = train_py(tmp_path, "model.channels=3", "train.export=true", "model.lrn_across_towers=true")
    assert done.returncode == 0, done.stderr[-3000:]
    export = tmp_path / "run" / "export" / "1"
    assert b"AlexnetLrn" not in (export / "saved_model.pb").read_bytes()
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 3)).astype("float32")
    np.save(tmp_path / "pixels.npy", pixels)
    fresh = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(export), str(tmp_path / "pixels.npy"),
                            str(tmp_path / "run" / "model.keras")], capture_output=True, text=True, cwd=ROOT,
                           timeout=240, env={**os.environ, **MISSING})
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    result = json.loads(fresh.stdout.splitlines()[-1])
    assert result["never_loaded"]
    # this process, which has the op: the same SavedModel, and model.keras computed with the op
    expected = tf.saved_model.load(str(export)).signatures["pixels"](images=tf.constant(pixels))["probabilities"]
    np.testing.assert_array_equal(result["served"], expected)
    model = load_run(str(tmp_path / "run")).model
    assert any(layer.kernel == "auto" for layer in model.layers if isinstance(layer, LocalResponseNormalization))
    np.testing.assert_allclose(result["logits"], model(pixels / 255.0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_exact_resume_with_the_fused_kernel(tmp_path):
    """The method of test_resume.py: a run stopped dead after step 5 and rerun ends bit-identical to one
    that never stopped, with LRN in the op (which is deterministic: each row is one thread's)."""
    from alexnet_tf.training import train
    config = alexnet_tf.load_config(None, tiny_overrides(**{
        "train.deterministic": True, "train.epochs": 3, "train.checkpoint_every": 3, "model.lrn_kernel": "fused"}))
    train(config, str(tmp_path / "whole"), verbose=0)
    crash_at_step(config, tmp_path / "resumed", 5)
    train(config, str(tmp_path / "resumed"), verbose=0)
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "resumed"))


MIRRORED = """
import sys, json, numpy as np, tensorflow as tf
from alexnet_tf import distribute
distribute.split_cpu(2)
tf.debugging.set_log_device_placement(True)
import alexnet_tf, keras
from alexnet_tf.training import train
overrides = json.loads(sys.argv[1])
for kernel, run_dir in (("fused", sys.argv[2]), ("reference", sys.argv[3])):
    train(alexnet_tf.load_config(None, overrides + ["model.lrn_kernel=" + kernel]), run_dir, verbose=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "towers"])
def test_under_two_logical_cpus_the_op_runs_on_both(strategy, tmp_path):
    overrides = tiny_overrides(**{"model.dropout": 0.0, "train.deterministic": True, "train.epochs": 2,
                                  "distribute.strategy": strategy, "distribute.logical_cpus": 2})
    done = subprocess.run([sys.executable, "-c", MIRRORED, json.dumps(overrides), str(tmp_path / "fused"),
                           str(tmp_path / "reference")], capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    placed = done.stdout + done.stderr
    for op in ("AlexnetLrn", "AlexnetLrnGrad"):
        devices = {d for d in ("CPU:0", "CPU:1") if any(f"({op}): " in line and line.endswith(d)
                                                        for line in placed.splitlines())}
        assert devices == {"CPU:0", "CPU:1"}, (op, devices)
    fused, reference = weights(tmp_path / "fused"), weights(tmp_path / "reference")
    assert max(float(np.abs(a - b).max()) for a, b in zip(fused, reference)) < 1e-5
