"""Statistics behind the experiments' claims: one small function per test, each returning an :class:`Estimate`
(effect, 95 % CI, p-value, n, the test's name), and one :func:`verdict` that turns an estimate into the report's
word.

Library calls where a library has the method: the Wilson interval and the exact McNemar test are
``scipy.stats.binomtest`` (its ``proportion_ci(method="wilson")``; McNemar = a two-sided binomial test of the
discordant pairs against ½), the Spearman correlation is ``scipy.stats.spearmanr`` with its p-value from
``scipy.stats.permutation_test`` (pairings), normal quantiles are ``scipy.stats.norm``. Written here because
neither scipy nor statsmodels has them: Newcombe's paired-difference interval (method 10 of Newcombe 1998,
"Improved confidence intervals for the difference between binomial proportions based on paired data", with the
continuity-corrected correlation φ as Newcombe and Fagerland et al. 2014 give it) and the cluster bootstrap. The
tests in ``tests/test_stats.py`` check every function against statsmodels / scipy or, where none exists, by
simulated coverage.

Sign convention: every two-sample estimate is ``first − second`` of the arguments as named in the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from interp.io import InputError

ALPHA = 0.05
CONFIDENCE = 0.95

# verdicts (the report's "reproduced here" column)
YES = "yes"  # the claimed sign, significant
YES_NOT_SIGNIFICANT = "yes (not significant)"  # the claimed sign, not significant, enough items for the stated power
YES_POINT = "yes (point estimate)"  # the claimed sign where no test applies (e.g. one trained solution per condition)
NO = "no"  # the wrong sign (significant or not)
TIE = "tie"  # no difference at all: never "yes"
UNDERPOWERED = "underpowered"  # not significant with fewer items than the power rule asks for
UNDETERMINED = "undetermined"  # the effect is not a finite number
VERDICTS = (YES, YES_NOT_SIGNIFICANT, YES_POINT, NO, TIE, UNDERPOWERED, UNDETERMINED)


@dataclass(frozen=True)
class Estimate:
    """One effect with its uncertainty.

    ``n``: the sample size the power rule compares — pairs / items for paired tests, the smaller group for two
    independent groups. ``p`` is ``None`` where the method gives an interval only (bootstrap); a CI bound is NaN
    where the method gives none (permutation test)."""

    test: str
    estimate: float
    ci_low: float
    ci_high: float
    p: float | None
    n: int

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def significant(self, alpha: float = ALPHA) -> bool | None:
        """``p < alpha`` where there is a p-value, else whether the CI excludes 0; ``None`` when neither exists."""
        if self.p is not None and math.isfinite(self.p):
            return self.p < alpha
        if math.isfinite(self.ci_low) and math.isfinite(self.ci_high):
            return self.ci_low > 0 or self.ci_high < 0
        return None

    def to_dict(self) -> dict:
        """Strict-JSON dict (NaN → None)."""
        f = lambda x: None if x is None or not math.isfinite(x) else float(x)  # noqa: E731
        return {"test": self.test, "estimate": f(self.estimate), "ci95": [f(self.ci_low), f(self.ci_high)],
                "p": f(self.p), "n": self.n}


def _counts(k: int, n: int, what: str = "k/n") -> None:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise InputError(f"{what} must be integer counts, got {k!r}/{n!r}")
    if n < 0 or not 0 <= k <= n:
        raise InputError(f"{what} must satisfy 0 ≤ k ≤ n, got {k}/{n}")


def wilson(k: int, n: int, *, confidence: float = CONFIDENCE) -> Estimate:
    """Proportion k/n with its Wilson score interval (``scipy.stats.binomtest(k, n).proportion_ci("wilson")``).
    n = 0 gives NaN estimate and bounds (nothing was measured)."""
    from scipy.stats import binomtest

    _counts(k, n)
    if n == 0:
        return Estimate("Wilson score interval", math.nan, math.nan, math.nan, None, 0)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate("Wilson score interval", k / n, float(ci.low), float(ci.high), None, int(n))


def two_proportions(k1: int, n1: int, k2: int, n2: int, *, confidence: float = CONFIDENCE) -> Estimate:
    """Difference k1/n1 − k2/n2 of two *independent* samples: two-sided pooled-variance z-test (p = 1 where the
    pooled variance is 0 or a group is empty) and Newcombe's hybrid-score (square-and-add Wilson) interval.
    For the same items measured twice use :func:`mcnemar`."""
    from scipy.stats import norm

    _counts(k1, n1, "k1/n1")
    _counts(k2, n2, "k2/n2")
    name = "two-proportion z-test (independent samples)"
    if not n1 or not n2:
        return Estimate(name, math.nan, math.nan, math.nan, 1.0, min(n1, n2))
    p1, p2 = k1 / n1, k2 / n2
    pool = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    p = 1.0 if se == 0 else float(2 * norm.sf(abs(p1 - p2) / se))
    w1, w2 = wilson(k1, n1, confidence=confidence), wilson(k2, n2, confidence=confidence)
    lo = (p1 - p2) - math.sqrt((p1 - w1.ci_low) ** 2 + (w2.ci_high - p2) ** 2)
    hi = (p1 - p2) + math.sqrt((w1.ci_high - p1) ** 2 + (p2 - w2.ci_low) ** 2)
    return Estimate(name, p1 - p2, lo, hi, p, min(n1, n2))


def _booleans(x: Sequence, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or not np.isin(a, (0, 1)).all():
        raise InputError(f"{what} must be a 1-D sequence of booleans (0/1), got shape {a.shape}")
    return a.astype(bool)


def mcnemar(x: Sequence[bool], y: Sequence[bool], *, confidence: float = CONFIDENCE) -> Estimate:
    """Paired binary outcomes of the same items under two conditions (``x[i]``, ``y[i]``: item i's outcome under
    each): difference of rates mean(x) − mean(y), the exact McNemar p-value (two-sided binomial test of the
    discordant pairs b = #(x ∧ ¬y), c = #(¬x ∧ y) against ½; p = 1 when b + c = 0) and Newcombe's paired
    interval (method 10)."""
    from scipy.stats import binomtest

    x, y = _booleans(x, "x"), _booleans(y, "y")
    if len(x) != len(y):
        raise InputError(f"paired outcomes need the same items under both conditions: {len(x)} vs {len(y)}")
    n = len(x)
    name = "exact McNemar (paired)"
    if n == 0:
        return Estimate(name, math.nan, math.nan, math.nan, None, 0)
    a, b, c, d = int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum()), int((~x & ~y).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    p1, p2 = (a + b) / n, (a + c) / n
    w1, w2 = wilson(a + b, n, confidence=confidence), wilson(a + c, n, confidence=confidence)
    prod = (a + b) * (c + d) * (a + c) * (b + d)
    A = a * d - b * c
    phi = 0.0 if prod == 0 else (A - n / 2) / math.sqrt(prod) if A > n / 2 else 0.0 if A >= 0 else A / math.sqrt(prod)
    dl1, du1, dl2, du2 = p1 - w1.ci_low, w1.ci_high - p1, p2 - w2.ci_low, w2.ci_high - p2
    lo = (p1 - p2) - math.sqrt(max(dl1**2 - 2 * phi * dl1 * du2 + du2**2, 0.0))
    hi = (p1 - p2) + math.sqrt(max(du1**2 - 2 * phi * du1 * dl2 + dl2**2, 0.0))
    return Estimate(name, p1 - p2, max(lo, -1.0), min(hi, 1.0), p, n)


def paired_bootstrap(x: Sequence[float], y: Sequence[float] | None = None, *, clusters: Sequence | None = None,
                     n_boot: int = 2000, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean paired difference mean(x − y) (or mean(x) without ``y``) with a percentile bootstrap interval over
    items — or over ``clusters`` (one label per item, e.g. its topic or question): whole clusters are resampled
    with replacement and the statistic is the item mean of the resample, so correlated items inside a cluster do
    not count as independent evidence. No p-value: a verdict reads the interval."""
    d = np.asarray(x, dtype=np.float64)
    if y is not None:
        yy = np.asarray(y, dtype=np.float64)
        if yy.shape != d.shape:
            raise InputError(f"paired values need the same items in both: {d.shape} vs {yy.shape}")
        d = d - yy
    if d.ndim != 1:
        raise InputError(f"paired values must be 1-D, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise InputError("paired values contain NaN or inf")
    if n_boot < 1:
        raise InputError(f"n_boot must be ≥ 1, got {n_boot}")
    labels = np.arange(len(d)) if clusters is None else np.asarray(clusters)
    if len(labels) != len(d):
        raise InputError(f"clusters needs one label per item: {len(labels)} labels for {len(d)} items")
    _, inv = np.unique(labels, return_inverse=True)
    k = int(inv.max()) + 1 if len(d) else 0
    what = "items" if clusters is None else f"{k} clusters"
    name = f"paired bootstrap over {what} ({n_boot} resamples, percentile)"
    if k < 2:
        return Estimate(name, float(d.mean()) if len(d) else math.nan, math.nan, math.nan, None, len(d))
    sums = np.bincount(inv, weights=d, minlength=k)  # [k] per-cluster sum of d
    sizes = np.bincount(inv, minlength=k).astype(np.float64)  # [k] items per cluster
    draw = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))  # [n_boot, k] resampled cluster ids
    boot = sums[draw].sum(1) / sizes[draw].sum(1)  # [n_boot] item mean of each resample
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return Estimate(name, float(d.mean()), float(lo), float(hi), None, len(d))


def spearman_permutation(x: Sequence[float], y: Sequence[float], *, n_resamples: int = 9999, seed: int = 0) -> Estimate:
    """Spearman rank correlation ρ(x, y) with a two-sided permutation p-value over pairings
    (:func:`interp.concepts.spearman_permutation`, i.e. ``scipy.stats.permutation_test``; exact when n! ≤
    ``n_resamples``). Constant input (ρ undefined) gives NaN ρ and no p-value. No CI (NaN bounds)."""
    from interp.concepts import spearman_permutation as rank_correlation

    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise InputError(f"rank correlation needs two 1-D sequences of one length, got shapes {xa.shape} and {ya.shape}")
    exact_max_n = max(k for k in range(1, 13) if math.factorial(k) <= n_resamples)
    r = rank_correlation(xa, ya, n_perm=n_resamples, seed=seed, exact_max_n=exact_max_n)
    return Estimate("Spearman ρ, permutation p", r.rho, math.nan, math.nan, None if math.isnan(r.p) else r.p, r.n)


def point_difference(a: float, b: float, *, rel_tol: float = 1e-6, test: str = "point estimate (no test)") -> Estimate:
    """a − b with no test (e.g. one trained solution per condition); values equal to ``rel_tol`` give exactly 0,
    so the verdict calls them a tie rather than reading a rounding error as an effect."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return Estimate(test, math.nan, math.nan, math.nan, None, 1)
    diff = 0.0 if math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12) else a - b
    return Estimate(test, diff, math.nan, math.nan, None, 1)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's effect size for two proportions: 2·asin √p1 − 2·asin √p2."""
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def min_n(effect_size: float, *, alpha: float = ALPHA, power: float = 0.8, paired: bool = False) -> int:
    """Items needed to detect a standardised effect (Cohen's d or h) with a two-sided normal-approximation test:
    per group ⌈2·((z₁₋α/₂ + z_power)/es)²⌉ for two independent groups, ⌈((z₁₋α/₂ + z_power)/es)²⌉ for one
    sample of paired differences (statsmodels ``NormalIndPower`` with ratio 1 / 0)."""
    from scipy.stats import norm

    if not effect_size or not math.isfinite(effect_size):
        raise InputError(f"effect_size must be a finite non-zero number, got {effect_size!r}")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return math.ceil((1 if paired else 2) * (z / abs(effect_size)) ** 2)


def min_n_rates(rate: float, *, delta: float = 0.2, alpha: float = ALPHA, power: float = 0.8) -> int:
    """Items per condition needed to detect a ``delta`` change of a rate around ``rate`` (the two rates
    rate ∓ δ/2, shifted inside [0, 1]) with a two-proportion test; used as a conservative floor for the paired
    McNemar comparisons too (pairing only adds power where outcomes are correlated)."""
    lo = min(max(rate - delta / 2, 0.0), 1.0 - delta)
    return min_n(cohens_h(lo + delta, lo), alpha=alpha, power=power)


def verdict(est: Estimate, expected: int, *, min_n: int | None = None, alpha: float = ALPHA) -> str:
    """The report's word for a claim that the effect has sign ``expected`` (+1 or −1).

    An effect of exactly 0 is :data:`TIE` and a wrong sign is :data:`NO` — neither is ever "yes". The claimed sign
    is :data:`YES` when significant (p < alpha, or the CI excludes 0 where the test gives no p), :data:`YES_POINT`
    where no test applies, and otherwise :data:`UNDERPOWERED` when ``est.n < min_n`` or
    :data:`YES_NOT_SIGNIFICANT`. A non-significant wrong sign with too few items is also :data:`UNDERPOWERED`."""
    if expected not in (1, -1):
        raise InputError(f"expected sign must be +1 or -1, got {expected!r}")
    e = est.estimate
    if e is None or not math.isfinite(e):
        return UNDETERMINED
    if e == 0:
        return TIE
    right = (e > 0) == (expected > 0)
    sig = est.significant(alpha)
    if sig is None:
        return YES_POINT if right else NO
    if sig:
        return YES if right else NO
    if min_n is not None and est.n < min_n:
        return UNDERPOWERED
    return YES_NOT_SIGNIFICANT if right else NO
