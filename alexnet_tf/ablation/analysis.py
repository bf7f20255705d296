"""The claims tested on a study's results: each claim's difference and test, Holm's correction across the
claims and the verdict (ClaimAnalysis), the seeds each claim would need and the second stage they ask for,
and claims 1 and 5b's step ratios at other thresholds. Numbers only: report.py words them."""

import math
from dataclasses import dataclass, replace

import numpy as np

from alexnet_tf.ablation.results import ArmRuns
from alexnet_tf.ablation.stats import ALPHA, Test, Verdict, compare, holm, paired, seeds_needed, simultaneous, verdict
from alexnet_tf.ablation.study import CLAIMS, RESOLVE, SENSITIVITY, STAGE_TWO_MOST, STEP_METRICS, Claim


def paper_effect(claim):
    """The paper's difference in the units of the claim's test, or None: a fraction of top-1 error for
    errors ('+1.4' pp -> 0.014), log(steps ratio b / a) for steps ('x6' for tanh / ReLU -> log 6;
    'x2' for dropout / none, expected -1 -> log 1/2)."""
    if not claim.paper_value:
        return None
    if claim.metric.startswith("steps"):
        return claim.expected * math.log(float(claim.paper_value.removeprefix("x")))
    return float(claim.paper_value) / 100


def claim_values(claim, arm):
    """(per-seed values the test compares, seeds) of one ArmRuns: steps as log steps (their ratio is the
    paper's measure)."""
    values = arm.values(claim.metric)
    if claim.metric.startswith("steps"):
        values = [math.log(v) for v in values]
    return values, arm.seeds


def censored(arm, metric):
    """How many of the arm's runs never reached the threshold of a step-count `metric` (0 for other metrics)."""
    threshold = STEP_METRICS.get(metric)
    return sum(run.censored[threshold] for run in arm.runs) if threshold is not None else 0


@dataclass(frozen=True)
class ClaimAnalysis:
    """One claim tested: the two arms' runs over the seeds the test pairs (all of them for Welch's test or no
    test; None for a claim on the four-layer net, whose per-seed values are `values`), the difference
    mean(b) - mean(a) with its 95 % interval, t, df, p and sizes (`test`: None when an arm has no finished run),
    the Holm-corrected p, the Bonferroni simultaneous interval (`interval`) and the verdict (None: missing runs
    or a retired claim)."""
    claim: Claim
    a: ArmRuns | None
    b: ArmRuns | None
    test: Test | None
    holm_p: float
    verdict: Verdict | None
    interval: tuple = (math.nan, math.nan)
    values: dict | None = None   # {arm label: per-seed values} of a claim on the four-layer net

    @property
    def censored(self):
        """Runs of either arm that never reached the claim's threshold (their whole run counted)."""
        if self.values is not None:
            return self.values.get("never_reached", 0)
        return censored(self.a, self.claim.metric) + censored(self.b, self.claim.metric)


def fig1_values(claim, fig1):
    """{claim.a: values, claim.b: values, "never_reached": n} of a four-layer-net claim from fig1's summary.json
    (`fig1`, a dict), or None when it has not those runs: claim 1 its steps to 25 %, claim 2c its test errors."""
    if not fig1:
        return None
    if claim.metric == "steps_to_25":
        s = fig1["steps_to_25"]
        return {"relu": s["steps"]["relu"], "tanh": s["steps"]["tanh"], "never_reached": sum(s["never_reached"].values())}
    lrn = fig1.get("lrn")
    if not lrn:
        return None
    return {"lrn": lrn["test_top1_error"]["with"], "no_lrn": lrn["test_top1_error"]["without"], "never_reached": 0}


def _arms(claim, results, constant):
    """The runs a study claim compares: `results`, or for claim 1b `constant` (the constant-rate runs); None
    when an arm is missing."""
    pool = constant if claim.source == "constant_lr" else results
    if not pool or claim.a not in pool or claim.b not in pool:
        return None
    return pool[claim.a], pool[claim.b]


def _held_back(claim, arms):
    """Claim 1b as it stands: out of the tests until every planned run has a record, so a partial set of seeds
    never enters Holm's family or moves the other claims' corrections."""
    waiting = sum(arm.missing for arm in arms)
    if not waiting:
        return claim
    planned = sum(arm.missing + len(arm.runs) + len(arm.failed) for arm in arms)
    return replace(claim, retired=f"{waiting} of its {planned} planned runs have no record yet; tested once all have")


def _tests(results, fig1, constant):
    """{key: (claim, Test or None, fig1 values or None)} in CLAIMS' order, for the claims whose runs exist."""
    tests = {}
    for claim in CLAIMS:
        if claim.source == "fig1":
            values = fig1_values(claim, fig1)
            if values is not None:
                a, b = values[claim.a], values[claim.b]
                log = claim.metric.startswith("steps")
                tests[claim.key] = (claim, paired(np.log(a) if log else a, np.log(b) if log else b), values)
            continue
        arms = _arms(claim, results, constant)
        if arms is None:
            continue
        if claim.source == "constant_lr":
            claim = _held_back(claim, arms)
        (va, sa), (vb, sb) = claim_values(claim, arms[0]), claim_values(claim, arms[1])
        tests[claim.key] = (claim, compare(va, sa, vb, sb) if va and vb else None, None)
    return tests


def analyse(results, fig1=None, constant=None):
    """{claim key: ClaimAnalysis} for the claims whose arms are in `results` ({arm name: ArmRuns}), for the
    four-layer net's claims in `fig1` (its summary.json as a dict), for claim 1b in `constant` ({arm name:
    ArmRuns} of the constant-rate runs).

    Each claim's test (paired over the seeds both arms finished, else Welch), then Holm's correction over every
    claim that has a p-value and is not retired (m of them), the Bonferroni simultaneous interval at 1 - ALPHA/m,
    and the verdict rule (stats.verdict)."""
    tests = _tests(results, fig1, constant)
    keys = [k for k, (c, t, _) in tests.items() if t is not None and not c.retired and not math.isnan(t.p)]
    adjusted = dict(zip(keys, holm([tests[k][1].p for k in keys])))
    out = {}
    for key, (claim, test, values) in tests.items():
        a, b = (None, None) if values is not None else _arms(claim, results, constant)
        if test is not None and test.kind == "paired" and values is None:  # the seeds the test pairs
            a, b = a.on_seeds(b.seeds), b.on_seeds(a.seeds)
        if test is None:
            out[key] = ClaimAnalysis(claim, a, b, None, math.nan, None)
            continue
        interval = simultaneous(test, len(keys))
        holm_p = adjusted.get(key, math.nan)
        judged = None if claim.retired else verdict(test, holm_p, claim.expected, paper_effect(claim), interval)
        if _slower_arm_censored(claim, a, b, values):
            judged = UNSIZED.get(judged, judged)
        out[key] = ClaimAnalysis(claim, a, b, test, holm_p, judged, interval, values)
    return out


# A size verdict that a lower bound could have made: the direction stays, the size is not judged.
UNSIZED = {Verdict.SAME_DIRECTION_SMALLER: Verdict.SAME_DIRECTION, Verdict.SMALLER: Verdict.INCONCLUSIVE}


def _slower_arm_censored(claim, a, b, values):
    """Whether a step claim's arm that the paper expects to be slower has runs that never reached the threshold:
    they count as the whole run, a lower bound, which can only shrink the ratio towards 0, so "smaller than the
    paper's" would be the censoring's doing. For the four-layer net only the total is known: any run."""
    if not claim.metric.startswith("steps"):
        return False
    if values is not None:
        return values.get("never_reached", 0) > 0
    slower = b if claim.expected > 0 else a
    return censored(slower, claim.metric) > 0


def tested(analysis):
    """The claims in Holm's family: a test with a p-value, not retired."""
    return [a for a in analysis.values() if a.test is not None and not math.isnan(a.test.p) and not a.claim.retired]


# What a claim's metric is on the test split (docs/ablation.md, "Replication on the test split"): error claims
# the test top-1 error, gap claims the test error minus the training-image error; step claims have none.
TEST_SPLIT = {"val_top1_error": lambda run: run.test_top1_error,
              "gap": lambda run: run.test_top1_error - run.train_top1_error}


def replication(claim_analysis):
    """(Test on the test split, word) of one study claim: "replicates", "does not replicate", "reverses" (a claim
    whose validation verdict has a direction) or "no direction to replicate"; None when the claim has no
    test-split counterpart (steps, the four-layer net's claims, missing test errors)."""
    a, b, claim = claim_analysis.a, claim_analysis.b, claim_analysis.claim
    if a is None or claim.metric not in TEST_SPLIT or claim_analysis.test is None:
        return None
    get = TEST_SPLIT[claim.metric]
    if any(run.test_top1_error is None for run in a.runs + b.runs):
        return None
    test = compare([get(r) for r in a.runs], a.seeds, [get(r) for r in b.runs], b.seeds)
    directed = claim_analysis.verdict in (Verdict.AGREES, Verdict.SAME_DIRECTION_SMALLER, Verdict.SAME_DIRECTION,
                                          Verdict.OPPOSITE)
    if not directed or math.isnan(test.low):
        return test, "no direction to replicate"
    sign = math.copysign(1, claim_analysis.test.diff)
    if test.low <= 0 <= test.high:
        return test, "does not replicate"
    return test, "replicates" if test.diff * sign > 0 else "reverses"


@dataclass(frozen=True)
class SeedsNeeded:
    """The seeds one claim needs at the spread of its per-seed differences (sd, target, n: None when its test
    is unpaired; n None also when more than 1000 would be needed)."""
    claim: Claim
    test: Test
    sd: float | None          # of the per-seed differences
    target: float | None      # the interval's half-width aimed at
    n: int | None

    @property
    def short(self):
        """A paired claim with fewer seeds than it needs."""
        return self.test.kind == "paired" and (self.n is None or self.n > self.test.n_a)


def seeds_needed_per_claim(analysis):
    """({claim key: SeedsNeeded}, confidence) for the claims with a test.

    With a paper number P the target is |P|/2: an interval at the Bonferroni confidence 1 - ALPHA/m (m
    claims tested; Holm's first step, so at least as strict as Holm) of half-width h <= |P|/2 cannot hold
    both 0 and P: it either excludes 0 (a direction, and then agrees, same direction smaller, or opposite) or
    lies within |P| of 0 (smaller than the paper's). Without
    a number the target is study.RESOLVE, fixed with the second-stage rule (before the first stage ended, not blind to
    its interim verdicts: docs/ablation.md). The difference itself is never used, so more
    seeds chosen from this table depend on the noise only.
    """
    family = tested(analysis)
    confidence = 1 - ALPHA / max(1, len(family))
    out = {}
    for a in family:
        claim, test = a.claim, a.test
        if test.kind != "paired":
            out[claim.key] = SeedsNeeded(claim, test, None, None, None)
            continue
        sd = test.se * math.sqrt(test.n_a)
        paper = paper_effect(claim)
        target = abs(paper) / 2 if paper is not None else RESOLVE
        out[claim.key] = SeedsNeeded(claim, test, sd, target, seeds_needed(sd, target, confidence))
    return out, confidence


def stage_two(analysis, most=STAGE_TWO_MOST):
    """{arm: seeds} for a second stage (`--more-seeds`): each arm of a claim that needs more seeds than it has
    gets the most any of its claims needs, at most `most` (the base, in every claim, takes the largest)."""
    needs, _ = seeds_needed_per_claim(analysis)
    out = {}
    for need in needs.values():
        if not need.short or need.claim.source != "study":
            continue
        want = most if need.n is None else min(need.n, most)
        for arm in (need.claim.a, need.claim.b):
            out[arm] = max(out.get(arm, 0), want)
    return out


# Claims 1 and 5b: (the slower arm, the faster arm) whose step ratio the report gives at every SENSITIVITY threshold.
SENSITIVITY_PAIRS = (("tanh", "base"), ("base", "no_dropout"))


@dataclass(frozen=True)
class StepsRatio:
    """Mean steps of the slower arm over the faster arm's, to one threshold; a run that never reached it counts
    as its whole run (a bound)."""
    ratio: float
    slow_censored: bool
    fast_censored: bool


def sensitivity(results, constant=None):
    """{(slow, fast): [StepsRatio per SENSITIVITY threshold]} for the SENSITIVITY_PAIRS whose arms both have runs,
    over the seeds the claim's paired test uses; with `constant` (claim 1b's runs) also ("tanh", "base",
    "constant_lr") from those."""
    out = {}
    for slow, fast in SENSITIVITY_PAIRS:
        if slow in results and fast in results:
            _add_ratios(out, (slow, fast), results[slow], results[fast])
        if (slow, fast) == ("tanh", "base") and constant and "tanh" in constant and "base" in constant:
            _add_ratios(out, ("tanh", "base", "constant_lr"), constant["tanh"], constant["base"])
    return out


def _add_ratios(out, key, slow, fast):
    """out[key] = [StepsRatio per SENSITIVITY threshold] of two arms that both have runs."""
    if not slow.runs or not fast.runs:
        return
    arms = (slow, fast)
    if len(set(slow.seeds) & set(fast.seeds)) >= 2:  # the seeds the claim's paired test uses
        arms = (slow.on_seeds(fast.seeds), fast.on_seeds(slow.seeds))
    ratios = []
    for t in SENSITIVITY:
        steps = [[run.reached[t] or run.total_steps for run in arm.runs] for arm in arms]
        never = [any(run.reached[t] is None for run in arm.runs) for arm in arms]
        ratios.append(StepsRatio(np.mean(steps[0]) / np.mean(steps[1]), *never))
    out[key] = ratios
