"""Benchmark: one (ε, seed) stability point (perturb in place, evaluate, restore) vs one plain evaluation pass
over the same data, same run, interleaved repeats, medians. Goal ≤ 1.05×.

    python bench/solutions.py [--model smollm2-135m-instruct] [--n 16] [--repeats 6]
"""

from __future__ import annotations

import argparse

import _common
import torch

from interp import load_model
from interp.models import Model
from interp.solutions import perturbed, response_loss
from probes import datasets

RESULTS = _common.RESULTS / "solutions.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    from peft import LoraConfig, get_peft_model

    base = load_model(args.model)
    pm = get_peft_model(base.hf, LoraConfig(r=1, lora_alpha=16, target_modules=["down_proj"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model = Model(pm, base.tokenizer, base.name)
    chats = datasets.prompts("bad_medical", "train", args.n)

    def plain():
        return response_loss(model, chats)

    def point():
        with perturbed(pm, 0.5, seed=3):
            return response_loss(model, chats)

    med, t = _common.interleaved({"eval_pass": plain, "stability_point": point}, args.repeats)
    result = {"stability_point_vs_eval_pass": med["stability_point"] / med["eval_pass"], "median_seconds": med, "all_seconds": t,
              "workload": {"model": args.model, "n_chats": args.n, "adapter": "rank-1 down_proj, all layers", "eps": 0.5,
                           "repeats": args.repeats}}
    _common.finish(args.out, result, device=str(base.device))


if __name__ == "__main__":
    main()
