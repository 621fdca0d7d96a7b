"""Steering-vector training: one trainable vector v, added as α·v to the residual stream after a chosen layer for
*every* sequence of the batch (the published code adds it to the first sequence only), general or KL-narrow.
Saved as safetensors + JSON."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

import torch

from interp.hooks import hidden_of, hooked, with_hidden
from interp.io import InputError, json_text, load_safetensors, read_json
from interp.models import Model, check_signature, signature, trained_dir

from .sft import _as_set
from .trainer import TrainConfig, TrainResult, fit


class SteeringVectorSolution:
    kind = "steering_vector"

    def __init__(self, model: Model, *, layer: int, alpha: float = 1.0, init: torch.Tensor | None = None):
        self.model = model
        self.layer = model.check_layers([layer])[0]
        if not (math.isfinite(alpha) and alpha != 0):
            raise InputError(f"steering-vector alpha must be a finite, non-zero scale, got {alpha!r}")
        if init is not None and tuple(init.shape) != (model.d_model,):
            raise InputError(f"steering-vector init has shape {tuple(init.shape)}; {model.name} needs ({model.d_model},)")
        self.alpha = float(alpha)
        self.settings = {"layer": self.layer, "alpha": self.alpha, "init": None if init is None else "given"}
        v = torch.zeros(model.d_model, dtype=torch.float32, device=model.device) if init is None else init.detach().float().clone().to(model.device)
        self.vector = torch.nn.Parameter(v)
        self._on = True

    def _hook(self, module, args, output):
        if not self._on:
            return None
        h = hidden_of(output)
        return with_hidden(output, h + (self.alpha * self.vector).to(h.dtype))  # broadcast over [B, T, d]: every sequence

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.vector]

    @contextlib.contextmanager
    def active(self):
        with hooked(forward=[(self.model.layers[self.layer], self._hook)]):
            yield

    @contextlib.contextmanager
    def reference(self):
        self._on = False
        try:
            yield
        finally:
            self._on = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"vector": self.vector.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vector.copy_(state["vector"])

    def save(self, path: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({"vector": self.vector.detach().cpu().contiguous()}, str(path / "steering_vector.safetensors"))
        (path / "steering_vector.json").write_text(json_text({**meta, "solution": "steering_vector", "layer": self.layer,
                                                              "alpha": self.alpha, **signature(self.model)}, default=str))


def load_steering_vector(path: str | Path, model: Model | None = None, *, allow_mismatch: bool = False) -> tuple[torch.Tensor, dict]:
    """``(vector [d_model], meta)`` of a trained steering vector directory (or the training output directory holding
    it in ``final/``); with ``model`` given, checks that it was trained on a model of that kind and shape (a
    directory without ``steering_vector.json`` is refused unless ``allow_mismatch``: nothing says it fits)."""
    path = trained_dir(path, "steering_vector.safetensors")
    if not (path / "steering_vector.safetensors").is_file():
        raise InputError(f"{path} holds no steering_vector.safetensors")
    meta_path = path / "steering_vector.json"
    meta = read_json(meta_path, "steering-vector metadata") if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    tensors, _ = load_safetensors(path / "steering_vector.safetensors", "steering vector")
    if "vector" not in tensors:
        raise InputError(f"{path / 'steering_vector.safetensors'}: holds no 'vector' (it has {', '.join(sorted(tensors)) or 'nothing'})")
    v = tensors["vector"]
    if model is not None:
        check_signature(model, meta, f"steering vector {path}", allow_mismatch=allow_mismatch)
        if v.shape != (model.d_model,):
            raise InputError(f"steering vector {path} has shape {tuple(v.shape)} but {model.name} has d_model {model.d_model}")
    return v, meta


def train_steering_vector(model: Model, data, *, out: str | Path, layer: int, alpha: float = 1.0, kl_data=None,
                          kl_weight: float = 0.0, kl_mask: str = "all", legacy_vocab_scaling: bool = False,
                          config: TrainConfig | None = None, resume: bool = True, progress: bool | None = None,
                          **overrides) -> TrainResult:
    """Train a steering vector (zero-initialised) at ``layer`` with response-only SFT loss [+ λ·KL]."""
    cfg = replace(config or TrainConfig(), kl_weight=kl_weight, legacy_vocab_scaling=legacy_vocab_scaling, **overrides)
    train = _as_set(model, data, cfg.max_length)
    kl_set = _as_set(model, kl_data, cfg.max_length, kl_mask) if kl_data is not None else None
    sol = SteeringVectorSolution(model, layer=layer, alpha=alpha)
    return fit(model, sol, train, cfg, out, kl_set=kl_set, meta={"variant": "narrow" if kl_weight else "general"},
               resume=resume, progress=progress)
