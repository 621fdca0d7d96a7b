"""Rank-1 (or rank-r) LoRA SFT: general (plain SFT) or narrow (SFT + λ·KL to the adapter-disabled model).

The trained object is an :class:`interp.solutions.LoraAdapter` (:meth:`~interp.solutions.LoraAdapter.create`), saved
in peft format + ``em_interp.json``; load it with :meth:`interp.solutions.LoraAdapter.load` or
:func:`interp.models.with_adapter`."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from interp.io import InputError, load_items, write_json
from interp.models import Model
from interp.solutions import LoraAdapter

from .data import TokenizedSet, tokenize_chats
from .trainer import StopDecision, StopRule, TrainConfig, TrainResult, fit


def _as_set(model: Model, data, max_length: int, mask: str = "response") -> TokenizedSet:
    """``data`` as tokens: a :class:`TokenizedSet`, a list of chats, or the path of a chat JSONL file."""
    if isinstance(data, TokenizedSet):
        return data
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).is_file():
            raise InputError(f"data {str(data)!r} is not a file; pass a list of chats, a chat JSONL path, or a shipped set "
                             f"as probes.datasets.prompts(NAME, 'train')")
        data = load_items(data)
    if data is None or not isinstance(data, Sequence):
        raise InputError(f"data must be a list of chats, a chat JSONL path or a TokenizedSet, got {type(data).__name__}")
    return tokenize_chats(model, data, max_length=max_length, mask=mask)


def train_lora(
    model: Model,
    data,
    *,
    out: str | Path,
    rank: int = 1,
    alpha: float | None = None,
    target_modules: Sequence[str] = ("down_proj",),
    layers: Sequence[int] | str = "all",
    rslora: bool = False,
    kl_data=None,
    kl_weight: float = 0.0,
    kl_mask: str = "all",
    legacy_vocab_scaling: bool = False,
    config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool | None = None,
    stop_when: StopRule | None = None,
    eval_every: int | None = None,
    **overrides,
) -> TrainResult:
    """Train a LoRA adapter on chat ``data`` (response-only loss): a list of chats, a chat JSONL path, or a
    :class:`~training.data.TokenizedSet` (``kl_data`` likewise). With ``kl_data`` and ``kl_weight`` λ > 0 it is
    the KL-narrow solution (definition 6); ``kl_mask="all"`` takes the KL over every token of the KL conversations
    (as published), ``"response"`` over their response tokens. Returns the peft adapter directory and metrics.
    The model is left unchanged (the adapter is removed from it after training). ``stop_when`` / ``eval_every``:
    a stopping rule evaluated during training (see :func:`training.trainer.fit`; :func:`train_matched` uses it)."""
    cfg = replace(config or TrainConfig(), kl_weight=kl_weight, legacy_vocab_scaling=legacy_vocab_scaling, **overrides)
    train = _as_set(model, data, cfg.max_length)
    kl_set = _as_set(model, kl_data, cfg.max_length, kl_mask) if kl_data is not None else None
    sol = LoraAdapter.create(model, rank=rank, alpha=alpha, target_modules=target_modules, layers=layers, rslora=rslora, seed=cfg.seed)
    try:
        kind = "narrow" if kl_weight else "general"
        return fit(model, sol, train, cfg, out, kl_set=kl_set, meta={"variant": kind, "kl_mask": kl_mask}, resume=resume, progress=progress,
                   stop_when=stop_when, eval_every=eval_every)
    finally:
        sol.remove()


@dataclass
class MatchedFit:
    """A solution trained to a matched in-domain fit (definition 15).

    Attributes:
        path: the chosen state's adapter directory (load it with :func:`interp.models.with_adapter`).
        step: the optimiser step of the chosen state.
        loss: its held-out in-domain loss; ``target_loss``: the loss it was matched to (e.g. the general solution's
            on the same held-out chats).
        rel_gap: (loss − target_loss) / target_loss; ``matched``: |rel_gap| ≤ ``tol``.
        budget / stop_step: the step budget and the step training stopped at.
        trajectory: every evaluation (``step``, ``loss``, ``rel_gap``, ``checkpoint``).
        n_heldout: held-out chats per evaluation.
    """

    path: Path
    step: int
    loss: float
    target_loss: float
    rel_gap: float
    matched: bool
    tol: float
    budget: int
    stop_step: int
    n_heldout: int
    trajectory: list[dict] = field(default_factory=list)
    train: TrainResult | None = None

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items() if k != "train"}


def train_matched(
    model: Model,
    data,
    *,
    heldout: Sequence,
    target_loss: float,
    out: str | Path,
    tol: float = 0.05,
    eval_every: int = 5,
    eval_batch_size: int = 8,
    **train_kwargs,
) -> MatchedFit:
    """Train with :func:`train_lora` (e.g. the KL-narrow solution: ``kl_data=…, kl_weight=λ``) until its in-domain
    loss on ``heldout`` (chats of the training domain, none of them in ``data``) reaches ``target_loss`` within a
    relative ``tol`` (default 5 %), or the step budget (``max_steps``) is spent.

    The loss is the token-weighted mean NLL of the held-out responses (:func:`interp.solutions.response_loss`);
    measure ``target_loss`` with the same function on the same chats (e.g. for the general solution). Every
    ``eval_every`` steps (and at the last step) the loss is measured and the state kept; training stops at the first
    evaluation with loss ≤ target_loss·(1 + tol). The chosen state is the first evaluation within the tolerance
    band (|rel_gap| ≤ tol); when none is (budget spent, or an overshoot past the band between two evaluations), the
    evaluated state closest to the target, with ``matched=False``. The warm-up + linear-decay schedule is laid out
    over the whole budget, so a run that stops early ends at a learning rate above zero (the general solution's
    schedule is its own). Writes ``out/matched_fit.json``."""
    from interp.solutions import response_loss

    if not (isinstance(target_loss, (int, float)) and math.isfinite(target_loss) and target_loss > 0):
        raise InputError(f"target_loss must be a finite loss > 0, got {target_loss!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise InputError(f"tol must be a relative tolerance in [0, 1), got {tol!r}")
    if not heldout or not isinstance(heldout, Sequence) or isinstance(heldout, str):
        raise InputError("train_matched needs held-out chats of the training domain (heldout is empty or not a list)")
    if isinstance(data, Sequence) and not isinstance(data, str):
        seen = {json.dumps(c, sort_keys=True, default=str) for c in data}
        leak = sum(json.dumps(c, sort_keys=True, default=str) in seen for c in heldout)
        if leak:
            raise InputError(f"{leak} of the held-out chats are also training chats: the matched loss must be measured on held-out data")

    def rule(step: int, m: Model) -> StopDecision:
        loss = response_loss(m, heldout, batch_size=eval_batch_size)
        gap = (loss - target_loss) / target_loss
        return StopDecision(gap <= tol, {"loss": loss, "rel_gap": gap})

    res = train_lora(model, data, out=out, stop_when=rule, eval_every=eval_every, **train_kwargs)
    if "stopped_at" in res.metrics:
        raise InputError("train_matched was interrupted (stop_at_step); resume it without stop_at_step")
    evals = res.metrics["evals"]
    within = [e for e in evals if abs(e["rel_gap"]) <= tol]
    best = within[0] if within else min(evals, key=lambda e: abs(e["rel_gap"]))
    traj = [{k: e[k] for k in ("step", "loss", "rel_gap", "checkpoint")} for e in evals]
    fitted = MatchedFit(Path(best["checkpoint"]), best["step"], best["loss"], float(target_loss), best["rel_gap"], bool(within), tol,
                        res.metrics["budget_steps"], res.metrics["steps"], len(heldout), traj, res)
    write_json(Path(out) / "matched_fit.json", fitted.to_dict())
    return fitted
