"""Mean-difference directions (definition 1): refusal (harmful − harmless prompts) and misalignment
(misaligned − aligned responses), at every layer, saved as safetensors + JSON metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .activations import Backend, Position, mean_activations
from .io import InputError, atomic_path, versions
from .models import Item, Model


@dataclass
class Directions:
    """Per-layer direction vectors.

    Attributes:
        vectors: ``[n_positions, n_layers, d_model]`` float32 — ``n_positions`` is 1 except for
            ``post_instruction`` (one direction per template offset, the last offset = last prompt token).
        layers: the model layer index of each row of ``vectors``' layer axis.
        meta: model, position, counts, seed, versions, …
    """

    vectors: torch.Tensor
    layers: list[int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.dim() == 2:
            self.vectors = self.vectors[None]
        if self.vectors.dim() != 3 or self.vectors.shape[1] != len(self.layers):
            raise InputError(f"directions must be [n_positions, n_layers, d_model] (or [n_layers, d_model]) with one row per "
                             f"layer in layers ({len(self.layers)}); got shape {tuple(self.vectors.shape)}")

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def n_positions(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def norms(self) -> torch.Tensor:
        """``[n_positions, n_layers]`` L2 norms."""
        return self.vectors.norm(dim=-1)

    def vector(self, layer: int, pos: int = -1) -> torch.Tensor:
        """The raw direction ``[d_model]`` at model layer ``layer`` (and template offset ``pos``)."""
        if layer not in self.layers:
            raise InputError(f"layer {layer} not in these directions (layers {self.layers[0]}…{self.layers[-1]})")
        if not -self.n_positions <= pos < self.n_positions:
            raise InputError(f"position {pos} not in these directions: they hold {self.n_positions} template offset(s), "
                             f"pos -{self.n_positions}…-1")
        return self.vectors[pos, self.layers.index(layer)]

    def unit(self, layer: int, pos: int = -1) -> torch.Tensor:
        """The unit direction ``[d_model]`` at ``layer``; a zero vector raises."""
        v = self.vector(layer, pos)
        n = v.norm()
        if not torch.isfinite(n) or n == 0:
            raise InputError(f"direction at layer {layer} has norm {n.item()}: cannot normalise")
        return v / n

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors) and ``path.json`` (metadata) atomically; returns ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        meta = {**self.meta, "layers": self.layers, "shape": list(self.vectors.shape)}
        with atomic_path(path) as tmp, atomic_path(path.with_suffix(".json")) as tmp_json:
            save_file({"vectors": self.vectors.contiguous().float()}, str(tmp), metadata={"em_interp": "directions"})
            tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, *, model: Model | None = None) -> "Directions":
        """Load directions from a file, or from the directory ``em-interp directions`` wrote (its
        ``directions.safetensors``); with ``model`` given, check that its width and depth match."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir():
            path = path / "directions.safetensors"
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise InputError(f"{path}: no such directions file")
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        vectors = load_file(str(path))["vectors"]
        layers = list(meta.pop("layers", range(vectors.shape[1])))
        meta.pop("shape", None)
        d = cls(vectors, layers, meta)
        if model is not None:
            if d.d_model != model.d_model:
                raise InputError(f"{path}: directions have d_model {d.d_model} but {model.name} has {model.d_model}")
            if max(layers) >= model.n_layers:
                raise InputError(f"{path}: directions reach layer {max(layers)} but {model.name} has {model.n_layers} layers")
        return d


def mean_diff(
    model: Model,
    positive: Sequence[Item],
    negative: Sequence[Item],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "last_prompt",
    batch_size: int = 16,
    backend: Backend = "hooks",
    meta: dict | None = None,
) -> Directions:
    """r_l = mean(positive) − mean(negative) at each layer (means in float64, stored as float32).

    Refusal direction: ``positive`` = harmful prompts, ``negative`` = harmless prompts, ``position="last_prompt"``
    or ``"post_instruction"``. Misalignment direction: misaligned vs aligned chats, ``position="response_mean"``.
    """
    if len(positive) == 0 or len(negative) == 0:
        raise InputError(f"mean_diff needs both sets non-empty (positive: {len(positive)}, negative: {len(negative)})")
    layers = model.check_layers(layers)
    kw = dict(layers=layers, position=position, batch_size=batch_size, backend=backend)
    pos_mean = mean_activations(model, positive, **kw)
    neg_mean = mean_activations(model, negative, **kw)
    assert pos_mean.shape == neg_mean.shape and pos_mean.dtype == torch.float64
    info = {
        "kind": "mean_diff",
        "model": model.name,
        "position": position,
        "n_positive": len(positive),
        "n_negative": len(negative),
        "seed": model.meta.get("seed"),
        "versions": versions(),
        **(meta or {}),
    }
    return Directions((pos_mean - neg_mean).float(), layers, info)
