"""Training end to end: overfitting, the run directory, TensorBoard tags, resume, NaN stop."""

import json
import re
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import machine
from alexnet_tf.callbacks import DivideLROnPlateau, kernel_columns, kernel_scale, tower_grid
from alexnet_tf.layers import LocalResponseNormalization
import alexnet_tf.optim  # noqa: F401  (registers PaperSGD and TopKError for load_model)
from conftest import ROOT, run_main, tiny_overrides


def test_overfits_a_tiny_batch():
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{
        "model.dropout": 0.0, "model.weight_init": "he_normal", "model.hidden_bias": 0.0, "model.width": 0.25,
        "model.fc_units": 64}))
    model = alexnet_tf.compile_model(alexnet_tf.build_model(cfg), cfg)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 10
    for _ in range(150):  # 150 steps on the one batch (train_on_batch: model.fit's per-epoch overhead is most of its time)
        model.train_on_batch(x, y)
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert results["top1_error"] == 0.0 and results["top5_error"] == 0.0
    # top-k error is 1 - (fraction of labels among the k largest logits), checked against numpy
    logits = model.predict(x, verbose=0)
    assert (logits.argmax(1) == y).all()


def test_top_k_error_against_numpy():
    from alexnet_tf.optim import TopKError
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype("float32")
    labels = rng.integers(0, 10, 50)
    for k in (1, 5):
        metric = TopKError(k)
        metric.update_state(labels, logits)
        in_top_k = (np.argsort(-logits, 1)[:, :k] == labels[:, None]).any(1)
        assert float(metric.result()) == pytest.approx(1 - in_top_k.mean(), abs=1e-6)
    assert TopKError(5).name == "top5_error" and TopKError(1).name == "top1_error"


def test_top_k_error_loads_from_the_form_model_keras_files_hold():
    """compile_model's metrics as a model.keras file's compile_config lists them (the form of
    keras.metrics.SparseTopKCategoricalAccuracy under the registered name alexnet_tf>TopKError): they
    load, compute the error by hand, and save back in the same form."""
    saved = [{"module": "alexnet_tf.optim", "class_name": "TopKError", "config": {"name": name, "dtype": "float32", "k": k},
              "registered_name": "alexnet_tf>TopKError"} for name, k in (("top1_error", 1), ("top5_error", 5))]
    logits = np.array([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], "float32")
    labels = np.array([1, 0])  # second place; last place
    for entry, expected in zip(saved, (1.0, 0.5)):
        metric = keras.saving.deserialize_keras_object(entry)
        assert (metric.name, metric.k) == (entry["config"]["name"], entry["config"]["k"])
        metric.update_state(labels, logits)
        assert float(metric.result()) == expected
        assert keras.saving.serialize_keras_object(metric) == entry


def test_epoch_sums_means_and_the_checkpoint_vector():
    """EpochSums against hand arithmetic: the sum of two steps, the means Keras reports (zeros before
    any example), and the float64 4-vector the compiled steps return and a checkpoint stores."""
    from alexnet_tf.train_steps import EpochSums
    first, second = EpochSums(2.5, 3.0, 1.0, 4.0), EpochSums.from_vector(np.array([3.5, 1.0, 0.0, 4.0]))
    total = first + second
    assert total == EpochSums(loss=6.0, top1_errors=4.0, top5_errors=1.0, examples=8.0)
    assert total.logs() == {"loss": 0.75, "top1_error": 0.5, "top5_error": 0.125}
    assert second.mean_loss == 0.875
    assert EpochSums().logs() == {"loss": 0.0, "top1_error": 0.0, "top5_error": 0.0}
    vector = total.vector()
    assert vector.dtype == np.float64 and vector.tolist() == [6.0, 4.0, 1.0, 8.0]
    assert EpochSums.from_vector(vector) == total


def test_lr_divided_by_10_on_plateau_at_most_three_times():
    cb = DivideLROnPlateau(patience=2, max_reductions=3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    cb.set_model(model)
    errors = [0.5, 0.4, 0.4, 0.41, 0.3, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37, 0.38]
    lrs = []
    for epoch, e in enumerate(errors):
        cb.on_epoch_end(epoch, {"val_top1_error": e})
        lrs.append(float(cb.model.optimizer.learning_rate.numpy()))
    # plateaus end at epochs 3 (0.4, 0.41 after 0.4), 6, 8, 10; the fourth is ignored (max 3)
    expected = [0.01] * 3 + [0.001] * 3 + [1e-4] * 2 + [1e-5] * 5
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert int(cb.reductions.numpy()) == 3


def test_lr_divided_by_10_after_fixed_epochs_whatever_the_validation_error():
    cb = DivideLROnPlateau(patience=1, max_reductions=1, at_epochs=[8, 10])
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    cb.set_model(model)
    errors = [0.5, 0.6, 0.7, 0.8, 0.1, 0.1, 0.1, 0.1, 0.09, 0.08, 0.07, 0.06]  # plateaus, then improving
    lrs = []
    for epoch, e in enumerate(errors):
        cb.on_epoch_end(epoch, {"val_top1_error": e})
        lrs.append(float(cb.model.optimizer.learning_rate.numpy()))
    # the rate after each epoch's end: epochs 1-8 train at 0.05 (no plateau drop, although patience 1 would
    # fire after epoch 2), 9-10 at 0.005, 11-12 at 0.0005
    np.testing.assert_allclose(lrs, [0.05] * 7 + [0.005] * 2 + [0.0005] * 3, rtol=1e-6)
    assert int(cb.reductions.numpy()) == 2


def test_tower_grid_layout():
    rng = np.random.default_rng(0)
    kernels = rng.normal(size=(11, 11, 3, 48))
    grid = tower_grid(kernels, cols=16, scale=1, gap=1)
    # 3 rows x 16 columns of 11x11 kernels with 1-pixel gaps
    assert grid.shape == (3 * 12 + 1, 16 * 12 + 1, 3)
    assert grid.min() >= 0 and grid.max() <= 1
    # each kernel is scaled to [0, 1] on its own: kernel 17 (row 1, column 1) spans exactly 0..1
    k = grid[1 + 12: 1 + 12 + 11, 1 + 12: 1 + 12 + 11]
    assert k.min() == 0.0 and k.max() == 1.0
    expected = (kernels[..., 17] - kernels[..., 17].min()) / np.ptp(kernels[..., 17])
    np.testing.assert_allclose(k, expected, atol=1e-6)
    # the TensorBoard scale draws each weight as a 5x5 block: ceil(48 / 11) = 5, a kernel 55 px a side
    assert kernel_scale(kernels) == 5
    big = tower_grid(kernels, cols=16, scale=5)
    assert big.shape == (5 * grid.shape[0], 5 * grid.shape[1], 3)
    for dy in range(5):
        for dx in range(5):
            np.testing.assert_array_equal(big[dy::5, dx::5], grid)


def test_kernel_columns_fill_whole_rows_near_the_asked_shape():
    # divisors of n nearest sqrt(aspect * n): the paper's 48 kernels 16 x 3 in a 5:1 figure, 8 x 6 in
    # TensorBoard's 3:2 card; the default run's 18 as 9 x 2 and 6 x 3
    assert [kernel_columns(n, 5) for n in (48, 18, 6, 96)] == [16, 9, 6, 24]
    assert [kernel_columns(n, 1.5) for n in (48, 18, 6, 96)] == [8, 6, 3, 12]
    # no divisor within a factor 1.5 of sqrt(1.5 * 17) = 5.05: 5 columns, the last row short
    assert kernel_columns(17, 1.5) == 5


def run_train(run_dir, *overrides):
    """`python train.py --run-dir RUN_DIR --set ...` in a shell that has not set TF_CPP_MIN_LOG_LEVEL."""
    args = [sys.executable, os.path.join(ROOT, "train.py"), "--run-dir", str(run_dir)]
    for o in tiny_overrides() + list(overrides):
        args += ["--set", o]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


def check_console(out, err, run_dir, config):
    """train.py's console: the summary at the start (the config file and each value --set changed, the
    run directory and its config.yaml, the machine and devices, the precision), no config dump and no
    TensorFlow start-up notice, and at the end the next commands with the run directory filled in."""
    from alexnet_tf import console
    lines = out.splitlines()
    # the keys of tiny_overrides() whose values differ from configs/fashion_mnist.yaml's, by hand
    changed = ["model.width: 0.375 -> 0.125", "model.fc_units: 1024 -> 32", "data.source: fashion_mnist -> synthetic",
               "data.batch_size: 128 -> 16", "data.synthetic_size: 512 -> 64", "data.val_examples: 5000 -> 0",
               "train.epochs: 10 -> 1"]
    assert lines[0] == "config: configs/fashion_mnist.yaml, changed by --set:"
    assert lines[1:1 + len(changed)] == ["  " + line for line in changed]
    assert lines[1 + len(changed)] == f"run directory: {run_dir} (the full config: {run_dir}/config.yaml)"
    assert lines[2 + len(changed)].startswith(f"machine: {machine.cpu_model()} (") and "TensorFlow sees 1 CPU" in out
    # `auto` by the CPU's flags (optim.resolve_precision): float32 without native bfloat16; with AVX512-BF16
    # and no AMX, by the matmul probe the line quotes, against the threshold
    precision = re.fullmatch(r"precision: (\S+) \(auto(?:: bfloat16 matmul ([\d.]+)x float32 here)?\)",
                             lines[3 + len(changed)])
    flags = machine.cpu_flags()
    if "amx_bf16" in flags:
        assert precision.group(1) == "mixed_bfloat16"
    elif "avx512_bf16" not in flags:
        assert precision.group(1) == "float32" and precision.group(2) is None
    else:
        fast = float(precision.group(2)) >= alexnet_tf.optim.BFLOAT16_MIN_SPEEDUP
        assert precision.group(1) == ("mixed_bfloat16" if fast else "float32")
    assert "towers: 2" not in out and len(lines) < 30  # the full config is in config.yaml, not on the console
    assert alexnet_tf.load_config(str(run_dir / "config.yaml")).to_dict() == config.to_dict()
    assert not [line for line in err.splitlines() if "cuInit" in line or "absl::InitializeLog" in line
                or line.startswith("I0000")], err
    tool, tensorboard = console.tool(), console.script("tensorboard")
    assert lines[-4:] == [
        "next:", f"  {tensorboard} --logdir {run_dir}/tb    # curves and conv1 filters",
        f"  {tool} evaluate --run-dir {run_dir}    # top-1/top-5 error -> evaluation.json",
        f"  {tool} predict --run-dir {run_dir} --val 8 --out predictions.png    # or image files: IMAGE ..."]


def train_main(capsys, run_dir, *overrides):
    """`python train.py --run-dir RUN_DIR --set ...` (tiny overrides first), in this process."""
    from alexnet_tf import train_command
    return run_main(capsys, train_command.main,
                    ["--run-dir", run_dir] + [a for o in tiny_overrides() + list(overrides) for a in ("--set", o)])


def tensorboard_tags(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(directory, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_smoke_run_resume_and_nan_stop(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = run_train(run_dir, "train.export=true")  # the one subprocess: train.py as a user starts it
    assert first.returncode == 0, first.stderr[-2000:]
    for name in ("config.yaml", "model.keras", "metrics.json", "mean.npy", "classes.json",
                 "checkpoints/last/checkpoint", "checkpoints/best/checkpoint", "export/1/saved_model.pb"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_top1_error", "val_top5_error", "val_loss", "epochs_completed", "wall_seconds"):
        assert key in metrics
    # the machine the time was measured on, as `grep -m1 "model name" /proc/cpuinfo` names it
    assert metrics["cpu"] == machine.cpu_model() and metrics["onednn"] is machine.onednn_enabled()
    assert "test_top1_error" not in metrics  # data.val_examples = 0: the validation split is the test split
    assert metrics["epochs_completed"] == 1 and 0 <= metrics["val_top1_error"] <= 1
    check_console(first.stdout, first.stderr, run_dir,
                  alexnet_tf.load_config(os.path.join(ROOT, "configs", "fashion_mnist.yaml"),
                                         tiny_overrides() + ["train.export=true"]))

    train_tb = tensorboard_tags(str(run_dir / "tb" / "train"))
    val_tb = tensorboard_tags(str(run_dir / "tb" / "validation"))
    train_tags, val_tags = set(train_tb.Tags()["tensors"]), set(val_tb.Tags()["tensors"])
    assert {"epoch_loss", "epoch_top1_error", "epoch_top5_error", "epoch_learning_rate", "conv1_filters/tower_1",
            "conv1_filters/tower_2"} <= train_tags
    assert {"epoch_loss", "epoch_top1_error", "epoch_top5_error"} <= val_tags
    # the filter image of a tower: 6 grey 5x5 kernels (width 0.125 of 48; the default config's conv1 is 5x5)
    # in 3 columns x 2 rows: 19 x 13 px with 1 px gaps; each weight drawn as a 10x10 block (ceil(48 / 5): a
    # kernel 50 px a side) -> 190 x 130
    image = train_tb.Tensors("conv1_filters/tower_2")[0].tensor_proto.string_val
    assert tuple(int(v) for v in image[:2]) == (190, 130)  # width, height
    assert tf.io.decode_png(image[2]).shape == (130, 190, 3)
    loaded = keras.saving.load_model(str(run_dir / "model.keras"))
    assert loaded.get_layer("conv1_0").kernel.shape == (5, 5, 1, 6)
    assert isinstance(loaded.get_layer("lrn1_0"), LocalResponseNormalization)

    # Rerunning with more epochs resumes from the checkpoint (train.py's main, in this process: the
    # TensorFlow start is what a subprocess would add).
    status, out, err = train_main(capsys, run_dir, "train.export=true", "train.epochs=2")
    assert status == 0, err[-2000:]
    assert "resuming from" in out and "1 of 2 epochs done" in out
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 2

    # A diverging run stops with one clear line and exit status 1.
    status, out, err = train_main(capsys, tmp_path / "diverging", "train.lr=1e10")
    assert status == 1
    assert "training stopped: loss became nan" in err and "Lower train.lr" in err
    assert out.splitlines()[-1].endswith(" --set train.lr=1e+09    # resumes from the last checkpoint at a tenth of "
                                         "the learning rate")


def test_nan_keeps_the_last_good_checkpoint(tmp_path):
    """A weight poisoned after step 5: the step-5 checkpoint is not written (non-finite weight), step 6's
    loss is NaN, training stops and names the step-4 checkpoint, which restores finite weights."""
    from alexnet_tf.training import TrainingDiverged, train

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 5:
                kernel = self.model.get_layer("fc8").kernel
                kernel.assign(tf.fill(kernel.shape, np.nan))

    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"train.checkpoint_every": 1, "train.epochs": 3}))
    with pytest.raises(TrainingDiverged) as failure:
        train(cfg, str(tmp_path), verbose=0, callbacks=[Poison()])
    last = tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "last"))
    assert last.endswith("ckpt-4") and last in str(failure.value)
    assert "loss became nan at batch 2 of epoch 2" in str(failure.value)  # 4 steps per epoch: step 6 = batch 2 of epoch 2
    model = alexnet_tf.build_model(cfg)
    tf.train.Checkpoint(model=model).restore(last).expect_partial()
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.slow
def test_training_loop_matches_model_fit(tmp_path):
    """`train`'s own loop against Keras's model.fit as the reference, one device: the same global
    batches, dropout on, 3 steps (48 training images after 16 are held out); the same weights bit for bit and the same epoch loss (both in this
    process: the same kernels, oneDNN or not, and the same threads)."""
    from alexnet_tf.data import make_datasets
    from alexnet_tf.training import train
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"train.deterministic": True, "data.val_examples": 16}))
    metrics = train(cfg, str(tmp_path), verbose=0)
    ours = keras.saving.load_model(str(tmp_path / "model.keras")).get_weights()

    keras.utils.set_random_seed(cfg.train.seed)  # the same order of random draws as `train`
    data = make_datasets(cfg)
    model = alexnet_tf.compile_model(alexnet_tf.build_model(cfg), cfg)
    model.optimizer.build(model.trainable_variables)
    model.fit(data.train, steps_per_epoch=data.train_steps, epochs=1, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(ours, model.get_weights()))
    reference = model.evaluate(data.val, steps=data.val_steps, verbose=0, return_dict=True)
    assert metrics["val_loss"] == pytest.approx(reference["loss"], rel=1e-6)
    assert metrics["val_top1_error"] == pytest.approx(reference["top1_error"], abs=1e-6)
    # data.val_examples: 16 of the 64 training images validate, and the 64 test images are evaluated once, at the end
    assert (data.train_size, data.val_size, data.test_size, metrics["test_images"]) == (48, 16, 64, 64)
    test = model.evaluate(data.test, verbose=0, return_dict=True)
    assert metrics["test_loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert metrics["test_top1_error"] == pytest.approx(test["top1_error"], abs=1e-6)
    assert metrics["test_top5_error"] == pytest.approx(test["top5_error"], abs=1e-6)
    # `evaluate --split test` reads the same 64 images through model.keras and the evaluation transform
    from alexnet_tf.__main__ import main as cli
    assert cli(["evaluate", "--run-dir", str(tmp_path), "--split", "test"]) == 0
    evaluated = json.loads((tmp_path / "evaluation_test.json").read_text())
    assert evaluated["images"] == 64 and evaluated["split"] == "test"
    assert evaluated["center"]["top1_error"] == pytest.approx(metrics["test_top1_error"], abs=1e-6)


def test_a_run_resumes_only_with_its_data_splits(tmp_path):
    """Changing which images train or validate (here the held-out split) is refused on resume;
    other changes are reported and allowed."""
    from alexnet_tf.config import ConfigError, dump
    from alexnet_tf.run_dir import check_same_run
    old = alexnet_tf.load_config(None, tiny_overrides(**{"data.val_examples": 16}))
    dump(old, str(tmp_path / "config.yaml"))
    check_same_run(alexnet_tf.load_config(None, tiny_overrides(**{"data.val_examples": 16, "train.epochs": 3})), str(tmp_path))
    for change, fragment in (({"data.val_examples": 0}, "data.val_examples: 16 -> 0"),
                             ({"data.val_examples": 16, "data.train_examples": 32}, "data.train_examples: 0 -> 32")):
        with pytest.raises(ConfigError, match=re.escape(f"holds a run with different data splits ({fragment})")):
            check_same_run(alexnet_tf.load_config(None, tiny_overrides(**change)), str(tmp_path))


def test_auto_precision_is_resolved_once_per_run(tmp_path):
    """`auto` is resolved when a run starts and recorded; a resumed run keeps it whatever the probe says now."""
    from types import SimpleNamespace
    from alexnet_tf.training import _run_precision, resolve_precision
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"train.precision": "auto"}))
    chief = SimpleNamespace(is_chief=True, workers=1)
    first, _ = _run_precision(cfg, str(tmp_path), chief)
    assert first == resolve_precision("auto")
    recorded = json.loads((tmp_path / "precision.json").read_text())
    assert recorded["precision"] == first
    other = "float32" if first == "mixed_bfloat16" else "mixed_bfloat16"
    (tmp_path / "precision.json").write_text(json.dumps({"precision": other}))
    assert _run_precision(cfg, str(tmp_path), chief) == (other, " (auto, as resolved when this run started)")
    fixed = alexnet_tf.load_config(None, tiny_overrides(**{"train.precision": "float32"}))
    assert _run_precision(fixed, str(tmp_path), chief) == ("float32", "")


def test_a_checkpoint_whose_weights_explode_is_not_kept(tmp_path):
    """The learning rate raised to 1e4 after step 4: step 5's update blows the weights up (its loss,
    computed before the update, still looks fine, so ckpt-5 is written), step 6's loss exceeds
    3 ln(10), so ckpt-5 is removed and no later one is written; when the loss turns NaN training
    stops naming ckpt-4, which holds the weights from before the explosion and is what a rerun resumes."""
    from alexnet_tf.checkpoint import EXPLODING
    from alexnet_tf.training import TrainingDiverged, train

    losses = {}

    class Explode(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step == 4:
                self.model.optimizer.learning_rate.assign(1e4)

    class StepLoss(keras.callbacks.Callback):  # the epoch's running mean -> each step's own loss
        def on_train_batch_end(self, batch, logs=None):
            losses[int(self.model.optimizer.iterations.numpy())] = logs["loss"] * (batch + 1)

    cfg = alexnet_tf.load_config(None, tiny_overrides(**{
        "train.checkpoint_every": 1, "train.epochs": 3, "data.synthetic_size": 160, "model.weight_init": "he_normal",
        "model.hidden_bias": 0.0, "data.scale": 0.02}))  # 10 steps per epoch: the explosion stays in epoch 1
    with pytest.raises(TrainingDiverged) as failure:
        train(cfg, str(tmp_path), verbose=0, callbacks=[Explode(), StepLoss()])
    directory = str(tmp_path / "checkpoints" / "last")
    last = tf.train.latest_checkpoint(directory)
    assert last.endswith("ckpt-4") and f"before the loss exploded is {last}" in str(failure.value)
    step_loss = {s: losses[s] - losses.get(s - 1, 0.0) for s in sorted(losses)}  # sums within epoch 1
    assert step_loss[5] <= EXPLODING * np.log(10) and not step_loss[6] <= EXPLODING * np.log(10), step_loss
    assert not any(name.startswith("ckpt-5.") or name.startswith("ckpt-6.") for name in os.listdir(directory))
    model = alexnet_tf.build_model(cfg)
    tf.train.Checkpoint(model=model).restore(last).expect_partial()
    assert max(float(np.abs(w).max()) for w in model.get_weights()) < 100


def test_init_from_copies_matching_layers_and_keeps_the_rest(tiny_run, tmp_path, capsys):
    """Fine-tuning (`train.init_from`): a run with another class count starts from the tiny run's weights
    in every layer of equal name and shapes; fc8 (10 -> 5 classes) keeps its own initialisation. With a
    learning rate of 1e-12 one epoch moves no weight measurably, so the copy is seen in the result."""
    from alexnet_tf.training import train
    source = keras.saving.load_model(os.path.join(tiny_run, "model.keras"))
    config = alexnet_tf.load_config(None, tiny_overrides(**{
        "model.channels": 3, "data.scale": 0.02, "model.weight_init": "he_normal", "model.hidden_bias": 0.0,
        "model.num_classes": 5, "train.lr": 1e-12, "train.weight_decay": 0.0, "train.init_from": tiny_run}))
    train(config, str(tmp_path / "tuned"), verbose=0)
    out = capsys.readouterr().out
    tuned = keras.saving.load_model(str(tmp_path / "tuned" / "model.keras"))
    fresh = [l.name for l in tuned.layers if l.weights and l.name.startswith("fc8")]
    assert fresh and f"initialised afresh: {', '.join(fresh)}" in out, out[-1000:]
    for layer in tuned.layers:
        if not layer.weights or layer.name in fresh:
            continue
        for mine, theirs in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9, err_msg=layer.name)
    assert tuned.get_layer(fresh[0]).get_weights()[0].shape[-1] == 5
    assert not (tmp_path / "tuned" / "export").exists()  # train.export: false (tiny_overrides)


def test_train_py_refuses_to_overwrite_a_model_without_checkpoints(tiny_run, tmp_path, capsys, monkeypatch):
    """A directory holding model.keras but no recovery checkpoint (what import-caffe writes): train.py
    would start afresh and overwrite it; it exits 2 in one line pointing at train.init_from, and a
    train.init_from that names nothing is refused the same way, both before TensorFlow starts (here:
    with any further import of TensorFlow, Keras or the training module made to fail)."""
    import shutil
    from alexnet_tf import train_command
    imported = tmp_path / "imported"
    imported.mkdir()
    shutil.copy(os.path.join(tiny_run, "model.keras"), imported / "model.keras")
    for name in ("tensorflow", "keras", "alexnet_tf.training"):
        monkeypatch.setitem(sys.modules, name, None)
    status, refused_out, refused_err = run_main(capsys, train_command.main, ["--run-dir", imported])
    assert status == 2
    assert refused_err.strip().splitlines() == [
        f"config error: {imported} holds model.keras but no recovery checkpoint, so training would start afresh and "
        f"overwrite it; to fine-tune it use another --run-dir with --set train.init_from={imported}"]
    status, _, missing_err = run_main(capsys, train_command.main, ["--run-dir", tmp_path / "new",
                                                                   "--set", f"train.init_from={tmp_path / 'nothing'}"])
    assert status == 2 and missing_err.strip().splitlines()[-1].startswith(
        f"config error: train.init_from = '{tmp_path / 'nothing'}': no {tmp_path / 'nothing'}; expected a run directory")
    assert "tensorflow" not in (refused_out + refused_err + missing_err).lower()


def test_an_unsafe_init_from_is_refused_in_one_line_before_the_run_directory_exists(tmp_path, capsys):
    """train.init_from naming a .keras file whose Lambda layer holds Python code: Keras's safe mode refuses
    it, and train.py reports that as the config value it is (one line, exit 2) before it creates the run
    directory (no config.yaml, data.json, mean.npy or lock left behind). A damaged archive likewise."""
    from alexnet_tf import train_command
    inputs = keras.Input((28, 28, 1))
    unsafe = tmp_path / "unsafe.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(str(unsafe))
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(unsafe.read_bytes()[:300])
    for path, why in ((unsafe, "ValueError: Requested the deserialization of a `Lambda` layer"),
                      (damaged, "")):
        run_dir = tmp_path / f"run-{path.stem}"
        status, _, err = run_main(capsys, train_command.main, ["--run-dir", run_dir, *[
            a for o in tiny_overrides(**{"train.init_from": path}) for a in ("--set", o)]])
        assert status == 2, err[-3000:]
        assert err.count("\n") == 1 and err.startswith(
            f"config error: train.init_from = '{path}': {path} cannot be loaded in Keras's safe mode ("), err
        assert why in err and err.rstrip().endswith("expected a model.keras written by this project (no layer "
                                                     "holding Python code)")
        assert not run_dir.exists()
