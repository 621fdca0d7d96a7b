"""The hook core: one scoped context manager, residual-stream module lookup, and hidden-state plumbing.

Every hook the toolkit registers goes through :func:`hooked`, which removes all of them on exit — also when
the body (or a hook) raises — so a model is never left modified.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

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
