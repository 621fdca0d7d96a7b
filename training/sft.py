"""Rank-1 (or rank-r) LoRA SFT: general (plain SFT) or narrow (SFT + λ·KL to the adapter-disabled model)."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from interp.io import InputError, json_text, load_items
from interp.models import Model, signature

from .data import TokenizedSet, tokenize_chats
from .trainer import TrainConfig, TrainResult, fit


class LoraSolution:
    """A peft LoRA adapter injected into ``model.hf`` (call :meth:`remove` to take it out again)."""

    kind = "lora"

    def __init__(self, model: Model, *, rank: int = 1, alpha: float | None = None, target_modules: Sequence[str] = ("down_proj",),
                 layers: Sequence[int] | str = "all", rslora: bool = False, seed: int = 0):
        from peft import LoraConfig, get_peft_model

        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise InputError(f"LoRA rank must be an integer ≥ 1, got {rank!r}")
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            raise InputError(f"LoRA alpha must be a finite number > 0 (it scales the update by alpha / rank), got {alpha!r}")
        layer_idx = None if layers == "all" else model.check_layers(layers)
        targets = target_modules if isinstance(target_modules, str) else list(target_modules)  # a str is peft's regex / "all-linear"
        self.model = model
        self.settings = {"rank": rank, "alpha": alpha if alpha is not None else float(rank), "target_modules": targets,
                         "layers": "all" if layer_idx is None else layer_idx, "rslora": rslora}
        cfg = LoraConfig(r=rank, lora_alpha=self.settings["alpha"], target_modules=targets, lora_dropout=0.0,
                         layers_to_transform=layer_idx, use_rslora=rslora, bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                self.peft = get_peft_model(model.hf, cfg)
            except ValueError as e:  # peft's own matching (names, regexes, "all-linear") decides what is valid
                linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.hf.named_modules() if isinstance(m, torch.nn.Linear)})
                raise InputError(f"cannot put LoRA on target_modules={target_modules!r} of {model.name}: {e} "
                                 f"(its linear layers: {', '.join(linear)})") from None
        self._params = [p for n, p in self.peft.named_parameters() if "lora_" in n]
        for p in self._params:
            p.requires_grad_(True)

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def active(self):
        return contextlib.nullcontext()

    def reference(self):
        return self.peft.disable_adapter()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.peft.named_parameters() if "lora_" in n}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.peft.named_parameters():
                if "lora_" in n:
                    p.copy_(state[n])

    def save(self, path: Path, meta: dict) -> None:
        self.peft.save_pretrained(str(path))
        (path / "em_interp.json").write_text(json_text({**meta, "solution": "lora", **self.settings, **signature(self.model)}, default=str))

    def remove(self) -> None:
        """Take the LoRA layers out of ``model.hf`` (the model is as before training)."""
        self.peft.unload()


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
    **overrides,
) -> TrainResult:
    """Train a LoRA adapter on chat ``data`` (response-only loss): a list of chats, a chat JSONL path, or a
    :class:`~training.data.TokenizedSet` (``kl_data`` likewise). With ``kl_data`` and ``kl_weight`` λ > 0 it is
    the KL-narrow solution (definition 6); ``kl_mask="all"`` takes the KL over every token of the KL conversations
    (as published), ``"response"`` over their response tokens. Returns the peft adapter directory and metrics.
    The model is left unchanged (the adapter is removed from it after training)."""
    cfg = replace(config or TrainConfig(), kl_weight=kl_weight, legacy_vocab_scaling=legacy_vocab_scaling, **overrides)
    train = _as_set(model, data, cfg.max_length)
    kl_set = _as_set(model, kl_data, cfg.max_length, kl_mask) if kl_data is not None else None
    sol = LoraSolution(model, rank=rank, alpha=alpha, target_modules=target_modules, layers=layers, rslora=rslora, seed=cfg.seed)
    try:
        kind = "narrow" if kl_weight else "general"
        return fit(model, sol, train, cfg, out, kl_set=kl_set, meta={"variant": kind, "kl_mask": kl_mask}, resume=resume, progress=progress)
    finally:
        sol.remove()
