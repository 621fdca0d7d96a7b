"""Export a directional ablation (definition 3) as artifacts that load without this toolkit.

- :func:`export_orthogonalized` with ``lora=False`` writes a standalone HF model directory (safetensors, config,
  generation config, tokenizer) whose residual-writing matrices — the token embedding, every attention
  ``o_proj`` and MLP ``down_proj`` — are ``W − r̂ r̂ᵀ W`` (:func:`interp.interventions.orthogonalize_weights`):
  ``AutoModelForCausalLM.from_pretrained(out)``. Tied input/output embeddings are untied (the unembedding keeps its
  weights, as activation ablation does), so the exported model stores ``lm_head`` separately.
- With ``lora=True`` it writes the same edit as a rank-1 LoRA in plain peft format
  (:func:`interp.interventions.ablation_lora`): ``PeftModel.from_pretrained(base, out)`` on the unedited base.
  (On a model with tied embeddings, keep it unmerged: merging writes the embedding delta into the shared weight,
  which would edit the unembedding too.)

Either gives the logits of ``with ablate(model, r̂): …`` on every token. Families that normalise a sub-layer's output
before the residual add (Gemma 2/3) cannot be orthogonalised exactly through weights and are refused. As with any
HF model, a left-padded batch needs position ids from the attention mask (``generate`` derives them itself).

Every export is written atomically (a temporary directory renamed into place) with a sidecar ``em_interp.json``:
the kind, the direction's source and fingerprint, the base model's :func:`~interp.models.signature`, the versions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .interventions import ablation_lora, check_direction, orthogonalize_weights, residual_writers
from .io import InputError, atomic_path, versions
from .models import Model, signature

SIDECAR = "em_interp.json"
KINDS = ("orthogonalized_model", "ablation_lora")


def export_orthogonalized(
    model: Model,
    direction: torch.Tensor,
    out: str | Path,
    *,
    lora: bool = False,
    source: dict | None = None,
) -> Path:
    """Write the ablation of ``direction`` (``[d_model]``, normalised here) from ``model`` to the directory ``out``.

    Args:
        lora: write the rank-1 LoRA adapter instead of the full edited model.
        source: where the direction came from (e.g. ``{"directions": path, "layer": 12, "pos": -1}``), recorded in
            the sidecar.

    Returns ``out``. ``model`` is not changed. ``out`` may be new, empty, or an earlier export (then replaced);
    anything else is refused, so no unrelated directory is ever overwritten.
    """
    out = Path(out)
    _check_target(out)
    if hasattr(model.hf, "peft_config"):
        raise InputError(f"{model.name} carries a peft adapter; merge it first (merge_and_unload) and export the merged model")
    r = check_direction(model, direction)  # [d] unit, float32
    _check_plain_weights(model)
    info = {
        "kind": KINDS[1] if lora else KINDS[0],
        "edit": "W - r r^T W on the token embedding, every attention o_proj and MLP down_proj (definition 3)",
        "direction": {"sha256": hashlib.sha256(r.cpu().numpy().tobytes()).hexdigest(), "dtype": "float32", "unit": True},
        "source": source or {},
        **signature(model),
        "versions": versions(),
    }
    if lora:
        edited = ablation_lora(model, r, adapter_name="default")  # "default": peft saves it at the top level
        edited.hf.peft_config["default"].base_model_name_or_path = model.name
        with atomic_path(out) as tmp:
            edited.hf.save_pretrained(str(tmp), save_embedding_layers=False)  # the base embedding is unchanged
            (tmp / SIDECAR).write_text(json.dumps(info, indent=2) + "\n")
        return out
    edited = orthogonalize_weights(model, r)  # a copy; tied embeddings untied
    _clear_gguf_marker(edited.hf)
    edited.hf.config.name_or_path = model.name
    with atomic_path(out) as tmp:
        edited.hf.save_pretrained(str(tmp))
        _save_tokenizer(model.tokenizer, tmp)
        (tmp / SIDECAR).write_text(json.dumps(info, indent=2) + "\n")
    return out


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """Save the tokenizer with the padding side it is used with (left: set after loading, so not in its init
    arguments, which is all ``save_pretrained`` records)."""
    tokenizer.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg["padding_side"] = tokenizer.padding_side
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / SIDECAR).read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous not in KINDS:
            raise InputError(f"{out}: a non-empty directory that is not an earlier export; give a new or empty directory")


def _check_plain_weights(model: Model) -> None:
    """The residual writers must be plain floating-point tensors (a quantised model cannot be edited this way)."""
    w = residual_writers(model)
    for mod in [w.embedding, *w.attn_out, *w.mlp_out]:
        if not mod.weight.is_floating_point():
            raise InputError(f"{model.name} has quantised weights ({mod.weight.dtype}); load it unquantised to export an edit")


def _clear_gguf_marker(hf) -> None:
    """A GGUF-loaded model is dequantised on load but keeps a quantisation marker that makes ``save_pretrained`` raise
    and would make the saved config claim a quantisation; drop it (only GGUF's: other methods are refused)."""
    quantizer = getattr(hf, "hf_quantizer", None)
    qconf = getattr(hf.config, "quantization_config", None)
    if quantizer is None and qconf is None:
        return
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if method is None:
        method = qconf.get("quant_method") if isinstance(qconf, dict) else getattr(qconf, "quant_method", None)
    method = str(getattr(method, "value", method)).lower()
    if method != "gguf":
        raise InputError(f"the model is quantised with {method}; load it unquantised to export an edit")
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.is_quantized = False
