"""Refusal-direction experiments (Arditi et al.): the layer sweep / selection, and the ablation experiment."""

from __future__ import annotations

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
from probes.refusal import generate_and_score, is_refusal, refusal_tokens

from . import plots


def layer_sweep(model: Model, directions: Directions, harmful: Sequence, harmless: Sequence, out: str | Path, *,
                positions: Sequence[int] | None = (-1,), layers: Sequence[int] | None = None, kl_threshold: float = 0.1,
                batch_size: int = 16) -> Selection:
    """Selection sweep over layers (and offsets) → ``out/selection.json`` and ``out/layer_sweep.{png,pdf}``."""
    out = Path(out)
    sel = select_direction(model, directions, harmful, harmless, refusal_tokens=refusal_tokens(model.tokenizer),
                           positions=positions, layers=layers, kl_threshold=kl_threshold, batch_size=batch_size)
    sel.save(out / "selection.json")
    d = sel.to_dict()
    plots.layer_sweep(d["table"], d["baseline"], out / "layer_sweep", kl_threshold=kl_threshold, title=f"{model.name}: refusal-direction sweep")
    return sel


def _measure(model: Model, items: Sequence, max_new_tokens: int, batch_size: int) -> dict:
    return measure_groups(model, {"all": list(items)}, max_new_tokens, batch_size)["all"]


def measure_groups(model: Model, groups: dict[str, list], max_new_tokens: int, batch_size: int = 16) -> dict:
    """Refusal rate (Wilson CI) and first-token score per group from one batched ``generate`` over all groups
    together (length-sorted batches are fuller than per-group calls); the score comes from its prefill logits.
    ``refusals`` keeps each prompt's outcome in input order, so two conditions on the same prompts can be
    compared pairwise (exact McNemar)."""
    items = [x for g in groups.values() for x in g]
    texts, scores = generate_and_score(model, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
    out, i = {}, 0
    for name, g in groups.items():
        t, sc = texts[i : i + len(g)], scores[i : i + len(g)]
        i += len(g)
        refused = [is_refusal(x) for x in t]
        k = sum(refused)
        out[name] = {"refusal_rate": k / len(t), "rate_ci95": list(wilson(k, len(t)).ci), "n": len(t), "refusals": refused,
                     "score_mean": sc.mean().item(), "score_sd": sc.std().item() if len(t) > 1 else 0.0, "examples": t[:3]}
    return out


def ablation_experiment(model: Model, direction: torch.Tensor, layer: int, harmful: dict[str, list], harmless: dict[str, list],
                        out: str | Path, *, alpha: float = 1.0, seed: int = 0, max_new_tokens: int = 24, batch_size: int = 16) -> dict:
    """Refusal rate and first-token score per domain for: baseline, direction ablated (harmful prompts),
    direction added at ``layer`` (harmless prompts), and a norm-matched random direction ablated / added.

    ``harmful`` / ``harmless``: domain → prompts. Writes ``out/ablation.json`` and two bar-chart figures.
    """
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(direction.shape[0], generator=g, dtype=torch.float64)
    rand = (rand / rand.norm() * direction.double().norm()).float()
    res: dict = {"harmful": {d: {} for d in harmful}, "harmless": {d: {} for d in harmless}}

    def record(kind: str, cond: str, groups: dict) -> None:
        for d, r in measure_groups(model, groups, max_new_tokens, batch_size).items():
            res[kind][d][cond] = r

    record("harmful", "baseline", harmful)
    with ablate(model, direction):
        record("harmful", "ablated", harmful)
    with ablate(model, rand):
        record("harmful", "random_ablated", harmful)
    record("harmless", "baseline", harmless)
    with steer(model, direction, layers=[layer], alpha=alpha):
        record("harmless", "steered", harmless)
    with steer(model, rand, layers=[layer], alpha=alpha):
        record("harmless", "random_steered", harmless)
    res["config"] = {"model": model.name, "layer": layer, "alpha": alpha, "seed": seed, "direction_norm": direction.norm().item(),
                     "max_new_tokens": max_new_tokens, "wall_s": round(time.time() - t0, 1), "versions": versions()}
    out = Path(out)
    write_json(out / "ablation.json", res)
    for kind in ("harmful", "harmless"):
        conds = list(next(iter(res[kind].values())))
        vals = {c: {d: res[kind][d][c]["refusal_rate"] for d in res[kind]} for c in conds}
        errs = {c: {d: (res[kind][d][c]["rate_ci95"][1] - res[kind][d][c]["rate_ci95"][0]) / 2 for d in res[kind]} for c in conds}
        plots.grouped_bars(vals, out / f"ablation_{kind}", ylabel="refusal rate", errors=errs,
                           title=f"{kind} prompts: refusal rate (95 % Wilson CI)")
    return res
