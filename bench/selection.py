"""Benchmark: the refusal-direction selection sweep (Arditi et al.) — the cheap sweep vs the naive published loop.

Same candidates (every post-instruction offset × every layer of a mean-difference ``Directions``), same
validation prompts, same process, interleaved repeats, medians. Conditions:

- ``naive``: ``select_direction(method="naive")`` — every candidate, three passes each (the published loop);
- ``cheap``: the default — tokenised once, baselines once, early stop in the published filter order, steering
  from the cached h_l;
- ``cheap_full``: the cheap engine with ``early_stop=False`` (every candidate fully scored: what the engine alone
  saves, and the table the exactness check compares);
- ``cheap_batched``: ``cheap`` with ``--candidate-batch`` candidates per forward.

Ratios are time(condition) / time(naive): < 1 means faster. The scores of ``cheap_full`` are checked against
``naive`` (max absolute difference, in ``exactness``). How much early stopping saves depends on the model (how
many candidates fail the KL filter): the tiny random model is a smoke-sized default; the lead runs SmolLM2.

    python bench/selection.py [--model tiny-random-llama] [--n 8] [--repeats 3] [--candidate-batch 4]
"""

from __future__ import annotations

import argparse

import _common

from interp import load_model
from interp.directions import mean_diff
from interp.selection import select_direction
from probes import datasets
from probes.refusal import refusal_tokens

RESULTS = _common.RESULTS / "selection.json"


def prompts(label: str, split: str, n: int) -> list[str]:
    """``n`` prompts of one class, taken round-robin over the 7 domains."""
    per = [datasets.prompts(f"{d}_{label}", split) for d in datasets.DOMAINS]
    return [per[i % len(per)][i // len(per)] for i in range(n)]


def passes(sel) -> int:
    """Prompt-set passes spent on candidates: one per score computed."""
    return sum(sum(v == v for v in (c.kl, c.steering_score, c.ablation_score)) for c in sel.table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-random-llama")
    ap.add_argument("--n", type=int, default=8, help="validation prompts per class")
    ap.add_argument("--n-train", type=int, default=16, help="training prompts per class (for the candidate directions)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--candidate-batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    model = load_model(args.model)
    d = mean_diff(model, prompts("harmful", "train", args.n_train), prompts("harmless", "train", args.n_train),
                  position="post_instruction", batch_size=args.batch_size)
    harmful, harmless = prompts("harmful", "val", args.n), prompts("harmless", "val", args.n)
    toks = refusal_tokens(model.tokenizer)
    kw = dict(refusal_tokens=toks, batch_size=args.batch_size, progress=False)
    conds = {"naive": dict(method="naive"), "cheap": {}, "cheap_full": dict(early_stop=False),
             "cheap_batched": dict(candidate_batch=args.candidate_batch)}
    last: dict = {}

    def run(name: str):
        def fn():
            last[name] = select_direction(model, d, harmful, harmless, **kw, **conds[name])
        return fn

    med, times = _common.interleaved({k: run(k) for k in conds}, args.repeats)
    naive = {(c.layer, c.pos): c for c in last["naive"].table}
    diffs = {}
    for name in ("cheap", "cheap_full", "cheap_batched"):
        m = 0.0
        for c in last[name].table:
            for s in ("kl", "steering_score", "ablation_score"):
                v = getattr(c, s)
                if v == v:
                    m = max(m, abs(v - getattr(naive[(c.layer, c.pos)], s)))
        diffs[name] = m
    same_pick = {k: (None if last[k].best is None else (last[k].best.layer, last[k].best.pos)) ==
                    (None if last["naive"].best is None else (last["naive"].best.layer, last["naive"].best.pos)) for k in conds}
    result = {
        "cheap_vs_naive": med["cheap"] / med["naive"],
        "cheap_full_vs_naive": med["cheap_full"] / med["naive"],
        "cheap_batched_vs_naive": med["cheap_batched"] / med["naive"],
        "median_seconds": med,
        "all_seconds": times,
        "passes": {k: passes(v) for k, v in last.items()},
        "exactness": {"max_abs_score_diff_vs_naive": diffs, "same_selection_as_naive": same_pick},
        "outcome": {k: {"status": v.status, "best": None if v.best is None else [v.best.layer, v.best.pos],
                        "failed": {f: sum(f in c.failed for c in v.table) for f in ("layer", "kl", "steering", "nonfinite", "nan")}}
                    for k, v in last.items()},
        "workload": {"model": args.model, "n_layers": model.n_layers, "n_positions": d.n_positions,
                     "n_candidates": len(last["naive"].table), "n_val_per_class": args.n, "n_train_per_class": args.n_train,
                     "batch_size": args.batch_size, "candidate_batch": args.candidate_batch, "repeats": args.repeats,
                     "filters": {"kl_threshold": 0.1, "steering_threshold": 0.0, "layer_limit": last["cheap"].config["layer_limit"]},
                     "note": "ratios = time(condition) / time(naive); passes = prompt-set passes spent on candidates "
                             "(naive: 3 per candidate); the baselines are extra in both"},
    }
    _common.finish(args.out, result, device=str(model.device))


if __name__ == "__main__":
    main()
