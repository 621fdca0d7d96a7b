"""Batched generation with left padding through HF ``generate`` (KV cache), under any active interventions."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from .activations import make_batches, Encoded
from .hooks import hidden_of, hooked
from .io import InputError, NonFiniteError
from .models import Item, Model
from .progress import bar


@contextlib.contextmanager
def finite_watch(model: Model, prompt_mask: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Watch the residual stream at the last block's output during the forwards inside; yields a 0-dim bool tensor
    that is True once any non-padding position held a value that is not finite *or whose square overflows float32*.

    The second condition is what every normalisation layer computes (RMSNorm / LayerNorm take the mean of squares
    in float32): past ≈1.8e19 the variance is inf, the normalised state is 0 and the logits are flat, finite and
    meaningless. Cost: one ``[B, T]`` reduction per forward, no host sync (read the flag once afterwards).
    ``prompt_mask`` ``[B, T_prompt]``: the prefill's attention mask (left padding is not looked at); later forwards
    (one new token per sequence) have no padding.
    """
    flag = torch.zeros((), dtype=torch.bool, device=model.device)

    def watch(module, args, output):
        h = hidden_of(output)  # [B, T, d]
        bad = ~torch.isfinite(h.float().square().mean(-1))  # [B, T]
        if prompt_mask is not None and bad.shape == prompt_mask.shape:
            bad &= prompt_mask.to(bad.device) > 0
        flag.logical_or_(bad.any().to(flag.device))
        return None

    with hooked(forward=[(model.layers[-1], watch)]):
        yield flag


def encode_prompts(model: Model, items: Sequence[Item]) -> list[Encoded]:
    if len(items) == 0:
        raise InputError("no prompts to generate from")
    out = []
    for it in items:
        ids = model.tokenizer(model.render(it, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        out.append(Encoded(list(ids), [[len(ids) - 1]]))
    return out


def generate(
    model: Model,
    items: Sequence[Item],
    *,
    max_new_tokens: int = 32,
    min_new_tokens: int = 0,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    return_ids: bool = False,
    return_first_logprobs: bool = False,
    suppress_first: Sequence[int] = (),
    progress: bool | None = None,
    desc: str = "generate",
) -> list[str] | list[list[int]] | tuple[list, torch.Tensor]:
    """Generate a completion for each prompt (rendered with the chat template), in input order.

    Greedy by default; sampling is seeded. Batches are length-sorted and left-padded, with position ids derived
    from the attention mask. Returns decoded texts (special tokens removed), or the new token ids per prompt
    (up to and including the first end-of-turn token) with ``return_ids=True``.

    ``return_first_logprobs=True`` also returns the raw next-token log-probabilities at the last prompt position,
    ``[n_items, vocab]`` float32 — the distribution :func:`interp.logits.last_logprobs` computes, taken from the
    prefill ``generate`` runs anyway, so a refusal score costs no second pass over the prompts.

    ``suppress_first``: token ids that may not be the *first* generated token (transformers'
    ``begin_suppress_tokens``; later tokens are unconstrained) — e.g. the model's own answer that does not open
    with a refusal token. The first log-probabilities returned are the raw, unsuppressed ones.

    ``progress`` / ``desc``: a progress bar over the batches saying what is generated (:mod:`interp.progress`).
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    tok = model.tokenizer
    encoded = encode_prompts(model, items)
    model.check_context([len(e.ids) for e in encoded], extra=max_new_tokens)
    results: list = [None] * len(items)
    eos = model.hf.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    first: torch.Tensor | None = None
    batches = make_batches(encoded, batch_size, tok.pad_token_id, model.device)
    for batch in bar(batches, desc=f"{desc} ({len(items)} prompts, ≤ {max_new_tokens} tokens)", progress=progress, unit="batch"):
        kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample, pad_token_id=tok.pad_token_id,
                      output_logits=return_first_logprobs, return_dict_in_generate=True)
        if suppress_first:
            kwargs["begin_suppress_tokens"] = [int(t) for t in suppress_first]
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode(), finite_watch(model, batch.attention_mask) as overflow:
            out = model.hf.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        if overflow.item() or (return_first_logprobs and not torch.isfinite(out.logits[0]).all()):
            raise NonFiniteError(f"the activations became non-finite while generating for prompt(s) "
                                 f"{', '.join(map(str, sorted(batch.index)[:8]))}{' …' if len(batch.index) > 8 else ''} "
                                 f"(the residual stream overflows float32); no result is written")
        if return_first_logprobs:
            lp = torch.log_softmax(out.logits[0].float(), dim=-1).cpu()  # [batch, vocab]: raw logits of step 1
            if first is None:
                first = torch.empty(len(items), lp.shape[-1])
            first[batch.index] = lp
        new = out.sequences[:, batch.input_ids.shape[1]:].tolist()
        for row, i in enumerate(batch.index):
            ids = new[row]
            cut = next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))
            ids = ids[:cut]
            results[i] = ids if return_ids else tok.decode(ids, skip_special_tokens=True)
    return (results, first) if return_first_logprobs else results
