"""Statistics over seeds: Student's t distribution, Welch's and the paired t-test with 95 % intervals,
Holm's correction across claims, Bonferroni simultaneous intervals, and the verdict rule of docs/ablation.md.

No scipy here (it is not a dependency): the t distribution comes from the regularised incomplete
beta function, evaluated by its continued fraction (Lentz's method), as in Numerical Recipes §6.4:

    P(|T| > t) = I_x(df / 2, 1 / 2),  x = df / (df + t²)          (T ~ Student's t with df degrees of freedom)

tests/test_ablate.py checks it against published t-table values.
"""

import enum
import math
import statistics
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05        # family-wise error rate of the claims' tests (Holm) and 1 - the intervals' confidence
CONFIDENCE = 1 - ALPHA


def mean_std(values):
    """(mean, sample standard deviation (ddof=1; nan for one value), n)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan), len(v)


# === Student's t distribution ===

def _betacf(a, b, x, iterations=300, eps=1e-15):
    """The continued fraction of I_x(a, b) (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a, b, x):
    """The regularised incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use I_x(a, b) = 1 - I_{1-x}(b, a)
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf2(t, df):
    """Two-sided tail P(|T| >= |t|) of Student's t with df (> 0, not necessarily whole) degrees of freedom."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p, df):
    """t with P(T <= t) = p (0.5 <= p < 1), by bisection on t_sf2: the 97.5 % point for 95 % intervals."""
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: p = {p}; expected 0.5 <= p < 1")
    tail = 2 * (1 - p)
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > tail:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf2(mid, df) > tail else (lo, mid)
    return (lo + hi) / 2


# === The tests ===

@dataclass
class Test:
    """A difference mean(b) - mean(a) (paired: mean of the per-seed differences) and its t-test."""
    kind: str          # "paired" or "welch"
    diff: float
    se: float
    df: float
    t: float
    p: float           # two-sided
    low: float         # the CONFIDENCE interval of diff
    high: float
    n_a: int
    n_b: int


def _test(kind, diff, se, df, n_a, n_b):
    if not (se > 0) or not (df > 0):  # fewer than 2 values, or no spread at all
        return Test(kind, diff, se, df, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    t = diff / se
    half = t_quantile(1 - ALPHA / 2, df) * se
    return Test(kind, diff, se, df, t, t_sf2(t, df), diff - half, diff + half, n_a, n_b)


def welch(a, b):
    """Welch's unequal-variance t-test of mean(b) - mean(a):

        se² = s_a²/n_a + s_b²/n_b,   df = se⁴ / ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1))  (Welch-Satterthwaite)
    """
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    if min(na, nb) < 2:
        return _test("welch", mb - ma, math.nan, math.nan, na, nb)
    va, vb = sa ** 2 / na, sb ** 2 / nb
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if se2 > 0 else math.nan
    return _test("welch", mb - ma, math.sqrt(se2), df, na, nb)


def paired(a, b):
    """The paired t-test of the per-seed differences d_k = b_k - a_k: se = sd(d) / sqrt(n), df = n - 1."""
    d = np.asarray(b, float) - np.asarray(a, float)
    m, s, n = mean_std(d)
    return _test("paired", m, s / math.sqrt(n) if n > 1 else math.nan, n - 1.0, n, n)


def compare(a_values, a_seeds, b_values, b_seeds):
    """The paired test on the seeds both arms finished when there are at least 2 (seed k of each arm shares
    the data order, the augmentation and every random draw the arm does not change); else Welch's."""
    common = sorted(set(a_seeds) & set(b_seeds))
    if len(common) >= 2:
        a = dict(zip(a_seeds, a_values))
        b = dict(zip(b_seeds, b_values))
        return paired([a[s] for s in common], [b[s] for s in common])
    return welch(a_values, b_values)


def holm(pvalues):
    """Holm's step-down adjusted p-values (nan entries are left out and stay nan):
    sorted p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), math.nan)
    valid = np.nonzero(~np.isnan(p))[0]
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def simultaneous(test, m):
    """The Bonferroni simultaneous interval of a test among m: (low, high) at confidence 1 - ALPHA/m, from the
    test's own se and df (nan when it has no noise estimate). All m hold their true differences together with
    probability >= 1 - ALPHA."""
    if math.isnan(test.se) or math.isnan(test.df) or not test.se > 0:
        return math.nan, math.nan
    half = t_quantile(1 - ALPHA / (2 * max(1, m)), test.df) * test.se
    return test.diff - half, test.diff + half


class Verdict(enum.Enum):
    """A claim's verdict (report.VERDICTS words it; docs/ablation.md defines it)."""
    AGREES = enum.auto()             # significant, the paper's sign, the interval holds the paper's number or beyond
    SAME_DIRECTION_SMALLER = enum.auto()  # significant, the paper's sign, the interval below the paper's number
    SMALLER = enum.auto()            # not significant, the interval holds 0 and excludes the paper's number
    OPPOSITE = enum.auto()           # significant, against the paper's sign
    SAME_DIRECTION = enum.auto()     # significant, the paper's sign, no number in the paper to size it against
    INCONCLUSIVE = enum.auto()
    NO_NOISE_ESTIMATE = enum.auto()  # inconclusive: two seeds or more, but no spread
    ONE_SEED = enum.auto()           # inconclusive: an arm has one seed


def verdict(test, holm_p, expected, paper=None, interval=None):
    """The Verdict of a claim's test (docs/ablation.md, "Verdict").

    Direction from Holm's corrected p (< ALPHA: significant) and the sign of the difference against `expected`
    (the sign the paper predicts for mean(b) - mean(a)); size from `interval`, the claim's simultaneous interval
    (low, high), against `paper` (the paper's difference in the test's units, or None: direction words only).
    Fewer than two seeds (or no spread): no test, ONE_SEED or NO_NOISE_ESTIMATE.
    """
    if math.isnan(test.p) or math.isnan(holm_p):
        return Verdict.NO_NOISE_ESTIMATE if min(test.n_a, test.n_b) >= 2 else Verdict.ONE_SEED
    significant = holm_p < ALPHA
    if significant and test.diff * expected <= 0:
        return Verdict.OPPOSITE
    if paper is None:
        return Verdict.SAME_DIRECTION if significant else Verdict.INCONCLUSIVE
    low, high = sorted(expected * v for v in interval)  # the interval of e·d, against P = e·paper > 0
    beyond = high >= expected * paper
    if significant:
        return Verdict.AGREES if beyond else Verdict.SAME_DIRECTION_SMALLER
    return Verdict.SMALLER if low <= 0 <= high and not beyond else Verdict.INCONCLUSIVE


def seeds_needed(sd_diff, margin, confidence=CONFIDENCE, most=1000):
    """Seeds n for a paired 95 % interval of half-width <= margin, given the sd of per-seed differences:
    the least n with t_{1 - alpha/2, n-1} * sd_diff / sqrt(n) <= margin (None beyond `most`)."""
    # t_{q, df} >= z_q for every df, so no n below (z_q * sd_diff / margin)^2 can do: start there
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    first = max(2, math.floor((z * sd_diff / margin) ** 2)) if margin > 0 else 2
    for n in range(first, most + 1):
        if t_quantile(1 - (1 - confidence) / 2, n - 1) * sd_diff / math.sqrt(n) <= margin:
            return n
    return None
