"""TransformerLens backend: ``TransformerBridge`` booted on a *copy* of the HF model (booting mutates the model
it is given), cached on the :class:`~interp.models.Model`; reads ``blocks.{l}.hook_out``.

Because the bridge runs the copy, hooks on the original model do not reach it: the active interventions
(:func:`interp.hooks.active_interventions`, e.g. an open ``ablate(...)`` / ``steer(...)``) are re-applied as
TransformerLens hooks at the bridge hook points wrapping the same HF modules (``hook_in`` for an edit of a
module's input, ``hook_out`` for its output). A forward here is a plain forward without a KV cache, i.e. prompt
tokens (``steer(..., positions="generated")`` changes nothing, as on the hooks backend).
"""

from __future__ import annotations

import contextlib

import torch

from ..hooks import active_interventions, plain_copy
from ..io import InputError


def bridge(model):
    """The model's TransformerBridge, booted once (offline: the tokenizer is passed in)."""
    br = model.meta.get("_tl_bridge")
    if br is None:
        try:
            from transformer_lens.model_bridge import TransformerBridge
        except ImportError:
            raise InputError("backend 'transformer_lens' needs `pip install 'em-interp[backends]'`") from None
        with _reloadable(model.tokenizer) as tokenizer:  # TL may re-load it from its folder while it boots
            br = TransformerBridge.boot_transformers(model.hf.config.name_or_path or model.name, hf_model=plain_copy(model.hf),
                                                     tokenizer=tokenizer)
        br.eval()
        model.meta["_tl_bridge"] = br
    return br


def bridge_sites(br) -> dict:
    """HF module path (as in ``hf.named_modules()``, e.g. ``model.layers.3.post_attention_layernorm``) → the bridge
    component wrapping that module (it has ``hook_in`` / ``hook_out``)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    hf_path: dict[str, str] = {}  # bridge module path → HF module path
    for path, mod in br.named_modules():  # parents come before their children
        if not isinstance(mod, GeneralizedComponent) or not getattr(mod, "name", None):
            continue
        parent, full = path, mod.name  # top-level components carry the full HF path, nested ones a relative one
        while "." in parent:
            parent = parent.rsplit(".", 1)[0]
            if parent in hf_path:
                full = f"{hf_path[parent]}.{mod.name}"
                break
        hf_path[path] = full
    modules = dict(br.named_modules())
    return {full: modules[path] for path, full in hf_path.items()}


def intervention_hooks(model, br, attention_mask: torch.Tensor) -> list:
    """``(hook_name, fn)`` pairs applying the model's active interventions on the bridge, for a plain forward of
    tokens with ``attention_mask [B, T]``; an edit without a matching hook point raises (never silently ignored)."""
    active = active_interventions(model.hf)
    if not active:
        return []
    sites = bridge_sites(br)
    paths = {m: n for n, m in model.hf.named_modules()}
    hooks = []
    for iv in active:
        if iv.begin is not None:
            iv.begin(attention_mask, True)
        for e in iv.edits:
            comp = sites.get(paths.get(e.module, ""))
            point = getattr(comp, "hook_in" if e.where == "input" else "hook_out", None)
            if point is None or point.name is None:
                where = paths.get(e.module, type(e.module).__name__)
                raise InputError(f"backend 'transformer_lens' cannot apply the active {iv.kind}(): the bridge has no hook "
                                 f"point for the {e.where} of {where}; use backend='hooks'")
            hooks.append((point.name, lambda t, hook, fn=e.fn: fn(t)))
    return hooks


def run_batch(model, batch, layers, on_layer) -> None:
    br = bridge(model)
    names = [f"blocks.{l}.hook_out" for l in layers]
    with torch.inference_mode(), br.hooks(fwd_hooks=intervention_hooks(model, br, batch.attention_mask)):
        _, cache = br.run_with_cache(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            names_filter=names,
            stop_at_layer=max(layers) + 1,
        )
    for l, n in zip(layers, names):
        on_layer(l, cache[n])


@contextlib.contextmanager
def _reloadable(tokenizer):
    """TL re-loads a tokenizer that has a BOS token from its ``name_or_path``; an in-process tokenizer (the tiny
    test models) has none, so give it one: saved to a temporary directory that exists while the bridge boots and
    is removed afterwards (it used to be left behind in /tmp, one per bridge)."""
    if tokenizer.init_kwargs.get("name_or_path"):
        yield tokenizer
        return
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="em-interp-tok-") as folder:
        tokenizer.save_pretrained(folder)
        yield AutoTokenizer.from_pretrained(folder)
