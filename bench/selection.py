"""Benchmark: the refusal-direction selection sweep (Arditi et al.) — the cheap sweep vs the naive published loop.

Same candidates (every post-instruction offset × every layer of a mean-difference ``Directions``), same
validation prompts, same process, interleaved repeats, medians. Conditions:

- ``naive``: ``select_direction(method="naive")`` — every candidate, three passes each (the published loop);
- ``cheap``: the default — tokenised once, baselines once, early stop in the published filter order, steering
  from the cached h_l;
- ``cheap_full``: the cheap engine with ``early_stop=False`` (every candidate fully scored: what the engine alone
  saves, and the table the exactness check compares);
- ``cheap_batched``: ``cheap`` with ``--candidate-batch`` candidates per forward;
- ``fallback_steering_first`` / ``fallback_kl_first``: ``cheap`` with the relaxed-KL fallback in its two scoring
  orders (``fallback_order``), timed where nothing passes the filters (as on the SmolLM2 organism): the ratio
  ``fallback_steering_first_vs_kl_first`` (< 1: steering first is faster), and both must pick the same candidate.

Ratios are time(condition) / time(naive): < 1 means faster. The scores of ``cheap_full`` are checked against
``naive`` (max absolute difference, in ``exactness``). How much early stopping saves depends on the model (how
many candidates fail the KL filter): the tiny random model is a smoke-sized default; the lead runs SmolLM2.

    python bench/selection.py [--model tiny-random-llama] [--n 8] [--repeats 3] [--candidate-batch 4]
    python bench/selection.py --model ORGANISM_DIR --only fallback_steering_first fallback_kl_first --out …
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
    ap.add_argument("--only", nargs="+", default=None, help="run only these conditions (the ratios that need a "
                    "missing condition are left out)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    model = load_model(args.model)
    d = mean_diff(model, prompts("harmful", "train", args.n_train), prompts("harmless", "train", args.n_train),
                  position="post_instruction", batch_size=args.batch_size)
    harmful, harmless = prompts("harmful", "val", args.n), prompts("harmless", "val", args.n)
    toks = refusal_tokens(model.tokenizer)
    kw = dict(refusal_tokens=toks, batch_size=args.batch_size, progress=False)
    conds = {"naive": dict(method="naive"), "cheap": {}, "cheap_full": dict(early_stop=False),
             "cheap_batched": dict(candidate_batch=args.candidate_batch),
             "fallback_steering_first": dict(fallback="relaxed_kl", fallback_order="steering_first"),
             "fallback_kl_first": dict(fallback="relaxed_kl", fallback_order="kl_first")}
    if args.only:
        unknown = set(args.only) - set(conds)
        if unknown:
            raise SystemExit(f"--only: unknown condition(s) {sorted(unknown)}; choose from {sorted(conds)}")
        conds = {k: v for k, v in conds.items() if k in args.only}
    last: dict = {}

    def run(name: str):
        def fn():
            last[name] = select_direction(model, d, harmful, harmless, **kw, **conds[name])
        return fn

    med, times = _common.interleaved({k: run(k) for k in conds}, args.repeats)
    result: dict = {}
    diffs = {}
    if "naive" in last:
        naive = {(c.layer, c.pos): c for c in last["naive"].table}
        for name in [k for k in ("cheap", "cheap_full", "cheap_batched") if k in last]:
            result[f"{name}_vs_naive"] = med[name] / med["naive"]
            m = 0.0
            for c in last[name].table:
                for s in ("kl", "steering_score", "ablation_score"):
                    v = getattr(c, s)
                    if v == v:
                        m = max(m, abs(v - getattr(naive[(c.layer, c.pos)], s)))
            diffs[name] = m
    if "fallback_steering_first" in last and "fallback_kl_first" in last:
        result["fallback_steering_first_vs_kl_first"] = med["fallback_steering_first"] / med["fallback_kl_first"]
    pick = lambda sel: None if sel.best is None else (sel.best.layer, sel.best.pos)
    explo = lambda sel: None if sel.exploratory is None else [sel.exploratory["candidate"].layer, sel.exploratory["candidate"].pos,
                                                              sel.exploratory["kl_threshold"]]
    ref = "naive" if "naive" in last else next(iter(last))
    result.update({
        "median_seconds": med,
        "all_seconds": times,
        "passes": {k: passes(v) for k, v in last.items()},
        "exactness": {"max_abs_score_diff_vs_naive": diffs,
                      f"same_selection_as_{ref}": {k: pick(last[k]) == pick(last[ref]) for k in last},
                      "exploratory": {k: explo(v) for k, v in last.items() if v.exploratory is not None}},
        "outcome": {k: {"status": v.status, "best": None if v.best is None else [v.best.layer, v.best.pos],
                        "failed": {f: sum(f in c.failed for c in v.table) for f in ("layer", "kl", "steering", "nonfinite", "nan")}}
                    for k, v in last.items()},
        "workload": {"model": args.model, "n_layers": model.n_layers, "n_positions": d.n_positions,
                     "n_candidates": len(next(iter(last.values())).table), "n_val_per_class": args.n, "n_train_per_class": args.n_train,
                     "batch_size": args.batch_size, "candidate_batch": args.candidate_batch, "repeats": args.repeats,
                     "conditions": list(conds),
                     "filters": {"kl_threshold": 0.1, "steering_threshold": 0.0, "layer_limit": next(iter(last.values())).config["layer_limit"]},
                     "note": "ratios = time(condition) / time(naive), or steering-first / KL-first fallback; passes = "
                             "prompt-set passes spent on candidates (naive: 3 per candidate); the baselines are extra in all"},
    })
    _common.finish(args.out, result, device=str(model.device))


if __name__ == "__main__":
    main()
