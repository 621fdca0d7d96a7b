"""TransformerLens backend: ``TransformerBridge`` booted on a *copy* of the HF model (booting mutates the model
it is given), cached on the :class:`~interp.models.Model`; reads ``blocks.{l}.hook_out``."""

from __future__ import annotations

import copy

import torch

from ..io import InputError


def bridge(model):
    """The model's TransformerBridge, booted once (offline: the tokenizer is passed in)."""
    br = model.meta.get("_tl_bridge")
    if br is None:
        try:
            from transformer_lens.model_bridge import TransformerBridge
        except ImportError:
            raise InputError("backend 'transformer_lens' needs `pip install 'em-interp[backends]'`") from None
        br = TransformerBridge.boot_transformers(
            model.hf.config.name_or_path or model.name, hf_model=copy.deepcopy(model.hf), tokenizer=_reloadable(model.tokenizer)
        )
        br.eval()
        model.meta["_tl_bridge"] = br
    return br


def run_batch(model, batch, layers, on_layer) -> None:
    br = bridge(model)
    names = [f"blocks.{l}.hook_out" for l in layers]
    with torch.inference_mode():
        _, cache = br.run_with_cache(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            names_filter=names,
            stop_at_layer=max(layers) + 1,
        )
    for l, n in zip(layers, names):
        on_layer(l, cache[n])


def _reloadable(tokenizer):
    """TL re-loads a tokenizer that has a BOS token from its ``name_or_path``; an in-process tokenizer (the tiny
    test models) has none, so give it one by saving it to a temporary directory."""
    if tokenizer.init_kwargs.get("name_or_path"):
        return tokenizer
    import tempfile

    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="em-interp-tok-")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)
