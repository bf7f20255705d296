"""The ablation study (alexnet_tf/ablation/): verdict rule, curve reading, plan, and a tiny real study."""

import contextlib
import io
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
from dataclasses import fields, replace

import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.ablation import analysis, measure, processes, records, report, runner, stats, study
from alexnet_tf.ablation.results import ArmResult, ArmRuns
from alexnet_tf.__main__ import main as cli
from alexnet_tf.config import parse_override
from alexnet_tf.errors import ConfigError


# === The statistics against published values and hand calculations ===

@pytest.mark.parametrize("df, t975, t95", [  # two-tailed t tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2)
    (1, 12.706, 6.314), (2, 4.303, 2.920), (3, 3.182, 2.353), (4, 2.776, 2.132), (5, 2.571, 2.015),
    (10, 2.228, 1.812), (30, 2.042, 1.697), (100, 1.984, 1.660)])
def test_t_quantiles_are_the_tables(df, t975, t95):
    assert stats.t_quantile(0.975, df) == pytest.approx(t975, abs=6e-4)
    assert stats.t_quantile(0.95, df) == pytest.approx(t95, abs=6e-4)
    assert stats.t_sf2(t975, df) == pytest.approx(0.05, abs=2e-4)


def test_t_tail_in_closed_form():
    # df = 1 is the Cauchy distribution: P(|T| > t) = 1 - 2 atan(t) / pi; df = 2: 1 - t / sqrt(2 + t^2)
    for t in (0.3, 1.0, 2.5, 10.0):
        assert stats.t_sf2(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-10)
        assert stats.t_sf2(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    assert stats.t_sf2(0.0, 4) == pytest.approx(1.0) and stats.t_sf2(math.inf, 4) == 0.0


def test_welch_by_hand():
    # a: mean 2, s^2 1; b: mean 5.5, s^2 29/3 -> se^2 = 1/3 + 29/12 = 2.75, df = 2.75^2 / ((1/3)^2/2 + (29/12)^2/3)
    w = stats.welch([1, 2, 3], [2, 4, 7, 9])
    df = 2.75 ** 2 / ((1 / 3) ** 2 / 2 + (29 / 12) ** 2 / 3)
    assert (w.diff, w.se, w.df) == pytest.approx((3.5, math.sqrt(2.75), df))
    assert w.t == pytest.approx(3.5 / math.sqrt(2.75))
    assert w.p == pytest.approx(stats.t_sf2(w.t, df))
    half = stats.t_quantile(0.975, df) * math.sqrt(2.75)
    assert (w.low, w.high) == pytest.approx((3.5 - half, 3.5 + half))
    one = stats.welch([0.1], [0.2, 0.3])
    assert one.diff == pytest.approx(0.15) and math.isnan(one.p)  # one seed: no noise estimate


def test_paired_test_uses_the_per_seed_differences():
    a, b = [10.0, 12.0, 11.0, 15.0], [10.5, 12.4, 11.7, 15.4]   # d = 0.5, 0.4, 0.7, 0.4: mean 0.5, sd 0.1414
    p = stats.paired(a, b)
    sd = np.std([0.5, 0.4, 0.7, 0.4], ddof=1)
    assert (p.diff, p.se, p.df) == pytest.approx((0.5, sd / 2, 3.0))
    assert p.p == pytest.approx(stats.t_sf2(0.5 / (sd / 2), 3)) and p.p < 0.01
    assert stats.welch(a, b).p > 0.5   # the seeds' shared noise hides the same shift from an unpaired test
    # compare() pairs by seed, in any order, on the seeds both arms have
    c = stats.compare(a, [0, 1, 2, 3], b[::-1] + [99.0], [3, 2, 1, 0, 7])
    assert c.kind == "paired" and c.diff == pytest.approx(0.5)
    assert stats.compare(a, [0, 1, 2, 3], b, [4, 5, 6, 7]).kind == "welch"


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running maxima; nan is not a test
    assert stats.holm([0.01, 0.04, 0.03, math.nan, 0.005])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.01, 0.04, 0.03, math.nan, 0.005])[4] == pytest.approx(0.02)
    assert math.isnan(stats.holm([0.01, math.nan])[1]) and stats.holm([0.6, 0.7]) == [1.0, 1.0]


def _test(diff, low, high, p=0.01):
    return stats.Test("paired", diff, 1.0, 4, diff, p, low, high, 5, 5)


# Hand-made numbers: (test, Holm p, the paper's sign, its number, the simultaneous interval) -> the verdict words of
# docs/ablation.md. The paper's number is in the test's units: +0.014 is +1.4 pp, -log 2 a halving of the steps.
@pytest.mark.parametrize("test, holm_p, expected, paper, interval, verdict", [
    (_test(0.02, 0.01, 0.03), 0.02, +1, 0.014, (0.005, 0.035), "agrees"),               # holds +1.4 pp
    (_test(0.02, 0.017, 0.023), 0.02, +1, 0.014, (0.015, 0.025), "agrees"),             # lies beyond it
    (_test(0.008, 0.005, 0.011), 0.01, +1, 0.014, (0.002, 0.014), "agrees"),            # ends exactly at it
    (_test(0.008, 0.005, 0.011), 0.01, +1, 0.014, (0.002, 0.0139), "same direction, smaller"),
    (_test(0.008, 0.005, 0.011), 0.04, +1, 0.014, (-0.001, 0.013), "same direction, smaller"),  # Holm, not Bonferroni
    (_test(-0.005, -0.008, -0.002), 0.04, +1, 0.004, (-0.009, -0.001), "opposite"),
    (_test(0.02, 0.01, 0.03), 0.02, -1, None, (0.005, 0.035), "opposite"),
    (_test(0.02, 0.01, 0.03), 0.02, +1, None, (0.005, 0.035), "same direction"),       # no number: direction only
    (_test(0.002, -0.003, 0.007), 0.30, +1, 0.014, (-0.006, 0.010), "smaller than the paper's"),
    (_test(-0.002, -0.004, -0.001), 0.08, +1, 0.02, (-0.005, 0.0005), "smaller than the paper's"),  # 6b's shape
    (_test(0.002, -0.003, 0.007), 0.30, +1, 0.004, (-0.006, 0.010), "inconclusive"),   # holds 0 and +0.4 pp
    (_test(0.002, -0.003, 0.007), 0.30, +1, None, (-0.006, 0.010), "inconclusive"),
    (_test(0.03, 0.02, 0.04, p=0.001), 0.08, +1, 0.014, (-0.001, 0.06), "inconclusive"),  # beyond, but not after Holm
    (_test(-0.3, -0.5, -0.1), 0.01, -1, -math.log(2), (-0.6, -0.05), "same direction, smaller"),  # x0.74, paper x0.5
    (_test(-0.5, -0.8, -0.3), 0.01, -1, -math.log(2), (-0.9, -0.2), "agrees"),  # x0.61 [x0.41, x0.82] holds x0.5
    (_test(0.01, math.nan, math.nan, p=math.nan), math.nan, +1, 0.014, (math.nan, math.nan),
     "inconclusive (no noise estimate)"),
])
def test_verdict_rule(test, holm_p, expected, paper, interval, verdict):
    assert report.VERDICTS[stats.verdict(test, holm_p, expected, paper, interval)] == verdict


def test_simultaneous_interval_is_bonferronis():
    """t quantile at 1 - 0.05/(2m) times the test's se: for m = 1 the 95 % interval itself; for df = 4 and m = 10
    the 99.5 % two-sided point of t(4) is 5.598 (t tables)."""
    t = stats.paired([10.0, 12.0, 11.0, 15.0, 9.0], [10.5, 12.4, 11.7, 15.4, 9.9])
    assert stats.simultaneous(t, 1) == pytest.approx((t.low, t.high))
    low, high = stats.simultaneous(t, 10)
    assert (high - t.diff) / t.se == pytest.approx(5.598, abs=1e-3) and t.diff - low == pytest.approx(high - t.diff)


def test_retired_claims_leave_holms_family_and_the_interval_follows_its_size():
    """Claim 1a (the study's tanh vs base) is shown but not tested: two claims tested, so Holm multiplies the
    smaller p by 2 and the simultaneous intervals are at 97.5 %."""
    results = {"base": _fake_arm("base", [0.100, 0.102, 0.098]), "no_lrn": _fake_arm("no_lrn", [0.121, 0.122, 0.118]),
               "no_conv2": _fake_arm("no_conv2", [0.110, 0.125, 0.118])}
    results["tanh"] = _fake_arm("tanh", [0.1] * 3, steps_to_threshold=900)
    found = analysis.analyse(results)
    assert found["1a"].verdict is None and report.verdict_text(found["1a"]).startswith(report.RETIRED)
    assert [a.claim.key for a in analysis.tested(found)] == ["2", "6a"]
    p2, p6 = found["2"].test.p, found["6a"].test.p
    assert found["2"].holm_p == pytest.approx(stats.holm([p2, p6])[0])
    assert found["2"].interval == pytest.approx(stats.simultaneous(found["2"].test, 2))


def test_seeds_needed_for_an_interval():
    # sd of differences 1 pp, half-width 1 pp: t_{0.975, n-1} / sqrt(n) <= 1 first at n = 7 (2.447 / 2.646)
    assert stats.seeds_needed(1.0, 1.0) == 7
    assert stats.seeds_needed(1.0, 0.01) is None


def _result(seed=0, **measured):
    """An ArmResult with the given fields; the others are a run that reached every threshold at step 1."""
    defaults = dict(machine="a test machine", val_top1_error=0.1, val_top5_error=0.01, test_top1_error=0.1,
                    train_top1_error=0.08, gap=0.02, lrn={}, steps_per_epoch=8, total_steps=16, val_images=256,
                    reached={t: 1 for t in study.SENSITIVITY}, steps_to_threshold=1, steps_to_converged=1,
                    censored={t: False for t in study.SENSITIVITY}, wall_seconds=60.0, cpu_seconds=60.0,
                    curve=(np.array([1, 2]), np.array([0.9, 0.8])),
                    epoch_curves={"train": (np.array([0]), np.array([0.85])), "validation": (np.array([0]), np.array([0.8]))})
    return ArmResult(seed=seed, **dict(defaults, **measured))


def _fake_arm(name, values, metric="val_top1_error", **measured):
    return ArmRuns(study.ARM_BY_NAME[name], [_result(seed, **{metric: v}, **measured) for seed, v in enumerate(values)])


def test_claim_row_formats_the_numbers_it_was_given():
    results = {"base": _fake_arm("base", [0.100, 0.102, 0.098]), "no_lrn": _fake_arm("no_lrn", [0.121, 0.122, 0.118])}
    (only,) = analysis.analyse(results).values()   # claims whose arms are not in the study have no row
    row = report.claim_row(only)
    assert row[0] == "2" and "§3.3" in row[1] and "-1.4 % top-1" in row[2]
    assert row[3] == "base: 10.00 ± 0.20 % (3 seeds)<br>no_lrn: 12.03 ± 0.21 % (3 seeds)"
    t = stats.paired([0.100, 0.102, 0.098], [0.121, 0.122, 0.118])
    # one claim tested: Holm changes nothing, and the simultaneous interval is the 95 % one
    assert row[4] == (f"+2.03 [{100 * t.low:+.2f}, {100 * t.high:+.2f}]; [{100 * t.low:+.2f}, {100 * t.high:+.2f}] pp "
                      "(paper +1.4 pp)")
    assert row[5] == f"paired t(2.0) = {t.t:+.2f}, p = {t.p:.4f} / {t.p:.4f}"
    assert row[6] == "agrees" and only.test.diff == pytest.approx(0.061 / 3)


def test_seeds_table_sizes_each_claim_from_its_per_seed_differences():
    # claim 2's per-seed differences +1, +2, +3 pp: sd 1 pp; the target is half the paper's 1.4 pp. One claim
    # tested: a 95 % interval, t_{0.975, n-1} / sqrt(n) <= 0.7 first at n = 11 (2.228 / 3.317 = 0.672; n = 10:
    # 2.262 / 3.162 = 0.715)
    results = {"base": _fake_arm("base", [0.10, 0.11, 0.12]), "no_lrn": _fake_arm("no_lrn", [0.11, 0.13, 0.15])}
    lines = report._seeds_table(analysis.analyse(results)).splitlines()
    assert "interval at 95.00 %" in lines[0]
    assert lines[2] == "| 2 | 3 | 1.00 pp | 0.70 pp: half the paper's effect | 11 |"
    # two claims tested (2 and 6a): Bonferroni's 97.5 % interval, so more seeds for the same half-width
    results["no_conv2"] = _fake_arm("no_conv2", [0.11, 0.13, 0.15])
    lines = report._seeds_table(analysis.analyse(results)).splitlines()
    assert "interval at 97.50 %" in lines[0] and len(lines) == 6 and lines[4] == ""
    n, n6 = stats.seeds_needed(0.01, 0.007, 0.975), stats.seeds_needed(0.01, 0.01, 0.975)
    assert int(lines[2].split("|")[-2]) == n > 11 and int(lines[3].split("|")[-2]) == n6 > 3
    # the second stage: every arm of a claim short of seeds gets what its claims need (the base the most)
    assert lines[5] == ("A second stage by this rule (at most 20 seeds per arm): "
                        f"`--more-seeds no_conv2={n6} --more-seeds base,no_lrn={n}`.")
    # once a second stage has run (the study's --more-seeds), the table asks for no third: it names the claims
    # still short of the seeds the rule now asks for, with their counts
    lines = report._seeds_table(analysis.analyse(results), more={"base": 3, "no_lrn": 3}).splitlines()
    assert lines[5] == ("The second stage has run (`--more-seeds base,no_lrn=3`); the study takes one, so these counts"
                        f" are final. Still short of the seeds this rule asks for: 2 (3 paired seeds; {n} at its spread now),"
                        f" 6a (3 paired seeds; {n6} at its spread now).")


def test_second_stage_uses_the_noise_only_and_stops_at_its_cap():
    # claim 5a (the gap, no number in the paper): per-seed differences 0.1, 0.3, 0.2, 0.4 pp, sd 0.129 pp.
    # Its target is RESOLVE (0.2 pp) whatever the difference: t_{0.975, n-1} * 0.129 / sqrt(n) <= 0.2 pp
    # first at n = 5 (3.182 * 0.129 / 2 = 0.205 at n = 4; 2.776 * 0.129 / 2.236 = 0.160 at n = 5). Claim 5b's
    # steps are all equal (no spread, no test), so one claim is tested: a 95 % interval.
    def arm(name, gaps):
        return _fake_arm(name, gaps, "gap", steps_to_converged=1000)
    base = arm("base", [0.020, 0.021, 0.022, 0.023])
    drop = arm("no_dropout", [0.021, 0.024, 0.024, 0.027])
    needs, _ = analysis.seeds_needed_per_claim(analysis.analyse({"base": base, "no_dropout": drop}))
    need = needs["5a"]
    assert need.target == study.RESOLVE and need.sd == pytest.approx(0.00129, abs=1e-5) and need.n == 5
    assert analysis.stage_two(analysis.analyse({"base": base, "no_dropout": drop})) == {"base": 5, "no_dropout": 5}
    # the same spread around a larger difference asks for the same seeds (the difference is not used)
    shifted = arm("no_dropout", [v + 0.01 for v in [0.021, 0.024, 0.024, 0.027]])
    assert analysis.stage_two(analysis.analyse({"base": base, "no_dropout": shifted})) == {"base": 5, "no_dropout": 5}
    # more than the cap asks for gets the cap; a claim that has its seeds adds none
    assert analysis.stage_two(analysis.analyse({"base": base, "no_dropout": drop}), most=4) == {"base": 4, "no_dropout": 4}
    wide = arm("no_dropout", [0.021, 0.030, 0.015, 0.035])
    assert analysis.stage_two(analysis.analyse({"base": base, "no_dropout": wide})) == {"base": 20, "no_dropout": 20}
    six_base = arm("base", [0.020, 0.021, 0.022, 0.023, 0.020, 0.021])
    six_drop = arm("no_dropout", [0.021, 0.024, 0.024, 0.027, 0.021, 0.024])
    assert analysis.stage_two(analysis.analyse({"base": six_base, "no_dropout": six_drop})) == {}


def test_claim_one_reports_the_ratio_and_marks_runs_that_never_reached_the_threshold():
    t = study.THRESHOLD
    relu = _fake_arm("base", [200, 220, 240], "steps_to_threshold")
    tanh = _fake_arm("tanh", [900, 1872, 1872], "steps_to_threshold")
    for i in (1, 2):  # never reached: the whole run (1872 steps) counted
        tanh.runs[i] = replace(tanh.runs[i], censored={t: True, study.CONVERGED: True})
    row = report.claim_row(analysis.analyse({"base": relu, "tanh": tanh})["1a"])
    assert "tanh: >1548 ± 561 steps (3 seeds, 2 not reached)" in row[3]
    ratio = math.exp(np.mean(np.log([900 / 200, 1872 / 220, 1872 / 240])))  # the geometric mean of the paired ratios
    assert row[4].startswith(f"tanh / base: x{ratio:.2f} [x") and row[4].endswith("(paper x6)")
    assert row[6].startswith(report.RETIRED) and row[5].endswith(" / -")  # shown, not tested


def test_claim_1b_reads_steps_to_25_from_the_constant_rate_runs_only():
    """Claim 1b compares the constant-rate runs' steps to 25 % (the first step whose trailing mean reached it,
    the whole run when never reached), not the study's own base and tanh arms, and joins Holm's family."""
    def arm(name, steps, total=1872):
        runs = [_result(seed, reached={**{t: 1 for t in study.SENSITIVITY}, 0.25: s}, total_steps=total,
                        censored={**{t: False for t in study.SENSITIVITY}, 0.25: s is None})
                for seed, s in enumerate(steps)]
        return ArmRuns(study.ARM_BY_NAME[name], runs)
    study_arms = {"base": arm("base", [5, 5, 5]), "tanh": arm("tanh", [5, 5, 5])}  # no effect in the study's arms
    constant = {"base": arm("base", [120, 150, 130]), "tanh": arm("tanh", [600, None, 520])}
    result = analysis.analyse(study_arms, None, constant)
    one_b = result["1b"]
    expected = stats.paired(np.log([120, 150, 130]), np.log([600, 1872, 520]))  # seed 1 never reached: 1,872 counted
    assert one_b.test.diff == pytest.approx(expected.diff) and one_b.test.p == pytest.approx(expected.p)
    assert one_b.censored == 1 and "1b" in {a.claim.key for a in analysis.tested(result)}
    assert "1b" not in analysis.analyse(study_arms)  # without the constant-rate runs there is no claim 1b
    row = report.claim_row(one_b)
    sd = np.std([600, 1872, 520], ddof=1)
    assert f"tanh: >997 ± {sd:.0f} steps (3 seeds, 1 not reached)" in row[3], row[3]
    table = report._sensitivity_table(study_arms, constant)
    line = [r for r in table.splitlines() if "claim 1b" in r][0]
    assert f"x>{np.mean([600, 1872, 520]) / np.mean([120, 150, 130]):.2f}" in line, line


def test_a_step_ratio_pulled_down_by_runs_that_never_reached_is_not_sized():
    """tanh x3 the steps of ReLU, significant, below the paper's x6: "same direction, smaller" when every
    run reached 25 %; when a tanh run did not (its whole run counted, a lower bound), only the direction."""
    def arm(name, steps, total=450):
        runs = [_result(seed, reached={**{t: 1 for t in study.SENSITIVITY}, 0.25: s}, total_steps=total,
                        censored={**{t: False for t in study.SENSITIVITY}, 0.25: s is None})
                for seed, s in enumerate(steps)]
        return ArmRuns(study.ARM_BY_NAME[name], runs)
    base = arm("base", [100, 110, 120, 130, 140])
    reached = analysis.analyse({}, None, {"base": base, "tanh": arm("tanh", [300, 330, 360, 390, 440])})["1b"]
    assert reached.verdict == stats.Verdict.SAME_DIRECTION_SMALLER and reached.censored == 0
    bounded = analysis.analyse({}, None, {"base": base, "tanh": arm("tanh", [300, 330, 360, 390, None])})["1b"]
    assert bounded.verdict == stats.Verdict.SAME_DIRECTION and bounded.censored == 1
    # the faster arm's censored runs bias the ratio upwards, not towards "smaller": the size is still judged
    late_base = arm("base", [100, 110, 120, 130, None], total=140)
    faster = analysis.analyse({}, None, {"base": late_base, "tanh": arm("tanh", [300, 330, 360, 390, 440])})["1b"]
    assert faster.verdict == stats.Verdict.SAME_DIRECTION_SMALLER


def test_every_claim_agrees_on_numbers_shaped_like_the_papers():
    """Hand-written per-arm numbers that behave as the paper says (with a little seed noise): every
    claim's verdict must be 'agrees', which pins down the sign convention of each claim."""
    noise = np.array([-1, 0, 1, 2, -2])
    paper_like = {  # arm: (val top-1 error, val - train gap, steps to THRESHOLD, steps to CONVERGED)
        "base": (0.100, 0.020, 200, 1000),
        "tanh": (0.110, 0.020, 1200, 1800),      # §3.1: slower to the threshold
        "no_lrn": (0.114, 0.020, 200, 1000),     # §3.3: +1.4 pp
        "lrn_constant": (0.114, 0.020, 200, 1000),  # the gain was the normalisation
        "pool_2x2": (0.104, 0.030, 200, 1000),   # §3.4: +0.4 pp and overfits more
        "one_tower": (0.117, 0.020, 200, 1000),  # §3.2: +1.7 pp
        "no_dropout": (0.105, 0.080, 150, 500),  # §4.2: overfits much more, converges in half the steps
        "no_conv2": (0.120, 0.020, 200, 1000),   # §7: about +2 pp each
        "no_conv3": (0.120, 0.020, 200, 1000),
    }
    rng = np.random.default_rng(0)
    results = {}
    for name, (err, gap, steps, converged) in paper_like.items():
        jitter = rng.normal(0, 1, len(noise))  # per-arm noise on top of the seeds' shared noise
        runs = [_result(seed, val_top1_error=err + 0.0005 * (n + j), gap=gap + 0.0005 * (n + j),
                        steps_to_threshold=steps + 5 * (n + j), steps_to_converged=converged + 5 * (n + j))
                for seed, (n, j) in enumerate(zip(noise, jitter))]
        results[name] = ArmRuns(study.ARM_BY_NAME[name], runs)
    # the four-layer net (fig1's summary.json): tanh x6 the steps to 25 %, 13 % -> 11 % test error with LRN
    fig1 = {"steps_to_25": {"steps": {"relu": [100 + 5 * n for n in noise], "tanh": [600 + 29 * n for n in noise]},
                            "never_reached": {"relu": 0, "tanh": 0}},
            "lrn": {"test_top1_error": {"with": list(0.11 + 0.001 * noise), "without": list(0.13 + 0.001 * noise[::-1])}}}
    # the study's base and tanh arms at a constant rate (claim 1b): tanh x6 the steps to 25 %
    constant = {name: ArmRuns(study.ARM_BY_NAME[name], [_result(seed, reached={**{t: 1 for t in study.SENSITIVITY},
                                                                               0.25: steps + 5 * n * steps // 100})
                                                        for seed, n in enumerate(noise)])
                for name, steps in (("base", 100), ("tanh", 600))}
    verdicts = {k: report.verdict_text(a) for k, a in analysis.analyse(results, fig1, constant).items()}
    direction_only = {c.key for c in study.CLAIMS if not c.paper_value}
    assert direction_only == {"2b", "3b", "5a"}
    assert verdicts.pop("1a").startswith(report.RETIRED)
    assert verdicts == {c.key: "same direction" if c.key in direction_only else "agrees"
                        for c in study.CLAIMS if c.key != "1a"}
    assert sorted(verdicts) == ["1", "1b", "2", "2b", "2c", "3a", "3b", "4", "5a", "5b", "6a", "6b"]


def test_removing_conv3_or_conv4_is_one_network_in_the_study():
    """Why the study has no conv4 arm: at the ablation config, removing conv4 instead of conv3 builds the same
    layers (shapes, order, which towers each reads) and, from the same seed, the same initial weights."""
    import keras

    def build(layer):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        config = alexnet_tf.load_config(study.BASE_CONFIG, [f"model.remove_conv=[{layer}]"])
        model = alexnet_tf.build_model(config)
        return model, [w.numpy() for w in model.weights]

    (m3, w3), (m4, w4) = build(3), build(4)

    def layout(model):  # every layer, its settings and inputs; the middle layer is conv4 without conv3, conv3 without conv4
        return json.dumps(model.get_config()).replace("conv4_", "conv3_").replace("concat4", "concat3")

    assert '"conv4_0"' in json.dumps(m3.get_config()) and '"conv3_0"' not in json.dumps(m3.get_config())
    assert layout(m3) == layout(m4) and '"conv3_0"' in layout(m4)
    assert [w.shape for w in w3] == [w.shape for w in w4] and all(np.array_equal(a, b) for a, b in zip(w3, w4))
    # the two differ at the paper's init, in that layer's bias only (1 in conv4, 0 in conv3)
    paper = alexnet_tf.load_config(study.BASE_CONFIG, ["model.hidden_bias=1.0", "model.remove_conv=[3]"])
    assert np.all(alexnet_tf.build_model(paper).get_layer("conv4_0").bias.numpy() == 1.0)


# === Reading the training-error curve ===

def test_windowed_recovers_the_mean_error_of_each_window():
    rng = np.random.default_rng(0)
    spe, epochs, every = 7, 3, 3  # logs at steps 3, 6, 9, ... do not line up with the epochs
    errors = rng.uniform(0, 1, spe * epochs)  # the error of each step (step s = index + 1)
    steps = np.arange(every, spe * epochs + 1, every)
    # Keras logs the mean since the epoch's first step
    running = [errors[(s - 1) // spe * spe: s].mean() for s in steps]
    expected, previous = [], 0
    for s in steps:
        start = max(previous, (s - 1) // spe * spe)  # window: after the previous log, within this epoch
        expected.append(errors[start:s].mean())
        previous = s
    np.testing.assert_allclose(measure.windowed(steps, np.array(running), spe), expected, rtol=1e-12)


def _first_step_by_hand(per_step_counts, threshold_count, window=measure.SMOOTH):
    """The reference: a plain loop over whole numbers (`per_step_counts` may be Fractions for multi-step windows)."""
    for s in range(window, len(per_step_counts) + 1):
        if sum(per_step_counts[s - window:s]) <= threshold_count:
            return s
    return None


def test_steps_to_a_threshold_from_every_step():
    """train.log_every = 1: the first step whose trailing 20 steps miss at most threshold x 128 x 20 examples."""
    counts = [64] * 30 + [12] * 30  # of 128 images: 50 % for 30 steps, then 9.4 %
    errors, steps = np.array(counts) / 128, np.arange(1, 61)
    # steps s-19..s miss 64 (50 - s) + 12 (s - 30) = 2840 - 52 s for 30 < s <= 50: <= 0.3 x 2560 = 768 from s = 40
    assert measure.steps_to(steps, errors, 0.3, 128) == 40 == _first_step_by_hand(counts, 768)
    assert measure.steps_to(steps, errors, 0.5, 128) == 20   # exactly 1280 = 0.5 x 2560 (a tie), full windows only
    assert measure.steps_to(steps, errors, 0.05, 128) is None
    # windows of 5 logged steps: each step takes a fifth of its window's count; the same crossing here
    assert measure.steps_to(steps[4::5], errors[4::5], 0.3, 128) == 40


def test_steps_to_counts_a_mean_exactly_at_the_threshold_as_reached():
    """Ties: 13 of 128 wrong for 20 steps, then 12: steps s-19..s miss 260 - (s - 20), exactly 256 = 10 % at s = 24.
    The values carry the noise of their recovery from float32 running means (+-4e-6), which pushes a
    floating-point mean to either side of 10 %; the whole counts do not move."""
    counts = [13] * 20 + [12] * 20
    rng = np.random.default_rng(0)
    errors = np.array(counts) / 128 + rng.choice([-4e-6, 4e-6], len(counts))
    steps = np.arange(1, 41)
    assert measure.steps_to(steps, errors, 0.10, 128) == 24 == _first_step_by_hand(counts, 256)
    assert measure.steps_to(steps, np.array(counts) / 128 + 4e-6, 0.10, 128) == 24  # every value a hair above
    # threshold x batch need not be whole: 0.2 x 128 = 25.6 per step, so with a window of one step 25 reaches it
    one = np.array([27, 26, 25, 26]) / 128
    assert measure.steps_to(np.arange(1, 5), one, 0.2, 128, window=1) == 3


def test_steps_to_with_a_window_of_two_steps_gives_each_step_half_its_count():
    """A resumed run may leave a step unlogged: the log at step 22 then covers steps 21-22 (25 wrong of 256),
    12.5 per step; the reference adds Fractions."""
    from fractions import Fraction
    counts = [14] * 20 + [25] + [12] * 20       # windows: steps 1..20, 21-22, 23..42
    steps = np.array(list(range(1, 21)) + list(range(22, 43)))
    widths = np.diff(np.concatenate([[0], steps]))
    errors = np.array(counts) / (128 * widths)
    per_step = [Fraction(c, int(w)) for c, w in zip(counts, widths) for _ in range(int(w))]
    expected = _first_step_by_hand(per_step, Fraction(256))
    assert expected is not None and measure.steps_to(steps, errors, 0.10, 128) == expected
    assert measure.window_counts(steps, errors, 128)[0].tolist() == counts


def test_a_training_error_that_is_not_a_whole_count_is_refused():
    with pytest.raises(ValueError, match="expected a whole count"):
        measure.window_counts(np.arange(1, 3), np.array([0.1, 0.1]), 128)  # 12.8 of 128 images


def test_recount_rewrites_a_records_steps_from_its_curve_and_nothing_else(tmp_path):
    p, _, path = _base_plan(tmp_path)
    counts = [13] * 20 + [12] * 20  # reaches 10 % at step 24 (the tie above), 20 % at step 20
    curve = (np.arange(1, 41), np.array(counts) / 128 + 3e-7)
    result = _fake_measured(0.1)
    result = replace(result, curve=curve, total_steps=40, steps_to_threshold=40, steps_to_converged=40)
    records.write_result(path, p.config, result)
    data = json.loads(open(path).read())
    del data["measurement"]["steps_rule"]  # as recorded before the steps rule was named
    with open(path, "w") as f:
        json.dump(data, f)
    assert records.read_record(path, p.config).stale
    moved = records.recount_steps(path)
    assert moved[study.CONVERGED] == (None, 24) and moved[study.THRESHOLD] == (None, 20)
    back = records.read_record(path, p.config)
    assert not back.stale and back.result.steps_to_converged == 24 and back.result.steps_to_threshold == 20
    assert back.result.censored[0.3] is False and back.result.val_top1_error == 0.1
    assert records.recount_steps(path) == {}  # already counted
    data = json.loads(open(path).read())
    data["measurement"]["smooth"] = measure.SMOOTH + 1
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ConfigError, match="apart from the steps rule"):
        records.recount_steps(path)


def _write_segment(log_dir, stamp, batch_steps, epoch_steps, value):
    """One train.py invocation's tb/train event file, written as Keras writes it (tensor summaries)."""
    import tensorflow as tf

    before = set(os.listdir(log_dir)) if os.path.isdir(log_dir) else set()
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for s in batch_steps:
            tf.summary.scalar("batch_top1_error", value(s), step=s)
        for e in epoch_steps:
            tf.summary.scalar("epoch_top1_error", 0.5, step=e)
    writer.close()
    (new,) = set(os.listdir(log_dir)) - before
    os.rename(os.path.join(log_dir, new), os.path.join(log_dir, re.sub(r"tfevents\.\d+", f"tfevents.{stamp}", new)))


def test_batch_curve_across_a_resumed_run(tmp_path):
    log_dir = str(tmp_path / "tb" / "train")
    spe = 5
    # first invocation: epochs 0 and 1, killed after 2 steps of epoch 2 (its batch logs at steps 11, 12)
    _write_segment(log_dir, 1000, range(1, 13), [0, 1], lambda s: 1.0 + s)
    # resumed at epoch 2: Keras numbers its batches from 1 again
    _write_segment(log_dir, 2000, range(1, 16), [2, 3, 4], lambda s: 100.0 + s)
    steps, values = measure.batch_curve(str(tmp_path), spe)
    np.testing.assert_array_equal(steps, np.arange(1, 26))
    np.testing.assert_allclose(values[:10], 1.0 + np.arange(1, 11))        # the first invocation's epochs 0-1
    np.testing.assert_allclose(values[10:], 100.0 + np.arange(1, 16))      # epoch 2 replaced by the resumed one


def test_batch_curve_across_a_run_resumed_mid_epoch(tmp_path):
    log_dir = str(tmp_path / "tb" / "train")
    spe = 5
    # first invocation: epochs 0 and 1, killed after step 13; its last checkpoint was at step 11
    _write_segment(log_dir, 1000, range(1, 14), [0, 1], lambda s: 1.0 + s)
    # resumed at global step 11 (one step into epoch 2): training.train numbers on from 12
    _write_segment(log_dir, 2000, range(12, 26), [2, 3, 4], lambda s: 100.0 + s)
    steps, values = measure.batch_curve(str(tmp_path), spe)
    np.testing.assert_array_equal(steps, np.arange(1, 26))
    np.testing.assert_allclose(values[:11], 1.0 + np.arange(1, 12))        # up to the checkpoint
    np.testing.assert_allclose(values[11:], 100.0 + np.arange(12, 26))     # steps 12, 13 replaced by the resumed run


# === The plan: arms are the base config plus their overrides ===

def _flat(config):
    return {f"{s}.{k}": v for s, section in config.to_dict().items() if isinstance(section, dict) for k, v in section.items()}


def test_full_plan_arms_differ_from_the_base_exactly_by_their_overrides(tmp_path):
    planned = study.plan(study.BASE_CONFIG, "full", 3, str(tmp_path))
    assert len(planned) == len(study.ARMS) * 3 and len(study.ARMS) >= 7
    assert [p.seed for p in planned] == sorted(p.seed for p in planned)  # seed-major: every arm gets seed 0 first
    base = _flat(alexnet_tf.load_config(study.BASE_CONFIG))
    for p in planned:
        changed = {k: v for k, v in _flat(p.config).items() if base[k] != v}
        expected = dict(parse_override(o) for o in p.arm.overrides)
        if p.seed:
            expected["train.seed"] = p.seed
        assert changed == expected, p.arm.name
        assert p.run_dir == os.path.join(str(tmp_path), p.arm.name, f"seed{p.seed}")
    # every claim of the study compares two of its arms; the four-layer net's compare fig1.py's runs
    assert all(c.a in study.ARM_BY_NAME and c.b in study.ARM_BY_NAME for c in study.CLAIMS if c.source != "fig1")
    assert {(c.a, c.b) for c in study.CLAIMS if c.source == "fig1"} == {("relu", "tanh"), ("lrn", "no_lrn")}


def test_second_stage_gives_only_the_named_arms_more_seeds(tmp_path):
    more = alexnet_tf.ablation.parse_more_seeds(["base,no_lrn=5", "pool_2x2=4"])
    assert more == {"base": 5, "no_lrn": 5, "pool_2x2": 4}
    planned = study.plan(study.BASE_CONFIG, "full", 3, str(tmp_path), more=more)
    # hand count: 9 arms x seeds 0-2, then seed 3 of base, no_lrn, pool_2x2 and seed 4 of base, no_lrn
    assert len(planned) == len(study.ARMS) * 3 + 3 + 2
    tail = [(p.arm.name, p.seed) for p in planned[len(study.ARMS) * 3:]]
    assert tail == [("base", 3), ("no_lrn", 3), ("pool_2x2", 3), ("base", 4), ("no_lrn", 4)]
    assert [p.seed for p in planned] == sorted(p.seed for p in planned)
    assert all(p.config.train.seed == p.seed for p in planned)
    assert report.seeds_text(3, more) == "3 seeds per arm, 4 for pool_2x2, 5 for base and no_lrn"


@pytest.mark.parametrize("value, message", [
    ("base=x", "--more-seeds 'base=x'; expected ARM[,ARM...]=N"),
    ("base", "--more-seeds 'base'; expected ARM[,ARM...]=N"),
    ("relu6=12", "--more-seeds names arm(s) relu6 that the study does not run"),
    ("base=2", "--more-seeds base=2: fewer than --seeds 3"),
    ("base,,no_lrn=12", "--more-seeds 'base,,no_lrn=12'; expected ARM[,ARM...]=N"),
    ("base=\u00b2", "expected ARM[,ARM...]=N"),
])
def test_bad_more_seeds_is_a_one_line_error(tmp_path, capsys, value, message):
    assert cli(["ablate", "--seeds", "3", "--more-seeds", value, "--runs-dir", str(tmp_path), "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_more_seeds_reaches_the_plan_and_the_report(tmp_path, capsys):
    out = tmp_path / "REPRODUCTION.md"
    args = ["ablate", "--seeds", "2", "--arms", "base,no_lrn", "--more-seeds", "no_lrn=4", "--runs-dir", str(tmp_path),
            "--out", str(out), "--report-only"]
    assert cli(args) == 0
    assert "2 arms, 2 seeds per arm, 4 for no_lrn = 6 runs" in capsys.readouterr().out  # 2 + 4, counted by hand
    assert "2 seeds per arm, 4 for no_lrn (`train.seed` = 0..n-1 for an arm of n seeds" in out.read_text()
    assert cli(args[:-1] + ["--more-seeds", "no_lrn=5", "--report-only"]) == 2  # no_lrn named twice
    assert "names no_lrn twice" in capsys.readouterr().err


def test_sensitivity_ratio_is_over_the_seeds_both_arms_have():
    def arm(name, steps):
        runs = [_result(seed, reached={t: s for t in study.SENSITIVITY}, total_steps=2000) for seed, s in enumerate(steps)]
        return ArmRuns(study.ARM_BY_NAME[name], runs)
    # tanh seeds 0-1 at 600 steps; base seeds 0-1 at 100, seeds 2-3 (a second stage) at 300: x6, not x3
    table = report._sensitivity_table({"base": arm("base", [100, 100, 300, 300]), "tanh": arm("tanh", [600, 600])})
    row = [line for line in table.splitlines() if line.startswith("| tanh")][0]
    assert row.count("x6.00") == len(study.SENSITIVITY), row


def test_claim_row_means_are_over_the_seeds_the_test_pairs():
    # the base has 5 seeds (a second stage), no_lrn 3: the row's base mean is over seeds 0-2, as the test's
    base = _fake_arm("base", [0.100, 0.102, 0.098, 0.200, 0.200])
    no_lrn = _fake_arm("no_lrn", [0.121, 0.122, 0.118])
    (only,) = analysis.analyse({"base": base, "no_lrn": no_lrn}).values()
    assert report.claim_row(only)[3] == "base: 10.00 ± 0.20 % (3 seeds)<br>no_lrn: 12.03 ± 0.21 % (3 seeds)"
    assert only.test.n_a == 3 and only.test.diff == pytest.approx(0.061 / 3)


@pytest.mark.slow
def test_full_budget_estimate_matches_the_measured_base_runs(tmp_path):
    planned = study.plan(study.BASE_CONFIG, "full", 3, str(tmp_path))
    # at the AVX-512 rate: 3 seeds ~1 h 40 min, as the 27-run plateau-rule study took (docs/ablation.md: 1 h 42 min)
    per_arm = {p.arm.name: runner.estimate_seconds(p.config, rate=1250) for p in planned if p.seed == 0}
    total = 3 * sum(per_arm.values())
    assert 80 * 60 < total < 130 * 60, total
    assert 3 * 60 < per_arm["base"] < 6 * 60, per_arm
    # the AVX2-only EPYC: its base seed 0 took 7.5 min (docs/ablation.md)
    assert runner.base_train_rate(["AVX2"]) == 700 and runner.base_train_rate(["AVX2", "AVX-512"]) == 1250
    base = runner.estimate_seconds(planned[0].config, rate=runner.base_train_rate(["AVX2"]))
    assert 6 * 60 < base < 8.5 * 60, base


def test_bad_arm_budget_and_mismatched_run_directory_are_one_line_errors(tmp_path, capsys):
    assert cli(["ablate", "--arms", "base,relu6", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown arm(s) relu6" in err[0]
    # a run directory that holds a run of another config (here: the tiny budget's) is refused
    (p,) = study.plan(study.BASE_CONFIG, "tiny", 1, str(tmp_path), ["base"])
    os.makedirs(p.run_dir)
    from alexnet_tf.config import dump
    dump(p.config, os.path.join(p.run_dir, "config.yaml"))
    assert cli(["ablate", "--arms", "base", "--seeds", "1", "--runs-dir", str(tmp_path), "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with another config" in err[0]


# === Records: what a study keeps of a finished run, and when it is refused ===

def _base_plan(tmp_path):
    (p,) = study.plan(study.BASE_CONFIG, "tiny", 1, str(tmp_path), ["base"])
    return p, str(tmp_path / "results"), records.record_path(str(tmp_path / "results"), "base", 0)


def _fake_measured(val, seed=0):
    """A measured ArmResult that never reached a threshold, for records written without training."""
    return _result(seed, val_top1_error=val, reached={t: None for t in study.SENSITIVITY},
                   censored={t: True for t in study.SENSITIVITY})


def test_a_diverged_run_is_recorded_as_failed_and_not_trained_again(tmp_path, capsys):
    p, results, path = _base_plan(tmp_path)
    why = "training stopped: loss became nan at batch 2 of epoch 1; no checkpoint. Lower train.lr or check the data."
    assert why.startswith(runner.DIVERGED)
    records.write_failure(path, p.config, "some machine", why)
    out = tmp_path / "R.md"
    assert cli(["ablate", "--budget", "tiny", "--arms", "base", "--seeds", "1", "--runs-dir", str(tmp_path),
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 finished or failed, 0 to train" in printed and not os.path.isdir(p.run_dir)
    text = out.read_text()
    assert f"base seed 0 failed: {why}" in text and "`results/base/seed0.json`" in text


def test_stale_or_disagreeing_records_are_one_line_errors(tmp_path, capsys):
    p, results, path = _base_plan(tmp_path)
    args = ["ablate", "--budget", "tiny", "--arms", "base", "--seeds", "1", "--runs-dir", str(tmp_path), "--report-only"]
    # a record whose run directory holds another val error: the run was trained again after it was recorded
    records.write_result(path, p.config, replace(_fake_measured(0.1), machine="some machine"))
    assert records.read_record(path, p.config).result.reached[study.THRESHOLD] is None  # float keys back
    os.makedirs(p.run_dir)
    with open(os.path.join(p.run_dir, "metrics.json"), "w") as f:
        json.dump({"val_top1_error": 0.2}, f)
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagree (val top-1 error 10.0000% vs 20.0000%)" in err[0]
    # a record measured under another smoothing window, with no run directory to measure it again from
    shutil.rmtree(p.run_dir)
    data = json.loads(open(path).read())
    data["measurement"]["smooth"] = measure.SMOOTH + 1
    with open(path, "w") as f:
        json.dump(data, f)
    assert records.read_record(path, p.config).stale
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "measured under other values" in err[0] and "is gone" in err[0]
    # not a record at all
    with open(path, "w") as f:
        f.write("{")
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a study record" in err[0]


def test_a_run_is_not_recorded_while_another_study_is_still_measuring_it(tmp_path):
    p, _, _ = _base_plan(tmp_path)
    os.makedirs(p.run_dir)
    lock = tmp_path / ".lock"
    lock.write_text(str(os.getppid()))  # alive and not this process: another study holds the runs directory
    assert not runner._measured_by_its_study(p.run_dir)
    with open(os.path.join(p.run_dir, "ablation.json"), "w") as f:
        json.dump({"attempts": [{"what": "train.py", "returncode": 0}]}, f)
    assert not runner._measured_by_its_study(p.run_dir)    # trained, clean evaluation not yet written
    with open(os.path.join(p.run_dir, "ablation.json"), "w") as f:
        json.dump({"attempts": [{"what": "train.py", "returncode": 0}], "clean": {}}, f)
    assert runner._measured_by_its_study(p.run_dir)
    lock.write_text(str(os.getpid()))                      # this process's own study
    os.remove(os.path.join(p.run_dir, "ablation.json"))
    assert runner._measured_by_its_study(p.run_dir)


def _fake_children(monkeypatch, scripts, measure):
    """runner.start_training starting `sh -c SCRIPT` children in turn (real processes, reaped by the study's
    threads) and runner.measure_finished replaced by `measure`; returns the list of started Trainings."""
    scripts, started = iter(scripts), []

    def fake_start(run_dir, overrides, config_path, threads=None, ended=None):
        os.makedirs(run_dir, exist_ok=True)
        t0 = runner.time.time()  # stamped before the spawn: a child's wall is never shorter than its sleep
        with open(os.path.join(run_dir, "train.log"), "w") as out:
            proc = subprocess.Popen(["sh", "-c", next(scripts)], stdout=out)
        started.append(processes.Training(proc, run_dir, t0, ended))
        started[-1].threads = threads
        return started[-1]

    monkeypatch.setattr(runner, "start_training", fake_start)
    monkeypatch.setattr(runner, "estimate_seconds", lambda config: 60.0)
    monkeypatch.setattr(runner, "measure_finished", measure)
    return started


def test_jobs_at_once_a_failed_run_lets_the_others_finish_then_stops_the_study(tmp_path, monkeypatch):
    """Two runs at once (real child processes, reaped by wait4): the first is killed by a signal after 0.5 s,
    the second ends normally after 1 s and is recorded before the study stops; the third is not started."""
    planned = study.plan(study.BASE_CONFIG, "tiny", 3, str(tmp_path), ["base"])
    results = str(tmp_path / "results")
    started = _fake_children(monkeypatch, ["sleep 0.5; kill -9 $$", "sleep 1; echo finished", "echo never"],
                             lambda run_dir: replace(_fake_measured(0.25), train_top1_error=0.2))
    printed = []
    status = {p.run_dir: "todo" for p in planned}
    with pytest.raises(runner.StudyInterrupted, match=r"base seed 0: train.py ended with status -9"):
        runner._train_all(planned, planned, status, study.BASE_CONFIG, results, printed.append, jobs=2)
    assert "2 at a time" in printed[0]
    assert any("waiting for the 1 run(s) in progress to finish" in line for line in printed)
    assert any(line.startswith("[2/3] base seed 1: done in") for line in printed)
    assert not any("[3/3]" in line for line in printed) and len(started) == 2
    assert all(t.threads == max(1, runner.usable_cores() // 2) for t in started)
    assert not os.path.exists(records.record_path(results, "base", 0))
    kept = records.read_record(records.record_path(results, "base", 1), planned[1].config)
    assert kept.result.val_top1_error == 0.25 and kept.machine == "a test machine"
    first, second = (json.loads(open(os.path.join(p.run_dir, "ablation.json")).read())["attempts"][0]
                     for p in planned[:2])
    assert first["returncode"] == -9 and second["returncode"] == 0
    assert second["started"] < first["started"] + first["wall_seconds"]  # they ran at the same time
    assert 1.0 <= second["wall_seconds"] < 5 and first["wall_seconds"] < 1.0


def test_jobs_a_run_ending_while_another_is_measured_keeps_its_own_wall_and_the_core_stays_busy(tmp_path, monkeypatch):
    planned = study.plan(study.BASE_CONFIG, "tiny", 3, str(tmp_path), ["base"])
    measured_at = []

    def slow_measure(run_dir):  # the parent's clean evaluation of a run takes 2 s here
        runner.time.sleep(2)
        measured_at.append(runner.time.time())
        return replace(_fake_measured(0.25), train_top1_error=0.2)

    started = _fake_children(monkeypatch, ["sleep 0.3", "sleep 1", "sleep 0.2"], slow_measure)
    status = {p.run_dir: "todo" for p in planned}
    runner._train_all(planned, planned, status, study.BASE_CONFIG, str(tmp_path / "results"), lambda line: None, jobs=2)
    attempts = [json.loads(open(os.path.join(p.run_dir, "ablation.json")).read())["attempts"][0] for p in planned]
    # seed 1 exits at ~1 s while seed 0 is being measured (0.3-2.3 s): its wall is its own, not the wait
    assert 1.0 <= attempts[1]["wall_seconds"] < 1.8
    # seed 2 started as soon as seed 0 ended, before seed 0's measurement was over
    assert started[2].started < measured_at[0] - 1
    assert all(records.read_record(records.record_path(str(tmp_path / "results"), "base", p.seed), p.config)
               .result for p in planned)


def test_expected_time_of_a_run_follows_the_studys_measured_pace(tmp_path, monkeypatch):
    """Before any run has finished the printed expectation is the multiply-add estimate (one run alone, quiet
    machine); after, that estimate times this study's measured wall per estimated second (load, --jobs)."""
    planned = study.plan(study.BASE_CONFIG, "tiny", 3, str(tmp_path), ["base"])
    _fake_children(monkeypatch, ["sleep 0.6", "sleep 0.1", "sleep 0.1"], lambda run_dir: replace(_fake_measured(0.25), train_top1_error=0.2))
    monkeypatch.setattr(runner, "estimate_seconds", lambda config: 60.0)
    monkeypatch.setattr(runner, "minutes", lambda seconds: f"{seconds:.4f} s")
    printed, status = [], {p.run_dir: "todo" for p in planned}
    runner._train_all(planned, planned, status, study.BASE_CONFIG, str(tmp_path / "results"), printed.append, jobs=1)
    starts = [line.split("expected ", 1)[1] for line in printed if ": training in " in line]
    assert starts[:2] == ["~60.0000 s alone on a quiet machine"] * 2  # seed 1 starts before seed 0 is measured
    wall0 = json.loads(open(os.path.join(planned[0].run_dir, "ablation.json")).read())["attempts"][0]["wall_seconds"]
    assert 0.5 <= wall0 < 3  # the child's 0.6 s sleep as the runner times it (0.59 s seen under load), not the 60 s estimate
    # 60 s estimated x (wall0 / 60 s measured per estimated second) = wall0
    assert starts[2] == f"~{60.0 * (wall0 / 60.0):.4f} s at this study's pace"


def test_jobs_an_error_of_the_study_itself_stops_the_runs_in_progress(tmp_path, monkeypatch):
    planned = study.plan(study.BASE_CONFIG, "tiny", 2, str(tmp_path), ["base"])

    def full_disk(run_dir):
        raise OSError(28, "No space left on device")

    started = _fake_children(monkeypatch, ["true", "sleep 60"], full_disk)
    status = {p.run_dir: "todo" for p in planned}
    t0 = runner.time.time()
    with pytest.raises(OSError, match="No space left"):
        runner._train_all(planned, planned, status, study.BASE_CONFIG, str(tmp_path / "results"), lambda line: None, jobs=2)
    assert runner.time.time() - t0 < 30 and started[1].proc.returncode == -15  # terminated and reaped, not orphaned


def test_jobs_beyond_the_cores_is_a_one_line_error(tmp_path, capsys):
    cores = runner.usable_cores()
    for jobs in ("0", str(cores + 1)):
        assert cli(["ablate", "--budget", "tiny", "--jobs", jobs, "--runs-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--jobs {jobs}: expected 1 to {cores}" in err[0]
    assert not os.listdir(tmp_path)


def test_machine_line_names_fewer_intra_op_threads_than_cores(monkeypatch):
    info = {"cpu": "AMD EPYC", "isa": ["AVX2"], "cores": 2, "onednn": True}
    assert alexnet_tf.machine.describe(info) == "AMD EPYC (AVX2), 2 cores, oneDNN on"  # metrics.json before the key
    assert alexnet_tf.machine.describe(dict(info, intra_op_threads=2)) == "AMD EPYC (AVX2), 2 cores, oneDNN on"
    assert alexnet_tf.machine.describe(dict(info, intra_op_threads=1)) == "AMD EPYC (AVX2), 2 cores, 1 intra-op thread, oneDNN on"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert alexnet_tf.machine.intra_op_threads() == 1
    for unset in ("0", "-3", "two"):
        monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", unset)
        assert alexnet_tf.machine.intra_op_threads() == os.cpu_count()


# === A real study on a tiny budget: two arms, one seed, a few steps ===

def _rows(text, header):
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def _tiny_args(runs, out):
    return ["ablate", "--budget", "tiny", "--arms", "base,no_lrn", "--seeds", "1", "--out", str(out), "--runs-dir", str(runs)]


class TinyStudy:
    """A finished tiny study in `root`: runs/<arm>/seed0, runs/results, REPRODUCTION.md, docs/ablation/."""

    def __init__(self, root):
        self.root, self.runs, self.out = root, root / "runs", root / "REPRODUCTION.md"
        self.args = _tiny_args(self.runs, self.out)

    def metrics(self):
        return {arm: json.loads((self.runs / arm / "seed0" / "metrics.json").read_text()) for arm in ("base", "no_lrn")}

    def copy(self, tmp_path):
        """The study copied to tmp_path/study, for a test that changes it (copy2: the files keep their times)."""
        return TinyStudy(pathlib.Path(shutil.copytree(self.root, tmp_path / "study")))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Two arms, one seed, a few steps, trained for real once per module, both at once (--jobs 2, one intra-op
    thread each); `printed` is what that first invocation printed and `text` the report it wrote."""
    study_ = TinyStudy(tmp_path_factory.mktemp("tiny") / "study")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(study_.args + ["--jobs", "2"]) == 0
    study_.printed, study_.text = printed.getvalue(), study_.out.read_text()
    return study_


@pytest.mark.slow
def test_tiny_study_trains_both_arms_at_once(tiny_study):
    printed = tiny_study.printed
    assert "2 arms, 1 seed per arm = 2 runs" in printed and "expected total:" in printed and printed.count(": done in") == 2
    assert "2 at a time, 1 intra-op thread each" in printed
    metrics = tiny_study.metrics()
    for m in metrics.values():
        assert m["epochs_completed"] == 2 and m["intra_op_threads"] == 1  # train.py saw TF_NUM_INTRAOP_THREADS=1
    runs = tiny_study.runs
    attempts = [json.loads((runs / arm / "seed0" / "ablation.json").read_text())["attempts"][0] for arm in metrics]
    assert attempts[1]["started"] < attempts[0]["started"] + attempts[0]["wall_seconds"]  # trained at the same time


@pytest.mark.slow
def test_tiny_study_report_from_real_runs(tiny_study):
    text, metrics, runs = tiny_study.text, tiny_study.metrics(), tiny_study.runs
    # the claims table: LRN (the only claim both arms answer) and PCA lighting, with the six columns
    rows = _rows(text, report.TABLE_HEADER)
    assert [r[0] for r in rows] == ["2", "7"] and all(len(r) == 7 for r in rows)
    lrn = rows[0]
    assert lrn[3] == (f"base: {100 * metrics['base']['val_top1_error']:.2f} % (1 seed)<br>"
                      f"no_lrn: {100 * metrics['no_lrn']['val_top1_error']:.2f} % (1 seed)")
    diff = metrics["no_lrn"]["val_top1_error"] - metrics["base"]["val_top1_error"]
    assert lrn[4] == f"{100 * diff:+.2f} pp (paper +1.4 pp)" and lrn[5] == "welch: no noise estimate"
    assert lrn[6] == "inconclusive (1 seed)"
    assert "colour" in rows[1][6] and "tests/test_data.py" in rows[1][6]

    # per arm: the same numbers, and the error on the training images checked against the saved model
    per_arm = {r[0]: r for r in _rows(text, next(l for l in text.splitlines() if l.startswith("| arm |")))}
    assert set(per_arm) == {"base", "no_lrn"} and per_arm["no_lrn"][1] == "no local response normalisation (§3.3), `model.lrn=false`"
    assert per_arm["base"][2] == f"{100 * metrics['base']['val_top1_error']:.2f}"
    assert per_arm["base"][3] == f"{100 * metrics['base']['val_top5_error']:.2f}"
    train_error = _training_error_by_hand(str(runs / "base" / "seed0"))
    assert per_arm["base"][4] == f"{100 * metrics['base']['test_top1_error']:.2f}"  # the test split, once
    assert per_arm["base"][5] == f"{100 * train_error:.2f}"
    assert per_arm["base"][6] == f"{100 * (metrics['base']['val_top1_error'] - train_error):.2f}"
    assert per_arm["base"][7] == ">8"  # 20 % training error is out of reach in 2 epochs x 4 steps: the whole run, a bound
    assert "on the 256 validation images" in text  # tiny budget: val_steps 2 of batch 128
    lrn = json.loads((runs / "base" / "seed0" / "ablation.json").read_text())["clean"]["lrn"]
    assert set(lrn) == {"lrn1", "lrn2"} and all(0 < mean <= p99 for mean, p99 in lrn.values())
    assert json.loads((runs / "no_lrn" / "seed0" / "ablation.json").read_text())["clean"]["lrn"] == {}
    assert f"lrn1 {lrn['lrn1'][0]:.2g} (99th percentile {lrn['lrn1'][1]:.2g})" in text
    assert "python -m alexnet_tf ablate --budget tiny --arms base,no_lrn" in text
    for png in ("curves.png", "val_error_per_arm.png"):
        assert f"(docs/ablation/{png})" in text
        _check_png(tiny_study.root / "docs" / "ablation" / png)
    assert not (tiny_study.root / "docs" / "ablation" / "fig1_relu_tanh.png").exists()  # no tanh arm in this study


@pytest.mark.slow
def test_tiny_study_second_invocation_trains_nothing(tiny_study, capsys):
    runs = tiny_study.runs
    stamps = {arm: os.path.getmtime(runs / arm / "seed0" / "metrics.json") for arm in ("base", "no_lrn")}
    assert cli(tiny_study.args) == 0
    printed = capsys.readouterr().out
    assert "0 to train" in printed and ": done in" not in printed
    assert {arm: os.path.getmtime(runs / arm / "seed0" / "metrics.json") for arm in stamps} == stamps
    assert _rows(tiny_study.out.read_text(), report.TABLE_HEADER) == _rows(tiny_study.text, report.TABLE_HEADER)


@pytest.mark.slow
def test_tiny_study_records_hold_config_machine_and_numbers(tiny_study):
    metrics, runs = tiny_study.metrics(), tiny_study.runs
    recorded = {arm: json.loads((runs / "results" / arm / "seed0.json").read_text()) for arm in metrics}
    for arm, r in recorded.items():
        assert r["config"]["train"]["seed"] == 0 and r["machine"].startswith(alexnet_tf.machine.cpu_model())
        assert "1 intra-op thread" in r["machine"]
        assert r["measured"]["val_top1_error"] == metrics[arm]["val_top1_error"] and r["failed"] is None
        assert r["measured"]["curve"][0] == list(range(1, 9))      # every one of the 2 x 4 steps
        assert len(r["measured"]["epoch_curves"]["validation"][1]) == 2
    assert "`runs/results/base/seed0.json`" in tiny_study.text


@pytest.mark.slow
def test_tiny_study_reads_from_the_records_what_the_run_directories_hold(tiny_study):
    runs = tiny_study.runs
    planned = study.plan(study.BASE_CONFIG, "tiny", 1, str(runs), ["base", "no_lrn"])
    collected = runner.collect(planned, str(runs / "results"))
    for p in planned:
        fresh, kept = records.measure_finished(p.run_dir), collected[p.arm.name].runs[0]
        assert type(kept) is type(fresh) is ArmResult
        for name in {f.name for f in fields(ArmResult)} - {"curve", "epoch_curves"}:
            assert getattr(kept, name) == getattr(fresh, name), name
        assert np.array_equal(kept.curve[0], fresh.curve[0])
        assert np.allclose(kept.curve[1], fresh.curve[1], atol=5e-7)
        for split in ("train", "validation"):
            assert np.array_equal(kept.epoch_curves[split][0], fresh.epoch_curves[split][0])
            assert np.allclose(kept.epoch_curves[split][1], fresh.epoch_curves[split][1], atol=5e-7)


@pytest.mark.slow
def test_tiny_study_resumes_a_run_killed_after_its_last_checkpoint(tiny_study, tmp_path, capsys):
    # killed after its last checkpoint: no metrics.json, so no record yet
    copy = tiny_study.copy(tmp_path)
    runs, metrics = copy.runs, copy.metrics()
    base_stamp = os.path.getmtime(runs / "base" / "seed0" / "metrics.json")
    (runs / "no_lrn" / "seed0" / "metrics.json").unlink()
    (runs / "results" / "no_lrn" / "seed0.json").unlink()
    assert cli(copy.args) == 0
    printed = capsys.readouterr().out
    assert "[1/2] base seed 0: skipped" in printed and "[2/2] no_lrn seed 0: done in" in printed
    assert "resuming from" in (runs / "no_lrn" / "seed0" / "train.log").read_text()
    resumed = json.loads((runs / "no_lrn" / "seed0" / "metrics.json").read_text())
    assert resumed["epochs_completed"] == 2 and resumed["val_top1_error"] == pytest.approx(metrics["no_lrn"]["val_top1_error"])
    assert os.path.getmtime(runs / "base" / "seed0" / "metrics.json") == base_stamp
    assert "in progress" not in copy.out.read_text()


@pytest.mark.slow
def test_tiny_study_report_of_an_unfinished_study_says_so(tiny_study, tmp_path):
    # 2 seeds planned, 1 finished per arm
    copy = tiny_study.copy(tmp_path)
    args = copy.args[:copy.args.index("--seeds") + 1] + ["2", "--out", str(copy.out), "--runs-dir", str(copy.runs)]
    assert cli(args + ["--report-only"]) == 0
    assert ("**The study is in progress**: 2 of 4 runs have finished; every arm has at least 1 seed (planned: "
            "2 seeds per arm).") in copy.out.read_text()


@pytest.mark.slow
def test_tiny_study_records_alone_rewrite_the_same_report(tiny_study, tmp_path):
    # word for word, once the run directories (checkpoints, logs, models) are gone
    copy = tiny_study.copy(tmp_path)
    assert cli(copy.args + ["--report-only"]) == 0
    before = copy.out.read_text()
    for arm in ("base", "no_lrn"):
        shutil.rmtree(copy.runs / arm)
    (copy.root / "docs" / "ablation" / "curves.png").unlink()
    assert cli(copy.args + ["--report-only"]) == 0
    assert copy.out.read_text() == before and "in progress" not in before
    _check_png(copy.root / "docs" / "ablation" / "curves.png")


@pytest.mark.slow
def test_tiny_study_refuses_a_record_of_another_config(tiny_study, tmp_path, capsys):
    # here: another seed, in one line
    copy = tiny_study.copy(tmp_path)
    path = copy.runs / "results" / "base" / "seed0.json"
    record = json.loads(path.read_text())
    record["config"]["train"]["seed"] = 5
    path.write_text(json.dumps(record))
    assert cli(copy.args + ["--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records a run with another config" in err[0] and "seed0.json" in err[0]


def _training_error_by_hand(run_dir):
    """Top-1 error of the run's model.keras on its training images, normalised with numpy."""
    import keras

    import alexnet_tf.optim  # registers the custom classes for load_model
    from alexnet_tf.data import load_arrays

    config = alexnet_tf.load_config(os.path.join(run_dir, "config.yaml"))
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    x, y = load_arrays(config)[0]["train"]
    mean = np.load(os.path.join(run_dir, "mean.npy"))
    logits = model.predict((x.astype(np.float32) - mean) * config.data.scale, batch_size=256, verbose=0)
    return float(np.mean(logits.argmax(1) != y))


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300


def test_init_study_configs_differ_only_in_their_initialisation():
    """The three runs' configs, as init-study builds them: the paper's N(0, 0.01) and biases 1, Caffe's
    biases 0.1, He-normal with biases 0 on pixels x 1/255; every other value the same."""
    from alexnet_tf.ablation.init_study import CONFIG, INITS
    configs = {name: alexnet_tf.load_config(CONFIG, list(overrides)).to_dict() for name, _, overrides in INITS}
    expected = {"paper": ("normal", 1.0, 1.0), "caffe": ("normal", 0.1, 1.0), "he_normal": ("he_normal", 0.0, 1 / 255)}
    for name, c in configs.items():
        assert (c["model"]["weight_init"], c["model"]["hidden_bias"]) == expected[name][:2]
        assert c["data"]["scale"] == pytest.approx(expected[name][2], rel=1e-12)
        for section, keys in (("model", ("weight_init", "hidden_bias")), ("data", ("scale",))):
            for key in keys:
                c[section].pop(key)
    assert configs["paper"] == configs["caffe"] == configs["he_normal"]


@pytest.mark.slow
def test_init_study_on_a_tiny_geometry_then_resume(tmp_path, capsys):
    """`init-study` end to end on a small upscaled geometry, for two of its three runs (the third, Caffe's
    biases, takes the same path with another value: its config is checked above): a per-step curve of
    every step, the test split once (centre) and its first batch with 10 crops, a figure, and a rerun
    that trains nothing."""
    runs, fig = tmp_path / "runs", tmp_path / "init.png"
    args = ["init-study", "--runs-dir", str(runs), "--out", str(fig), "--ten-crop-batches", "1",
            "--inits", "paper,he_normal"]
    for o in ("model.image_size=67", "data.upscale=72", "model.width=0.125", "model.fc_units=32", "train.epochs=2",
              "train.steps_per_epoch=3", "data.val_examples=300", "train.val_steps=1"):
        args += ["--set", o]
    assert cli(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((runs / "summary.json").read_text())
    assert list(summary) == ["paper", "he_normal"] and not (runs / "caffe").exists()  # --inits: only those
    for name, s in summary.items():
        config = alexnet_tf.load_config(str(runs / name / "config.yaml"))
        assert (config.model.weight_init, config.model.hidden_bias) == {
            "paper": ("normal", 1.0), "caffe": ("normal", 0.1), "he_normal": ("he_normal", 0.0)}[name]
        assert config.data.upscale == 72 and config.model.image_size == 67
        assert s["steps"] == list(range(1, 7))               # every one of the 2 x 3 steps
        metrics = json.loads((runs / name / "metrics.json").read_text())
        assert s["test_top1_error"] == metrics["test_top1_error"] and s["test_images"] == 10000
        ten = json.loads((runs / name / "evaluation_test.json").read_text())
        assert ten["images"] == 128 and s["ten_crop"] == ten["ten_crop"]
        assert f"| {name} | not within 6 |" in out           # 80 % training error is out of reach in 6 steps
    _check_png(fig)
    stamps = {n: os.path.getmtime(runs / n / "metrics.json") for n in summary}
    assert cli(args) == 0 and "training in" not in capsys.readouterr().out
    assert {n: os.path.getmtime(runs / n / "metrics.json") for n in summary} == stamps
    assert cli(["init-study", "--inits", "paper,xavier", "--runs-dir", str(runs)]) == 1
    assert capsys.readouterr().err.strip() == "error: unknown init(s) xavier; expected some of paper, caffe, he_normal"


def test_a_record_written_before_a_config_key_existed_reads_it_at_its_default(tmp_path):
    p, _, path = _base_plan(tmp_path)
    records.write_result(path, p.config, _fake_measured(0.1))
    data = json.loads(open(path).read())
    del data["config"]["data"]["follow_symlinks_outside"]  # a key added to the config after the record was written
    with open(path, "w") as f:
        json.dump(data, f)
    assert records.read_record(path, p.config).result.val_top1_error == 0.1
    (other,) = study.plan(study.BASE_CONFIG, "tiny", 1, str(tmp_path), ["base"], extra=["data.follow_symlinks_outside=true"])
    with pytest.raises(ConfigError, match="another config"):
        records.read_record(path, other.config)  # the plan sets it away from its default: not the recorded run


CONSTANT_LR_RECORDS = os.path.join(study.ROOT, "results", "ablation_constant_lr")


def test_claim_1b_joins_the_family_only_when_all_its_planned_runs_are_recorded(tmp_path):
    """The committed constant-rate records, read back: each seed's steps to 25 % is its record's own
    `reached` entry (read here from the JSON), and 1b enters Holm's family (m = 12, 99.58 %) only with all 20;
    one record fewer keeps it out (shown, not tested) and the family at 11."""
    constant = runner.load_constant_lr(CONSTANT_LR_RECORDS)
    for name in ("base", "tanh"):
        expected = []
        for seed in range(study.CONSTANT_LR_SEEDS):
            with open(os.path.join(CONSTANT_LR_RECORDS, name, f"seed{seed}.json")) as f:
                measured = json.load(f)["measured"]
            step = dict((round(t, 2), s) for t, s in measured["reached"])[0.25]
            expected.append(step if step is not None else measured["total_steps"])
        assert constant[name].seeds == list(range(10)) and constant[name].values("steps_to_25") == expected
    family = analysis.tested(analysis.analyse({}, None, constant))
    assert [a.claim.key for a in family] == ["1b"]
    partial = tmp_path / "partial"
    shutil.copytree(CONSTANT_LR_RECORDS, partial)
    (partial / "tanh" / "seed7.json").unlink()
    held = runner.load_constant_lr(str(partial))
    assert held["tanh"].missing == 1 and 7 not in held["tanh"].seeds
    one_b = analysis.analyse({}, None, held)["1b"]
    assert one_b.claim.retired.startswith("1 of its 20 planned runs") and not analysis.tested({"1b": one_b})
    assert report.verdict_text(one_b).startswith(report.RETIRED)
    with pytest.raises(ConfigError, match=r"--constant-lr .*--budget tiny"):  # records of the full budget
        runner.load_constant_lr(CONSTANT_LR_RECORDS, budget="tiny")


def test_constant_rate_records_are_refused_with_one_line_when_they_are_not_claim_1b_runs(tmp_path):
    with pytest.raises(ConfigError, match="no such directory; expected the --results directory"):
        runner.load_constant_lr(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="no base or tanh record"):
        runner.load_constant_lr(str(tmp_path))
    # a record of the study's own base arm (its learning rate drops after epochs 8 and 10) is not a constant-rate run
    (tmp_path / "base").mkdir()
    shutil.copy(os.path.join(study.ROOT, "results", "ablation", "base", "seed0.json"), tmp_path / "base" / "seed0.json")
    with pytest.raises(ConfigError, match="another config than this study's"):
        runner.load_constant_lr(str(tmp_path))
