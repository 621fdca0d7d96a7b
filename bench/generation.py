"""Benchmark: steered and ablated ``generate`` vs plain ``generate`` — tokens/s ratios, same prompts, same run.

Batch 8, greedy, a fixed number of new tokens (``min_new_tokens = max_new_tokens``) so every condition produces
the same token count; conditions interleaved over repeats; medians. Goal: ratios ≥ 0.95.

    python bench/generation.py [--model smollm2-135m-instruct] [--new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from interp import load_model  # noqa: E402
from interp.generation import generate  # noqa: E402
from interp.interventions import ablate, steer  # noqa: E402
from interp.io import versions, write_json  # noqa: E402
from probes import datasets  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "generation.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    model = load_model(args.model)
    prompts = datasets.prompts("baseline", "test")[: args.batch_size]
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(model.d_model, generator=g)
    layer = model.n_layers // 2
    n_tok = args.new_tokens

    def run(ctx=None):
        def fn():
            if ctx is None:
                return generate(model, prompts, max_new_tokens=n_tok, min_new_tokens=n_tok, batch_size=args.batch_size, return_ids=True)
            with ctx():
                return generate(model, prompts, max_new_tokens=n_tok, min_new_tokens=n_tok, batch_size=args.batch_size, return_ids=True)
        return fn

    conds = {
        "plain": run(),
        "steered": run(lambda: steer(model, vec, layers=[layer], alpha=4.0)),
        "ablated": run(lambda: ablate(model, vec)),
    }
    for fn in conds.values():
        fn()  # warm-up
    tps = {k: [] for k in conds}
    for _ in range(args.repeats):
        for k, fn in conds.items():
            t = time.perf_counter()
            ids = fn()
            dt = time.perf_counter() - t
            tps[k].append(sum(len(x) for x in ids) / dt)
    med = {k: statistics.median(v) for k, v in tps.items()}
    result = {
        "steered_vs_plain": med["steered"] / med["plain"],
        "ablated_vs_plain": med["ablated"] / med["plain"],
        "median_tokens_per_s": med,
        "all_tokens_per_s": tps,
        "workload": {"model": args.model, "batch_size": args.batch_size, "new_tokens": n_tok, "repeats": args.repeats,
                     "steer_layer": layer, "ablated_layers": "all", "greedy": True, "kv_cache": True},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(model.device)},
        "versions": versions(),
    }
    write_json(args.out, result)
    print(json.dumps({k: round(v, 3) for k, v in result.items() if isinstance(v, float)}, indent=2))


if __name__ == "__main__":
    main()
