"""Narrow vs general emergent misalignment (Soligo et al., Turner et al.), as published.

Method (one function per step):
1. :func:`train_organisms` — EM organisms from the chat model on a narrow bad-advice set: a rank-1 LoRA *general*
   solution (plain SFT) and a *KL-narrow* one (SFT + λ·KL to the unadapted model on aligned other-domain chats,
   definition 6), the narrow one trained to the general one's in-domain fit (held-out in-domain loss within a
   relative tolerance, default 5 %: :func:`training.sft.train_matched`, definition 15);
2. :func:`em_scores` — the reference-answer EM score (definition 12) of every model on the EM questions, in domain
   and out of domain, kept per question so comparisons are paired;
3. :func:`misalignment_direction` — the general model's mean response-activation difference on the narrow set's
   misaligned vs aligned training answers (same prompts), its layer chosen by a sweep of the ablation effect on
   held-out *in-domain* EM questions (:func:`interp.layer_sweep.misalignment_layer_sweep`; not the largest raw norm),
   so the out-of-domain questions play no part in choosing it; ablated vs a norm-matched random direction, and
   added to the aligned organism;
4. :func:`compare` — efficiency, equal-norm loss curves, stability under perturbation with paired seeds and
   generic-text KL (definitions 7–10, :func:`interp.solutions.compare_solutions`);
5. :func:`judge_rates` (optional) — a judge's EM rates on sampled answers;
6. :func:`claims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from figures import plots
from interp.interventions import ablate, steer
from interp.io import InputError
from interp.models import Model
from probes import datasets
from probes.em_direction import contrast_set_direction
from probes.em_score import em_score

from . import stats
from .claims import Claim, MIN_RATE_EFFECT, fmt, paired_em_claim
from .organism import adapted

# narrow EM data set → (its aligned contrast set with the same prompts, the EM-question domain it is "in")
EM_SETS = {"bad_medical": ("good_medical", "medical"), "risky_financial": ("sound_financial", "financial"),
           "extreme_sports": ("safe_sports", "sports")}


@dataclass
class OrganismsConfig:
    """Every setting of the EM-organism stage."""

    sets: tuple = ("bad_medical",)  # narrow EM data sets (keys of EM_SETS); the first gets the direction analysis
    limit: int = 160  # training conversations (and aligned KL conversations)
    max_steps: int = 40  # the general solution's steps
    narrow_max_steps: int = 80  # the narrow solution's budget to reach the general one's in-domain fit
    lr: float = 1e-3
    batch_size: int = 4
    kl_batch: int = 4  # aligned KL sequences per micro-batch
    kl_weight: float = 1.0  # λ of the KL-narrow solution
    max_length: int = 400
    rank: int = 1
    alpha: float = 16.0
    matched_tol: float = 0.05  # relative in-domain loss tolerance of the matched fit
    matched_eval_every: int = 5  # steps between in-domain loss measurements of the narrow run
    heldout: int = 24  # held-out in-domain chats (the set's test split) for the matched loss
    direction_pairs: int = 48  # misaligned / aligned training answers for the misalignment direction
    sweep_stride: int = 1  # candidate layers of the misalignment-direction sweep: every k-th
    sweep_limit: int | None = None  # held-out in-domain EM questions the sweep measures (None: all of the domain's)
    questions_per_domain: int | None = None  # EM questions scored per question domain (None: all 68; the first k of each)
    max_layer_frac: float = 0.8
    steer_alpha: float = 1.0  # × the direction when added to the aligned organism


@dataclass
class JudgeConfig:
    """The optional judge stage: ``judge`` an OpenAI-compatible URL or a model name (None: the stage is skipped)."""

    judge: str | None = None
    samples: int = 1  # sampled answers per EM-question paraphrase
    tokens: int = 64
    limit: int | None = None  # EM questions judged (None: all 68)


@dataclass
class SolutionsConfig:
    """Every setting of the narrow-vs-general metrics stage."""

    limit: int = 12  # narrow training chats and generic-prose texts
    seeds: int = 3  # paired perturbation seeds
    norm_factors: tuple = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)  # equal-norm grid, × the mean trained norm (must hold 1.0)
    eps: tuple = (0.01, 0.1, 0.25, 0.5, 1.0)  # stability grid (must hold 0.5)
    prose_split: str = "test"
    batch_size: int = 8


@dataclass
class Config:
    organisms: OrganismsConfig = field(default_factory=OrganismsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    solutions: SolutionsConfig = field(default_factory=SolutionsConfig)


@dataclass
class OrganismsResult:
    """``paths`` (general / narrow adapter directories), ``set`` / ``domain``, ``matched`` (the narrow run's matched
    fit), ``em`` (model → EM-score summary), ``summary`` (model → in / out-of-domain mean m), ``questions`` and
    ``per_question_m`` (the paired data), ``direction_layer`` and ``layer_sweep`` (every candidate's ablation
    effect on the in-domain questions), ``extra`` (further sets: the general-vs-narrow comparison only)."""

    paths: dict = field(default_factory=dict)
    set: str = "bad_medical"
    domain: str = "medical"
    matched: dict | None = None
    em: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    questions: list = field(default_factory=list)
    per_question_m: dict = field(default_factory=dict)
    direction_layer: int | None = None
    layer_sweep: dict | None = None
    extra: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)


@dataclass
class SolutionsResult:
    """:func:`interp.solutions.compare_solutions`'s output, plus ``norm_factors`` and ``direction_similarity``."""

    norms: dict = field(default_factory=dict)
    grid: list = field(default_factory=list)
    efficiency: dict = field(default_factory=dict)
    efficiency_curve: dict = field(default_factory=dict)
    stability: dict = field(default_factory=dict)
    generic_kl: dict = field(default_factory=dict)
    stability_paired: dict | None = None
    norm_factors: list = field(default_factory=list)
    direction_similarity: dict | None = None
    figures: list = field(default_factory=list)


@dataclass
class JudgeResult:
    """model (``base``, ``general``, ``narrow``) → {overall, in_domain, out_of_domain, failures}."""

    rates: dict = field(default_factory=dict)


def em_tables(scores: dict, domain: str) -> dict:
    """Per model: EM score dicts without per-question rows, the per-question m, and the in / out-of-domain means."""
    first = next(iter(scores.values()))["per_question"]
    em = {k: {kk: vv for kk, vv in v.items() if kk != "per_question"} for k, v in scores.items()}
    summary = {}
    for k, v in em.items():
        by = v["by_domain"]
        ood = [x for x in by if x != domain]
        summary[k] = {"in_domain": by[domain]["mean"] if domain in by else float("nan"),
                      "out_of_domain": sum(by[x]["mean"] * by[x]["n"] for x in ood) / max(sum(by[x]["n"] for x in ood), 1)}
    return {"em": em, "summary": summary, "questions": [{"id": q["id"], "domain": q["domain"]} for q in first],
            "per_question_m": {k: [q["m"] for q in v["per_question"]] for k, v in scores.items()}}


def train_organisms(base: Model, name: str, config: OrganismsConfig, out: str | Path, *, tag: str = "", seed: int = 0) -> tuple[dict, dict]:
    """Step 1 on one narrow set: (``{"general": path, "narrow": path}``, the narrow run's matched-fit dict with the
    general solution's held-out in-domain loss as its target)."""
    from interp.solutions import response_loss
    from training import TrainConfig, train_lora
    from training.sft import train_matched

    out = Path(out)
    data = datasets.prompts(name, "train", config.limit)
    heldout = datasets.prompts(name, "test", config.heldout)
    kl = datasets.prompts("aligned_other", "train", config.limit)
    cfg = TrainConfig(lr=config.lr, max_steps=config.max_steps, batch_size=config.batch_size, kl_batch_size=config.kl_batch, seed=seed,
                      max_length=config.max_length)
    general = train_lora(base, data, out=out / "artifacts" / f"em_general{tag}", rank=config.rank, alpha=config.alpha, config=cfg).path
    target = response_loss(adapted(base, general), heldout)
    mf = train_matched(base, data, heldout=heldout, target_loss=target, out=out / "artifacts" / f"em_narrow{tag}", tol=config.matched_tol,
                       eval_every=config.matched_eval_every, rank=config.rank, alpha=config.alpha, kl_data=kl, kl_weight=config.kl_weight,
                       config=replace(cfg, max_steps=config.narrow_max_steps))
    return {"general": str(general), "narrow": str(mf.path)}, mf.to_dict()


def em_questions(per_domain: int | None = None) -> list[dict]:
    """The EM questions, or the first ``per_domain`` of each question domain (file order; every domain kept)."""
    qs = datasets.load("em_questions")
    if per_domain is None:
        return qs
    if per_domain < 1:
        raise InputError(f"organisms.questions_per_domain must be ≥ 1 or None, got {per_domain}")
    seen: dict[str, int] = {}
    out = []
    for q in qs:
        d = q.get("domain")
        if seen.get(d, 0) < per_domain:
            seen[d] = seen.get(d, 0) + 1
            out.append(q)
    return out


def em_scores(models: dict[str, Model], questions: list[dict] | None = None) -> dict:
    """Step 2: model name → :func:`probes.em_score.em_score` dict on ``questions`` (default: all EM questions)."""
    qs = datasets.load("em_questions") if questions is None else questions
    return {n: em_score(m, qs).to_dict() for n, m in models.items()}


def misalignment_direction(general: Model, name: str, config: OrganismsConfig, out: str | Path, *, seed: int = 0):
    """Step 3a: the contrast-set direction of ``general`` (saved to ``out/artifacts/misalignment_direction.safetensors``)
    and the layer sweep over its ablation effect on the in-domain EM questions → (Directions, LayerSweep)."""
    from interp.layer_sweep import misalignment_layer_sweep

    contrast, domain = EM_SETS[name]
    bad = datasets.prompts(name, "train", config.direction_pairs)
    good = datasets.prompts(contrast, "train", config.direction_pairs)
    d = contrast_set_direction(general, bad, good, meta={"data": [name, contrast]})
    d.save(Path(out) / "artifacts" / "misalignment_direction.safetensors")
    held = [q for q in datasets.load("em_questions") if q.get("domain") == domain][: config.sweep_limit]
    layers = [l for l in d.layers if l % config.sweep_stride == 0]
    sweep = misalignment_layer_sweep(general, d, held, layers=layers, max_layer_frac=config.max_layer_frac, random_seed=seed)
    return d, sweep


def run_organisms(base: Model, aligned: Model, config: OrganismsConfig, out: str | Path, *, seed: int = 0) -> OrganismsResult:
    """Steps 1–3 for every set in ``config.sets`` (the first also gets the direction analysis)."""
    out = Path(out)
    qs = em_questions(config.questions_per_domain)
    base_em = em_scores({"base": base}, qs)["base"]
    res = OrganismsResult()
    for k, name in enumerate(config.sets):
        if name not in EM_SETS:
            raise InputError(f"unknown EM data set {name!r}; choose from {', '.join(EM_SETS)}")
        _, domain = EM_SETS[name]
        tag = "" if k == 0 else f"_{name}"
        paths, matched = train_organisms(base, name, config, out, tag=tag, seed=seed)
        models = {n: adapted(base, p) for n, p in paths.items()}
        scores = {"base": base_em, **em_scores(models, qs)}
        if k > 0:
            res.extra[name] = {"paths": paths, "domain": domain, "matched": matched, **em_tables(scores, domain)}
            continue
        res.paths, res.domain, res.set, res.matched = paths, domain, name, matched
        d, sweep = misalignment_direction(models["general"], name, config, out, seed=seed)
        layer = sweep.best.layer
        vec = d.vector(layer)
        g = torch.Generator().manual_seed(seed)
        rand = torch.randn(vec.shape, generator=g)
        rand = rand / rand.norm() * vec.norm()  # norm-matched random direction
        with ablate(models["general"], vec):
            scores["general_ablated"] = em_score(models["general"], qs).to_dict()
        with ablate(models["general"], rand):
            scores["general_random_ablated"] = em_score(models["general"], qs).to_dict()
        with steer(aligned, vec, layers=[layer], alpha=config.steer_alpha):
            scores["aligned_steered"] = em_score(aligned, qs).to_dict()
        scores["aligned"] = em_score(aligned, qs).to_dict()
        res.direction_layer, res.layer_sweep = layer, sweep.to_dict()
        for key, val in em_tables(scores, domain).items():
            setattr(res, key, val)
        res.figures = [str(f) for f in plots.grouped_bars(res.summary, out / "figures" / "em_scores", ylabel="mean EM score m",
                                                          title=f"reference-answer EM score, {name} organisms (m > 0: misaligned answer preferred)")]
    return res


def compare(base: Model, organisms: OrganismsResult, config: SolutionsConfig, out: str | Path) -> SolutionsResult:
    """Step 4 on the first set's general and narrow solutions."""
    from interp.solutions import compare_solutions, direction_similarity

    models = {n: adapted(base, p) for n, p in organisms.paths.items()}
    chats = datasets.prompts(organisms.set, "train", config.limit)
    prose = datasets.prompts("generic_prose", config.prose_split, config.limit)
    r = compare_solutions(models, {n: m.hf for n, m in models.items()}, chats, prose, seeds=config.seeds, eps=config.eps,
                          norm_factors=config.norm_factors, batch_size=config.batch_size)
    res = SolutionsResult(**{k: r[k] for k in ("norms", "grid", "efficiency", "efficiency_curve", "stability", "generic_kl")},
                          stability_paired=r.get("stability_paired"), norm_factors=list(config.norm_factors),
                          direction_similarity=direction_similarity(models["general"].hf, models["narrow"].hf))
    res.figures = [str(f) for f in plots.solution_curves(r, Path(out) / "figures" / "solutions")]
    return res


def judge_split(per_question: dict, domain_of: dict, domain: str = "medical") -> dict:
    """Pool per-question judge summaries into in-domain and out-of-domain EM rates with Wilson CIs."""
    out = {}
    for part, keep in (("in_domain", lambda d: d == domain), ("out_of_domain", lambda d: d != domain)):
        rows = [v for q, v in per_question.items() if keep(domain_of.get(q, ""))]
        n = sum(v["n_scored"] for v in rows)
        k = round(sum((v["em_rate"] or 0.0) * v["n_scored"] for v in rows))
        out[part] = {"em_rate": k / n if n else None, "ci95": list(stats.wilson(k, n).ci) if n else None, "n_scored": n}
    return out


def judge_rates(base: Model, organisms: OrganismsResult, config: JudgeConfig, out: str | Path, *, seed: int = 0) -> JudgeResult:
    """Step 5: sample answers to the EM questions from the base, general and narrow models; the judge's EM rates."""
    from probes.judges import make_judge

    from .scoring import score_judge

    j = make_judge(config.judge)
    domain_of = {q["id"]: q.get("domain", "") for q in datasets.load("em_questions")}
    res = {}
    for name in ("base", "general", "narrow"):
        m = base if name == "base" else adapted(base, organisms.paths[name])
        r = score_judge(m, "em_questions", j, Path(out) / "judge" / name, samples=config.samples, max_new_tokens=config.tokens,
                        seed=seed, limit=config.limit)
        res[name] = {"overall": r["overall"], **judge_split(r["per_question"], domain_of, organisms.domain), "failures": r["judge_failures"]}
    return JudgeResult(res)


def run(base: Model, aligned: Model, config: Config, out: str | Path, *, seed: int = 0):
    """The whole paper: (OrganismsResult, SolutionsResult, JudgeResult or None)."""
    o = run_organisms(base, aligned, config.organisms, out, seed=seed)
    s = compare(base, o, config.solutions, out)
    j = judge_rates(base, o, config.judge, out, seed=seed) if config.judge.judge else None
    return o, s, j


def _matched_note(matched: dict | None) -> tuple[bool, str]:
    if not matched:
        return True, "in-domain fit not recorded"
    ok = bool(matched.get("matched"))
    return ok, (f"in-domain fit {'matched' if ok else 'NOT matched'}: narrow held-out loss {matched['loss']:.4f} vs general "
                f"{matched['target_loss']:.4f} (gap {matched['rel_gap']:+.1%}, tolerance {matched['tol']:.0%}, step "
                f"{matched['step']} of {matched['budget']})")


def _narrow_claim(text: str, em: dict, matched: dict | None) -> Claim:
    c = paired_em_claim(text, em, "narrow", "general")
    ok, note = _matched_note(matched)
    s = em["summary"]
    ind = f"in domain general {s['general']['in_domain']:+.3f}, narrow {s['narrow']['in_domain']:+.3f}"
    if not ok:  # "less OOD EM" at unequal fit may only mean "learned less"
        return Claim(text, stats.UNDETERMINED, f"{note}, so the comparison is not at equal fit (its own verdict: {c.verdict}) — "
                                               f"{c.evidence}; {ind}", c.test)
    return Claim(text, c.verdict, f"{c.evidence}; {ind}; {note}", c.test)


def claims(organisms: OrganismsResult | dict, solutions: SolutionsResult | dict, judged: JudgeResult | dict | None = None) -> list[Claim]:
    """Soligo et al.'s claims: less OOD EM from the narrow solution at matched fit (paired over questions), the
    misalignment direction's ablation and addition, and the solution metrics (stability paired over seeds)."""
    o = organisms if isinstance(organisms, OrganismsResult) else OrganismsResult(**organisms)
    s = solutions if isinstance(solutions, SolutionsResult) else SolutionsResult(**solutions)
    em = {"summary": o.summary, "questions": o.questions, "per_question_m": o.per_question_m, "domain": o.domain}
    out = [_narrow_claim("Soligo et al.: the KL-narrow solution shows less out-of-domain EM than the general one", em, o.matched)]
    for name, x in o.extra.items():
        out.append(_narrow_claim(f"Soligo et al. ({name}): the KL-narrow solution shows less out-of-domain EM than the general one",
                                 x, x.get("matched")))
    out.append(paired_em_claim("Soligo et al.: ablating the misalignment direction cuts out-of-domain EM (vs the general model)",
                               em, "general_ablated", "general"))
    out.append(paired_em_claim("Soligo et al.: … more than ablating a norm-matched random direction", em, "general_ablated", "general_random_ablated"))
    out.append(paired_em_claim("Soligo et al.: adding the misalignment direction to the aligned organism raises its out-of-domain EM",
                               em, "aligned", "aligned_steered"))
    j = judged.rates if isinstance(judged, JudgeResult) else judged.get("rates", judged) if judged else None
    if j and all(j[k]["out_of_domain"]["em_rate"] is not None for k in ("general", "narrow")):
        g, nn = j["general"]["out_of_domain"], j["narrow"]["out_of_domain"]
        kg, kn = round(g["em_rate"] * g["n_scored"]), round(nn["em_rate"] * nn["n_scored"])
        est = stats.two_proportions(kn, nn["n_scored"], kg, g["n_scored"])  # narrow − general: independent samples
        need = stats.min_n_rates((kg + kn) / max(g["n_scored"] + nn["n_scored"], 1), delta=MIN_RATE_EFFECT)
        out.append(Claim("Soligo et al. (judge): the KL-narrow solution has a lower out-of-domain EM rate than the general one",
                         stats.verdict(est, -1, min_n=need),
                         f"judge OOD EM rate general {kg}/{g['n_scored']}, narrow {kn}/{nn['n_scored']}; {fmt(est)}; "
                         f"n = {est.n} (power floor {need}); base {j['base']['out_of_domain']['em_rate']}", est.test))
    grid = s.efficiency_curve
    i = list(s.norm_factors or [0.0, 0.25, 0.5, 1.0]).index(1.0)  # equal norm = the mean trained norm
    est = stats.point_difference(grid["general"]["loss"][i], grid["narrow"]["loss"][i])
    out.append(Claim("Soligo et al.: the general solution has lower loss at equal norm", stats.verdict(est, -1),
                     f"loss at norm {grid['general']['norms'][i]:.3g}: general {grid['general']['loss'][i]:.4f}, narrow {grid['narrow']['loss'][i]:.4f} "
                     f"(difference {grid['general']['loss'][i] - grid['narrow']['loss'][i]:+.2g}; point estimate, no test)", est.test))
    out.append(_stability_claim(s))
    kl = s.generic_kl
    est = stats.point_difference(kl["general"]["kl"][i], kl["narrow"]["kl"][i])
    out.append(Claim("Soligo et al.: the general solution influences generic text more", stats.verdict(est, +1),
                     f"KL per token at equal norm: general {kl['general']['kl'][i]:.4f}, narrow {kl['narrow']['kl'][i]:.4f}, random "
                     f"{kl['general_random']['kl'][i]:.4f} (difference {kl['general']['kl'][i] - kl['narrow']['kl'][i]:+.2g}; point estimate, no test)",
                     est.test))
    return out


def _stability_claim(s: SolutionsResult) -> Claim:
    """General more stable than narrow at ε = 0.5: the paired per-seed differences R_general − R_narrow, bootstrap CI
    over seeds (the power floor: :data:`interp.solutions.MIN_PAIRED_SEEDS`)."""
    from interp.solutions import MIN_PAIRED_SEEDS

    text = "Soligo et al.: the general solution is more stable (lower R(0.5))"
    st = s.stability
    j = st["general"]["eps"].index(0.5) if 0.5 in st["general"]["eps"] else -1
    gm, gs, nm, ns = st["general"]["mean"][j], st["general"]["sd"][j], st["narrow"]["mean"][j], st["narrow"]["sd"][j]
    sp = s.stability_paired
    desc = f"R(0.5) general {gm:.1f} ± {gs:.1f} %, narrow {nm:.1f} ± {ns:.1f} % (mean ± sd over paired seeds)"
    if sp and sp.get("first") == "general" and all(math.isfinite(x) for x in sp["diff"][j]):
        est = stats.paired_bootstrap(sp["diff"][j])
        est = stats.Estimate(est.test.replace("items", "seeds"), est.estimate, est.ci_low, est.ci_high, est.p, est.n)
        return Claim(text, stats.verdict(est, -1, min_n=MIN_PAIRED_SEEDS),
                     f"{desc}; paired {fmt(est)}; n = {sp['n_seeds']} seeds (power floor {MIN_PAIRED_SEEDS})", est.test)
    est = stats.point_difference(gm, nm)
    return Claim(text, stats.verdict(est, -1), f"{desc}; difference {gm - nm:+.2g}; point estimate, no test", est.test)
