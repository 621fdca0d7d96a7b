"""Refusal in language models is mediated by a single direction (Arditi et al. 2024), as published.

Method (one function per step):
1. :func:`split_prompts` — train / validation / held-out test prompts per domain and class (harmful, harmless);
2. :func:`select` — the published pipeline (:func:`interp.selection.refusal_direction`): train and validation
   prompts filtered by the organism's own refusal score, mean-difference candidates at every post-instruction
   position × every swept layer below 80 % depth, filters KL ≤ 0.1 on harmless prompts, steering score > 0, then
   the lowest ablation refusal score; with nothing passing, a relaxed-KL candidate is kept as *exploratory* only.
   The harmless prompts of the two filters are generic everyday requests (:func:`filter_prompts`), as published:
   andyrdt/refusal_direction draws its ``harmless_val`` (KL and steering) from Alpaca's validation split, not from
   prompts that share the harmful ones' topics;
3. :func:`ablation_experiment` — held-out evaluation over every domain of the selected (layer, position) row:
   ablation on harmful prompts, activation addition on harmless ones, a norm-matched random direction for both,
   and coherence beside each condition (definition 14);
4. :func:`claims` — the claims, paired (exact McNemar) over the same prompts; only a direction that passed
   the published filters can reproduce them.

Deviations, on purpose: the candidates' mean differences take the *topic-matched* harmless train prompts (each
harmful topic's benign neighbour in the same phrasing; the published code uses Alpaca), so a candidate is not a
"harmful topic" or "phrasing" direction (data v2, issue 14); the held-out addition is measured on the topic-matched
harmless test prompts of every domain *and* (``Config.generic_test``) on generic everyday requests, the published
test's kind (Alpaca's test split there) — topic neighbours sit nearer the refusal boundary, so refusal is easier
to induce on them, and the generic set is the paper's own test of "adding it makes harmless prompts refused".
``Config.filter_harmless="domains"`` runs the filters on the topic-matched harmless validation prompts too — a
stricter filter than published (those prompts sit near the organism's refusal boundary, so a mediating
direction's ablation flips some of them and its mean KL rises), what this project used before 2026-12-08.
"""

from __future__ import annotations

import contextlib
import functools
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch

from figures import plots
from interp.directions import Directions
from interp.interventions import ablate, steer
from interp.io import InputError, versions, write_json
from interp.models import Model
from interp.selection import NO_DIRECTION, Selection, refusal_direction, select_direction
from probes import datasets
from probes.refusal import coherence, degeneration_rate, generate_and_score, generic_ce, is_refusal, refusal_tokens

from training.planted import planted_check

from .claims import Claim, outcomes, rate_claim
from .stats import wilson


def layer_sweep(model: Model, directions: Directions, harmful: Sequence, harmless: Sequence, out: str | Path, *,
                positions: Sequence[int] | None = (-1,), layers: Sequence[int] | None = None, kl_threshold: float = 0.1,
                batch_size: int = 16, **select_kw) -> Selection:
    """Selection sweep over layers (and offsets) → ``out/selection.json`` and ``out/layer_sweep.{png,pdf}``.
    ``select_kw`` goes to :func:`interp.selection.select_direction` (default here: ``fallback="relaxed_kl"``, kept
    apart as exploratory; pass ``early_stop=False`` for a fully scored figure)."""
    out = Path(out)
    select_kw.setdefault("fallback", "relaxed_kl")
    sel = select_direction(model, directions, harmful, harmless, refusal_tokens=refusal_tokens(model.tokenizer),
                           positions=positions, layers=layers, kl_threshold=kl_threshold, batch_size=batch_size, **select_kw)
    sel.save(out / "selection.json")
    d = sel.to_dict()
    plots.layer_sweep(d["table"], d["baseline"], out / "layer_sweep", kl_threshold=kl_threshold, title=f"{model.name}: refusal-direction sweep")
    return sel


def _measure(model: Model, items: Sequence, max_new_tokens: int, batch_size: int) -> dict:
    return measure_groups(model, {"all": list(items)}, max_new_tokens, batch_size)["all"]


def measure_groups(model: Model, groups: dict[str, list], max_new_tokens: int, batch_size: int = 16) -> dict:
    """Refusal rate (Wilson CI) and first-token score per group from one batched ``generate`` over all groups
    together (length-sorted batches are fuller than per-group calls); the score comes from its prefill logits.
    Per prompt (input order) it keeps ``refusals`` (bools, so two conditions on the same prompts can be compared
    pairwise — exact McNemar), ``scores`` and ``degenerate`` (the :func:`probes.refusal.degeneration` reason or
    None), beside the group's ``degeneration_rate``."""
    items = [x for g in groups.values() for x in g]
    texts, scores = generate_and_score(model, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
    out, i = {}, 0
    for name, g in groups.items():
        t, sc = texts[i : i + len(g)], scores[i : i + len(g)]
        i += len(g)
        refused = [is_refusal(x) for x in t]
        k = sum(refused)
        deg = degeneration_rate(t, g)
        out[name] = {"refusal_rate": k / len(t), "rate_ci95": list(wilson(k, len(t)).ci), "n": len(t), "refusals": refused,
                     "score_mean": sc.mean().item(), "score_sd": sc.std().item() if len(t) > 1 else 0.0, "examples": t[:3],
                     "scores": sc.tolist(), "degeneration_rate": deg["rate"], "degenerate": deg["per_item"]}
    return out


GENERIC = "generic"  # the group of generic held-out requests in :func:`ablation_experiment`


def ablation_experiment(model: Model, direction: torch.Tensor, layer: int, harmful: dict[str, list], harmless: dict[str, list],
                        out: str | Path, *, alpha: float = 1.0, seed: int = 0, max_new_tokens: int = 24, batch_size: int = 16,
                        prose: Sequence[str] | None = None, generic: Sequence[str] = (), meta: dict | None = None) -> dict:
    """Held-out evaluation of a refusal direction (Arditi et al.), per domain: baseline, the direction ablated at
    every layer (harmful prompts), the direction added at ``layer`` × ``alpha`` (harmless prompts), and a
    norm-matched random direction ablated / added the same way.

    ``harmful`` / ``harmless``: domain → held-out prompts (every domain given is evaluated). Each cell keeps the
    per-prompt ``refused`` booleans in prompt order — the same prompts under every condition, so conditions can be
    compared with paired (McNemar) tests — and the per-prompt degeneration reasons. ``res["coherence"][condition]``
    holds definition 14 beside each intervention: KL(base ‖ intervened) on the pooled harmless prompts, the
    degeneration rate of the condition's generations, and with ``prose`` the generic-text cross-entropy under the
    intervention and without it. ``generic``: held-out generic requests, measured like the harmless prompts
    (baseline / steered / random steered) as their own group, ``res["generic"]``, outside the coherence pool.
    ``meta`` (e.g. the selection status, the candidate's (layer, pos), an exploratory label) goes into
    ``res["config"]``. Writes ``out/ablation.json`` and two bar-chart figures.
    """
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(direction.shape[0], generator=g, dtype=torch.float64)
    rand = (rand / rand.norm() * direction.double().norm()).float()
    res: dict = {"harmful": {d: {} for d in harmful}, "harmless": {d: {} for d in harmless}, "coherence": {}}
    harmless_all = [x for v in harmless.values() for x in v]
    interventions = {"baseline": contextlib.nullcontext, "ablated": lambda: ablate(model, direction),
                     "random_ablated": lambda: ablate(model, rand),
                     "steered": lambda: steer(model, direction, layers=[layer], alpha=alpha),
                     "random_steered": lambda: steer(model, rand, layers=[layer], alpha=alpha)}

    def record(kind: str, cond: str, groups: dict) -> None:
        extra = {GENERIC: list(generic)} if generic and kind == "harmless" else {}
        with interventions[cond]():
            cells = measure_groups(model, {**groups, **extra}, max_new_tokens, batch_size)
        if extra:
            res.setdefault("generic", {})[cond] = cells.pop(GENERIC)
        for d, r in cells.items():
            res[kind][d][cond] = r
        per = [x for r in cells.values() for x in r["degenerate"]]
        c = res["coherence"].setdefault(cond, {})
        c[f"degeneration_rate_{kind}"] = sum(x is not None for x in per) / len(per)
        if cond == "baseline":
            return
        if "harmless_kl_mean" not in c:
            c.update(coherence(model, interventions[cond], harmless_all, batch_size=batch_size))
            if prose is not None:
                with interventions[cond]():
                    c["generic_ce"] = generic_ce(model, prose, batch_size=batch_size)["ce"]

    for cond in ("baseline", "ablated", "random_ablated"):
        record("harmful", cond, harmful)
    for cond in ("baseline", "steered", "random_steered"):
        record("harmless", cond, harmless)
    if prose is not None:
        res["coherence"]["baseline"]["generic_ce"] = generic_ce(model, prose, batch_size=batch_size)["ce"]
    res["config"] = {"model": model.name, "layer": layer, "alpha": alpha, "seed": seed, "direction_norm": direction.norm().item(),
                     "max_new_tokens": max_new_tokens, "n_prose": len(prose) if prose is not None else 0, **(meta or {}),
                     "wall_s": round(time.time() - t0, 1), "versions": versions()}
    out = Path(out)
    write_json(out / "ablation.json", res)
    for kind in ("harmful", "harmless"):
        conds = list(next(iter(res[kind].values())))
        vals = {c: {d: res[kind][d][c]["refusal_rate"] for d in res[kind]} for c in conds}
        errs = {c: {d: (res[kind][d][c]["rate_ci95"][1] - res[kind][d][c]["rate_ci95"][0]) / 2 for d in res[kind]} for c in conds}
        plots.grouped_bars(vals, out / f"ablation_{kind}", ylabel="refusal rate", errors=errs,
                           title=f"{kind} prompts: refusal rate (95 % Wilson CI)")
    return res


@dataclass
class Config:
    """Every setting of the refusal-direction stage (Arditi et al.'s defaults where they apply)."""

    train_per_domain: int = 12  # train prompts per domain and class (the candidates' mean differences)
    val_per_domain: int = 6  # validation prompts per domain and class (the selection sweep)
    eval_per_domain: int = 6  # held-out test prompts per domain and class (the evaluation)
    domains: tuple = datasets.DOMAINS
    sweep_stride: int = 1  # every k-th layer is a candidate (1 = every layer, as published)
    max_layer_frac: float = 0.8  # candidates below this share of the depth
    kl_threshold: float = 0.1  # KL(organism ‖ ablated) on harmless validation prompts
    steering_threshold: float = 0.0  # the steering (addition) refusal score must exceed it
    filter_by_refusal: bool = True  # keep train / val prompts by the organism's own refusal score (published)
    # the harmless validation prompts of the KL and steering filters: "generic" — the first ``generic_val`` of the
    # `baseline` requests' validation split (everyday instructions, as the published code's Alpaca validation draw);
    # "domains" — the domains' topic-matched harmless validation prompts (``val_per_domain`` each; stricter than published)
    filter_harmless: Literal["generic", "domains"] = "generic"
    generic_val: int = 32  # generic harmless validation prompts (the published n_val = 32; the split holds 40)
    generic_test: int = 32  # generic held-out requests (the first of the `baseline` test split's 40) for the addition as published; 0 = off
    fallback: str | None = "relaxed_kl"  # with nothing passing: an exploratory candidate (never counted)
    alpha: float = 1.0  # activation-addition coefficient (× the direction, at its layer)
    gen_tokens: int = 24  # generated tokens per held-out prompt
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.filter_harmless not in FILTER_HARMLESS:
            raise InputError(f"refusal.filter_harmless must be one of {', '.join(map(repr, FILTER_HARMLESS))}, got {self.filter_harmless!r}")
        n = _baseline_size("val")
        if isinstance(self.generic_val, bool) or not isinstance(self.generic_val, int) or not 1 <= self.generic_val <= n:
            raise InputError(f"refusal.generic_val must be an integer in 1 … {n} (the `baseline` validation split), got {self.generic_val!r}")
        n = _baseline_size("test")
        if isinstance(self.generic_test, bool) or not isinstance(self.generic_test, int) or not 0 <= self.generic_test <= n:
            raise InputError(f"refusal.generic_test must be an integer in 0 … {n} (the `baseline` test split), got {self.generic_test!r}")


@functools.lru_cache(maxsize=None)
def _baseline_size(split: str) -> int:
    """Prompts in the shipped `baseline` set's ``split`` (read once: every Config construction checks against it)."""
    return len(datasets.prompts("baseline", split))


FILTER_HARMLESS = typing.get_args(typing.get_type_hints(Config)["filter_harmless"])


@dataclass
class Result:
    """The selection (``status``, ``selected_by_filters``, ``filtering``, ``baseline``; ``layer`` / ``pos`` /
    ``candidate`` of the evaluated row, ``None`` when nothing was evaluated; ``kl_threshold_used``) and the
    held-out evaluation: ``harmful`` / ``harmless`` (domain → condition → refusal rate), ``outcomes`` (the
    per-prompt refusals, the same prompts in every condition), ``coherence`` (condition → KL, degeneration),
    ``n_per_cell``."""

    status: str = ""
    selected_by_filters: bool = False
    filtering: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    n_per_cell: int = 0
    layer: int | None = None
    pos: int | None = None
    candidate: dict | None = None
    kl_threshold_used: float | None = None
    coherence: dict | None = None
    harmful: dict = field(default_factory=dict)
    harmless: dict = field(default_factory=dict)
    outcomes: dict | None = None
    figures: list = field(default_factory=list)
    planted: dict | None = None  # organisms with a planted direction: {layer, selected_layer, cosine} (a positive control)
    filter_harmless: str = ""  # which harmless validation prompts the KL and steering filters used (Config.filter_harmless)
    generic: dict = field(default_factory=dict)  # the addition on generic held-out requests: condition → refusal rate, "n"


def domain_prompts(label: str, split: str, n: int, domains: Sequence[str] = datasets.DOMAINS) -> dict[str, list]:
    """Domain → the first ``n`` prompts of ``{domain}_{label}`` (label ``harmful`` / ``harmless``) in ``split``."""
    return {d: datasets.prompts(f"{d}_{label}", split, n) for d in domains}


def split_prompts(config: Config) -> dict[str, dict[str, dict[str, list]]]:
    """Step 1: ``{"train" | "val" | "test": {"harmful" | "harmless": domain → prompts}}``."""
    n = {"train": config.train_per_domain, "val": config.val_per_domain, "test": config.eval_per_domain}
    return {s: {c: domain_prompts(c, s, k, config.domains) for c in ("harmful", "harmless")} for s, k in n.items()}


def filter_prompts(prompts: dict, config: Config) -> list:
    """The harmless validation prompts of the KL and steering filters (``config.filter_harmless``): the first
    ``config.generic_val`` generic `baseline` validation requests, or every domain's topic-matched harmless
    validation prompts."""
    if config.filter_harmless == "generic":
        return datasets.prompts("baseline", "val", config.generic_val)
    return [x for v in prompts["val"]["harmless"].values() for x in v]


def candidate_layers(model: Model, config: Config) -> list[int]:
    """Every ``sweep_stride``-th layer below ``max_layer_frac`` of the depth (at least layer 0)."""
    return [l for l in range(0, model.n_layers, config.sweep_stride) if l < config.max_layer_frac * model.n_layers] or [0]


def select(model: Model, prompts: dict, config: Config) -> Selection:
    """Step 2: the published selection on the organism (see the module docstring)."""
    flat = lambda s, c: [x for v in prompts[s][c].values() for x in v]  # noqa: E731
    return refusal_direction(model, flat("train", "harmful"), flat("train", "harmless"), flat("val", "harmful"), filter_prompts(prompts, config),
                             refusal_tokens=refusal_tokens(model.tokenizer), layers=candidate_layers(model, config),
                             kl_threshold=config.kl_threshold, steering_threshold=config.steering_threshold,
                             max_layer_frac=config.max_layer_frac, steer_alpha=config.alpha, fallback=config.fallback,
                             filter_train=config.filter_by_refusal, filter_val=config.filter_by_refusal, batch_size=config.batch_size)


def run(model: Model, config: Config, out: str | Path, *, seed: int = 0) -> Result:
    """Select on validation prompts and evaluate the selected (layer, position) row on held-out prompts.
    Writes ``out/artifacts/refusal_direction.safetensors``, ``out/figures/refusal_sweep/selection.json`` and the
    sweep / ablation figures under ``out/figures``."""
    out = Path(out)
    prompts = split_prompts(config)
    sel = select(model, prompts, config)
    sel.directions.save(out / "artifacts" / "refusal_direction.safetensors")
    sweep = out / "figures" / "refusal_sweep"
    sel.save(sweep / "selection.json")
    table = sel.to_dict()
    figs = [str(f) for f in plots.layer_sweep(table["table"], table["baseline"], sweep / "layer_sweep", kl_threshold=config.kl_threshold,
                                                 title=f"{model.name}: refusal-direction sweep")]
    best = sel.best or (sel.exploratory or {}).get("candidate")
    res = Result(status=sel.status, selected_by_filters=sel.best is not None, filtering=sel.filtering, baseline=sel.baseline,
                 n_per_cell=config.eval_per_domain, figures=figs, filter_harmless=config.filter_harmless)
    if best is None:  # nothing passes and no exploratory candidate either: nothing to evaluate
        return res
    ev = ablation_experiment(model, sel.directions.vector(best.layer, best.pos), best.layer, prompts["test"]["harmful"],
                             prompts["test"]["harmless"], out / "figures" / "refusal_ablation", alpha=config.alpha,
                             max_new_tokens=config.gen_tokens, seed=seed, batch_size=config.batch_size,
                             generic=datasets.prompts("baseline", "test", config.generic_test) if config.generic_test else ())
    res.figures += [str(out / "figures" / "refusal_ablation" / f"ablation_{k}.png") for k in ("harmful", "harmless")]
    res.layer, res.pos = best.layer, best.pos
    res.kl_threshold_used = config.kl_threshold if sel.best else sel.exploratory["kl_threshold"]
    res.candidate = {"ablation_score": best.ablation_score, "steering_score": best.steering_score, "kl": best.kl}
    res.coherence = ev.get("coherence")
    res.planted = planted_check(model.name, sel.directions.vector(best.layer, best.pos), best.layer)
    res.harmful = {dom: {c: r[c]["refusal_rate"] for c in r} for dom, r in ev["harmful"].items()}
    res.harmless = {dom: {c: r[c]["refusal_rate"] for c in r} for dom, r in ev["harmless"].items()}
    # per-prompt outcomes, prompts in the same order in every condition: the claims' paired tests
    res.outcomes = {kind: {dom: {c: {"refusals": r[c]["refusals"]} for c in r} for dom, r in ev[kind].items()}
                    for kind in ("harmful", "harmless")}
    if "generic" in ev:
        res.generic = {**{c: r["refusal_rate"] for c, r in ev["generic"].items()}, "n": config.generic_test}
        res.outcomes["generic"] = {GENERIC: {c: {"refusals": r["refusals"]} for c, r in ev["generic"].items()}}
    return res


CLAIMS = ("Arditi et al.: ablating the refusal direction lowers refusal on harmful prompts",
          "Arditi et al.: … and a norm-matched random direction does not (ablated < random ablated)",
          "Arditi et al.: adding it makes harmless prompts refused",
          "Arditi et al.: … and generic everyday requests (the published test's kind)")


def claims(result: Result | dict) -> list[Claim]:
    """Arditi et al.'s claims (step 4): ablation lowers harmful refusal, more than a norm-matched random direction;
    addition induces refusal on the topic-matched harmless prompts and (where measured, ``Result.generic``) on
    generic requests. Only a direction that passed the published filters can reproduce them: with none, the
    verdict says so, and the exploratory candidate's numbers (if one was evaluated) are evidence only."""
    r = result if isinstance(result, Result) else Result(**result)
    if not r.harmful:  # nothing was evaluated
        return [Claim(c, "no", f"{NO_DIRECTION}, and no exploratory candidate to evaluate", "published selection filters") for c in CLAIMS]
    h, s, n = r.harmful, r.harmless, r.n_per_cell
    col = lambda table, c: {d: v[c] for d, v in table.items()}  # noqa: E731
    o = r.outcomes
    oh = (lambda c: outcomes(o["harmful"], c)) if o else (lambda c: None)  # noqa: E731
    os_ = (lambda c: outcomes(o["harmless"], c)) if o else (lambda c: None)  # noqa: E731
    out = [rate_claim(CLAIMS[0], col(h, "ablated"), col(h, "baseline"), n, names=("ablated", "baseline"), paired=(oh("ablated"), oh("baseline"))),
           rate_claim(CLAIMS[1], col(h, "ablated"), col(h, "random_ablated"), n, names=("ablated", "random ablated"),
                      paired=(oh("ablated"), oh("random_ablated"))),
           rate_claim(CLAIMS[2], col(s, "baseline"), col(s, "steered"), n, names=("baseline", "steered"), paired=(os_("baseline"), os_("steered")))]
    if r.generic:  # the addition on generic held-out requests (absent in results made before it was measured)
        g = {GENERIC: r.generic}
        og = (lambda c: outcomes(o["generic"], c)) if o and "generic" in o else (lambda c: None)  # noqa: E731
        out.append(rate_claim(CLAIMS[3], col(g, "baseline"), col(g, "steered"), r.generic["n"], names=("baseline", "steered"),
                              paired=(og("baseline"), og("steered"))))
    if r.planted:  # a positive control of the method, not evidence about how a model refuses by itself
        pc = r.planted
        note = (f" [positive control: this organism's refusal direction was planted by construction at block {pc['layer']} "
                f"(SafetyRecipe.plant_depth); the selected direction (layer {pc['selected_layer']}) has cosine {pc['cosine']:+.3f} with it]")
        out = [Claim(c.text, c.verdict, c.evidence + note, c.test) for c in out]
    if r.selected_by_filters:
        return out
    kl = r.kl_threshold_used if r.kl_threshold_used is not None else float("nan")
    where = f"exploratory candidate (layer {r.layer}, offset {r.pos if r.pos is not None else -1}, KL filter relaxed to ≤ {kl:.3g})"
    return [Claim(c.text, "no", f"{NO_DIRECTION}; {where}, not counted (its own verdict: {c.verdict}) — {c.evidence}", c.test) for c in out]
