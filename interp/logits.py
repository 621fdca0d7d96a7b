"""Next-token distributions at the last prompt position, batched and padding-safe, and metrics on them."""

from __future__ import annotations

from typing import Sequence

import torch

from .activations import make_batches
from .generation import encode_prompts
from .models import Item, Model


def last_logprobs(model: Model, items: Sequence[Item], *, batch_size: int = 16) -> torch.Tensor:
    """Log-probabilities of the next token after each rendered prompt (generation prompt included).

    Returns ``[n_items, vocab]`` float32, in input order. Only the last position goes through the LM head.
    Active interventions (ablate/steer contexts, adapters) apply.
    """
    encoded = encode_prompts(model, items)
    out: torch.Tensor | None = None
    for b in make_batches(encoded, batch_size, model.tokenizer.pad_token_id, model.device):
        with torch.inference_mode():
            logits = model.hf(
                input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                use_cache=False, logits_to_keep=1,
            ).logits[:, -1]
        lp = torch.log_softmax(logits.float(), dim=-1).cpu()
        if out is None:
            out = torch.empty(len(items), lp.shape[-1])
        out[b.index] = lp
    assert out is not None
    return out


def token_set_logodds(logprobs: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """log P(R) − log(1 − P(R)) with P(R) = Σ_{t∈R} p(t); ``logprobs``: ``[n, vocab]`` → ``[n]`` (float64)."""
    lp = logprobs.double()
    log_pr = torch.logsumexp(lp[:, list(token_ids)], dim=-1)
    log_rest = torch.log1p(-log_pr.exp().clamp(max=1 - 1e-12))
    return log_pr - log_rest


def kl_divergence(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row, ``[n, vocab]`` × 2 → ``[n]`` float64."""
    p, q = p_logprobs.double(), q_logprobs.double()
    return (p.exp() * (p - q)).sum(-1)


def response_logprobs(model: Model, chats: Sequence[Item], *, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each chat's final assistant turn given everything before it.

    Response tokens are the tokens of the assistant content (derived from the chat template's offsets, as in
    ``position="response_mean"``); padding and prompt tokens never count.
    Returns ``(sum_logprob [n] float64, n_tokens [n] long)``.
    """
    from .activations import encode_all

    encoded = encode_all(model, chats, "response_mean")
    total = torch.zeros(len(chats), dtype=torch.float64)
    count = torch.zeros(len(chats), dtype=torch.long)
    for b in make_batches(encoded, batch_size, model.tokenizer.pad_token_id, model.device):
        with torch.inference_mode():
            logits = model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False).logits
        lp = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
        for r, i in enumerate(b.index):
            pos = torch.tensor(encoded[i].groups[0], device=lp.device) + b.offsets[r]  # [n_resp]
            tok = b.input_ids[r, pos]
            total[i] = lp[r, pos - 1].gather(-1, tok[:, None]).double().sum().cpu()
            count[i] = len(pos)
    return total, count
