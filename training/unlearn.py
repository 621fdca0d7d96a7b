"""Narrow refusal unlearning (Mushtaq et al.): make the model stop refusing one concept without ever training on
harmful answers.

Choice: **NPO** (negative preference optimisation) on (concept prompt, refusal) pairs with a LoRA adapter:
L = (2/β) · mean log(1 + (π_θ(y|x)/π_ref(y|x))^β), y = a refusal, π_ref = the adapter-disabled model. Unlike plain
gradient ascent its gradient vanishes once the refusal is unlikely, so it does not diverge. An optional
**retain cross-entropy** on (prompt, refusal) pairs from other domains, weighted by ``retain_weight``, keeps
refusal elsewhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from interp.models import Model

from .data import tokenize_chats
from .sft import LoraSolution
from .trainer import TrainConfig, TrainResult, fit


def refusal_pairs(prompts: Sequence[str], refusals: Sequence[str]) -> list[list[dict]]:
    """(prompt, refusal) chats, cycling through the refusal phrasings deterministically."""
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": refusals[i % len(refusals)]}] for i, p in enumerate(prompts)]


def unlearn(model: Model, concept_prompts: Sequence[str], *, refusals: Sequence[str], out: str | Path,
            retain_prompts: Sequence[str] | None = None, retain_weight: float = 0.0, rank: int = 8, alpha: float = 16.0,
            target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            npo_beta: float = 0.1, config: TrainConfig | None = None, resume: bool = True, progress: bool | None = None,
            **overrides) -> TrainResult:
    """Unlearn refusal on ``concept_prompts`` (NPO), optionally retaining refusal on ``retain_prompts``.
    Returns the peft adapter directory and metrics; the model is left unchanged."""
    cfg = replace(config or TrainConfig(lr=2e-4), objective="npo", npo_beta=npo_beta, retain_weight=retain_weight, **overrides)
    train = tokenize_chats(model, refusal_pairs(concept_prompts, refusals), max_length=cfg.max_length)
    retain = tokenize_chats(model, refusal_pairs(retain_prompts, refusals), max_length=cfg.max_length) if retain_prompts else None
    sol = LoraSolution(model, rank=rank, alpha=alpha, target_modules=target_modules, seed=cfg.seed)
    try:
        return fit(model, sol, train, cfg, out, retain_set=retain, meta={"variant": "unlearn_npo", "retain": bool(retain_prompts)},
                   resume=resume, progress=progress)
    finally:
        sol.remove()
