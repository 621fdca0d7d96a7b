"""experiments.stats against statsmodels / scipy, or simulated coverage where no library has the method."""

import math

import numpy as np
import pytest

from experiments import stats
from interp.io import InputError

sm_prop = pytest.importorskip("statsmodels.stats.proportion")


@pytest.mark.parametrize("k,n", [(0, 5), (3, 10), (10, 10), (17, 42), (1, 1)])
def test_wilson_matches_statsmodels(k, n):
    e = stats.wilson(k, n)
    lo, hi = sm_prop.proportion_confint(k, n, alpha=0.05, method="wilson")
    assert e.estimate == k / n and e.n == n
    assert e.ci_low == pytest.approx(lo, abs=1e-12) and e.ci_high == pytest.approx(hi, abs=1e-12)


def test_wilson_empty_and_bad_counts():
    assert math.isnan(stats.wilson(0, 0).estimate)
    for k, n in [(3, 2), (-1, 4), (1.5, 3)]:
        with pytest.raises(InputError):
            stats.wilson(k, n)


@pytest.mark.parametrize("k1,n1,k2,n2", [(40, 42, 30, 42), (3, 6, 1, 6), (7, 34, 1, 34), (0, 16, 15, 72)])
def test_two_proportions_matches_statsmodels(k1, n1, k2, n2):
    e = stats.two_proportions(k1, n1, k2, n2)
    _, p = sm_prop.proportions_ztest([k1, k2], [n1, n2])
    lo, hi = sm_prop.confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    assert e.estimate == pytest.approx(k1 / n1 - k2 / n2)
    assert e.p == pytest.approx(p, rel=1e-9)
    assert (e.ci_low, e.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    assert e.n == min(n1, n2)


def test_two_proportions_undefined_variance_is_p_one():
    assert stats.two_proportions(0, 10, 0, 10).p == 1.0 and stats.two_proportions(5, 5, 5, 5).estimate == 0.0


def test_mcnemar_exact_p_matches_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        x = rng.random(n) < rng.random()
        y = np.where(rng.random(n) < 0.7, x, rng.random(n) < 0.5)
        table = [[int((x & y).sum()), int((x & ~y).sum())], [int((~x & y).sum()), int((~x & ~y).sum())]]
        e = stats.mcnemar(x, y)
        assert e.estimate == pytest.approx(x.mean() - y.mean())
        b, c = table[0][1], table[1][0]
        assert e.p == pytest.approx(mcnemar(table, exact=True).pvalue if b + c else 1.0, rel=1e-9)
        assert e.ci_low <= e.estimate <= e.ci_high and e.n == n


def test_mcnemar_all_discordant_one_way_is_significant_and_tie_is_not():
    x, y = [True] * 40 + [False] * 2, [False] * 40 + [False] * 2  # 40/42 refuse → 0/42 after
    e = stats.mcnemar(x, y)
    assert e.estimate == pytest.approx(40 / 42) and e.p < 1e-10 and e.ci_low > 0.8
    t = stats.mcnemar([True, False, True], [True, False, True])
    assert t.estimate == 0 and t.p == 1.0 and stats.verdict(t, +1) == stats.TIE
    with pytest.raises(InputError):
        stats.mcnemar([True, False], [True])


def test_newcombe_paired_interval_covers_95_percent():
    """No library has Newcombe's paired interval: check its coverage on simulated paired tables."""
    rng = np.random.default_rng(1)
    cover, trials, n = 0, 1500, 40
    probs = np.array([0.45, 0.25, 0.1, 0.2])  # (both, x only, y only, neither): true difference 0.15
    for _ in range(trials):
        cell = rng.choice(4, size=n, p=probs)
        x, y = np.isin(cell, (0, 1)), np.isin(cell, (0, 2))
        e = stats.mcnemar(x, y)
        cover += e.ci_low <= 0.15 <= e.ci_high
    assert 0.93 <= cover / trials <= 0.985


def test_paired_bootstrap_matches_scipy_percentile_and_clusters_widen():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(2)
    x, y = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    e = stats.paired_bootstrap(x, y, n_boot=4000)
    ref = bootstrap((x - y,), np.mean, method="percentile", n_resamples=4000, rng=np.random.default_rng(0)).confidence_interval
    assert e.estimate == pytest.approx((x - y).mean())
    assert e.ci_low == pytest.approx(ref.low, abs=0.05) and e.ci_high == pytest.approx(ref.high, abs=0.05)
    # items within a cluster share an offset: resampling clusters gives the (correctly) wider interval
    topics = np.repeat(np.arange(6), 10)
    shared = np.repeat([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], 10)
    c = stats.paired_bootstrap(x + shared, y, clusters=topics)
    i = stats.paired_bootstrap(x + shared, y)
    assert c.ci_high - c.ci_low > 1.5 * (i.ci_high - i.ci_low) and "6 clusters" in c.test
    with pytest.raises(InputError):
        stats.paired_bootstrap([1.0, 2.0], [1.0])


def test_spearman_permutation_matches_scipy_exact():
    from scipy.stats import permutation_test, spearmanr

    x, y = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2], [1.0, 2.5, 2.0, 3.1, 2.2, 0.4]
    e = stats.spearman_permutation(x, y)
    ref = permutation_test((x,), lambda a: spearmanr(a, y).statistic, permutation_type="pairings")  # 720 < 9999: exact
    assert e.estimate == pytest.approx(spearmanr(x, y).statistic) and e.p == pytest.approx(ref.pvalue)
    assert math.isnan(stats.spearman_permutation([1, 1, 1], [1, 2, 3]).estimate)


def test_min_n_matches_statsmodels_power():
    from statsmodels.stats.power import NormalIndPower

    h = sm_prop.proportion_effectsize(0.9, 0.7)
    assert stats.cohens_h(0.9, 0.7) == pytest.approx(h)
    assert stats.min_n(h) == math.ceil(NormalIndPower().solve_power(h, alpha=0.05, power=0.8, ratio=1))
    assert stats.min_n(0.5, paired=True) == math.ceil(NormalIndPower().solve_power(0.5, alpha=0.05, power=0.8, ratio=0))
    assert stats.min_n_rates(0.5) > stats.min_n_rates(0.95)  # rates near the edge move more per point


@pytest.mark.parametrize("est,expected,min_n,word", [
    (stats.Estimate("t", 0.3, 0.1, 0.5, 0.01, 50), +1, None, stats.YES),
    (stats.Estimate("t", 0.3, -0.1, 0.5, 0.2, 50), +1, 40, stats.YES_NOT_SIGNIFICANT),
    (stats.Estimate("t", 0.3, -0.1, 0.5, 0.2, 12), +1, 40, stats.UNDERPOWERED),
    (stats.Estimate("t", -0.3, -0.5, -0.1, 0.01, 50), +1, None, stats.NO),
    (stats.Estimate("t", -0.3, -0.5, -0.1, 0.01, 50), -1, None, stats.YES),
    (stats.Estimate("t", 0.0, -0.1, 0.1, 1.0, 50), +1, None, stats.TIE),
    (stats.Estimate("boot", 0.2, 0.05, 0.4, None, 50), +1, None, stats.YES),  # CI decides where no p
    (stats.Estimate("boot", 0.2, -0.05, 0.4, None, 50), +1, None, stats.YES_NOT_SIGNIFICANT),
    (stats.Estimate("t", math.nan, math.nan, math.nan, None, 0), +1, None, stats.UNDETERMINED),
])
def test_verdict(est, expected, min_n, word):
    assert stats.verdict(est, expected, min_n=min_n) == word


def test_tie_and_wrong_sign_point_estimates_are_never_yes():
    """Issue 17 item 8: "general 6.3620, narrow 6.3620" was reported as "yes"."""
    tie = stats.point_difference(6.3620, 6.3620)
    assert stats.verdict(tie, -1) == stats.TIE and stats.verdict(tie, +1) == stats.TIE
    assert stats.verdict(stats.point_difference(6.3620, 6.3620 * (1 + 1e-9)), -1) == stats.TIE  # float noise
    assert stats.verdict(stats.point_difference(6.3, 6.4), +1) == stats.NO
    assert stats.verdict(stats.point_difference(6.3, 6.4), -1) == stats.YES_POINT
    for e in (tie, stats.mcnemar([True] * 5, [True] * 5), stats.two_proportions(3, 6, 3, 6)):
        assert not stats.verdict(e, +1).startswith("yes")


def test_estimate_to_dict_is_strict_json():
    import json

    d = stats.spearman_permutation([1, 1, 1], [1, 2, 3]).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["estimate"] is None and d["ci95"] == [None, None]


def _claims_inputs(tie: float = 6.3620, outcomes: bool = True):
    """Minimal stage results for the paper modules' claims: four domains, 4 prompts per cell."""
    doms = ["cybersecurity", "safety", "privacy", "bias"]
    out = lambda bits: {"refusals": bits} if outcomes else {}  # noqa: E731
    on, off = [True, True, True, True], [False, False, False, False]
    cond = lambda **kw: {d: {c: v for c, v in kw.items()} for d in doms}  # noqa: E731
    refusal = {"harmful": cond(baseline=1.0, ablated=0.0, random_ablated=1.0), "harmless": cond(baseline=0.0, steered=1.0),
               "n_per_cell": 4, "selected_by_filters": True}
    if outcomes:
        refusal["outcomes"] = {"harmful": cond(baseline=out(on), ablated=out(off), random_ablated=out(on)),
                               "harmless": cond(baseline=out(off), steered=out(on))}
    table = lambda r, bits: {d: {"refusal_rate": r, "n": 4, **out(bits)} for d in doms}  # noqa: E731
    unlearning = {"aligned": table(1.0, on), "runs": {k: {"table": table(0.5, [True, False, True, False])}
                                                      for k in ("cybersecurity", "cybersecurity+retain", "safety", "safety+retain")}}
    names = ["base", "general", "narrow", "general_ablated", "general_random_ablated", "aligned", "aligned_steered"]
    em = {"summary": {k: {"in_domain": 0.0, "out_of_domain": 0.0} for k in names}, "domain": "medical",
          "questions": [{"id": f"q{i}", "domain": "other"} for i in range(3)], "per_question_m": {k: [0.1, 0.2, 0.3] for k in names}}
    solutions = {"norm_factors": [1.0], "efficiency_curve": {"general": {"loss": [tie], "norms": [1.0]}, "narrow": {"loss": [6.3620]}},
                 "stability": {k: {"eps": [0.5], "mean": [10.0], "sd": [1.0]} for k in ("general", "narrow")},
                 "generic_kl": {k: {"kl": [0.01]} for k in ("general", "narrow", "general_random")}}
    return refusal, unlearning, em, solutions


def _claims(refusal, unlearning, em, solutions):
    from experiments import narrow_general, refusal_direction
    from experiments import unlearning as mushtaq

    cs = refusal_direction.claims(refusal) + mushtaq.claims(unlearning) + narrow_general.claims(em, solutions)
    assert all(c.test for c in cs)  # every claim names its test
    return [(c.text, c.verdict, c.evidence) for c in cs]


def test_report_claims_tie_is_never_yes_and_same_prompts_are_paired():
    # the case: equal to the printed precision (the old report said "yes (point estimate)" on 1e-9 noise)
    rows = {c: (v, ev) for c, v, ev in _claims(*_claims_inputs(tie=6.3620 * (1 - 1e-9)))}
    loss = rows["Soligo et al.: the general solution has lower loss at equal norm"]
    assert loss[0] == stats.TIE and "general 6.3620, narrow 6.3620" in loss[1]
    for claim, (v, ev) in rows.items():  # every solution metric and EM score here is an exact tie
        if "Soligo" in claim:
            assert not v.startswith("yes"), (claim, v, ev)
    ablation = rows["Arditi et al.: ablating the refusal direction lowers refusal on harmful prompts"]
    assert "exact McNemar (paired)" in ablation[1] and ablation[0] == stats.YES  # 16/16 → 0/16 on the same prompts
    assert rows["Arditi et al.: … and a norm-matched random direction does not (ablated < random ablated)"][0] == stats.YES
    # 12 refused → 6 refused on the same 12 prompts: 6 discordant pairs, exact p = 2·0.5⁶ = 0.031
    ema = rows["Mushtaq et al.: unlearning cybersecurity refusal lowers refusal in the other six domains (EMA)"]
    assert "exact McNemar" in ema[1] and "p = 0.031" in ema[1]
    assert rows["Mushtaq et al.: retain CE restores refusal in the other domains (safety)"][0] == stats.TIE
    assert stats.verdict(stats.point_difference(6.3, 6.4), -1) == stats.YES_POINT
    # stage results without per-prompt outcomes (older caches) fall back to the unpaired test, and say so
    old = {c: ev for c, _, ev in _claims(*_claims_inputs(outcomes=False))}
    assert "two-proportion z-test (independent samples)" in old["Arditi et al.: adding it makes harmless prompts refused"]
