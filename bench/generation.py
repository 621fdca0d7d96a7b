"""Benchmark: steered and ablated ``generate`` vs plain ``generate`` — tokens/s ratios, same prompts, same run.

Batch 8, greedy, a fixed number of new tokens (``min_new_tokens = max_new_tokens``) so every condition produces
the same token count; conditions interleaved over repeats; medians. Goal: ratios ≥ 0.95.

    python bench/generation.py [--model smollm2-135m-instruct] [--new-tokens 32] [--repeats 6]
"""

from __future__ import annotations

import argparse
import contextlib

import _common
import torch

from interp import load_model
from interp.generation import generate
from interp.interventions import ablate, steer
from probes import datasets

RESULTS = _common.RESULTS / "generation.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    model = load_model(args.model)
    prompts = datasets.prompts("baseline", "test")[: args.batch_size]
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(model.d_model, generator=g)
    layer = model.n_layers // 2
    n_tok = args.new_tokens

    n_generated = []

    def run(ctx):
        def fn():
            with ctx():
                ids = generate(model, prompts, max_new_tokens=n_tok, min_new_tokens=n_tok, batch_size=args.batch_size, return_ids=True)
            n_generated.append(sum(len(x) for x in ids))
        return fn

    conds = {
        "plain": run(contextlib.nullcontext),
        "steered": run(lambda: steer(model, vec, layers=[layer], alpha=4.0)),
        "ablated": run(lambda: ablate(model, vec)),
    }
    secs, all_secs = _common.interleaved(conds, args.repeats)
    n = n_generated[0]
    assert all(k == n for k in n_generated), f"conditions generated different token counts: {sorted(set(n_generated))}"
    med = {k: n / v for k, v in secs.items()}
    tps = {k: [n / x for x in v] for k, v in all_secs.items()}
    result = {
        "steered_vs_plain": med["steered"] / med["plain"],
        "ablated_vs_plain": med["ablated"] / med["plain"],
        "median_tokens_per_s": med,
        "all_tokens_per_s": tps,
        "workload": {"model": args.model, "batch_size": args.batch_size, "new_tokens": n_tok, "repeats": args.repeats,
                     "steer_layer": layer, "ablated_layers": "all", "greedy": True, "kv_cache": True},
    }
    _common.finish(args.out, result, device=str(model.device))


if __name__ == "__main__":
    main()
