"""The one training loop behind every trainer: token-weighted response loss, optional KL to the reference policy
(definition 6) or NPO unlearning, AdamW with warm-up + linear decay, gradient accumulation, checkpoints with
optimiser / scheduler / RNG state, exact resume, NaN guard, loss curve and config written as JSON.

Data parallel: launched under ``accelerate launch`` (or ``torchrun``) with N processes, every micro-batch (and KL /
retain batch) is split across the processes, each process computes its share of the *global* token-weighted sums,
and the gradients of the solution's parameters are summed with ``accelerate.utils.reduce`` before the optimiser
step — the update is the one a single process would make on the whole batch (tested on CPU with 2 processes).
Only the main process writes checkpoints and the final artifact. DDP's module wrapper is not used: one step runs
several forwards (policy, reference, KL batch) through one model, which DDP's reducer does not allow.

A *solution* is what is trained: an :class:`interp.solutions.Solution` (a :class:`~interp.solutions.LoraAdapter`
or a :class:`~interp.solutions.SteeringVector` — the same objects the metrics measure). The loop uses its trainable
``parameters()``, ``apply(model)`` (the solution applied), ``reference()`` (the reference policy π_ref: the same
model with the solution switched off — no second copy, no logit cache), ``state_dict()`` / ``load_state_dict()``
for checkpoints and ``save()`` (atomic) for the final and evaluated states.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from interp.io import InputError, atomic_path, json_text, load_safetensors, read_json, versions, write_json
from interp.models import Model
from interp.solutions import Solution

from .data import TokenizedSet, collate


@dataclass
class TrainConfig:
    """Optimisation settings shared by all trainers (defaults sized for a 2-core CPU and SmolLM2)."""

    lr: float = 1e-4
    epochs: int = 1
    max_steps: int | None = None  # optimiser steps; overrides epochs when set
    batch_size: int = 4
    grad_accum: int = 1
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 256
    seed: int = 0
    save_every: int | None = None  # checkpoint every N optimiser steps (and at the end)
    kl_weight: float = 0.0  # λ of definition 6
    # sequences of KL (or retain) data per micro-batch. Step cost ≈ 1 + 4K/(3B) × plain SFT (a reference forward
    # plus a forward+backward of K sequences on top of B): K = 1 is an unbiased, cheaper estimate of the same KL;
    # raise it for a lower-variance regulariser (K = B costs ≥ 2.3× an SFT step)
    kl_batch_size: int = 1
    legacy_vocab_scaling: bool = False  # divide the KL by |V| as the published code does
    objective: str = "sft"  # "sft" | "npo"
    npo_beta: float = 0.1
    retain_weight: float = 0.0  # weight of the retain cross-entropy (unlearning)
    stop_at_step: int | None = None  # stop early (as if interrupted) after this step — for resume tests
    log_every: int = 1

    def __post_init__(self) -> None:
        """Reject settings that would silently train nothing, or the wrong objective (e.g. λ < 0 maximises the KL)."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"TrainConfig.seed must be an integer in 0 … 2**63 − 1 (what torch's generators take), got {self.seed!r}")
        positive = {"lr": self.lr, "npo_beta": self.npo_beta}
        at_least_one = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                        "kl_batch_size": self.kl_batch_size, "log_every": self.log_every}
        optional_at_least_one = {"max_steps": self.max_steps, "save_every": self.save_every, "stop_at_step": self.stop_at_step}
        non_negative = {"warmup_steps": self.warmup_steps, "weight_decay": self.weight_decay, "kl_weight": self.kl_weight,
                        "retain_weight": self.retain_weight}
        for name, v in {**positive, **non_negative, "max_grad_norm": self.max_grad_norm}.items():
            if v is not None and not math.isfinite(v):
                raise InputError(f"TrainConfig.{name} must be a finite number, got {v}")
        for name, v in positive.items():
            if v <= 0:
                raise InputError(f"TrainConfig.{name} must be > 0, got {v}")
        for name, v in {**at_least_one, **{k: v for k, v in optional_at_least_one.items() if v is not None}}.items():
            if int(v) != v or v < 1:
                raise InputError(f"TrainConfig.{name} must be an integer ≥ 1, got {v}")
        for name, v in non_negative.items():
            if v < 0:
                raise InputError(f"TrainConfig.{name} must be ≥ 0, got {v}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise InputError(f"TrainConfig.max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm}")
        if self.max_length < 2:
            raise InputError(f"TrainConfig.max_length must be ≥ 2 (a prompt token and a response token), got {self.max_length}")
        if self.objective not in ("sft", "npo"):
            raise InputError(f"TrainConfig.objective must be 'sft' or 'npo', got {self.objective!r}")


@dataclass
class TrainResult:
    path: Path
    metrics: dict = field(default_factory=dict)


@dataclass
class StopDecision:
    """What a ``stop_when(step, model)`` evaluation returns to :func:`fit`.

    Attributes:
        stop: end training now (the target is reached); the state at this step becomes ``out/final``.
        metrics: what was measured (JSON-able); recorded in the loss curve at this step and in ``metrics["evals"]``.
        keep: save this step's solution as a loadable candidate under ``out/evals/step-NNNNNN`` (the same format
            as ``out/final``: a peft adapter directory or a steering-vector directory).
    """

    stop: bool
    metrics: dict = field(default_factory=dict)
    keep: bool = True


StopRule = Callable[[int, Model], StopDecision]  # (optimiser steps done, the model with the solution applied)


# ----------------------------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    """Plain containers and tensors only, so ``torch.load(weights_only=True)`` reads it back."""
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed((seed * 100_003 + epoch) % 2**64)  # the same as before for every seed < 1.8e14
    return torch.randperm(n, generator=g).tolist()


def micro_batches(n: int, cfg: TrainConfig) -> tuple[list[list[int]], int]:
    """Deterministic micro-batches (lists of example indices) for the whole run, and the number of optimiser steps."""
    per_epoch = [o[i : i + cfg.batch_size] for e in range(max(cfg.epochs, 1)) for o in [_epoch_order(n, cfg.seed, e)]
                 for i in range(0, n, cfg.batch_size)]
    steps = cfg.max_steps if cfg.max_steps is not None else max(1, len(per_epoch) // cfg.grad_accum)
    need = steps * cfg.grad_accum
    out, epoch = list(per_epoch), max(cfg.epochs, 1)
    while len(out) < need:  # max_steps beyond the epochs: keep drawing fresh epochs
        o = _epoch_order(n, cfg.seed, epoch)
        out += [o[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
        epoch += 1
    return out[:need], steps


def _loss_tokens(examples) -> int:
    """Number of loss-carrying targets (positions ≥ 1 with mask > 0) in ``examples`` — the global normaliser."""
    return sum(sum(1 for m in e.mask[1:] if m * e.weight > 0) for e in examples)


def _dist():
    """(PartialState, world size, rank, allsum) — ``allsum(t)`` sums a tensor over the processes; a single process
    (state None, identity allsum) when not launched by accelerate / torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, 1, 0, lambda t: t
    from accelerate import PartialState
    from accelerate.utils import reduce

    st = PartialState(cpu=not torch.cuda.is_available())
    return st, st.num_processes, st.process_index, lambda t: reduce(t, reduction="sum")


def _final_hidden(model: Model, batch: dict):
    """``(h [B, T, d], logits_of)``: the decoder's last hidden state and the LM head as a function of selected hidden
    states ``[n, d]`` → ``[n, V]`` (final logit soft-capping included); ``None`` for an architecture whose decoder
    cannot be run apart from its head."""
    from interp.hooks import decoder, unwrap

    hf = unwrap(model.hf)
    base = decoder(hf)
    head = hf.get_output_embeddings()
    if base is hf or head is None:
        return None
    h = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"],
             use_cache=False).last_hidden_state
    cap = getattr(hf.config, "final_logit_softcapping", None)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        out = head(x)
        return torch.tanh(out / cap) * cap if cap else out

    return h, logits_of


def _masked_logits(model: Model, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    """Logits ``[n, V]`` that predict the tokens selected by ``mask`` ``[B, T]`` (the LM head runs only there:
    position ``t − 1`` predicts token ``t``; nothing else reaches a loss, so the full ``[B, T, V]`` is never built)."""
    out = _final_hidden(model, batch)
    if out is None:  # unusual architecture: fall back to full logits
        logits = model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          position_ids=batch["position_ids"], use_cache=False).logits
        return logits[:, :-1][mask[:, 1:]]
    h, logits_of = out
    return logits_of(h[:, :-1][mask[:, 1:]])


def sft_loss_sum(model: Model, batch: dict) -> torch.Tensor:
    """Σ over loss tokens of the (weighted) next-token cross-entropy."""
    mask = batch["loss_mask"] > 0
    sel = mask & _shifted(mask)
    return _ce_sum(_masked_logits(model, batch, mask), batch["input_ids"][sel], batch["loss_mask"][sel])


def _shifted(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` without column 0 (the first token is never predicted)."""
    out = mask.clone()
    out[:, 0] = False
    return out


def kl_sum(model: Model, solution: Solution, batch: dict) -> tuple[torch.Tensor, int]:
    """Σ over masked tokens of KL(π_ref ‖ π_θ) for next-token distributions (masked = tokens predicted at
    positions whose *target* token carries loss), and the number of such tokens."""
    mask = batch["loss_mask"] > 0
    with torch.no_grad(), solution.reference():
        ref = torch.log_softmax(_masked_logits(model, batch, mask).float(), -1)
    return _kl_tok_sum(ref, _masked_logits(model, batch, mask)), int(ref.shape[0])


def _ce_sum(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ weight · CE over selected positions: ``logits [n, V]``, ``targets [n]``, ``weights [n]``."""
    return (torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none") * weights).sum()


def _kl_tok_sum(ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ over rows of KL(ref ‖ cur): ``ref`` ``[n, V]`` reference log-probs, ``logits`` ``[n, V]`` the student's."""
    return torch.nn.functional.kl_div(torch.log_softmax(logits.float(), -1), ref, reduction="sum", log_target=True)


def sft_and_kl_backward(model: Model, solution: Solution, sft: Sequence, kl: Sequence, pad_id: int,
                        device: torch.device | str = "cpu", *, sft_scale: float = 1.0,
                        kl_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate ``sft_scale`` · :func:`sft_loss_sum` (examples ``sft``) + ``kl_scale`` · :func:`kl_sum` (examples
    ``kl``) with *one* student forward over both sets of sequences (one right-padded batch ``[len(sft) + len(kl), T]``);
    the reference forward (adapter off, no grad) runs on ``kl`` alone. Returns the two scaled terms (detached); when
    one is not finite it returns before the decoder's backward and the caller must stop (gradients are then partial).

    Same terms and gradients as separate forwards up to float rounding (right padding never reaches an earlier
    position under the causal mask). Why: on a CPU one short sequence runs at ≈ 60 % of the per-token speed of a
    batch (docs/environment.md, "Why a KL-narrow step cost …"). The LM head and the two losses run on a detached copy
    of the last hidden state, one term after the other, each backpropagated to it and freed before the next, then
    the decoder's backward runs once: so only the decoder's activations of both batches are alive together, never
    the two sets of ``[n, V]`` logits (measured: peak 1.14 → ≈ 1.08 of an SFT step's)."""
    kb = collate(list(kl), pad_id, device)
    with torch.no_grad(), solution.reference():
        ref = torch.log_softmax(_masked_logits(model, kb, kb["loss_mask"] > 0).float(), -1)  # [n_kl, V]
    b = collate(list(sft) + list(kl), pad_id, device)
    mask = b["loss_mask"] > 0  # [B_sft + B_kl, T]
    k = len(sft)
    sel = (mask & _shifted(mask))[:k]
    targets, weights = b["input_ids"][:k][sel], b["loss_mask"][:k][sel]
    out = _final_hidden(model, b)
    if out is None:  # unusual architecture: full logits, one backward of both terms
        logits = model.hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                          use_cache=False).logits
        ce = sft_scale * _ce_sum(logits[:k, :-1][mask[:k, 1:]], targets, weights)
        kl_term = kl_scale * _kl_tok_sum(ref, logits[k:, :-1][mask[k:, 1:]])
        if torch.isfinite(ce) and torch.isfinite(kl_term):
            (ce + kl_term).backward()
        return ce.detach(), kl_term.detach()
    h, logits_of = out  # h [B_sft + B_kl, T, d]
    hd = h.detach().requires_grad_(True)
    ce = sft_scale * _ce_sum(logits_of(hd[:k, :-1][mask[:k, 1:]]), targets, weights)
    if not torch.isfinite(ce):
        return ce.detach(), torch.tensor(float("nan"))
    ce.backward()  # into hd.grad; the SFT logits are freed here
    cur = logits_of(hd[k:, :-1][mask[k:, 1:]])  # [n_kl, V]
    assert cur.shape == ref.shape, (cur.shape, ref.shape)  # the same loss positions in both batches
    kl_term = kl_scale * _kl_tok_sum(ref, cur)
    if not torch.isfinite(kl_term):
        return ce.detach(), kl_term.detach()
    kl_term.backward()
    h.backward(hd.grad)
    return ce.detach(), kl_term.detach()


def seq_logprob(model: Model, batch: dict) -> torch.Tensor:
    """``[B]`` Σ log p of loss tokens per sequence."""
    mask = batch["loss_mask"] > 0
    sel = mask & _shifted(mask)
    lp = -torch.nn.functional.cross_entropy(_masked_logits(model, batch, mask).float(), batch["input_ids"][sel], reduction="none")
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[sel]
    return torch.zeros(mask.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)


# ----------------------------------------------------------------------------------------------------------------


_NOT_IN_FINGERPRINT = ("stop_at_step", "save_every", "log_every")  # may differ between the parts of one run


def run_fingerprint(model: Model, solution: Solution, cfg: TrainConfig, train: TokenizedSet, *, kl_set: TokenizedSet | None = None,
                    retain_set: TokenizedSet | None = None, meta: dict | None = None) -> dict:
    """What a checkpoint must match to be resumed: the optimisation settings, the solution's settings, the model's
    shape, a digest of every data set's tokens / masks / weights, and the trainer's ``meta``."""

    def digest(ts: TokenizedSet | None) -> str | None:
        if ts is None:
            return None
        h = hashlib.sha256()
        for e in ts.examples:
            h.update(json.dumps([e.ids, e.mask, e.weight]).encode())
        return h.hexdigest()[:16]

    return {"config": {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_FINGERPRINT},
            "solution": {"kind": solution.kind, **getattr(solution, "settings", {})},
            "model": {"name": model.name, "n_layers": model.n_layers, "d_model": model.d_model},
            "data": {"train": digest(train), "kl": digest(kl_set), "retain": digest(retain_set)},
            "meta": json.loads(json.dumps(meta or {}, default=str))}


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} → {y!r}")
    return out


_CHECKPOINT = re.compile(r"^step-(\d+)$")


def _checkpoints(out: Path) -> list[Path]:
    """``out/checkpoints/step-N`` folders, oldest first; anything else there (``step-final-backup/``, a file, a
    temporary folder) is not a checkpoint and is ignored."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest ``out/checkpoints/step-N`` folder (what a resumed run continues, if intact), or ``None``."""
    ckpts = _checkpoints(Path(out))
    return ckpts[-1] if ckpts else None


_latest_checkpoint = latest_checkpoint


def _save_checkpoint(out: Path, step: int, solution: Solution, opt, sched, curve: list, fingerprint: dict) -> None:
    path = out / "checkpoints" / f"step-{step:06d}"
    with atomic_path(path) as tmp:
        tmp.mkdir()
        from safetensors.torch import save_file

        (tmp / "run.json").write_text(json_text(fingerprint) + "\n")
        save_file({k: v.detach().contiguous() for k, v in solution.state_dict().items()}, str(tmp / "solution.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(), "step": step,
                    "curve": curve}, tmp / "trainer_state.pt")
    for old in _checkpoints(out)[:-2]:  # keep the last two
        shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(path: Path, fingerprint: dict) -> tuple[dict, dict]:
    """``(solution state, trainer state)`` of one checkpoint, read and checked before anything is applied.

    ``trainer_state.pt`` is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
    crafted file cannot run code (it is refused as corrupt). A checkpoint of a different run raises
    :class:`InputError`; an unreadable one raises :class:`_Corrupt`."""
    run = path / "run.json"
    if run.is_file():
        try:
            recorded = read_json(run, "checkpoint run record")
        except InputError as e:
            raise _Corrupt(str(e)) from None
        diff = _differences(recorded, fingerprint) if isinstance(recorded, dict) else ["run.json: not a JSON object"]
        if diff:
            raise InputError(f"{path.parent.parent} holds checkpoints of a different run ({'; '.join(diff[:6])}"
                             f"{'; …' if len(diff) > 6 else ''}); choose another output directory, or start over there "
                             f"(resume=False; CLI --no-resume)")
    try:
        sol, _ = load_safetensors(path / "solution.safetensors", "checkpoint solution")
    except InputError as e:
        raise _Corrupt(str(e)) from None
    try:
        st = torch.load(path / "trainer_state.pt", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding objects beyond tensors and plain containers
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise _Corrupt(f"{path / 'trainer_state.pt'}: refused or unreadable ({type(e).__name__}: {first})") from None
    if not isinstance(st, dict) or not {"optimizer", "scheduler", "rng", "step", "curve"} <= set(st):
        raise _Corrupt(f"{path / 'trainer_state.pt'}: not a trainer state")
    return sol, st


class _Corrupt(InputError):
    """A checkpoint that cannot be read (truncated, corrupt, or refused)."""


def _load_checkpoint(out: Path, solution: Solution, opt, sched, fingerprint: dict) -> tuple[int, list]:
    """Continue the newest intact checkpoint in ``out/checkpoints``; a corrupt newer one is skipped with a warning
    naming it. ``(0, [])`` when there is none; an error when there are some but none is intact."""
    ckpts = _checkpoints(out)
    problems = []
    for path in reversed(ckpts):
        try:
            sol, st = _read_checkpoint(path, fingerprint)  # a different run's checkpoint raises InputError here
        except _Corrupt as e:
            problems.append(str(e))
            continue
        try:
            solution.load_state_dict(sol)
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            _set_rng_state(st["rng"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:  # readable but does not fit this solution
            problems.append(f"{path}: does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            continue
        if problems:
            warnings.warn(f"resuming from {path}, the newest intact checkpoint; skipped: {'; '.join(problems)}", stacklevel=3)
        return int(st["step"]), list(st["curve"])
    if problems:
        raise InputError(f"no intact checkpoint in {out / 'checkpoints'} ({'; '.join(problems)}); "
                         f"start over with resume=False (CLI --no-resume)")
    return 0, []


def _evaluate(out: Path, step: int, model: Model, solution: Solution, stop_when: StopRule, curve: list, meta: dict | None,
              main: bool, allsum) -> bool:
    """Run ``stop_when`` after optimiser step ``step`` (gradients off, the training RNG stream left as it was), record
    its measurement in ``curve[-1]["eval"]`` (so a resumed run keeps it), save the candidate state when asked, and
    return whether to stop (any process asking stops all)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        d = stop_when(step, model)
    if not isinstance(d, StopDecision):
        raise InputError(f"stop_when must return a training.trainer.StopDecision, got {type(d).__name__}")
    rec = {"step": step, "stop": bool(d.stop), **json.loads(json.dumps(d.metrics, default=float))}
    if d.keep:
        path = out / "evals" / f"step-{step:06d}"
        if main:
            solution.save(path, {**(meta or {}), "step": step, "eval": rec}, model=model)  # atomic
        rec["checkpoint"] = str(path)
    curve[-1]["eval"] = rec
    return bool(allsum(torch.tensor([float(d.stop)], device=model.device)).item() > 0)


def fit(
    model: Model,
    solution: Solution,
    train: TokenizedSet,
    cfg: TrainConfig,
    out: str | Path,
    *,
    kl_set: TokenizedSet | None = None,
    retain_set: TokenizedSet | None = None,
    meta: dict | None = None,
    resume: bool = True,
    progress: bool | None = None,
    stop_when: StopRule | None = None,
    eval_every: int | None = None,
) -> TrainResult:
    """Train ``solution`` on ``train`` and save it to ``out/final`` (plus ``out/train_log.json``).

    Objectives (per optimiser step, token-weighted over the step's micro-batches):
    - ``sft``: L = CE(response tokens) [+ λ · KL_tok(π_ref ‖ π_θ) over ``kl_set`` (definition 6)];
    - ``npo``: L = (2/β) · mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) over ``train`` (NPO on (prompt, refusal) pairs:
      pushes the refusal down relative to the reference without any target answer) [+ retain_weight · CE on
      ``retain_set``].
    With ``resume`` the latest checkpoint in ``out/checkpoints`` is continued exactly; a checkpoint of a run with
    other settings or data (see :func:`run_fingerprint`) is an error. Without it, old checkpoints are removed.

    Stopping rule: with ``stop_when`` (a :data:`StopRule`), after every ``eval_every``-th optimiser step and after
    the last one it is called with the solution applied; its :class:`StopDecision` is recorded (``metrics["evals"]``,
    each with the ``checkpoint`` directory of the kept state) and ``stop=True`` ends training there. The step
    budget is ``cfg.max_steps`` (or the epochs); ``metrics`` reports ``steps`` done, ``budget_steps`` and
    ``stopped_by_rule``.
    """
    from transformers import get_linear_schedule_with_warmup

    from interp.progress import bar as progress_bar

    out = Path(out)
    if cfg.objective not in ("sft", "npo"):
        raise InputError(f"unknown objective {cfg.objective!r}")
    if cfg.kl_weight and kl_set is None:
        raise InputError("kl_weight > 0 needs kl_data")
    if cfg.retain_weight and retain_set is None:
        raise InputError("retain_weight > 0 needs retain data")
    if stop_when is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise InputError(f"a stopping rule needs eval_every, an integer ≥ 1 (optimiser steps between evaluations), got {eval_every!r}")
    params = solution.parameters()
    if not params:
        raise InputError("the solution has no trainable parameters")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    mbs, steps = micro_batches(len(train.examples), cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, steps), steps)
    step, curve = 0, []
    fingerprint = run_fingerprint(model, solution, cfg, train, kl_set=kl_set, retain_set=retain_set, meta=meta)
    state, world, rank, allsum = _dist()
    if not resume and (out / "checkpoints").is_dir() and rank == 0:
        shutil.rmtree(out / "checkpoints")  # starting over: another run's checkpoints must not be resumed later
    if not resume and (out / "evals").is_dir() and rank == 0:
        shutil.rmtree(out / "evals")  # … nor its evaluated candidates be taken for this run's
    if resume:
        step, curve = _load_checkpoint(out, solution, opt, sched, fingerprint)
    pad = model.tokenizer.pad_token_id
    dev = model.device
    V = model.hf.get_output_embeddings().weight.shape[0]
    if world > 1 and cfg.batch_size < world:
        raise InputError(f"batch_size {cfg.batch_size} is smaller than the {world} processes it is split across")
    main = rank == 0
    n_tokens_seen = 0
    stopped = False
    t0 = time.time()
    what = f"train {solution.kind}" + (f" ({meta['variant']})" if meta and meta.get("variant") else "")
    bar = progress_bar(desc=what, total=steps, initial=step, progress=progress if main else False, min_total=1, unit="step", leave=True)

    def shard(idx: list[int]) -> list[int]:
        return idx[rank::world]

    with solution.apply(model):
        while step < steps:
            chunk = mbs[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
            n_loss = sum(_loss_tokens([train.examples[i] for i in idx]) for idx in chunk)  # global, all processes
            logs = {cfg.objective: 0.0, **({"kl": 0.0} if kl_set is not None and cfg.kl_weight else {}),
                    **({"retain": 0.0} if retain_set is not None and cfg.retain_weight else {})}  # the terms in use
            bad = False

            def backward(term: torch.Tensor) -> None:
                # one backward per forward: the graph of each batch is freed before the next batch's forward (the
                # KL-narrow SFT + KL batch is one forward, sft_and_kl_backward; the retain batch is its own)
                nonlocal bad
                if not torch.isfinite(term):
                    bad = True
                elif term.requires_grad:
                    term.backward()

            for k, idx in enumerate(chunk):
                mine = shard(idx)
                j = (step * cfg.grad_accum + k) * cfg.kl_batch_size  # this micro-batch's first auxiliary example
                aidx = [(j + i) % len(kl_set.examples) for i in range(cfg.kl_batch_size)] if kl_set is not None else []
                # fused only where it pays: a KL micro-batch smaller than the SFT one (measured, bench/training.py:
                # the default 1 KL sequence per 4 SFT ones, step 1.66 → ≈ 1.4 s; at 4 per 4 no time saved, a higher peak)
                fused = (cfg.objective == "sft" and kl_set is not None and cfg.kl_weight and mine
                         and 0 < len(shard(aidx)) < len(mine))
                if fused and not bad:  # SFT and KL terms from one student forward (sft_and_kl_backward)
                    n_aux = max(_loss_tokens([kl_set.examples[i] for i in aidx]), 1)
                    ce, term = sft_and_kl_backward(model, solution, [train.examples[i] for i in mine],
                                                   [kl_set.examples[i] for i in shard(aidx)], pad, dev,
                                                   sft_scale=1.0 / max(n_loss, 1),
                                                   kl_scale=cfg.kl_weight / n_aux / (V if cfg.legacy_vocab_scaling else 1.0) / len(chunk))
                    bad = bad or not (torch.isfinite(ce) and torch.isfinite(term))
                    logs["sft"] += ce.item()
                    logs["kl"] += term.item() / cfg.kl_weight
                    n_tokens_seen += int(sum(len(train.examples[i].ids) for i in mine))
                elif mine and not bad:
                    b = collate([train.examples[i] for i in mine], pad, dev)
                    if cfg.objective == "sft":
                        ce = sft_loss_sum(model, b) / max(n_loss, 1)
                        logs["sft"] += ce.item()
                        backward(ce)
                    else:
                        lp = seq_logprob(model, b)
                        with torch.no_grad(), solution.reference():
                            lp_ref = seq_logprob(model, b)
                        npo = (2.0 / cfg.npo_beta) * torch.nn.functional.softplus(cfg.npo_beta * (lp - lp_ref)).sum() / len(idx) / len(chunk)
                        logs["npo"] += npo.item()
                        backward(npo)
                    n_tokens_seen += int(b["attention_mask"].sum())
                for aux, weight, name in ((kl_set, cfg.kl_weight, "kl"), (retain_set, cfg.retain_weight, "retain")):
                    if aux is None or not weight or bad or (name == "kl" and fused):
                        continue
                    j = (step * cfg.grad_accum + k) * cfg.kl_batch_size
                    aidx = [(j + i) % len(aux.examples) for i in range(cfg.kl_batch_size)]
                    n_aux = max(_loss_tokens([aux.examples[i] for i in aidx]), 1)
                    if not shard(aidx):
                        continue
                    ab = collate([aux.examples[i] for i in shard(aidx)], pad, dev)
                    if name == "kl":
                        s_, _ = kl_sum(model, solution, ab)
                        term = s_ / n_aux / (V if cfg.legacy_vocab_scaling else 1.0) / len(chunk)
                    else:
                        term = sft_loss_sum(model, ab) / n_aux / len(chunk)
                    logs[name] += term.item()
                    backward(weight * term)
            if world > 1:  # every process stops together, or the others would wait forever in the reduce
                bad = bool(allsum(torch.tensor([float(bad)], device=dev)).item() > 0)
            if bad:
                last = _latest_checkpoint(out)
                raise FloatingPointError(f"loss became non-finite at step {step + 1}; stopped. Last good checkpoint: "
                                         f"{last if last else 'none (set save_every)'}")
            if world > 1:
                for p_ in params:
                    p_.grad = allsum(p_.grad if p_.grad is not None else torch.zeros_like(p_))
                logs = dict(zip(logs, allsum(torch.tensor(list(logs.values()), device=dev, dtype=torch.float64)).tolist()))
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            total = logs[cfg.objective] + cfg.kl_weight * logs.get("kl", 0.0) + cfg.retain_weight * logs.get("retain", 0.0)
            curve.append({"step": step, "loss": total, **logs, "lr": sched.get_last_lr()[0],
                          "grad_norm": float(gnorm) if gnorm is not None else None})
            elapsed = time.time() - t0
            bar.set_postfix(loss=f"{total:.4f}", tok_s=f"{n_tokens_seen * world / max(elapsed, 1e-9):.0f}")
            bar.update(1)
            if stop_when is not None and (step % eval_every == 0 or step == steps):
                stopped = _evaluate(out, step, model, solution, stop_when, curve, meta, main, allsum)
            if cfg.save_every and step % cfg.save_every == 0 and step < steps:
                if main:
                    _save_checkpoint(out, step, solution, opt, sched, curve, fingerprint)
                if state is not None:
                    state.wait_for_everyone()
            if cfg.stop_at_step is not None and step >= cfg.stop_at_step and step < steps:
                bar.close()
                return TrainResult(out, {"stopped_at": step, "curve": curve})
            if stopped:
                break
    bar.close()
    evals = [c["eval"] for c in curve if "eval" in c]
    info = {**(meta or {}), "config": asdict(cfg), "steps": step, "budget_steps": steps, "stopped_by_rule": stopped,
            **({"evals": evals} if stop_when is not None else {}), "n_examples": len(train.examples),
            "n_truncated": train.n_truncated, "n_dropped": train.n_dropped, "wall_s": round(time.time() - t0, 2),
            "tokens_per_s": n_tokens_seen * world / max(time.time() - t0, 1e-9), "final_loss": curve[-1]["loss"] if curve else None,
            "processes": world, "versions": versions()}
    final = out / "final"
    if main:
        solution.save(final, info, model=model)  # atomic
        write_json(out / "train_log.json", {**info, "curve": curve})
    if state is not None:
        state.wait_for_everyone()
    return TrainResult(final, {**info, "curve": curve})
