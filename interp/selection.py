"""Direction selection (Arditi et al.): score every candidate (layer × template offset) of a ``Directions`` set
on validation prompts and pick the best that passes the filters.

Per candidate r = r_{l,p}:
- ``ablation_score``: mean refusal score on harmful prompts with r̂ ablated at every layer (lower = better);
- ``steering_score``: mean refusal score on harmless prompts with r added at layer l (must exceed the baseline);
- ``kl``: mean KL(base ‖ ablated) of the next-token distribution on harmless prompts (≤ ``kl_threshold``).
Candidates in the last ``1 − max_layer_frac`` of layers are excluded. The best passing candidate has the lowest
ablation score. The whole table is returned and can be saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .directions import Directions
from .interventions import ablate, steer
from .io import InputError, versions, write_json
from .logits import kl_divergence, last_logprobs, token_set_logodds
from .models import Item, Model


@dataclass
class Candidate:
    layer: int
    pos: int
    ablation_score: float
    steering_score: float
    kl: float
    passed: bool
    reason: str = ""


@dataclass
class Selection:
    best: Candidate | None
    table: list[Candidate]
    baseline: dict
    config: dict = field(default_factory=dict)

    def relaxed(self, factor: float = 2.0, max_kl: float = 10.0) -> tuple[Candidate, float] | None:
        """When no candidate passes: the least-relaxed KL filter that admits one. The threshold is multiplied by
        ``factor`` until some candidate below the depth limit whose addition induces refusal has KL ≤ it (up to
        ``max_kl``); among those, the lowest ablation score. Returns (candidate, threshold used) or None.

        Small models can fail the 0.1 filter at every layer (SmolLM2-135M's mean difference is a quarter of the
        residual norm in the middle layers); relaxing KL least keeps the ablated model as coherent as possible,
        where taking the lowest ablation score outright picks layers whose ablation merely breaks the model."""
        max_layer = self.config.get("max_layer_frac", 0.8) * self.config.get("n_layers", float("inf"))
        ok = [c for c in self.table if c.layer < max_layer and c.kl == c.kl and c.steering_score == c.steering_score
              and c.steering_score > self.baseline["harmless_score"]]
        t = self.config.get("kl_threshold", 0.1)
        while ok and t <= max_kl:
            passing = [c for c in ok if c.kl <= t]
            if passing:
                return min(passing, key=lambda c: c.ablation_score), t
            t *= factor
        return None

    def to_dict(self) -> dict:
        return {"best": asdict(self.best) if self.best else None, "baseline": self.baseline, "config": self.config,
                "table": [asdict(c) for c in self.table]}

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())


def select_direction(
    model: Model,
    directions: Directions,
    harmful: Sequence[Item],
    harmless: Sequence[Item],
    *,
    refusal_tokens: Sequence[int],
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    kl_threshold: float = 0.1,
    max_layer_frac: float = 0.8,
    steer_alpha: float = 1.0,
    batch_size: int = 16,
    progress: bool | None = None,
) -> Selection:
    """Score candidates at ``layers`` (default: all in ``directions``) × ``positions`` (default: all offsets)."""
    if not harmful or not harmless:
        raise InputError("select_direction needs non-empty harmful and harmless validation prompts")
    if not refusal_tokens:
        raise InputError("refusal_tokens is empty")
    layers = list(directions.layers if layers is None else layers)
    positions = list(range(-directions.n_positions, 0) if positions is None else positions)
    for p in positions:
        if not -directions.n_positions <= p < directions.n_positions:
            raise InputError(f"position {p} out of range for {directions.n_positions} template offsets")
    kw = dict(batch_size=batch_size)
    base_harmless = last_logprobs(model, harmless, **kw)
    base = {
        "harmful_score": token_set_logodds(last_logprobs(model, harmful, **kw), refusal_tokens).mean().item(),
        "harmless_score": token_set_logodds(base_harmless, refusal_tokens).mean().item(),
    }
    max_layer = max_layer_frac * model.n_layers
    table = []
    cands = [(l, p) for p in positions for l in layers]
    for l, p in tqdm(cands, desc="selection", disable=None if progress is None else not progress, leave=False):
        vec = directions.vector(l, p)
        if not torch.isfinite(vec).all() or vec.norm() == 0:
            table.append(Candidate(l, p, float("nan"), float("nan"), float("nan"), False, "zero or non-finite direction"))
            continue
        with ablate(model, vec):
            abl = token_set_logodds(last_logprobs(model, harmful, **kw), refusal_tokens).mean().item()
            kl = kl_divergence(base_harmless, last_logprobs(model, harmless, **kw)).mean().item()
        with steer(model, vec, layers=[l], alpha=steer_alpha):
            st = token_set_logodds(last_logprobs(model, harmless, **kw), refusal_tokens).mean().item()
        reasons = []
        if l >= max_layer:
            reasons.append(f"layer ≥ {max_layer_frac:.0%} depth")
        if not kl <= kl_threshold:
            reasons.append(f"KL {kl:.3g} > {kl_threshold}")
        if not st > base["harmless_score"]:
            reasons.append("addition does not increase refusal")
        table.append(Candidate(l, p, abl, st, kl, not reasons, "; ".join(reasons)))
    passing = [c for c in table if c.passed]
    best = min(passing, key=lambda c: c.ablation_score) if passing else None
    config = {"model": model.name, "n_layers": model.n_layers, "n_harmful": len(harmful), "n_harmless": len(harmless), "kl_threshold": kl_threshold,
              "max_layer_frac": max_layer_frac, "steer_alpha": steer_alpha, "layers": layers, "positions": positions,
              "direction_meta": {k: v for k, v in directions.meta.items() if k != "versions"}, "versions": versions()}
    return Selection(best, table, base, config)
