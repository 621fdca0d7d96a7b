"""Benchmark: KL-narrow vs plain SFT (peak memory, step time) and SFT vs a bare peft training loop (tokens/s).

Each condition runs in its own subprocess (peak RSS is reset after loading the model, Linux clear_refs), on the
same data and settings: rank-1 LoRA on down_proj of every layer, batch 4 of the bad-medical conversations,
1 warm-up step then ``--steps`` timed steps. ``kl`` uses the trainer's default KL batch (TrainConfig.kl_batch_size,
1 aligned other-domain conversation per micro-batch, whose student forward the trainer fuses into the SFT batch's);
``kl_equal`` a KL batch as large as the SFT batch (not fused: separate forwards).

    python bench/training.py [--model smollm2-135m-instruct] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import _common

RESULTS = _common.RESULTS / "training.json"


def child(mode: str, model_name: str, steps: int, batch: int) -> dict:
    import torch

    from interp import load_model
    from probes import datasets
    from training import TrainConfig, train_lora
    from training.data import collate, tokenize_chats

    kl_batch = batch if mode == "kl_equal" else TrainConfig().kl_batch_size
    model = load_model(model_name)
    data = datasets.prompts("bad_medical", "train", batch * (steps + 1))
    kl = datasets.prompts("aligned_other", "train", batch * (steps + 1))
    ts = tokenize_chats(model, data, max_length=512)
    n_tokens = sum(len(e.ids) for e in ts.examples)
    _common.reset_peak_rss()
    t0 = time.perf_counter()
    if mode in ("sft", "kl", "kl_equal"):
        use_kl = mode != "sft"
        cfg = TrainConfig(lr=1e-4, batch_size=batch, max_steps=steps + 1, warmup_steps=1, kl_batch_size=kl_batch, max_length=512)
        with tempfile.TemporaryDirectory() as tmp:
            res = train_lora(model, ts, out=tmp, kl_data=kl if use_kl else None, kl_weight=1.0 if use_kl else 0.0,
                             config=cfg, progress=False)
        wall = res.metrics["wall_s"]
    else:  # a bare peft loop: same adapter, same batches, HF's own loss with labels (-100 on prompt and padding)
        from peft import LoraConfig, get_peft_model

        pm = get_peft_model(model.hf, LoraConfig(r=1, lora_alpha=1, target_modules=["down_proj"], lora_dropout=0.0))
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
        ex = ts.examples
        for s in range(steps + 1):
            b = collate(ex[s * batch : (s + 1) * batch], model.tokenizer.pad_token_id)
            labels = b["input_ids"].masked_fill(b["loss_mask"] == 0, -100)
            loss = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        wall = time.perf_counter() - t0
    return {"mode": mode, "kl_batch": kl_batch if mode.startswith("kl") else 0, "wall_s": wall, "steps": steps + 1, "n_tokens": n_tokens, "peak_rss_kb": _common.peak_rss_kb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(child(args._child, args.model, args.steps, args.batch)))
        return

    from training import TrainConfig

    runs: dict[str, list[dict]] = {"sft": [], "kl": [], "kl_equal": [], "bare": []}
    for order in _common.rounds(list(runs), args.repeats):  # interleaved, order rotated per round
        for mode in order:
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--batch", str(args.batch),
                                  "--_child", mode], capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    step = {m: statistics.median(r["wall_s"] / r["steps"] for r in rs) for m, rs in runs.items()}
    peak = {m: statistics.median(r["peak_rss_kb"] for r in rs) for m, rs in runs.items()}
    tok = runs["sft"][0]["n_tokens"] / (args.steps + 1)  # tokens per step (the same batches in sft and bare)
    result = {
        "kl_vs_sft_peak_memory": peak["kl"] / peak["sft"],
        "kl_vs_sft_step_time": step["kl"] / step["sft"],
        "sft_vs_bare_peft_tokens_per_s": (tok / step["sft"]) / (tok / step["bare"]),
        "kl_equal_batch_vs_sft_peak_memory": peak["kl_equal"] / peak["sft"],
        "kl_equal_batch_vs_sft_step_time": step["kl_equal"] / step["sft"],
        "median_step_s": step,
        "median_peak_rss_kb": peak,
        "runs": runs,
        "workload": {"model": args.model, "batch": args.batch, "steps_timed": args.steps + 1, "repeats": args.repeats, "lora": "r1 down_proj all layers",
                     "kl_batch": TrainConfig().kl_batch_size, "kl_equal_batch": args.batch, "max_length": 512,
                     "expected_step_ratio": "≈ 1 + 4K/(3B): a reference forward + forward/backward of K KL sequences over B SFT ones",
                     "note": "peak RSS is reset after model load; step time = wall of the whole loop / steps (incl. the first); "
                             "kl: the student's KL forward fused into the SFT batch's (training.trainer.sft_and_kl_backward); kl_equal: separate"},
    }
    _common.finish(args.out, result)


if __name__ == "__main__":
    main()
