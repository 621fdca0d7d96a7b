"""nnsight backend: a ``LanguageModel`` wrapping the same HF model (no copy); saves each block's output.

nnsight patches objects process-wide on import, so it is imported only when this backend is chosen.

The model's own forward hooks run inside nnsight's forward, so the active interventions
(:func:`interp.hooks.active_interventions`) act on the computation as they do on the hooks backend. One
difference: nnsight's ``.output`` of a module is the value its ``forward`` returned, *before* that module's
forward hooks — so an edit of a block's own output (``steer`` at that layer) reaches the next block but not the
saved value. Those edits are applied to the saved value here, in the order the hooks would apply them.
"""

from __future__ import annotations

import torch

from ..hooks import active_interventions
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
    blocks = model.layers
    edits = [e for iv in active_interventions(model.hf) for e in iv.edits if e.where == "output"]
    with torch.inference_mode():
        for l, out in zip(layers, saved):
            h = out[0] if isinstance(out, (tuple, list)) else out  # [B, T, d]
            for e in edits:
                if e.module is blocks[l]:
                    h = e.fn(h)
            on_layer(l, h)
