"""Refusal-direction experiments (Arditi et al.): the layer sweep / selection, and the ablation experiment."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Sequence

import torch

from experiments.stats import wilson
from interp.directions import Directions
from interp.interventions import ablate, steer
from interp.io import versions, write_json
from interp.models import Model
from interp.selection import Selection, select_direction
from probes.refusal import coherence, degeneration_rate, generate_and_score, generic_ce, is_refusal, refusal_tokens

from . import plots


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


def ablation_experiment(model: Model, direction: torch.Tensor, layer: int, harmful: dict[str, list], harmless: dict[str, list],
                        out: str | Path, *, alpha: float = 1.0, seed: int = 0, max_new_tokens: int = 24, batch_size: int = 16,
                        prose: Sequence[str] | None = None, meta: dict | None = None) -> dict:
    """Held-out evaluation of a refusal direction (Arditi et al.), per domain: baseline, the direction ablated at
    every layer (harmful prompts), the direction added at ``layer`` × ``alpha`` (harmless prompts), and a
    norm-matched random direction ablated / added the same way.

    ``harmful`` / ``harmless``: domain → held-out prompts (every domain given is evaluated). Each cell keeps the
    per-prompt ``refused`` booleans in prompt order — the same prompts under every condition, so conditions can be
    compared with paired (McNemar) tests — and the per-prompt degeneration reasons. ``res["coherence"][condition]``
    holds definition 14 beside each intervention: KL(base ‖ intervened) on the pooled harmless prompts, the
    degeneration rate of the condition's generations, and with ``prose`` the generic-text cross-entropy under the
    intervention and without it. ``meta`` (e.g. the selection status, the candidate's (layer, pos), an exploratory
    label) goes into ``res["config"]``. Writes ``out/ablation.json`` and two bar-chart figures.
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
        with interventions[cond]():
            cells = measure_groups(model, groups, max_new_tokens, batch_size)
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
