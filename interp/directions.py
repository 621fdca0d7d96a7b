"""Mean-difference directions (definition 1): refusal (harmful − harmless prompts) and misalignment
(misaligned − aligned responses), at every layer, saved as safetensors + JSON metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .activations import Backend, Position, mean_activations
from .io import InputError, atomic_path, json_text, load_safetensors, read_json, restore_non_finite, versions
from .models import Item, Model, check_signature, signature


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
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() not in (2, 3):
            shape = tuple(self.vectors.shape) if isinstance(self.vectors, torch.Tensor) else type(self.vectors).__name__
            raise InputError(f"directions must be [n_positions, n_layers, d_model] (or [n_layers, d_model]); got {shape}")
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
        """Write ``path`` (safetensors) and ``path.json`` (the metadata, for people and other tools); returns ``path``.

        The metadata is also stored inside the safetensors header, and :meth:`load` reads it from there: one file,
        renamed atomically, so a reader sees the old vectors with the old metadata or the new with the new, even
        when a kill lands between the two renames. The sidecar records the safetensors file's SHA-256 (written
        second: a stale sidecar is recognisable)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        meta = {**self.meta, "layers": self.layers, "shape": list(self.vectors.shape)}
        with atomic_path(path) as tmp:
            save_file({"vectors": self.vectors.contiguous().float()}, str(tmp),
                      metadata={"em_interp": "directions", "meta": json_text(meta, indent=None)})
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        with atomic_path(path.with_suffix(".json")) as tmp_json:
            tmp_json.write_text(json_text({**meta, "safetensors_sha256": digest}) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, *, model: Model | None = None, allow_mismatch: bool = False) -> "Directions":
        """Load directions from a file, or from the directory ``em-interp directions`` wrote (its
        ``directions.safetensors``). With ``model`` given, check that its width and depth match and that the
        directions were extracted from it (the recorded :func:`~interp.models.signature`, name included);
        ``allow_mismatch=True`` (CLI ``--allow-model-mismatch``) turns a signature mismatch into a loud warning."""
        path = Path(path)
        if path.is_dir():
            path = path / "directions.safetensors"
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise InputError(f"{path}: no such directions file")
        tensors, header = load_safetensors(path, "directions file")
        if "vectors" not in tensors:
            raise InputError(f"{path}: not a directions file (it holds {', '.join(sorted(tensors)) or 'no tensors'}, "
                             f"no 'vectors')")
        if "meta" in header:  # written with the vectors, atomically: authoritative
            try:
                meta = restore_non_finite(json.loads(header["meta"]))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: the metadata in its header is malformed JSON ({e.msg})") from None
        else:  # older files: the sidecar alone
            meta_path = path.with_suffix(".json")
            meta = read_json(meta_path, "directions metadata") if meta_path.is_file() else {}
        if not isinstance(meta, dict):
            raise InputError(f"{path}: its metadata is a JSON {type(meta).__name__}, not an object")
        meta.pop("safetensors_sha256", None)
        vectors = tensors["vectors"]
        layers = meta.pop("layers", None)
        if layers is None:
            layers = list(range(vectors.shape[-2])) if vectors.dim() >= 2 else []
        if not isinstance(layers, list) or not all(isinstance(l, int) and not isinstance(l, bool) and l >= 0 for l in layers):
            raise InputError(f"{path}: its metadata's 'layers' must be a list of layer indices ≥ 0, got {layers!r}")
        meta.pop("shape", None)
        try:
            d = cls(vectors, layers, meta)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        if model is not None:
            if d.d_model != model.d_model:
                raise InputError(f"{path}: directions have d_model {d.d_model} but {model.name} has {model.d_model}")
            if layers and max(layers) >= model.n_layers:
                raise InputError(f"{path}: directions reach layer {max(layers)} but {model.name} has {model.n_layers} layers")
            check_signature(model, meta, f"directions {path}", name=True, allow_mismatch=allow_mismatch,
                            verb="were extracted from")
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
        **signature(model),  # checked by Directions.load(model=…)
        "position": position,
        "n_positive": len(positive),
        "n_negative": len(negative),
        "seed": model.meta.get("seed"),
        "versions": versions(),
        **(meta or {}),
    }
    return Directions((pos_mean - neg_mean).float(), layers, info)
