"""Chat conversations → token ids with a response-only loss mask derived from the chat template.

For each conversation the prompt (every message before the final assistant turn) is rendered *with* the
generation prompt, then the full conversation is rendered; the loss mask starts exactly where the prompt's tokens
end. The prompt's tokens must be a prefix of the conversation's tokens — if a template breaks that (e.g. it
re-renders earlier turns differently), :func:`tokenize_chat` raises instead of training on a wrong mask.

Only the final assistant turn carries loss (its content and the template's end-of-turn tokens; with
``train_eos=False`` the end-of-turn tokens are excluded — useful for answers that were cut off). Sequences
longer than ``max_length`` are truncated on the right and counted; a conversation whose response would be
truncated away entirely is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from interp.io import InputError
from interp.models import Model, as_messages


@dataclass
class Example:
    """``ids``: token ids; ``mask``: 1 where the token carries loss (same length)."""

    ids: list[int]
    mask: list[int]
    weight: float = 1.0


@dataclass
class TokenizedSet:
    examples: list[Example]
    n_truncated: int = 0
    n_dropped: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def n_loss_tokens(self) -> int:
        return sum(sum(e.mask) for e in self.examples)


def tokenize_chat(model: Model, chat, *, train_eos: bool = True) -> Example:
    """One conversation (list of messages ending with an assistant turn, or a ``{"messages": …}`` record)."""
    messages = as_messages(chat)
    if messages[-1]["role"] != "assistant" or len(messages) < 2:
        raise InputError(f"conversation {str(chat)[:80]!r} does not end with an assistant turn after a prompt")
    tok = model.tokenizer
    prompt_text = model.render(messages[:-1], add_generation_prompt=True)
    full_text = model.render(messages, add_generation_prompt=False)
    p_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    f_ids = tok(full_text, add_special_tokens=False)["input_ids"]
    if f_ids[: len(p_ids)] != p_ids or len(f_ids) <= len(p_ids):
        raise InputError(
            f"the chat template of {model.name} does not render the prompt (with generation prompt) as a token prefix "
            f"of the conversation; cannot derive a response-only mask for {str(chat)[:60]!r}"
        )
    mask = [0] * len(p_ids) + [1] * (len(f_ids) - len(p_ids))
    if not train_eos:
        content = messages[-1]["content"].rstrip()
        end = full_text.find(content, len(prompt_text)) + len(content)
        offsets = tok(full_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        mask = [m if s < end else 0 for m, (s, _) in zip(mask, offsets)]
    return Example(list(f_ids), mask)


def tokenize_chats(model: Model, chats: Sequence, *, max_length: int = 256, train_eos: bool = True,
                   mask: str = "response") -> TokenizedSet:
    """Tokenise conversations (``mask="response"``) or plain texts / whole conversations (``mask="all"``: every
    token carries loss — for generic prose and the KL set)."""
    if len(chats) == 0:
        raise InputError("empty data set: no conversations to train on")
    examples, n_trunc, n_drop = [], 0, 0
    for c in chats:
        if mask == "all":
            text = c["text"] if isinstance(c, dict) and "text" in c else (c if isinstance(c, str) else model.render(c, add_generation_prompt=False))
            ids = model.tokenizer(text, add_special_tokens=isinstance(c, str) or (isinstance(c, dict) and "text" in c))["input_ids"]
            ex = Example(list(ids), [1] * len(ids))
        else:
            ex = tokenize_chat(model, c, train_eos=train_eos)
        if len(ex.ids) > max_length:
            n_trunc += 1
            ex = Example(ex.ids[:max_length], ex.mask[:max_length], ex.weight)
            if sum(ex.mask) == 0:
                n_drop += 1
                continue
        examples.append(ex)
    if not examples:
        raise InputError(f"every conversation's response lies beyond max_length={max_length}")
    return TokenizedSet(examples, n_trunc, n_drop)


def collate(examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns ``input_ids``, ``attention_mask``, ``position_ids``, ``loss_mask`` (float, the
    example weight on loss tokens, 0 on prompt and padding), each ``[B, T]``."""
    T = max(len(e.ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    lm = torch.zeros((B, T), dtype=torch.float32)
    for i, e in enumerate(examples):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        att[i, :n] = 1
        lm[i, :n] = torch.tensor(e.mask, dtype=torch.float32) * e.weight
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=att, position_ids=pos, loss_mask=lm).items()}


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position: ``logits [B, T, V]``, ``input_ids [B, T]`` → ``[B, T]`` where entry
    ``t`` is the loss of predicting token ``t`` (entry 0 is 0: nothing predicts the first token)."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, input_ids[:, 1:, None])[..., 0]
    return torch.nn.functional.pad(nll, (1, 0))
