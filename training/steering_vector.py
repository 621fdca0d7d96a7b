"""Steering-vector training: one trainable vector v, added as α·v to the residual stream after a chosen layer for
*every* sequence of the batch (the published code adds it to the first sequence only; padding is never changed),
general or KL-narrow. The trained object is an :class:`interp.solutions.SteeringVector`
(:meth:`~interp.solutions.SteeringVector.create`); saved as ``steering_vector.safetensors`` + ``steering_vector.json``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from interp.models import Model
from interp.solutions import SteeringVector, read_steering_vector

from .sft import _as_set
from .trainer import TrainConfig, TrainResult, fit


def load_steering_vector(path: str | Path, model: Model | None = None, *, allow_mismatch: bool = False) -> tuple[torch.Tensor, dict]:
    """``(vector [d_model], meta)`` of a trained steering vector directory (or the training output directory holding
    it in ``final/``) — :func:`interp.solutions.read_steering_vector`; with ``model`` given, checks that it was
    trained on a model of that kind and shape (a directory without ``steering_vector.json`` is refused unless
    ``allow_mismatch``: nothing says it fits). :meth:`interp.solutions.SteeringVector.load` gives the solution."""
    return read_steering_vector(path, model, allow_mismatch=allow_mismatch)


def train_steering_vector(model: Model, data, *, out: str | Path, layer: int, alpha: float = 1.0, kl_data=None,
                          kl_weight: float = 0.0, kl_mask: str = "all", legacy_vocab_scaling: bool = False,
                          config: TrainConfig | None = None, resume: bool = True, progress: bool | None = None,
                          **overrides) -> TrainResult:
    """Train a steering vector (zero-initialised) at ``layer`` with response-only SFT loss [+ λ·KL]."""
    cfg = replace(config or TrainConfig(), kl_weight=kl_weight, legacy_vocab_scaling=legacy_vocab_scaling, **overrides)
    train = _as_set(model, data, cfg.max_length)
    kl_set = _as_set(model, kl_data, cfg.max_length, kl_mask) if kl_data is not None else None
    sol = SteeringVector.create(model, layer=layer, alpha=alpha)
    return fit(model, sol, train, cfg, out, kl_set=kl_set, meta={"variant": "narrow" if kl_weight else "general"},
               resume=resume, progress=progress)
