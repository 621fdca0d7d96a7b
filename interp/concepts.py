"""Concept vectors (definition 2): one vector per domain per layer, and their per-layer cosine matrices."""

from __future__ import annotations

import json
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
