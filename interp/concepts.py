"""Concept vectors (definition 2): one vector per domain per layer, and their per-layer cosine matrices."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .activations import Backend, Position, mean_activations
from .io import InputError, atomic_path, versions
from .models import Item, Model


@dataclass
class ConceptVectors:
    """Attributes:
    names: concept names, in order.
    vectors: ``[n_concepts, n_layers, d_model]`` float64 — v_{c,l} = mean over c's prompts − mean over baseline.
    layers: model layer index of each layer row.
    """

    names: list[str]
    vectors: torch.Tensor
    layers: list[int]
    meta: dict = field(default_factory=dict)

    def cosine(self) -> torch.Tensor:
        """S_l[c, c'] = cos(v_{c,l}, v_{c',l}) → ``[n_layers, n_concepts, n_concepts]`` float64."""
        v = self.vectors.transpose(0, 1)  # [L, C, d]
        n = v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        u = v / n
        return u @ u.transpose(1, 2)

    def similarity_to(self, target: str) -> torch.Tensor:
        """``[n_layers, n_concepts]``: cosine of every concept with ``target`` at each layer."""
        if target not in self.names:
            raise InputError(f"unknown concept {target!r}; have {', '.join(self.names)}")
        return self.cosine()[:, self.names.index(target)]

    def save(self, path: str | Path) -> Path:
        """Write vectors (safetensors), cosine matrices and metadata (JSON) atomically."""
        from safetensors.torch import save_file

        path = Path(path).with_suffix(".safetensors")
        meta = {**self.meta, "names": self.names, "layers": self.layers, "cosine": self.cosine().tolist()}
        with atomic_path(path) as tmp, atomic_path(path.with_suffix(".json")) as tmp_json:
            save_file({"vectors": self.vectors.contiguous()}, str(tmp))
            tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ConceptVectors":
        from safetensors.torch import load_file

        path = Path(path).with_suffix(".safetensors")
        if not path.is_file():
            raise InputError(f"{path}: no such concept-vectors file")
        meta = json.loads(path.with_suffix(".json").read_text())
        names, layers = meta.pop("names"), meta.pop("layers")
        meta.pop("cosine", None)
        return cls(names, load_file(str(path))["vectors"], layers, meta)


def concept_vectors(
    model: Model,
    concepts: Mapping[str, Sequence[Item]],
    baseline: Sequence[Item],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "last_prompt",
    batch_size: int = 16,
    backend: Backend = "hooks",
) -> ConceptVectors:
    """One vector per concept per layer against a shared baseline set (baseline mean computed once)."""
    if not concepts:
        raise InputError("concepts is empty: need at least one named prompt set")
    for name, items in concepts.items():
        if len(items) == 0:
            raise InputError(f"concept {name!r} has no prompts")
    if len(baseline) == 0:
        raise InputError("baseline is empty")
    layers = model.check_layers(layers)
    kw = dict(layers=layers, position=position, batch_size=batch_size, backend=backend)
    base = mean_activations(model, baseline, **kw)
    if base.dim() == 3:  # post_instruction: use the last template offset
        base = base[-1]
    rows = []
    for items in concepts.values():
        m = mean_activations(model, items, **kw)
        rows.append((m[-1] if m.dim() == 3 else m) - base)
    meta = {
        "model": model.name,
        "position": position,
        "counts": {k: len(v) for k, v in concepts.items()},
        "n_baseline": len(baseline),
        "versions": versions(),
    }
    return ConceptVectors(list(concepts), torch.stack(rows), layers, meta)


def similarity_effect_correlation(similarity: torch.Tensor, effect: Sequence[float]) -> torch.Tensor:
    """Spearman rank correlation, per layer, between a target's similarity to each domain and an effect.

    Args:
        similarity: ``[n_layers, n_domains]`` (e.g. :meth:`ConceptVectors.similarity_to` without the target column).
        effect: ``[n_domains]`` (e.g. the refusal drop per domain, definition 13).
    Returns ``[n_layers]`` float64.
    """
    from scipy.stats import spearmanr

    eff = torch.as_tensor(effect, dtype=torch.float64)
    if similarity.shape[-1] != eff.shape[0]:
        raise InputError(f"similarity has {similarity.shape[-1]} domains but effect has {eff.shape[0]}")
    return torch.tensor([spearmanr(row.numpy(), eff.numpy()).statistic for row in similarity.double()], dtype=torch.float64)


@dataclass
class RankCorrelation:
    """Spearman ρ with a two-sided permutation p-value over pairings of the two samples (scipy's
    ``permutation_test``) — exact over all n! pairings (``method="exact"``), or Monte-Carlo with ``n_perm`` seeded
    draws (``method="monte-carlo"``). ``rho`` and ``p`` are NaN when either sample is constant."""

    rho: float
    p: float
    n: int
    method: str
    n_perm: int
    seed: int


def spearman_permutation(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor, *, n_perm: int = 10_000, seed: int = 0,
                         exact_max_n: int = 8) -> RankCorrelation:
    """Spearman rank correlation of paired samples ``x``, ``y`` (``[n]`` each; ties → average ranks) with a
    two-sided permutation p-value from ``scipy.stats.permutation_test`` over pairings: exact when n ≤
    ``exact_max_n`` (8! = 40,320 pairings), else ``n_perm`` seeded random pairings."""
    import numpy as np
    from scipy.stats import permutation_test, spearmanr

    xs, ys = torch.as_tensor(x, dtype=torch.float64).flatten(), torch.as_tensor(y, dtype=torch.float64).flatten()
    if xs.shape != ys.shape:
        raise InputError(f"spearman_permutation needs paired samples of one length, got {xs.shape[0]} and {ys.shape[0]}")
    n = int(xs.shape[0])
    if n < 3:
        raise InputError(f"a rank correlation with a permutation p-value needs ≥ 3 pairs, got {n}")
    if not (torch.isfinite(xs).all() and torch.isfinite(ys).all()):
        raise InputError("spearman_permutation: the samples hold NaN or infinite values")
    if isinstance(n_perm, bool) or not isinstance(n_perm, int) or n_perm < 1:
        raise InputError(f"n_perm must be an integer ≥ 1, got {n_perm!r}")
    exact = n <= exact_max_n
    method, draws = ("exact", math.factorial(n)) if exact else ("monte-carlo", n_perm)
    if bool((xs == xs[0]).all()) or bool((ys == ys[0]).all()):
        return RankCorrelation(float("nan"), float("nan"), n, method, draws, seed)
    xa, ya = xs.numpy(), ys.numpy()
    rho = lambda a: spearmanr(a, ya).statistic  # noqa: E731
    res = permutation_test((xa,), rho, permutation_type="pairings", n_resamples=draws if exact else n_perm,
                           alternative="two-sided", rng=np.random.default_rng(seed))
    return RankCorrelation(float(rho(xa)), float(res.pvalue), n, method, draws, seed)


@dataclass
class Entanglement:
    """Per-layer rank correlation between a target's concept similarity to each other domain and that domain's
    refusal drop after unlearning the target (Mushtaq et al.'s concept-entanglement statistic).

    Attributes:
        layers: model layer of each row; ``rho`` / ``p``: Spearman ρ and its permutation p-value per layer (raw,
            not corrected for the number of layers); ``n``: domains correlated; ``method`` / ``n_perm`` / ``seed``:
            how p was computed; ``domains``: their names, when given.
    """

    layers: list[int]
    rho: list[float]
    p: list[float]
    n: int
    method: str
    n_perm: int
    seed: int
    domains: list[str] = field(default_factory=list)


def similarity_ema_correlation(similarity: torch.Tensor, ema: Sequence[float], *, layers: Sequence[int] | None = None,
                               domains: Sequence[str] | None = None, n_perm: int = 10_000, seed: int = 0) -> Entanglement:
    """Spearman ρ per layer between S_l[target, d] and the refusal drop −EMA_d of each other domain d, with a
    permutation p-value (:func:`spearman_permutation`, same seed at every layer).

    Args:
        similarity: ``[n_layers, n_domains]`` — :meth:`ConceptVectors.similarity_to` (target) with the target's
            own column removed.
        ema: ``[n_domains]`` EMA per domain (definition 13: refusal after unlearning − refusal of the aligned
            organism; negative = refusal lost). The correlation is taken with the drop −EMA, so ρ > 0 is the paper's
            finding: the more similar a domain is to the target, the more refusal it loses.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    drop = -torch.as_tensor(ema, dtype=torch.float64).flatten()
    if sim.dim() != 2 or sim.shape[1] != drop.shape[0]:
        raise InputError(f"similarity must be [n_layers, n_domains] with one column per EMA value ({drop.shape[0]}), "
                         f"got {list(sim.shape)}")
    if layers is not None and len(layers) != sim.shape[0]:
        raise InputError(f"{len(layers)} layer labels for {sim.shape[0]} similarity rows")
    if domains is not None and len(domains) != drop.shape[0]:
        raise InputError(f"{len(domains)} domain names for {drop.shape[0]} EMA values")
    rows = [spearman_permutation(row, drop, n_perm=n_perm, seed=seed) for row in sim]
    return Entanglement(list(layers) if layers is not None else list(range(sim.shape[0])), [r.rho for r in rows], [r.p for r in rows],
                        rows[0].n, rows[0].method, rows[0].n_perm, seed, list(domains or []))
