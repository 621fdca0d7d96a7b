"""Residual-stream activations at chosen token positions, batched with left padding, padding-correct.

Position rules (``h_l`` = output of decoder block ``l``):

- ``last_prompt``: the last token of the rendered prompt, generation prompt included → one row per item.
- ``post_instruction``: every template token after the (last) user message → ``P`` rows per item, one per offset
  (``P`` is fixed by the chat template and checked to be equal across items).
- ``response_mean``: mean over the tokens of the final assistant turn's content → one row per item (needs one).
- ``all``: every token of the rendered item → one row per token.

Only the selected positions ever leave the hook; they are reduced in float64. Items are sorted by length into
batches (less padding) and results are returned in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from .hooks import decoder, hidden_of, hooked, position_ids_from_mask
from .io import InputError
from .models import Item, Model, as_messages

Position = Literal["last_prompt", "post_instruction", "response_mean", "all"]
POSITIONS: tuple[str, ...] = ("last_prompt", "post_instruction", "response_mean", "all")
Backend = Literal["hooks", "transformer_lens", "nnsight"]
OnLayer = Callable[[int, torch.Tensor], None]


@dataclass
class Encoded:
    """One tokenised item: ``ids`` to feed, ``groups[g]`` = token indices (into ``ids``) averaged into row ``g``."""

    ids: list[int]
    groups: list[list[int]]


# ----------------------------------------------------------------------------------------------------------------
# Encoding: items → token ids and the positions to read


def split_response(messages: list[dict]) -> tuple[list[dict], str | None]:
    """Split a chat into its prompt messages and the final assistant turn's content (``None`` if none)."""
    if messages[-1]["role"] == "assistant":
        if len(messages) == 1:
            raise InputError("a chat consists of an assistant turn only; it needs a prompt before the response")
        return messages[:-1], messages[-1]["content"]
    return messages, None


def _tokenize(model: Model, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    tok = model.tokenizer
    if not getattr(tok, "is_fast", False):
        raise InputError(f"the tokenizer of {model.name} is not a fast tokenizer; token offsets are needed")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode(model: Model, item: Item, position: Position) -> Encoded:
    """Tokenise one item and find the token indices its position rule reads (see module docstring)."""
    messages = as_messages(item)
    prompt_msgs, response = split_response(messages)
    prompt_text = model.render(prompt_msgs, add_generation_prompt=True)

    if position == "last_prompt":
        ids, _ = _tokenize(model, prompt_text)
        return Encoded(ids, [[len(ids) - 1]])

    if position == "post_instruction":
        ids, offsets = _tokenize(model, prompt_text)
        user = [m["content"] for m in prompt_msgs if m["role"] == "user"]
        content = user[-1].strip() if user else ""
        end = prompt_text.rfind(content) + len(content) if content else -1
        if not content or end < len(content):
            raise InputError(f"post_instruction needs a non-empty user message; got {str(item)[:80]!r}")
        post = [i for i, (s, _) in enumerate(offsets) if s >= end]
        if not post:
            raise InputError(f"the chat template of {model.name} puts no token after the user message")
        return Encoded(ids, [[i] for i in post])

    if position not in ("response_mean", "all"):
        raise InputError(f"unknown position {position!r}; choose one of {', '.join(POSITIONS)}")

    if response is None:
        if position == "response_mean":
            raise InputError(f"response_mean needs a chat ending with an assistant turn; got {str(item)[:80]!r}")
        ids, _ = _tokenize(model, prompt_text)
        return Encoded(ids, [[i] for i in range(len(ids))])

    full_text = model.render(messages, add_generation_prompt=False)
    ids, offsets = _tokenize(model, full_text)
    if position == "all":
        return Encoded(ids, [[i] for i in range(len(ids))])
    if not full_text.startswith(prompt_text):
        raise InputError(f"the chat template of {model.name} does not render the prompt as a prefix of the chat")
    start = len(prompt_text)
    content = response.strip()
    at = full_text.find(content, start) if content else -1
    if at < 0:
        raise InputError(f"empty or unrendered assistant response in {str(item)[:80]!r}")
    stop = at + len(content)
    resp = [i for i, (s, e) in enumerate(offsets) if s >= start and s < stop and e > s]
    if not resp:
        raise InputError(f"the assistant response of {str(item)[:80]!r} has no tokens")
    return Encoded(ids, [resp])


def encode_all(model: Model, items: Sequence[Item], position: Position) -> list[Encoded]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputError("items must be a list of prompts or chats")
    if len(items) == 0:
        raise InputError("items is empty: need at least one prompt or chat")
    encoded = [encode(model, it, position) for it in items]
    model.check_context([len(e.ids) for e in encoded])
    if position == "post_instruction":
        counts = {len(e.groups) for e in encoded}
        if len(counts) > 1:
            raise InputError(f"post-instruction token counts differ across items ({sorted(counts)}); the template varies")
    return encoded


# ----------------------------------------------------------------------------------------------------------------
# Batching


@dataclass
class Batch:
    """A left-padded batch. Shapes: ``input_ids``, ``attention_mask``, ``position_ids``: ``[B, T]``."""

    index: list[int]  # positions of these items in the input list
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    offsets: list[int]  # left-padding length per row


def make_batches(encoded: list[Encoded], batch_size: int, pad_id: int, device: torch.device) -> list[Batch]:
    """Sort by length, cut into batches, left-pad each; position ids start at 0 at the first real token."""
    if batch_size < 1:
        raise InputError(f"batch_size must be ≥ 1, got {batch_size}")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    batches = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        T = max(len(encoded[i].ids) for i in idx)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        offsets = []
        for r, i in enumerate(idx):
            n = len(encoded[i].ids)
            ids[r, T - n :] = torch.tensor(encoded[i].ids)
            mask[r, T - n :] = 1
            offsets.append(T - n)
        batches.append(Batch(idx, ids.to(device), mask.to(device), position_ids_from_mask(mask).to(device), offsets))
    return batches


# ----------------------------------------------------------------------------------------------------------------
# Running a batch and reading layers


class _StopForward(Exception):
    """Raised by the hook of the deepest requested layer: later layers and the unembedding are not needed."""


def run_hooks_backend(model: Model, batch: Batch, layers: list[int], on_layer: OnLayer) -> None:
    """Default backend: forward hooks on the decoder blocks call ``on_layer(l, h_l)`` with ``h_l: [B, T, d]``.

    Runs the base model without the LM head and stops after the deepest requested layer.
    """
    deepest = max(layers)

    def make_hook(l: int):
        def hook(module, args, output):
            on_layer(l, hidden_of(output))
            if l == deepest:
                raise _StopForward

        return hook

    base = decoder(model.hf)
    with hooked([(model.layers[l], make_hook(l)) for l in layers]), torch.inference_mode():
        try:
            base(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            )
        except _StopForward:
            pass


def _backend_fn(backend: str):
    if backend == "hooks":
        return run_hooks_backend
    if backend == "transformer_lens":
        from .backends.transformer_lens import run_batch

        return run_batch
    if backend == "nnsight":
        from .backends.nnsight import run_batch

        return run_batch
    raise InputError(f"unknown backend {backend!r}; choose hooks, transformer_lens or nnsight")


def _iterate(
    model: Model,
    items: Sequence[Item],
    layers: Sequence[int] | None,
    position: Position,
    batch_size: int,
    backend: str,
    progress: bool | None,
    on_rows: Callable[[Batch, list[Encoded], int, torch.Tensor], None],
) -> tuple[list[int], list[Encoded]]:
    """Drive batches through the backend; ``on_rows(batch, enc, j, rows)`` gets float64 rows ``[n_rows, d]`` of
    layer ``layers[j]`` for the batch's items in batch order (each item's groups consecutively)."""
    from .progress import bar

    if position not in POSITIONS:
        raise InputError(f"unknown position {position!r}; choose one of {', '.join(POSITIONS)}")
    layers = model.check_layers(layers)
    run = _backend_fn(backend)
    encoded = encode_all(model, items, position)
    batches = make_batches(encoded, batch_size, model.tokenizer.pad_token_id, model.device)
    slot = {l: j for j, l in enumerate(layers)}
    # progress=None: a bar only for long runs (≥ 8 batches), and only on a terminal (interp.progress)
    desc = f"activations at {position} ({len(items)} items, {len(layers)} layers)"
    for batch in bar(batches, desc=desc, progress=progress, min_total=8, unit="batch"):
        T = batch.input_ids.shape[1]
        flat, row, weight = [], [], []
        r = 0
        for b, i in enumerate(batch.index):
            for g in encoded[i].groups:
                for t in g:
                    flat.append(b * T + batch.offsets[b] + t)
                    row.append(r)
                    weight.append(1.0 / len(g))
                r += 1
        flat_t = torch.tensor(flat, device=batch.input_ids.device)
        row_t = torch.tensor(row)
        w_t = torch.tensor(weight, dtype=torch.float64)[:, None]

        def on_layer(l: int, h: torch.Tensor, _flat=flat_t, _row=row_t, _w=w_t, _n=r) -> None:
            if l not in slot:
                return
            sel = h.reshape(-1, h.shape[-1])[_flat].to("cpu", torch.float64)  # [n_sel, d]
            rows = torch.zeros(_n, h.shape[-1], dtype=torch.float64).index_add_(0, _row, sel * _w)
            on_rows(batch, encoded, slot[l], rows)

        run(model, batch, layers, on_layer)
    return layers, encoded


def collect_activations(
    model: Model,
    items: Sequence[Item],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "last_prompt",
    batch_size: int = 16,
    backend: Backend = "hooks",
    progress: bool | None = None,
) -> torch.Tensor:
    """Activations of every item at the position rule, float32.

    Returns:
        ``[n_items, n_layers, d_model]`` for ``last_prompt`` and ``response_mean``;
        ``[n_items, P, n_layers, d_model]`` for ``post_instruction``;
        ``[n_tokens, n_layers, d_model]`` for ``all`` (every token of every item, items in order).
        ``n_layers`` = ``len(layers)`` (all layers by default).
    """
    state: dict = {}

    def on_rows(batch: Batch, encoded: list[Encoded], j: int, rows: torch.Tensor) -> None:
        if "out" not in state:
            counts = [len(e.groups) for e in encoded]
            starts = torch.tensor([0] + counts).cumsum(0).tolist()
            state["starts"], state["counts"] = starts, counts
            state["out"] = torch.zeros(starts[-1], state["n_layers"], rows.shape[-1], dtype=torch.float32)
        dest = [k for i in batch.index for k in range(state["starts"][i], state["starts"][i] + state["counts"][i])]
        state["out"][dest, j] = rows.float()

    state["n_layers"] = len(model.check_layers(layers))
    _iterate(model, items, layers, position, batch_size, backend, progress, on_rows)
    out = state["out"]
    if position == "post_instruction":
        n = len(items)
        out = out.view(n, -1, *out.shape[1:])
    return out


def mean_activations(
    model: Model,
    items: Sequence[Item],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "last_prompt",
    batch_size: int = 16,
    backend: Backend = "hooks",
    progress: bool | None = None,
) -> torch.Tensor:
    """Mean activation over items (over tokens for ``all``), float64, without keeping per-item activations.

    Returns ``[n_layers, d_model]``, or ``[P, n_layers, d_model]`` for ``post_instruction``.
    """
    state: dict = {}

    def on_rows(batch: Batch, encoded: list[Encoded], j: int, rows: torch.Tensor) -> None:
        G = len(encoded[batch.index[0]].groups) if position == "post_instruction" else 1
        if "sum" not in state:
            state["sum"] = torch.zeros(G, state["n_layers"], rows.shape[-1], dtype=torch.float64)
        state["sum"][:, j] += rows.view(-1, G, rows.shape[-1]).sum(0)
        if j == 0:
            state["count"] = state.get("count", 0) + rows.shape[0] // G

    state["n_layers"] = len(model.check_layers(layers))
    _iterate(model, items, layers, position, batch_size, backend, progress, on_rows)
    mean = state["sum"] / state["count"]
    return mean if position == "post_instruction" else mean[0]
