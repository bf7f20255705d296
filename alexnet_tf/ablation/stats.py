"""Statistics over seeds and the verdict rule: mean ± std, the difference of two arms and its
standard error, and whether it agrees with the paper."""

import math

import numpy as np

NOISE_SE = 2.0  # |difference| below NOISE_SE standard errors is "inconclusive" (see `verdict`)


def seed_values(result, metric):
    """The per-seed values of `metric` of one arm's result (see runner.collect)."""
    return [run[metric] for run in result["runs"]]


def mean_std(values):
    """(mean, sample standard deviation (ddof=1; nan for one value), n)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan), len(v)


def difference(a, b):
    """mean(b) - mean(a) and its standard error sqrt(s_a²/n_a + s_b²/n_b) (unpaired, unequal variances)."""
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    se = math.sqrt(sa ** 2 / na + sb ** 2 / nb) if na > 1 and nb > 1 else math.nan
    return mb - ma, se


def verdict(diff, se, expected, n_a, n_b):
    """'agrees' / 'does not agree' / 'inconclusive' for a measured difference mean(b) - mean(a).

    The rule: with fewer than 2 seeds in an arm there is no noise estimate: inconclusive.
    If |diff| < NOISE_SE * se (2 standard errors; with 3 seeds per arm a Welch t-test at about
    90 % two-sided confidence), the difference is within the seed-to-seed noise: inconclusive.
    Otherwise the sign decides: the paper's direction (`expected` = sign of diff it predicts)
    agrees, the opposite does not. The size of the effect is reported, not judged.
    """
    if min(n_a, n_b) < 2:
        return "inconclusive (1 seed)"
    if diff == 0 or not abs(diff) >= NOISE_SE * se:
        return "inconclusive"
    return "agrees" if diff * expected > 0 else "does not agree"
