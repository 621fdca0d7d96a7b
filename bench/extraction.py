"""Benchmark: all-layer ``mean_activations`` (raw hooks) vs a bare forward, TransformerLens and nnsight.

Same prompts, same left-padded batches, same process, interleaved repeats, medians. Ratios are time(hooks) /
time(other): < 1 means the hooks path is faster. Peak memory: ``mean_activations`` over 1× and 10× the items at
``position="all"`` (every token), each in a fresh subprocess, ratio of peak RSS.

    python bench/extraction.py [--model smollm2-135m-instruct] [--n 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import _common
import torch

from interp import load_model, mean_activations
from interp.activations import encode_all, make_batches
from probes import datasets

RESULTS = _common.RESULTS / "extraction.json"


def prompts(n: int) -> list[str]:
    pool = [p for d in datasets.DOMAINS for lab in ("harmful", "harmless") for p in datasets.prompts(f"{d}_{lab}")]
    pool += datasets.prompts("baseline")
    return [pool[i % len(pool)] for i in range(n)]


def memory_child(model_name: str, n: int, mult: int) -> None:
    """Peak RSS of the extraction alone: the high-water mark is reset after loading (Linux clear_refs).

    The 10× run repeats the same ``n`` prompts ten times, so batch shapes (and so transient peaks) are alike and
    only memory that grows with the number of items shows up."""
    model = load_model(model_name)
    items = prompts(n) * mult
    mean_activations(model, items[:16], position="all", batch_size=16, progress=False)  # warm allocator
    _common.reset_peak_rss()
    mean_activations(model, items, position="all", batch_size=16, progress=False)
    print(_common.peak_rss_kb())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-n", type=int, default=32)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_mult", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_child is not None:
        return memory_child(args.model, args._memory_child, args._mult)

    import nnsight

    from interp.backends.nnsight import language_model
    from interp.backends.transformer_lens import bridge

    model = load_model(args.model)
    items = prompts(args.n)
    batches = make_batches(encode_all(model, items, "last_prompt"), args.batch_size, model.tokenizer.pad_token_id, model.device)
    n_tokens = int(sum(b.attention_mask.sum() for b in batches))
    from interp.hooks import decoder

    base = decoder(model.hf)
    br, lm = bridge(model), language_model(model)
    tl_names = [f"blocks.{l}.hook_out" for l in range(model.n_layers)]

    def bare():
        with torch.inference_mode():
            for b in batches:
                base(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False)

    def causal_lm():
        with torch.inference_mode():
            for b in batches:
                model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False)

    def hooks():
        mean_activations(model, items, batch_size=args.batch_size, progress=False)

    def transformer_lens():
        with torch.inference_mode():
            for b in batches:
                _, cache = br.run_with_cache(b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, names_filter=tl_names)
                torch.stack([cache[n][:, -1] for n in tl_names]).double().sum(1)

    def nnsight_trace():
        with torch.inference_mode():
            for b in batches:
                with lm.trace({"input_ids": b.input_ids, "attention_mask": b.attention_mask, "position_ids": b.position_ids}):
                    saved = nnsight.save([lm.model.layers[l].output for l in range(model.n_layers)])
                torch.stack([(s[0] if isinstance(s, tuple) else s)[:, -1] for s in saved]).double().sum(1)

    fns = {"bare_forward": bare, "causal_lm_forward": causal_lm, "hooks": hooks, "transformer_lens": transformer_lens, "nnsight": nnsight_trace}
    med, times = _common.interleaved(fns, args.repeats)

    def rss(mult: int) -> int:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--_memory-child", str(args.memory_n), "--_mult", str(mult)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    rss_1x, rss_10x = rss(1), rss(10)
    result = {
        "hooks_vs_bare_forward": med["hooks"] / med["bare_forward"],
        "hooks_vs_causal_lm_forward": med["hooks"] / med["causal_lm_forward"],
        "hooks_vs_transformer_lens": med["hooks"] / med["transformer_lens"],
        "hooks_vs_nnsight": med["hooks"] / med["nnsight"],
        "memory_10x_vs_1x": rss_10x / rss_1x,
        "median_seconds": med,
        "all_seconds": times,
        "peak_rss_kb": {"1x": rss_1x, "10x": rss_10x, "items_1x": args.memory_n, "position": "all"},
        "workload": {"model": args.model, "n_prompts": args.n, "n_tokens": n_tokens, "batch_size": args.batch_size,
                     "layers": model.n_layers, "position": "last_prompt", "repeats": args.repeats,
                     "note": "bare_forward = the base model (no LM head) on the same batches without hooks; "
                             "hooks = the full mean_activations call, tokenisation included; the hooks path also "
                             "skips the LM head"},
    }
    _common.finish(args.out, result, device=str(model.device))


if __name__ == "__main__":
    main()
