"""Misalignment-direction layer by its effect (Soligo et al.): ablate each candidate layer's direction and keep
the layer whose ablation cuts the EM score most on held-out questions — not the layer with the largest raw norm
(the mean difference grows with depth, so the largest norm is ≈ the depth cap and says nothing about mediation).

Per candidate layer l with direction r_l (e.g. :func:`interp.directions.mean_diff` of misaligned − aligned
responses, ``position="response_mean"``, from the misaligned model):
- ``em_mean``: mean reference-answer EM score m (definition 12, :func:`probes.em_score.em_score`) on the questions
  with r̂_l ablated at every layer (definition 3, :func:`interp.interventions.ablate`);
- ``drop``: baseline mean m (nothing ablated) − ``em_mean`` (> 0: the ablation makes the misaligned answer less
  preferred). The best layer has the largest drop; every layer's effect is recorded.
Ablation uses the unit direction, so a direction's norm cannot influence the choice. Select on a validation split
and report the chosen direction's effect on other, held-out questions: the maximum over layers is biased upwards
on the questions it was chosen on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .directions import Directions
from .interventions import ablate
from .io import InputError, versions, write_json
from .models import Model


@dataclass
class LayerEffect:
    layer: int
    norm: float  # ‖r_l‖ (raw mean difference), recorded only
    em_mean: float  # mean m with r̂_l ablated
    share_positive: float  # share of questions with m > 0 with r̂_l ablated
    drop: float  # baseline mean m − em_mean


@dataclass
class LayerSweep:
    """Attributes: ``best`` (largest drop), ``table`` (every candidate layer), ``baseline`` (mean m, share > 0, n
    without ablation), ``random`` (a random unit direction ablated — the control at the best layer — or None)."""

    best: LayerEffect
    table: list[LayerEffect]
    baseline: dict
    random: dict | None = None
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"best": asdict(self.best), "table": [asdict(e) for e in self.table], "baseline": self.baseline,
                "random": self.random, "config": self.config}

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())


def misalignment_layer_sweep(
    model: Model,
    directions: Directions,
    questions: Sequence[dict],
    *,
    layers: Sequence[int] | None = None,
    max_layer_frac: float | None = None,
    pos: int = -1,
    paraphrase: int = 0,
    random_seed: int | None = 0,
    batch_size: int = 16,
    progress: bool | None = None,
) -> LayerSweep:
    """Sweep ``layers`` (default: every layer of ``directions``, below ``max_layer_frac`` of the depth when given)
    of the (misaligned) ``model``: ablate each layer's direction and measure the EM score on ``questions``
    (held-out records with ``aligned`` and ``misaligned`` reference answers). ``random_seed`` (None: skip) adds a
    random-direction ablation as the control."""
    from probes.em_score import em_score

    cands = list(directions.layers if layers is None else layers)
    if max_layer_frac is not None:
        if not 0 < max_layer_frac <= 1:
            raise InputError(f"max_layer_frac must lie in (0, 1], got {max_layer_frac!r}")
        cands = [l for l in cands if l < max_layer_frac * model.n_layers]
    if not cands:
        raise InputError("no candidate layer to sweep (check layers / max_layer_frac)")
    if directions.d_model != model.d_model:
        raise InputError(f"directions have width {directions.d_model} but {model.name} has d_model {model.d_model}")
    if not questions:
        raise InputError("the layer sweep needs held-out EM questions")
    kw = dict(batch_size=batch_size, paraphrase=paraphrase)
    base = em_score(model, list(questions), **kw)
    table = []
    for l in tqdm(cands, desc="layer sweep", disable=None if progress is None else not progress, leave=False):
        v = directions.vector(l, pos)
        n = float(v.double().norm())
        if not torch.isfinite(v).all() or n == 0:
            table.append(LayerEffect(l, n, float("nan"), float("nan"), float("nan")))
            continue
        with ablate(model, v):
            s = em_score(model, list(questions), **kw)
        table.append(LayerEffect(l, n, s.mean, s.share_positive, base.mean - s.mean))
    valid = [e for e in table if e.drop == e.drop]
    if not valid:
        raise InputError("every candidate direction is zero or non-finite")
    best = max(valid, key=lambda e: e.drop)
    rand = None
    if random_seed is not None:
        g = torch.Generator().manual_seed(random_seed)
        r = torch.randn(model.d_model, generator=g, dtype=torch.float64).float()
        with ablate(model, r):
            s = em_score(model, list(questions), **kw)
        rand = {"seed": random_seed, "em_mean": s.mean, "share_positive": s.share_positive, "drop": base.mean - s.mean}
    config = {"model": model.name, "n_layers": model.n_layers, "layers": cands, "max_layer_frac": max_layer_frac, "pos": pos,
              "paraphrase": paraphrase, "n_questions": len(base.ids),
              "direction_meta": {k: v for k, v in directions.meta.items() if k != "versions"}, "versions": versions()}
    return LayerSweep(best, table, {"em_mean": base.mean, "share_positive": base.share_positive, "n": len(base.ids), "ci95": list(base.ci95)},
                      rand, config)
