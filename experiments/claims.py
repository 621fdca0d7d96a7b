"""A report's claim (:class:`Claim`) and the helpers the paper modules' ``claims`` functions share: the pooled
refusal-rate claim (exact McNemar on the same prompts, else a two-proportion test) and the paired EM-score claim
(paired bootstrap over questions). Every claim names its test."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import stats

# the smallest effects the power rule asks the data to detect (80 % power, two-sided α = 0.05): a 20-point change
# of a refusal / EM rate, and a medium standardised paired difference (Cohen's d = 0.5) of per-question EM scores
MIN_RATE_EFFECT = 0.2
MIN_EM_EFFECT = 0.5


@dataclass(frozen=True)
class Claim:
    """One seed-paper claim as measured here: ``text`` (the claim), ``verdict`` (one of
    :data:`experiments.stats.VERDICTS`), ``evidence`` (numbers, n, effect with its CI) and ``test`` (the test the
    verdict rests on, e.g. ``"exact McNemar (paired)"``)."""

    text: str
    verdict: str
    evidence: str
    test: str

    def to_dict(self) -> dict:
        return asdict(self)


def pooled(rates: dict[str, float], n: int, keep=lambda d: True) -> tuple[int, int]:
    """Pooled (refusals, prompts) over the domains ``keep`` selects; ``rates`` are per-domain rates over n prompts."""
    ks = [round(r * n) for d, r in rates.items() if keep(d)]
    return sum(ks), n * len(ks)


def outcomes(table: dict, cond: str | None = None) -> dict[str, list[bool]] | None:
    """Per-prompt refusal outcomes per domain (``table[d][cond]["refusals"]``, or ``table[d]["refusals"]``), or
    None where a stage result predates them."""
    rows = {d: (v[cond] if cond else v).get("refusals") for d, v in table.items()}
    return rows if all(r is not None for r in rows.values()) else None


def fmt(e: stats.Estimate) -> str:
    ci = f" [95 % CI {e.ci_low:+.3f}, {e.ci_high:+.3f}]" if e.ci_low == e.ci_low and e.ci_high == e.ci_high else ""
    return f"difference {e.estimate:+.3f}{ci}, {e.test}" + (f" p = {e.p:.2g}" if e.p is not None else "")


def rate_claim(claim: str, lower: dict, higher: dict, n: int, keep=lambda d: True, names: tuple[str, str] = ("lower", "higher"),
               what: str = "refusal", paired: tuple[dict | None, dict | None] | None = None) -> Claim:
    """Claim that the pooled rate of ``higher`` exceeds ``lower``'s. ``paired``: the per-prompt outcomes (domain →
    [bool]) of the *same* prompts under (lower, higher) — then the exact McNemar test over the pooled prompt pairs
    (prompts counted as independent pairs); without them a two-proportion test of independent samples. Verdict by
    :func:`experiments.stats.verdict`, with the power floor for a ``MIN_RATE_EFFECT`` change."""
    doms = [d for d in lower if keep(d)]
    if paired and paired[0] is not None and paired[1] is not None:
        y = [b for d in doms for b in paired[0][d]]
        x = [b for d in doms for b in paired[1][d]]
        est = stats.mcnemar(x, y)
        k1, n1, k2, n2 = sum(y), len(y), sum(x), len(x)
    else:
        k1, n1 = pooled(lower, n, keep)
        k2, n2 = pooled(higher, n, keep)
        est = stats.two_proportions(k2, n2, k1, n1)
    need = stats.min_n_rates((k1 + k2) / max(n1 + n2, 1), delta=MIN_RATE_EFFECT)
    return Claim(claim, stats.verdict(est, +1, min_n=need),
                 f"pooled {what}: {names[0]} {k1}/{n1} = {k1 / max(n1, 1):.2f}, {names[1]} {k2}/{n2} = {k2 / max(n2, 1):.2f}; "
                 f"{fmt(est)}; n = {est.n} (power floor {need})", est.test)


def paired_em_claim(claim: str, em: dict, low: str, high: str) -> Claim:
    """Claim that the out-of-domain EM score of ``high`` exceeds ``low``'s: paired over questions, 95 % bootstrap CI.
    ``em``: ``summary`` (model → in / out-of-domain means) and, for the paired test, ``questions`` and
    ``per_question_m`` (model → m per question, the same questions in the same order)."""
    e = em["summary"]
    if "per_question_m" not in em or not em["per_question_m"]:
        est = stats.point_difference(e[high]["out_of_domain"], e[low]["out_of_domain"])
        return Claim(claim, stats.verdict(est, +1), f"OOD EM score {high} {e[high]['out_of_domain']:+.3f}, {low} {e[low]['out_of_domain']:+.3f}",
                     est.test)
    ood = [i for i, q in enumerate(em["questions"]) if q["domain"] != em.get("domain", "medical")]
    est = stats.paired_bootstrap([em["per_question_m"][high][i] for i in ood], [em["per_question_m"][low][i] for i in ood])
    need = stats.min_n(MIN_EM_EFFECT, paired=True)
    return Claim(claim, stats.verdict(est, +1, min_n=need),
                 f"OOD EM score {high} {e[high]['out_of_domain']:+.3f} vs {low} {e[low]['out_of_domain']:+.3f}; paired {fmt(est)}; "
                 f"n = {len(ood)} questions (power floor {need})", est.test)
