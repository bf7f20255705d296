"""The large-batch recipe: the scaled rate, the warm-up and the learning-rate rules after it, by hand;
LARS and the warm-up through a kill -9 and a resume, bit for bit. (The update rules themselves are
checked against numpy in test_optimizer.py.)"""

import math
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import lr_schedule
from alexnet_tf.config import dump
from conftest import ROOT, tiny_overrides
from test_config import config_error
from test_resume import checkpoint_values, run, same_weights, train_py, weights

LARGE_BATCH = os.path.join(ROOT, "configs", "alexnet_imagenet_large_batch.yaml")


def test_the_scaled_rate_and_the_warmup_length_by_hand():
    """configs/alexnet_imagenet_large_batch.yaml: batch 4,096 = 32 x 128, so linear scaling gives
    0.3125 x 32 = 10.0 (sqrt scaling 0.3125 x sqrt(32)); 5 epochs of 312 steps are 1,560 warm-up steps,
    starting at 0.3125 = 1/32 of the peak. Goyal's recipe from the paper's 0.01: 0.32."""
    config = alexnet_tf.load_config(LARGE_BATCH)
    assert (config.data.batch_size, config.train.base_batch, config.train.lr) == (4096, 128, 0.3125)
    assert lr_schedule.peak_lr(config) == 10.0
    assert lr_schedule.warmup_steps(config, 312) == 1560 and lr_schedule.warmup_start(config) == 1 / 32
    assert lr_schedule.peak_lr(alexnet_tf.load_config(LARGE_BATCH, ["train.lr_scaling=sqrt"])) == \
        pytest.approx(0.3125 * math.sqrt(32))
    assert lr_schedule.peak_lr(alexnet_tf.load_config(LARGE_BATCH, ["train.lr=0.01"])) == pytest.approx(0.32)
    # the paper's values by default: no scaling, no warm-up, the §5 rule
    paper = alexnet_tf.load_config(None, ["data.batch_size=256", "data.synthetic_size=1024"])
    assert (paper.train.lr_scaling, paper.train.warmup_epochs, paper.train.optimizer) == ("none", 0.0, "paper")
    assert lr_schedule.peak_lr(paper) == 0.01 and lr_schedule.describe(paper, 4) == ""


def test_a_warmup_without_scaling_is_one_line():
    message = config_error(["train.warmup_epochs=5"])
    assert message.startswith("config error: train.warmup_epochs = 5.0 with train.lr_scaling = none"), message
    assert config_error(["train.optimizer=adam"]).endswith("train.optimizer = 'adam' (str); expected one of paper, lars")


class RateRecorder(keras.callbacks.Callback):
    """The rate each step uses: the optimizer's learning rate times the warm-up factor, before the step."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer.learning_rate.numpy()) * float(optimizer.warmup_factor().numpy()))


# 4 steps per epoch (64 images in batches of 16); batch 16 = 2 x train.base_batch 8, linear scaling:
# train.lr 0.01 -> 0.02, warmed up over epoch 1 (4 steps) from 0.01 by 0.0025 a step.
RAMP = [0.01, 0.0125, 0.015, 0.0175]
LARGE = {"train.lr_scaling": "linear", "train.base_batch": 8, "train.warmup_epochs": 1, "train.epochs": 3}


@pytest.mark.parametrize("rule, settings, history, final", [
    # the plateau rule: any epoch after the first counts as no progress (min_delta 1.0 > any change of
    # an error rate), so with patience 1 the rate is divided after epochs 2 and 3
    ("plateau", {"train.lr_patience": 1, "train.lr_min_delta": 1.0}, RAMP + [0.02] * 4 + [0.002] * 4, 0.0002),
    ("fixed drops", {"train.lr_drop_epochs": [2]}, RAMP + [0.02] * 4 + [0.002] * 4, 0.002),
])
def test_the_rate_rules_divide_the_scaled_rate_after_the_warmup(rule, settings, history, final, tmp_path, capsys):
    """The rate of every step of a 3-epoch run, by hand: the ramp, the scaled rate, then a tenth of
    the scaled rate (not of train.lr) once the plateau rule or train.lr_drop_epochs divides it."""
    from alexnet_tf.training import train
    config = alexnet_tf.load_config(None, tiny_overrides(**LARGE, **settings))
    recorder = RateRecorder()
    metrics = train(config, str(tmp_path / "run"), verbose=0, callbacks=[recorder])
    assert recorder.rates == pytest.approx(history, rel=1e-6), rule
    assert metrics["learning_rate"] == pytest.approx(final, rel=1e-6)
    out = capsys.readouterr().out
    assert "learning rate 0.02 = train.lr 0.01 x 16/8 (linear scaling); warmed up linearly from 0.01 over " \
           "the first 4 steps (train.warmup_epochs 1)" in out


@pytest.mark.slow
def test_warmup_and_lars_survive_a_kill_9_bit_identical(tmp_path, capsys):
    """LARS with a 6-step warm-up (1.5 epochs of 4 steps), killed -9 after global step 5: the rerun
    resumes from the checkpoint of step 4, in the middle of the ramp, and ends with every saved value
    (weights, momentum, iteration count, learning rate, plateau state, step counters) equal to an
    uninterrupted run's, bit for bit. Resumed once more with sqrt scaling, it trains at the new rate."""
    from alexnet_tf.training import train
    config = alexnet_tf.load_config(None, tiny_overrides(**{
        "train.deterministic": True, "train.epochs": 2, "train.checkpoint_every": 3, "train.lr_scaling": "linear",
        "train.base_batch": 8, "train.warmup_epochs": 1.5, "train.optimizer": "lars", "train.lars_trust": 0.02}))
    config_file, reference, resumed = tmp_path / "config.yaml", tmp_path / "reference", tmp_path / "resumed"
    dump(config, str(config_file))
    train(config, str(reference), verbose=0)

    killed = run(config_file, resumed, "--kill-at-step", "5")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    status, out, err = train_py(capsys, config_file, resumed)
    assert status == 0 and f"resuming from {resumed / 'checkpoints' / 'last' / 'ckpt-4'}" in out, out[-2000:] + err[-2000:]

    assert same_weights(weights(reference), weights(resumed))
    last = [tf.train.latest_checkpoint(str(d / "checkpoints" / "last")) for d in (reference, resumed)]
    assert all(path.endswith("ckpt-8") for path in last), last
    values_a, values_b = (checkpoint_values(path) for path in last)
    assert values_a.keys() == values_b.keys() and any(k.startswith("optimizer/") for k in values_a)
    different = [k for k in values_a if not np.array_equal(values_a[k], values_b[k])]
    assert not different, different

    # resumed with another scaling: the new scaled rate applies (0.01 x sqrt(2) in place of 0.01 x 2)
    status, out, err = train_py(capsys, config_file, resumed, "train.epochs=3", "train.lr_scaling=sqrt")
    assert status == 0 and "the scaled train.lr changed from 0.02 to 0.0141421: training continues at " \
                           "0.0141421" in out, out[-2000:] + err[-2000:]


@pytest.mark.slow
def test_lars_and_warmup_under_mirrored_match_one_device(tmp_path):
    """Two replicas (2 logical CPUs; each LARS step sees the all-reduced gradient) end within 1e-6 of
    one device, dropout off, over 8 steps of which the first 6 are the warm-up: the rule and the ramp
    hold under a strategy, not only in the eager unit tests."""
    from alexnet_tf.training import train
    from test_distribute import ATOL, final_weights, max_difference, run_python
    overrides = tiny_overrides(**{"model.dropout": 0.0, "train.deterministic": True, "train.epochs": 2,
                                  "train.lr_scaling": "linear", "train.base_batch": 8, "train.warmup_epochs": 1.5,
                                  "train.optimizer": "lars", "train.lars_trust": 0.02})
    train(alexnet_tf.load_config(None, overrides), str(tmp_path / "default"), verbose=0)
    run_python(f"""
        import alexnet_tf
        from alexnet_tf.training import train
        overrides = {overrides!r} + ["distribute.strategy=mirrored", "distribute.logical_cpus=2"]
        train(alexnet_tf.load_config(None, overrides), {str(tmp_path / "mirrored")!r}, verbose=0)
    """)
    assert max_difference(final_weights(str(tmp_path / "mirrored")), final_weights(str(tmp_path / "default"))) < ATOL
