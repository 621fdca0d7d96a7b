"""nnsight backend: a ``LanguageModel`` wrapping the same HF model (no copy); saves each block's output.

nnsight patches objects process-wide on import, so it is imported only when this backend is chosen.
"""

from __future__ import annotations

import torch

from ..io import InputError


def language_model(model):
    lm = model.meta.get("_nnsight")
    if lm is None:
        try:
            from nnsight import LanguageModel
        except ImportError:
            raise InputError("backend 'nnsight' needs `pip install 'em-interp[backends]'`") from None
        lm = LanguageModel(model.hf, tokenizer=model.tokenizer)
        model.meta["_nnsight"] = lm
    return lm


def run_batch(model, batch, layers, on_layer) -> None:
    import nnsight

    lm = language_model(model)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    with torch.inference_mode(), lm.trace(inputs):
        saved = nnsight.save([lm.model.layers[l].output for l in layers])
    for l, out in zip(layers, saved):
        on_layer(l, out[0] if isinstance(out, (tuple, list)) else out)
