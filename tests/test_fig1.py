"""The four-layer net of `python -m alexnet_tf fig1`: its shape, the sweep's choice of rate, and the numbers."""

import math

import numpy as np
import pytest

from alexnet_tf.ablation import fig1_report, stats
from alexnet_tf.errors import UserError


def _run(wrong, steps=None, finite=True, seed=0, test_error=0.1):
    return {"wrong": list(wrong), "batch": 128, "steps": steps or len(wrong), "finite": finite, "seed": seed,
            "test_top1_error": test_error}


def _falls_to(level, at, steps=60):
    """A run that misclassifies 64 of 128 until step `at`, then `level` per step."""
    return _run([64] * (at - 1) + [level] * (steps - at + 1))


def test_steps_to_25_percent_is_the_whole_count_rule():
    # 25 % of 128 x 20 steps = 640: 64 (at - 1 ... ) falls to 32 at step 21; steps s-19..s miss 64 (40 - s) + 32 (s - 20)
    # for 20 < s <= 40 = 1920 - 32 s <= 640 from s = 40; exactly 640 there (a tie reaches it)
    assert fig1_report.reached(_falls_to(32, 21)) == 40


def test_the_fastest_stable_rate_is_chosen_and_an_unstable_one_never():
    sweep = {0.01: [_falls_to(20, 30), _falls_to(20, 32)],          # reaches 25 % at steps ~45-47
             0.02: [_falls_to(20, 10), _falls_to(20, 12)],          # faster, stays down: chosen
             0.04: [_falls_to(20, 5), _run([20] * 40 + [90] * 20)],  # fastest once, then back up: unstable
             0.08: [_run([20] * 10, steps=60, finite=False), _falls_to(20, 3)]}  # a NaN loss: unstable
    assert [fig1_report.stable(r) for r in sweep[0.04]] == [True, False]
    assert fig1_report.choose_lr(sweep) == 0.02
    sweep[0.03] = [_falls_to(20, 10), _falls_to(20, 12)]             # as fast as 0.02: the smaller rate wins
    assert fig1_report.choose_lr(sweep) == 0.02
    with pytest.raises(UserError, match="trains stably"):
        fig1_report.choose_lr({0.08: sweep[0.08]})


def test_the_steps_ratio_and_the_lrn_difference_are_paired_tests():
    relu = [_falls_to(20, at, 80) for at in (10, 12, 14)]
    tanh = [_falls_to(20, at, 80) for at in (40, 30, 60)]
    out = fig1_report.steps_comparison({"relu": relu, "tanh": tanh})
    steps = {k: [fig1_report.reached(r) for r in v] for k, v in (("relu", relu), ("tanh", tanh))}
    assert out["steps"] == steps
    t = stats.paired(np.log(steps["relu"]), np.log(steps["tanh"]))
    assert out["ratio"]["mean"] == pytest.approx(math.exp(t.diff)) and out["ratio"]["low"] == pytest.approx(math.exp(t.low))
    lrn = fig1_report.lrn_comparison({True: [_run([1], test_error=e) for e in (0.11, 0.12, 0.10)],
                                      False: [_run([1], test_error=e) for e in (0.13, 0.15, 0.12)]})
    assert lrn["difference"]["mean"] == pytest.approx(0.07 / 3)  # +2, +3, +2 pp


def test_the_net_has_four_layers_with_weights_and_the_layers_18pct_shapes():
    from alexnet_tf.ablation.fig1 import net

    model = net("tanh")
    weighted = [layer for layer in model.layers if layer.weights]
    assert [layer.name for layer in weighted] == ["conv1", "conv2", "conv3", "fc4"]
    assert [tuple(layer.kernel.shape) for layer in weighted] == [(5, 5, 1, 32), (5, 5, 32, 32), (5, 5, 32, 64),
                                                                   (4 * 4 * 64, 10)]
    assert weighted[0].activation.__name__ == "tanh"
    assert sum("local_response" in layer.name for layer in model.layers) == 2
    assert sum("local_response" in layer.name for layer in net("relu", lrn=False).layers) == 0
