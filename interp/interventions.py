"""Interventions on a direction (definitions 3–4): directional ablation, activation addition (steering),
weight orthogonalisation and the same edit as a rank-1 LoRA. All work during ``generate`` with the KV cache.

- :func:`ablate` — ``h ← h − (h·r̂) r̂`` at block inputs and wherever an attention / MLP output enters the
  residual stream (after Gemma 2/3's post-attention / post-feed-forward norms) in the chosen layers.
- :func:`steer` — ``h_l ← h_l + α v`` at block outputs, for every sequence of the batch, never on padding
  (:func:`add_vector` is its hook, for a vector read at every forward, e.g. one being trained).
- :func:`orthogonalize_weights` — ``W ← W − r̂ r̂ᵀ W`` for every matrix writing into the residual stream.
- :func:`ablation_lora` — that weight edit as a rank-1 peft LoRA (B = −r̂, A = r̂ᵀ W).

Contexts compose (hooks apply in the order the contexts were entered) and always clean up. Each activation-space
intervention is an :class:`~interp.hooks.Intervention`, so every backend applies it (see ``interp.backends``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
from torch import nn

from .hooks import Edit, Intervention, intervening, plain_copy
from .io import InputError, NonFiniteError
from .models import Model

StepPositions = Literal["all", "prompt", "generated"]


def check_direction(model: Model, direction: torch.Tensor, *, what: str = "direction", unit: bool = True) -> torch.Tensor:
    """Validate a ``[d_model]`` vector (finite, non-zero, right width); return it (unit-normalised if ``unit``) as
    float32 on the model's device."""
    if not isinstance(direction, torch.Tensor):
        direction = torch.as_tensor(direction)
    direction = direction.detach()
    if direction.dim() != 1 or direction.shape[0] != model.d_model:
        raise InputError(f"{what} has shape {tuple(direction.shape)} but {model.name} needs [{model.d_model}]")
    if not torch.isfinite(direction).all():
        raise InputError(f"{what} contains NaN or inf")
    norm = direction.double().norm()
    if norm == 0:
        raise InputError(f"{what} has zero norm")
    v = direction.double() / norm if unit else direction.double()
    return v.to(device=model.device, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------------------
# Architecture map: where the residual stream is written


@dataclass
class ResidualWriters:
    """Where each layer writes into the residual stream.

    ``attn_write[l]`` / ``mlp_write[l]`` are the modules whose output is *added* to the residual stream: the
    attention / MLP blocks themselves, or — in families with sandwich norms (Gemma 2/3) — the post-attention /
    post-feed-forward norms that follow them. ``attn_out`` / ``mlp_out`` are the output projections (``o_proj`` /
    ``down_proj``, ``out_features == d_model``) that the weight-space forms edit; ``embedding`` the token
    embedding. ``post_norms`` says whether the written value is normalised after those projections (then no
    weight edit reproduces the ablation exactly).
    """

    embedding: nn.Embedding
    attn: list[nn.Module]  # the attention blocks
    mlp: list[nn.Module]  # the MLP blocks
    attn_out: list[nn.Linear]
    mlp_out: list[nn.Linear]
    attn_write: list[nn.Module]
    mlp_write: list[nn.Module]
    post_norms: bool


_POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")  # Gemma 2/3; Llama's post_attention_layernorm
# is the *pre*-MLP norm, so the pair is only a sandwich when post_feedforward_layernorm exists too.


def residual_writers(model: Model) -> ResidualWriters:
    attn, mlp, attn_out, mlp_out, attn_write, mlp_write = [], [], [], [], [], []
    sandwich = [hasattr(layer, _POST_NORMS[1]) for layer in model.layers]
    if len(set(sandwich)) > 1:
        raise InputError(f"{model.name}: only some blocks have a {_POST_NORMS[1]}; cannot tell where they write")
    for i, layer in enumerate(model.layers):
        a, m = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if a is None or m is None or not hasattr(a, "o_proj") or not hasattr(m, "down_proj"):
            raise InputError(f"layer {i} of {model.name} ({type(layer).__name__}) has no self_attn.o_proj / mlp.down_proj")
        attn.append(a)
        mlp.append(m)
        attn_out.append(a.o_proj)
        mlp_out.append(m.down_proj)
        attn_write.append(getattr(layer, _POST_NORMS[0]) if sandwich[0] else a)
        mlp_write.append(getattr(layer, _POST_NORMS[1]) if sandwich[0] else m)
    return ResidualWriters(model.hf.get_input_embeddings(), attn, mlp, attn_out, mlp_out, attn_write, mlp_write, sandwich[0])


def _check_weight_form_exact(model: Model) -> None:
    if residual_writers(model).post_norms:
        raise InputError(
            f"{model.name} normalises sub-layer outputs before the residual add ({_POST_NORMS[1]}); weight "
            "orthogonalisation cannot reproduce activation ablation exactly there — use interp.ablate()"
        )


# ------------------------------------------------------------------------------------------------------------
# Activation-space interventions


def _project_out(h: torch.Tensor, r_col: torch.Tensor, r_row_neg: torch.Tensor) -> torch.Tensor:
    """``h − (h·r̂) r̂`` for ``h: [..., d]``; ``r_col = r̂[:, None]``, ``r_row_neg = −r̂[None, :]`` (one fused addmm)."""
    h2 = h.reshape(-1, h.shape[-1])
    return torch.addmm(h2, h2 @ r_col, r_row_neg).view(h.shape)


@contextlib.contextmanager
def ablate(model: Model, direction: torch.Tensor, *, layers: Sequence[int] | str = "all") -> Iterator[None]:
    """Project the direction out of every write into the residual stream of ``layers``, and of their inputs.

    Sites, per chosen layer ``l``: the input of block ``l``, and the attention and MLP contributions exactly as
    they are added to the residual stream — the outputs of ``self_attn`` / ``mlp``, or for families with sandwich
    norms (Gemma 2/3) the outputs of ``post_attention_layernorm`` / ``post_feedforward_layernorm`` (projecting
    before a norm would let the norm's per-channel gain put a component along r̂ back).
    With ``layers="all"`` the input of block 0 (= the embedding output, the first write) and every write are
    ablated; the inputs of blocks 1… are sums of ablated writes, so they are not hooked again (same result up to
    float rounding, a third fewer hooks during generation). Then ``h_l·r̂ = 0`` at every block input and output.
    Applies to prompt and generated tokens alike (padding is never attended to, so it needs no mask); every
    backend applies it (it is an :class:`~interp.hooks.Intervention`).
    """
    r = check_direction(model, direction)
    idx = model.check_layers(None if layers == "all" else layers)
    w = residual_writers(model)
    cache: dict = {}

    def proj(h: torch.Tensor) -> torch.Tensor:
        key = (h.dtype, h.device)
        if key not in cache:
            rr = r.to(dtype=h.dtype, device=h.device)
            cache[key] = (rr[:, None].contiguous(), (-rr)[None, :].contiguous())
        return _project_out(h, *cache[key])

    inputs = [0] if len(idx) == model.n_layers else idx
    edits = [Edit(model.layers[l], "input", proj) for l in inputs]
    edits += [Edit(w.attn_write[l], "output", proj) for l in idx] + [Edit(w.mlp_write[l], "output", proj) for l in idx]
    with intervening(model.hf, Intervention("ablate", edits)):
        yield


@contextlib.contextmanager
def steer(
    model: Model,
    vector: torch.Tensor,
    *,
    layers: Sequence[int] | int,
    alpha: float = 1.0,
    positions: StepPositions = "all",
) -> Iterator[None]:
    """Activation addition ``h_l ← h_l + α v`` at the output of each block in ``layers``.

    ``positions``: ``"all"`` tokens, only ``"prompt"`` tokens (a forward without a KV cache, i.e. a plain forward
    or generate's prefill) or only ``"generated"`` tokens (forwards that extend a KV cache). Padding positions
    (attention mask 0) are never changed; every sequence of the batch is steered.
    """
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise InputError(f"alpha must be a finite number, got {alpha!r}")
    if positions not in ("all", "prompt", "generated"):
        raise InputError(f"positions must be 'all', 'prompt' or 'generated', got {positions!r}")
    v = check_direction(model, vector, what="steering vector", unit=False) * float(alpha)  # [d]
    if not torch.isfinite(v).all():
        raise NonFiniteError(f"steer alpha={alpha:g}: alpha × the steering vector overflows float32")
    with add_vector(model, lambda: v, layers=layers, positions=positions, label=f"steer alpha={alpha:g}"):
        yield


@contextlib.contextmanager
def add_vector(
    model: Model,
    value: Callable[[], torch.Tensor],
    *,
    layers: Sequence[int] | int,
    positions: StepPositions = "all",
    label: str = "steer",
) -> Iterator[None]:
    """The hook behind :func:`steer` (and :class:`interp.solutions.SteeringVector`): ``h_l ← h_l + value()`` at the
    output of each block in ``layers``, on the real (attention mask 1) tokens of every sequence, never on padding.

    ``value()`` returns the ``[d_model]`` vector to add and is called at every forward, so a trainable
    ``nn.Parameter`` (e.g. ``α · v`` of a steering vector being trained) gets its gradient and its current value;
    ``None`` adds nothing (a solution switched off for its reference policy). It is not validated here
    (:func:`steer` checks it). ``positions`` as for :func:`steer`; ``label`` names the
    setting in a :class:`NonFiniteError`. The arithmetic is ``h + mask · value()`` in the residual's dtype.
    """
    idx = model.check_layers(layers)
    state: dict = {}

    def begin(mask: torch.Tensor, prefill: bool) -> None:  # mask: [B, T] of this forward's tokens
        on = positions == "all" or (positions == "prompt") == prefill
        state["mask"] = mask[..., None] if on else None  # [B, T, 1]

    def add(h: torch.Tensor) -> torch.Tensor:  # h: [B, T, d]
        mask = state.get("mask")
        v = value() if mask is not None else None
        if v is None:
            return h
        return h + mask.to(h) * v.to(h)

    edits = [Edit(model.layers[l], "output", add) for l in idx]
    try:
        with intervening(model.hf, Intervention("steer", edits, begin)):
            yield
    except NonFiniteError as e:  # name the setting that did it
        raise NonFiniteError(f"{label} at layer(s) {idx}: {e}") from None


# ------------------------------------------------------------------------------------------------------------
# Weight-space forms


def _orthogonalized_params(model: Model, r: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """New values for every residual-writing weight (and bias): ``W − r̂ r̂ᵀ W`` (output dim = d_model)."""
    w = residual_writers(model)
    r64 = r.double()
    new = {}
    E = w.embedding.weight  # [vocab, d]
    new[E] = (E.double() - (E.double() @ r64)[:, None] * r64).to(E.dtype)
    for lin in w.attn_out + w.mlp_out:
        W = lin.weight  # [d, d_in]
        new[W] = (W.double() - torch.outer(r64, r64 @ W.double())).to(W.dtype)
        if lin.bias is not None:
            b = lin.bias
            new[b] = (b.double() - (b.double() @ r64) * r64).to(b.dtype)
    return new


def orthogonalize_weights(model: Model, direction: torch.Tensor, *, inplace: bool = False) -> Model:
    """Weight orthogonalisation: an edited copy (or ``model`` itself with ``inplace=True``) whose residual-writing
    matrices never write along the direction. Tied input/output embeddings are untied first so that the
    unembedding keeps its original weights (as activation ablation does)."""
    _check_weight_form_exact(model)
    r = check_direction(model, direction)
    target = model if inplace else Model(plain_copy(model.hf), model.tokenizer, model.name, dict(model.meta))
    target.meta.pop("_tl_bridge", None)
    target.meta.pop("_nnsight", None)
    out_emb = target.hf.get_output_embeddings()
    if out_emb is not None and out_emb.weight is target.hf.get_input_embeddings().weight:
        out_emb.weight = nn.Parameter(out_emb.weight.detach().clone(), requires_grad=False)
        target.hf.config.tie_word_embeddings = False
        if hasattr(target.hf.config, "get_text_config"):
            target.hf.config.get_text_config().tie_word_embeddings = False
    with torch.no_grad():
        for p, value in _orthogonalized_params(target, r).items():
            p.copy_(value)
    target.meta["orthogonalized"] = True
    return target


def ablation_lora(model: Model, direction: torch.Tensor, *, adapter_name: str = "ablation"):
    """The weight orthogonalisation as a rank-1 peft LoRA on a copy of the model (the given model is untouched).

    Linear writers get ``B = −r̂`` and ``A = r̂ᵀ W`` (so ``BA = −r̂ r̂ᵀ W``); the embedding gets
    ``A = (E r̂)ᵀ``, ``B = −r̂``; scaling α/r = 1. Returns a :class:`Model` whose ``hf`` is a ``PeftModel``.
    With tied embeddings the embedding LoRA changes the lookup only, never the unembedding, as activation ablation
    does (peft's warning that ``ensure_weight_tying`` is off is expected; merging such an adapter into the shared
    weight would edit the unembedding too).
    """
    from peft import LoraConfig, get_peft_model

    _check_weight_form_exact(model)
    r = check_direction(model, direction)
    hf = plain_copy(model.hf)
    wrapped = Model(hf, model.tokenizer, model.name, {k: v for k, v in model.meta.items() if not k.startswith("_")})
    w = residual_writers(wrapped)
    names = {m: n for n, m in hf.named_modules()}
    targets = [names[w.embedding]] + [names[m] for m in w.attn_out + w.mlp_out]
    if any(m.bias is not None for m in w.attn_out + w.mlp_out):
        raise InputError(f"{model.name} has biases on residual writers; a LoRA cannot express their orthogonalisation")
    cfg = LoraConfig(r=1, lora_alpha=1, target_modules=targets, lora_dropout=0.0, bias="none", init_lora_weights=False)
    peft_model = get_peft_model(hf, cfg, adapter_name=adapter_name)
    r64 = r.double()
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_embedding_A") and adapter_name in module.lora_embedding_A:
                E = module.get_base_layer().weight.double()
                module.lora_embedding_A[adapter_name].copy_((E @ r64)[None, :].to(E.dtype))  # [1, vocab]
                module.lora_embedding_B[adapter_name].copy_((-r64)[:, None])  # [d, 1]
            elif hasattr(module, "lora_A") and adapter_name in module.lora_A:
                W = module.get_base_layer().weight.double()  # [d, d_in]
                module.lora_A[adapter_name].weight.copy_((r64 @ W)[None, :])  # [1, d_in]
                module.lora_B[adapter_name].weight.copy_((-r64)[:, None])  # [d, 1]
    peft_model.eval()
    wrapped.hf = peft_model
    return wrapped
