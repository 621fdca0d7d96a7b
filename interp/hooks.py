"""The hook core: one scoped context manager, residual-stream module lookup, and hidden-state plumbing.

Every hook the toolkit registers goes through :func:`hooked`, which removes all of them on exit — also when
the body (or a hook) raises — so a model is never left modified.

Interventions (``ablate``, ``steer``) are described backend-independently as an :class:`Intervention` (a list
of :class:`Edit` on HF modules) and applied by :func:`intervening`: as forward hooks on the model itself, and
listed in :func:`active_interventions` so that a backend which runs a different module tree (TransformerLens'
bridge runs a copy) applies the same edits at the matching hook points.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
from torch import nn

ForwardHook = Callable[[nn.Module, tuple, object], object]
PreHook = Callable[[nn.Module, tuple, dict], object]

_BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2, Gemma, Mistral, …
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, …)
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, GPT-J
    "gpt_neox.layers",  # Pythia
)


def residual_modules(hf: nn.Module) -> nn.ModuleList:
    """The decoder blocks of an HF causal LM (their outputs are the residual stream), per architecture."""
    for path in _BLOCK_PATHS:
        obj = hf
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    # peft wraps the model: look through base_model.model
    inner = getattr(getattr(hf, "base_model", None), "model", None)
    if inner is not None and inner is not hf:
        return residual_modules(inner)
    raise ValueError(f"cannot find the decoder blocks of {type(hf).__name__}; known paths: {', '.join(_BLOCK_PATHS)}")


@contextlib.contextmanager
def hooked(
    forward: Sequence[tuple[nn.Module, ForwardHook]] = (),
    pre: Sequence[tuple[nn.Module, PreHook]] = (),
) -> Iterator[None]:
    """Register forward hooks ``fn(module, args, output)`` and pre-hooks ``fn(module, args, kwargs)``.

    Pre-hooks are registered ``with_kwargs=True`` and may return ``(args, kwargs)``; forward hooks may return a
    replacement output. Every handle is removed on exit, including when the body raises.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        for module, fn in forward:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs")


def plain_copy(hf: nn.Module) -> nn.Module:
    """A deep copy of ``hf`` without forward hooks. ``copy.deepcopy`` copies a module's hooks too, so a copy made
    while an intervention is open (a TransformerLens bridge, an orthogonalised model, a LoRA form) would keep that
    intervention for good."""
    new = copy.deepcopy(hf)
    for m in new.modules():
        for name in _HOOK_DICTS:
            d = getattr(m, name, None)
            if d is not None:
                d.clear()
    return new


def hidden_of(output: object) -> torch.Tensor:
    """The hidden-state tensor ``[batch, seq, d_model]`` of a decoder block's output (tensor or tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_hidden(output: object, hidden: torch.Tensor) -> object:
    """Return ``output`` with its hidden-state tensor replaced by ``hidden`` (same container type)."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[batch, seq]`` that start at 0 at each sequence's first real token (left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def unwrap(hf: nn.Module) -> nn.Module:
    """The transformers model beneath a peft wrapper (LoRA layers stay injected), or ``hf`` itself."""
    return hf.get_base_model() if hasattr(hf, "get_base_model") else hf


def decoder(hf: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (e.g. ``LlamaModel``), looking through peft wrappers."""
    inner = unwrap(hf)
    return getattr(inner, inner.base_model_prefix, inner)


# ------------------------------------------------------------------------------------------------------------
# Interventions as data: what to change where, independent of the backend that runs the model


@dataclass
class Edit:
    """One activation edit ``fn(h) → h`` with ``h: [batch, seq, d_model]``, on the hidden-state *input* of
    ``module`` (its first positional argument or ``hidden_states``) or on its *output* (the tensor, or the first
    element of the tuple it returns)."""

    module: nn.Module
    where: Literal["input", "output"]
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass(eq=False)  # identity: two equal-looking interventions are still two
class Intervention:
    """An intervention as backend-independent data.

    Attributes:
        kind: what it is (``"ablate"``, ``"steer"``), for messages.
        edits: applied in order within each forward.
        begin: called before every forward of the model with ``mask``, the attention mask ``[batch, seq]`` of the
            tokens of this forward (ones where the forward had none), and ``prefill``: whether the forward starts
            from an empty KV cache (a plain forward or generate's prompt step) rather than extending one.
    """

    kind: str
    edits: list[Edit]
    begin: Callable[[torch.Tensor, bool], None] | None = None


_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, list[Intervention]]" = weakref.WeakKeyDictionary()


def active_interventions(hf: nn.Module) -> list[Intervention]:
    """The interventions active on ``hf`` (outermost first), for backends that do not run ``hf``'s own modules."""
    return list(_ACTIVE.get(unwrap(hf), ()))


def _cache_length(kwargs: dict) -> int:
    """Tokens already in the KV cache of a decoder forward (the argument is ``cache`` in transformers 5.24,
    ``past_key_values`` before)."""
    for key in ("cache", "past_key_values"):
        past = kwargs.get(key)
        if past is not None:
            return int(past.get_seq_length()) if hasattr(past, "get_seq_length") else 0
    return 0


@contextlib.contextmanager
def intervening(hf: nn.Module, intervention: Intervention) -> Iterator[None]:
    """Apply ``intervention`` to ``hf`` as forward hooks (removed on exit) and list it in
    :func:`active_interventions` for as long as the context is open."""

    def begin_hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0] if args else kwargs.get("inputs_embeds")
        B, T = ids.shape[:2]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            cur = mask[:, -T:]  # [B, T]: the mask covers cached + current tokens
        else:
            cur = torch.ones(B, T, device=ids.device, dtype=torch.long)
        intervention.begin(cur, _cache_length(kwargs) == 0)
        return None

    def as_pre(fn):
        def pre(module, args, kwargs):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            kwargs["hidden_states"] = fn(kwargs["hidden_states"])
            return args, kwargs

        return pre

    def as_post(fn):
        def post(module, args, output):
            return with_hidden(output, fn(hidden_of(output)))

        return post

    pre = [(decoder(hf), begin_hook)] if intervention.begin is not None else []
    pre += [(e.module, as_pre(e.fn)) for e in intervention.edits if e.where == "input"]
    forward = [(e.module, as_post(e.fn)) for e in intervention.edits if e.where == "output"]
    stack = _ACTIVE.setdefault(unwrap(hf), [])
    with hooked(forward=forward, pre=pre):
        stack.append(intervention)
        try:
            yield
        finally:
            stack.remove(intervention)
