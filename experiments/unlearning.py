"""Narrow refusal unlearning and concept entanglement (Mushtaq et al.), as published.

Method (one function per step):
1. :func:`concept_similarity` — concept vectors of the seven domains on the aligned organism (mean over a domain's
   harmful prompts − mean over a shared baseline set, definition 2) and their cosine S_l per layer;
2. :func:`unlearn_until_target` — NPO unlearning of one target domain's refusal (:func:`training.unlearn`), with and
   without retain cross-entropy on the other domains, until the target's held-out (validation) refusal is ≤ the
   stated level (default 25 %) or the step budget is spent (the result says which);
3. :func:`ema_table` — refusal per domain on held-out test prompts, EMA = unlearned − aligned per domain with an
   exact McNemar test each (the same prompts before and after);
4. :func:`retain_at_equal_drop` — the run with retain CE against the one without, each at the checkpoint where its
   target refusal first fell to the same level (:func:`training.unlearn.at_equal_drop`);
5. :func:`entanglement` — the per-layer Spearman correlation between S_l[target, d] and domain d's refusal drop, with
   a permutation p-value (:func:`interp.concepts.similarity_ema_correlation`);
6. :func:`claims`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from figures import plots
from interp.concepts import concept_vectors, similarity_ema_correlation
from interp.models import Model
from probes import datasets

from . import stats
from .claims import Claim, outcomes, rate_claim
from .organism import adapted
from .refusal_direction import domain_prompts, measure_groups


@dataclass
class ConceptsConfig:
    """Every setting of the concept-vector stage."""

    per_domain: int = 12  # harmful train prompts per domain
    baseline_split: str = "train"  # the shared baseline set (``baseline`` data set) split
    position: str = "last_prompt"
    plot_targets: tuple = ("cybersecurity", "safety")  # similarity sweeps drawn for these domains
    batch_size: int = 16


@dataclass
class ConceptsResult:
    """``names`` (domain titles), ``layers``, ``cosine`` ``[n_layers][n_domains][n_domains]``; ``figures``."""

    names: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    cosine: list = field(default_factory=list)
    figures: list = field(default_factory=list)


@dataclass
class UnlearnConfig:
    """Every setting of the unlearning stage: what is unlearned, the trainer, the stopping rule and evaluation."""

    concepts: tuple = ("cybersecurity", "safety")  # target domains, each unlearned in its own run
    train_prompts: int = 36  # harmful train prompts of the target (refusals to unlearn)
    retain_per_domain: int = 2  # harmful train prompts per other domain for the retain CE
    retain_weight: float = 1.0  # weight of the retain CE in the "+retain" run
    stop_per_domain: int = 6  # the target's validation prompts measured by the stopping rule
    target_refusal: float = 0.25  # stop once the target's held-out refusal is ≤ this
    eval_every: int = 5  # optimiser steps between stopping-rule measurements
    eval_max_new_tokens: int = 16  # generated tokens per stopping-rule prompt
    max_steps: int = 20  # the step budget
    lr: float = 2e-4
    batch_size: int = 4
    retain_batch: int = 4  # retain sequences per micro-batch
    max_length: int = 400
    rank: int = 8
    alpha: float = 16.0
    npo_beta: float = 0.1
    eval_per_domain: int = 6  # held-out test prompts per domain for the EMA table
    gen_tokens: int = 24  # generated tokens per EMA-table prompt
    n_perm: int = 10_000  # Monte-Carlo permutations when exact enumeration is too large (6 domains: exact)


@dataclass
class Config:
    """Both stages of the paper: concept vectors, then unlearning."""

    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)


@dataclass
class Result:
    """``aligned``: domain → refusal cell of the organism on the test prompts (``refusal_rate``, ``ci95``, ``n``,
    ``score``, ``refusals`` per prompt); ``runs``: tag (``cybersecurity``, ``cybersecurity+retain``, …) →
    {``table`` (the same cells after unlearning), ``ema`` (domain → unlearned − aligned), ``ema_tests`` (domain →
    McNemar estimate dict), ``rank_corr_per_layer``, ``entanglement`` (per-layer ρ and p), ``trajectory`` (the
    stopping rule's measurements, ``reached``, ``stop_step``, ``budget``), ``final_loss``}; ``equal_drop``: concept
    → the retain comparison at an equal target drop (``level``, ``steps``, ``refusal``, ``gap``, ``tables``)."""

    aligned: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    equal_drop: dict = field(default_factory=dict)
    target_refusal: float = 0.25
    figures: list = field(default_factory=list)


def concept_similarity(model: Model, config: ConceptsConfig, out: str | Path) -> ConceptsResult:
    """Step 1: concept vectors (saved to ``out/artifacts/concepts.safetensors``), cosine heatmaps and similarity sweeps."""
    out = Path(out)
    sets = {datasets.DOMAIN_TITLES[d]: v for d, v in domain_prompts("harmful", "train", config.per_domain).items()}
    cv = concept_vectors(model, sets, datasets.prompts("baseline", config.baseline_split), position=config.position,
                         batch_size=config.batch_size)
    cv.save(out / "artifacts" / "concepts.safetensors")
    figs = plots.concept_heatmaps(cv.cosine(), cv.names, cv.layers, out / "figures" / "concept_cosine")
    for d in config.plot_targets:
        t = datasets.DOMAIN_TITLES[datasets.domain(d)]
        figs += plots.similarity_sweep(cv.similarity_to(t), cv.names, cv.layers, t, out / "figures" / f"similarity_to_{t.lower()}")
    return ConceptsResult(cv.names, cv.layers, cv.cosine().tolist(), [str(f) for f in figs])


def _refusal_table(model: Model, prompts: dict[str, list], max_new_tokens: int) -> dict:
    return {d: {"refusal_rate": r["refusal_rate"], "ci95": r["rate_ci95"], "n": r["n"], "score": r["score_mean"], "refusals": r["refusals"]}
            for d, r in measure_groups(model, prompts, max_new_tokens).items()}


def unlearn_until_target(model: Model, concept: str, config: UnlearnConfig, out: str | Path, *, retain: bool, seed: int = 0):
    """Step 2: one NPO run on ``concept``'s train prompts (± retain CE on the other domains' train prompts) until the
    target's validation refusal is ≤ ``target_refusal`` or ``max_steps`` is spent → :class:`training.unlearn.UnlearnResult`."""
    from training import TrainConfig, unlearn

    refusals = [r["text"] for r in datasets.load("refusals")]
    retain_prompts = [x for d in datasets.DOMAINS if d != concept for x in datasets.prompts(f"{d}_harmful", "train", config.retain_per_domain)]
    cfg = TrainConfig(lr=config.lr, max_steps=config.max_steps, batch_size=config.batch_size, kl_batch_size=config.retain_batch,
                      seed=seed, max_length=config.max_length)
    return unlearn(model, datasets.prompts(f"{concept}_harmful", "train", config.train_prompts), refusals=refusals, out=out,
                   retain_prompts=retain_prompts if retain else None, retain_weight=config.retain_weight if retain else 0.0,
                   rank=config.rank, alpha=config.alpha, npo_beta=config.npo_beta, config=cfg,
                   eval_prompts=datasets.prompts(f"{concept}_harmful", "val", config.stop_per_domain),
                   target_refusal=config.target_refusal, eval_every=config.eval_every, eval_max_new_tokens=config.eval_max_new_tokens)


def ema_table(aligned: dict, table: dict) -> tuple[dict, dict]:
    """Step 3: (domain → EMA = refusal after − refusal of the organism, domain → exact McNemar estimate dict of the
    same test prompts after vs before)."""
    ema = {d: table[d]["refusal_rate"] - aligned[d]["refusal_rate"] for d in table}
    tests = {d: stats.mcnemar(table[d]["refusals"], aligned[d]["refusals"]).to_dict() for d in table
             if table[d].get("refusals") is not None and aligned[d].get("refusals") is not None}
    return ema, tests


def entanglement(concepts: ConceptsResult, concept: str, ema: dict, n_perm: int) -> dict:
    """Step 5: per layer, Spearman ρ between S_l[concept, d] and the refusal drop −EMA_d over the other domains, with
    permutation p-values; NaN everywhere when the drops are all equal (ρ undefined)."""
    cos = torch.tensor(concepts.cosine, dtype=torch.float64)  # [L, C, C]
    titles = list(concepts.names)
    others = [d for d in datasets.DOMAINS if d != concept]
    t = titles.index(datasets.DOMAIN_TITLES[concept])
    sim = cos[:, t, [titles.index(datasets.DOMAIN_TITLES[d]) for d in others]]  # [L, 6]
    e = similarity_ema_correlation(sim, [ema[d] for d in others], layers=list(concepts.layers), domains=others, n_perm=n_perm)
    return asdict(e)


def _rho(concepts: ConceptsResult, concept: str, ema: dict) -> list[float]:
    """Spearman ρ per layer without a p-value (NaN where the drops are all equal)."""
    from interp.concepts import similarity_effect_correlation

    cos = torch.tensor(concepts.cosine, dtype=torch.float64)  # [L, C, C]
    titles = list(concepts.names)
    others = [d for d in datasets.DOMAINS if d != concept]
    sim = cos[:, titles.index(datasets.DOMAIN_TITLES[concept]), [titles.index(datasets.DOMAIN_TITLES[d]) for d in others]]  # [L, 6]
    drop = [-ema[d] for d in others]
    return similarity_effect_correlation(sim, drop).tolist() if len(set(drop)) > 1 else [float("nan")] * sim.shape[0]


def retain_at_equal_drop(model: Model, runs: dict, aligned: dict, prompts: dict, config: UnlearnConfig) -> dict:
    """Step 4: the two runs' checkpoints at an equal target refusal level and their test-prompt refusal tables
    (a chosen state equal to a run's final state reuses its table; step 0 is the organism itself)."""
    from training.unlearn import RefusalTrajectory, at_equal_drop

    trajs = {tag: RefusalTrajectory.from_dict(r["trajectory"]) for tag, r in runs.items()}
    eq = at_equal_drop(trajs)
    tables = {}
    for tag, ck in eq.checkpoints.items():
        if ck is None:
            tables[tag] = aligned
        elif eq.steps[tag] == trajs[tag].stop_step:
            tables[tag] = runs[tag]["table"]
        else:
            tables[tag] = _refusal_table(adapted(model, ck), prompts, config.gen_tokens)
    return {"level": eq.level, "at_target": eq.at_target, "steps": eq.steps, "refusal": eq.refusal, "gap": eq.gap,
            "notes": eq.notes, "tables": tables}


def run_unlearning(model: Model, concepts: ConceptsResult, config: UnlearnConfig, out: str | Path, *, seed: int = 0) -> Result:
    """Steps 2–5 for every target in ``config.concepts``; adapters under ``out/artifacts/unlearn_TAG``."""
    out = Path(out)
    test_h = domain_prompts("harmful", "test", config.eval_per_domain)
    base = _refusal_table(model, test_h, config.gen_tokens)
    res = Result(aligned=base, target_refusal=config.target_refusal)
    bars = {"aligned": {d: base[d]["refusal_rate"] for d in datasets.DOMAINS}}
    for concept in config.concepts:
        concept = datasets.domain(concept)
        pair = {}
        for retain in (False, True):
            tag = f"{concept}{'+retain' if retain else ''}"
            r = unlearn_until_target(model, concept, config, out / "artifacts" / f"unlearn_{tag}", retain=retain, seed=seed)
            table = _refusal_table(adapted(model, r.path), test_h, config.gen_tokens)
            ema, tests = ema_table(base, table)
            # the permutation test is for the claim (the run without retain); the retain run's ρ per layer is reported only
            ent = entanglement(concepts, concept, ema, config.n_perm) if not retain else None
            rho = ent["rho"] if ent else _rho(concepts, concept, ema)
            pair[tag] = {"table": table, "ema": ema, "ema_tests": tests, "rank_corr_per_layer": rho, "entanglement": ent,
                         "trajectory": r.trajectory.to_dict(), "final_loss": r.metrics.get("final_loss")}
            bars[tag] = {d: table[d]["refusal_rate"] for d in datasets.DOMAINS}
        res.runs.update(pair)
        res.equal_drop[concept] = retain_at_equal_drop(model, pair, base, test_h, config)
    res.figures = [str(f) for f in plots.grouped_bars(bars, out / "figures" / "ema_refusal", ylabel="refusal rate (held-out harmful)",
                                                      title="narrow refusal unlearning: refusal per domain")]
    return res


def run(model: Model, config: Config, out: str | Path, *, seed: int = 0) -> tuple[ConceptsResult, Result]:
    """The whole paper on ``model`` (the aligned organism): concept vectors, then unlearning."""
    c = concept_similarity(model, config.concepts, out)
    return c, run_unlearning(model, c, config.unlearn, out, seed=seed)


def _stop(traj: dict | None) -> str:
    if not traj:
        return "no stopping rule recorded"
    last = traj["refusal"][-1]
    if traj["reached"]:
        return f"stopping rule: validation refusal {traj['refusal'][0]:.2f} → {last:.2f} ≤ {traj['target']:.2f} at step {traj['stop_step']} (n = {traj['n_eval']})"
    return (f"stopping rule: budget of {traj['budget']} steps spent without reaching ≤ {traj['target']:.2f} "
            f"(validation refusal {traj['refusal'][0]:.2f} → {last:.2f}, lowest {min(traj['refusal']):.2f}; n = {traj['n_eval']})")


def claims(result: Result | dict) -> list[Claim]:
    """Per target: the target's refusal falls, the other domains lose refusal (EMA), retain CE restores it at an equal
    target drop, and concept similarity predicts the refusal lost (the best layer's ρ, its permutation p-value
    Bonferroni-corrected over the layers)."""
    r = result if isinstance(result, Result) else Result(**result)
    out = []
    aligned = {d: v["refusal_rate"] for d, v in r.aligned.items()}
    n_u = next(iter(r.aligned.values()))["n"]
    concepts = [t for t in r.runs if not t.endswith("+retain")]
    for concept in concepts:
        plain, kept = r.runs[concept], r.runs[f"{concept}+retain"]
        run_ = {d: v["refusal_rate"] for d, v in plain["table"].items()}
        other = lambda d, c=concept: d != c  # noqa: E731
        target = lambda d, c=concept: d == c  # noqa: E731
        o_r, o_a = outcomes(plain["table"]), outcomes(r.aligned)
        c = rate_claim(f"Mushtaq et al.: unlearning {concept} refusal removes the target domain's refusal (held-out test prompts)",
                       run_, aligned, n_u, target, names=("unlearned", "aligned"), paired=(o_r, o_a))
        out.append(Claim(c.text, c.verdict, f"{c.evidence}; {_stop(plain.get('trajectory'))}", c.test))
        out.append(rate_claim(f"Mushtaq et al.: unlearning {concept} refusal lowers refusal in the other six domains (EMA)",
                              run_, aligned, n_u, other, names=("unlearned", "aligned"), paired=(o_r, o_a)))
        eq = r.equal_drop.get(concept)
        if eq:
            t = eq["tables"]
            a, b = t[concept], t[f"{concept}+retain"]
            c = rate_claim(f"Mushtaq et al.: retain CE restores refusal in the other domains ({concept})",
                           {d: v["refusal_rate"] for d, v in a.items()}, {d: v["refusal_rate"] for d, v in b.items()}, n_u, other,
                           names=("unlearned", "unlearned + retain"), paired=(outcomes(a), outcomes(b)))
            how = (f"at an equal target drop: validation refusal ≤ {eq['level']:.2f} (steps {eq['steps'][concept]} / "
                   f"{eq['steps'][concept + '+retain']}, refusal {eq['refusal'][concept]:.2f} / {eq['refusal'][concept + '+retain']:.2f})"
                   + ("" if eq["at_target"] else f" — not the stated target: {'; '.join(eq['notes'])}"))
            out.append(Claim(c.text, c.verdict, f"{c.evidence}; {how}", c.test))
        else:  # an older stage result: final states, unequal drops
            rr = {d: v["refusal_rate"] for d, v in kept["table"].items()}
            out.append(rate_claim(f"Mushtaq et al.: retain CE restores refusal in the other domains ({concept})", run_, rr, n_u, other,
                                  names=("unlearned", "unlearned + retain"), paired=(o_r, outcomes(kept["table"]))))
        out.append(_entanglement_claim(concept, plain.get("entanglement")))
    return out


def _entanglement_claim(concept: str, ent: dict | None) -> Claim:
    text = f"Mushtaq et al.: domains whose concept vectors are closer to {concept}'s lose more refusal (similarity → EMA, ρ > 0)"
    test = "Spearman ρ, permutation p (Bonferroni over layers)"
    if not ent:
        return Claim(text, stats.UNDETERMINED, "no per-layer correlation recorded", test)
    finite = [(l, rho, p) for l, rho, p in zip(ent["layers"], ent["rho"], ent["p"]) if rho == rho and p == p]
    if not finite:
        return Claim(text, stats.UNDETERMINED, f"ρ undefined at every layer (the {ent['n']} domains' refusal drops are all equal)", test)
    layer, rho, p = max(finite, key=lambda t: t[1])
    k = len(ent["layers"])
    est = stats.Estimate(test, rho, math.nan, math.nan, min(1.0, p * k), ent["n"])
    return Claim(text, stats.verdict(est, +1),
                 f"highest ρ = {rho:+.2f} at layer {layer} (raw p = {p:.2g}, {ent['method']} over {ent['n_perm']} pairings; "
                 f"× {k} layers = {est.p:.2g}); n = {ent['n']} domains", test)
