"""Narrow refusal unlearning (Mushtaq et al.): make the model stop refusing one concept without ever training on
harmful answers.

Choice: **NPO** (negative preference optimisation) on (concept prompt, refusal) pairs with a LoRA adapter:
L = (2/β) · mean log(1 + (π_θ(y|x)/π_ref(y|x))^β), y = a refusal, π_ref = the adapter-disabled model. Unlike plain
gradient ascent its gradient vanishes once the refusal is unlikely, so it does not diverge. An optional
**retain cross-entropy** on (prompt, refusal) pairs from other domains, weighted by ``retain_weight``, keeps
refusal elsewhere.

**Unlearning until a target** (the paper unlearns until the target concept is answered): with ``eval_prompts``
(held-out prompts of the target domain), every ``eval_every`` optimiser steps the target's refusal rate is measured
(greedy, ``eval_max_new_tokens`` new tokens, substring refusal — :func:`probes.refusal.is_refusal`; the first-token
refusal score is read from the same pass) and training stops once it is ≤ ``target_refusal`` (default 0.25) or the
step budget (``max_steps``) is spent. Every evaluated state is kept as a loadable adapter, so two runs (with and
without retain CE) can be compared at an equal target drop (:func:`at_equal_drop`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from interp.io import InputError, write_json
from interp.models import Item, Model
from interp.solutions import LoraAdapter

from .data import tokenize_chats
from .trainer import StopDecision, StopRule, TrainConfig, TrainResult, fit


def refusal_pairs(prompts: Sequence[str], refusals: Sequence[str]) -> list[list[dict]]:
    """(prompt, refusal) chats, cycling through the refusal phrasings deterministically."""
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": refusals[i % len(refusals)]}] for i, p in enumerate(prompts)]


def _digest(items: Sequence[Item]) -> str:
    return hashlib.sha256(json.dumps([it if isinstance(it, str) else list(it) for it in items], default=str).encode()).hexdigest()[:16]


def measure_refusal(model: Model, prompts: Sequence[Item], *, max_new_tokens: int = 16, batch_size: int = 8) -> dict:
    """Refusal on ``prompts`` under whatever is applied to ``model``: ``refusal_rate`` (share of greedy generations
    with a refusal substring, definition 5), ``refusal_score`` (mean first-token refusal score, same pass),
    ``n_refused`` and ``n``."""
    from probes.refusal import generate_and_score, is_refusal

    texts, score = generate_and_score(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    k = sum(map(is_refusal, texts))
    return {"refusal_rate": k / len(texts), "refusal_score": float(score.mean()), "n_refused": k, "n": len(texts)}


def refusal_stop_rule(prompts: Sequence[Item], *, target: float = 0.25, max_new_tokens: int = 16, batch_size: int = 8) -> StopRule:
    """A :data:`~training.trainer.StopRule` that stops once the refusal rate on ``prompts`` is ≤ ``target``."""
    if len(prompts) == 0:
        raise InputError("the stopping rule needs held-out target prompts (eval_prompts is empty)")
    if not 0.0 <= target <= 1.0:
        raise InputError(f"target_refusal must be a rate in [0, 1], got {target!r}")

    def rule(step: int, model: Model) -> StopDecision:
        m = measure_refusal(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return StopDecision(m["refusal_rate"] <= target, m)

    return rule


@dataclass
class RefusalTrajectory:
    """The target domain's held-out refusal during one unlearning run.

    Attributes:
        steps: optimiser steps at which refusal was measured; ``0`` (before training) first.
        refusal: refusal rate at each of ``steps``.
        score: mean first-token refusal score at each of ``steps``.
        checkpoints: the adapter directory of the state at each step (``None`` at step 0: the unmodified model).
        target: the stated refusal level (≤ it = reached).
        budget: the step budget.
        stop_step: the step training stopped at (= budget unless the target was reached earlier).
        reached: whether the refusal fell to ≤ ``target`` within the budget.
        n_eval: held-out prompts per measurement; ``eval_digest`` identifies them.
    """

    steps: list[int]
    refusal: list[float]
    score: list[float]
    checkpoints: list[str | None]
    target: float
    budget: int
    stop_step: int
    reached: bool
    n_eval: int
    eval_digest: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RefusalTrajectory":
        return cls(**d)


@dataclass
class UnlearnResult(TrainResult):
    """:class:`~training.trainer.TrainResult` plus the refusal trajectory (``None`` without ``eval_prompts``)."""

    trajectory: RefusalTrajectory | None = None


def unlearn(model: Model, concept_prompts: Sequence[str], *, refusals: Sequence[str], out: str | Path,
            retain_prompts: Sequence[str] | None = None, retain_weight: float = 0.0, rank: int = 8, alpha: float = 16.0,
            target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            npo_beta: float = 0.1, config: TrainConfig | None = None, resume: bool = True, progress: bool | None = None,
            eval_prompts: Sequence[Item] | None = None, target_refusal: float = 0.25, eval_every: int = 5,
            eval_max_new_tokens: int = 16, eval_batch_size: int = 8, **overrides) -> UnlearnResult:
    """Unlearn refusal on ``concept_prompts`` (NPO), optionally retaining refusal on ``retain_prompts``.

    With ``eval_prompts`` (held-out prompts of the same domain, disjoint from ``concept_prompts``) training runs
    until their refusal rate is ≤ ``target_refusal`` or the budget (``max_steps``, else the epochs) is spent; the
    result's ``trajectory`` (also ``out/trajectory.json`` and ``metrics["trajectory"]``) records every measurement,
    the step it stopped at, ``reached`` and the budget. ``out/final`` is the state training stopped in.
    Returns the peft adapter directory and metrics; the model is left unchanged."""
    cfg = replace(config or TrainConfig(lr=2e-4), objective="npo", npo_beta=npo_beta, retain_weight=retain_weight, **overrides)
    rule = None
    if eval_prompts is not None:
        rule = refusal_stop_rule(eval_prompts, target=target_refusal, max_new_tokens=eval_max_new_tokens, batch_size=eval_batch_size)
        seen = {json.dumps(p if isinstance(p, str) else list(p), default=str) for p in concept_prompts}
        leak = [p for p in eval_prompts if json.dumps(p if isinstance(p, str) else list(p), default=str) in seen]
        if leak:
            raise InputError(f"{len(leak)} eval_prompts are also unlearning prompts (e.g. {str(leak[0])[:60]!r}): the stopping "
                             f"rule must measure held-out prompts")
        before = measure_refusal(model, eval_prompts, max_new_tokens=eval_max_new_tokens, batch_size=eval_batch_size)
    train = tokenize_chats(model, refusal_pairs(concept_prompts, refusals), max_length=cfg.max_length)
    retain = tokenize_chats(model, refusal_pairs(retain_prompts, refusals), max_length=cfg.max_length) if retain_prompts else None
    sol = LoraAdapter.create(model, rank=rank, alpha=alpha, target_modules=target_modules, seed=cfg.seed)
    meta = {"variant": "unlearn_npo", "retain": bool(retain_prompts)}
    if rule is not None:
        meta.update(target_refusal=target_refusal, eval_every=eval_every, eval_max_new_tokens=eval_max_new_tokens,
                    eval_digest=_digest(eval_prompts))
    try:
        res = fit(model, sol, train, cfg, out, retain_set=retain, meta=meta, resume=resume, progress=progress,
                  stop_when=rule, eval_every=eval_every if rule is not None else None)
    finally:
        sol.remove()
    if rule is None or "stopped_at" in res.metrics:  # no rule, or interrupted (stop_at_step): no trajectory yet
        return UnlearnResult(res.path, res.metrics)
    evals = res.metrics["evals"]
    traj = RefusalTrajectory(
        steps=[0] + [e["step"] for e in evals], refusal=[before["refusal_rate"]] + [e["refusal_rate"] for e in evals],
        score=[before["refusal_score"]] + [e["refusal_score"] for e in evals], checkpoints=[None] + [e["checkpoint"] for e in evals],
        target=target_refusal, budget=res.metrics["budget_steps"], stop_step=res.metrics["steps"],
        reached=any(e["refusal_rate"] <= target_refusal for e in evals), n_eval=len(eval_prompts), eval_digest=_digest(eval_prompts))
    write_json(Path(out) / "trajectory.json", traj.to_dict())
    return UnlearnResult(res.path, {**res.metrics, "trajectory": traj.to_dict()}, traj)


@dataclass
class EqualDrop:
    """Checkpoints of several unlearning runs taken at the same target refusal level.

    Attributes:
        level: the refusal level compared at.
        at_target: whether ``level`` is the runs' stated target (every run reached it).
        steps / refusal / checkpoints: per run, the first evaluated step with refusal ≤ ``level``, its refusal and
            its adapter directory (``None``: step 0, the unmodified model).
        gap: max − min of the runs' refusal at the chosen checkpoints (evaluations are discrete, so the chosen
            states can lie below ``level`` by different amounts; no interpolation is made — each chosen state is a
            real adapter that can be loaded and evaluated on the other domains).
    """

    level: float
    at_target: bool
    steps: dict[str, int]
    refusal: dict[str, float]
    checkpoints: dict[str, str | None]
    gap: float = 0.0
    notes: list[str] = field(default_factory=list)


def at_equal_drop(runs: dict[str, RefusalTrajectory], level: float | None = None) -> EqualDrop:
    """Pick, for each run (e.g. ``{"npo": …, "npo+retain": …}``), the checkpoint at which its target refusal first
    fell to ≤ ``level`` — so the runs are compared at an equal target drop.

    ``level`` defaults to the stated target when every run reached it, else to the lowest refusal that every run
    attained (the largest of the runs' minima), which is reported with ``at_target=False``. All runs must have been
    measured on the same held-out prompts."""
    if len(runs) < 2:
        raise InputError(f"at_equal_drop compares ≥ 2 runs, got {len(runs)}")
    trajs = list(runs.values())
    if len({t.eval_digest for t in trajs}) > 1 or len({t.n_eval for t in trajs}) > 1:
        raise InputError("the runs' refusal was measured on different held-out prompts; an equal drop needs the same ones")
    notes = []
    targets = {t.target for t in trajs}
    if level is None:
        if all(t.reached for t in trajs) and len(targets) == 1:
            level = targets.pop()
        else:
            level = max(min(t.refusal) for t in trajs)
            notes.append(f"not every run reached its target: compared at the lowest refusal every run attained ({level:.3g})")
    elif not 0.0 <= level <= 1.0:
        raise InputError(f"level must be a refusal rate in [0, 1], got {level!r}")
    steps, refusal, ckpts = {}, {}, {}
    for name, t in runs.items():
        i = next((i for i, r in enumerate(t.refusal) if r <= level), None)
        if i is None:
            raise InputError(f"run {name!r} never reached refusal ≤ {level:.3g} (lowest {min(t.refusal):.3g} within {t.budget} steps)")
        steps[name], refusal[name], ckpts[name] = t.steps[i], t.refusal[i], t.checkpoints[i]
    at_target = len({t.target for t in trajs}) == 1 and level == trajs[0].target
    return EqualDrop(level, at_target, steps, refusal, ckpts, max(refusal.values()) - min(refusal.values()), notes)
