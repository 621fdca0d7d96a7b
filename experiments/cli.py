"""The ``em-interp`` command line: a thin layer over the library (subcommands mirror library functions)."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _int_at_least(low: int, below: int | None = None):
    """argparse type of an integer ≥ ``low`` (and < ``below``) — for counts such as ``--limit``, where 0 would
    silently mean "all", and for ``--seed``, which torch's generators take only in 0 … 2**63 − 1."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low or (below is not None and v >= below):
            bound = f"in {low} … {below - 1}" if below is not None else f"≥ {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text}")
        return v

    return parse


_count, _count0, _seed = _int_at_least(1), _int_at_least(0), _int_at_least(0, 2**63)


def _positive(text: str) -> float:
    """argparse type of a finite number > 0 (a threshold or scale where 0, negatives and NaN are meaningless)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _common(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    if model:
        p.add_argument("--model", default="smollm2-135m-instruct", help="model name, HF id, local dir or .gguf (default: embedded SmolLM2)")
        p.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory")


def _mismatch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="apply directions / a trained solution recorded for another model (or recording none): a loud warning, not an error")


def check_out_dir(out: str) -> None:
    """``--out`` must be a directory or creatable as one (checked before any work, so nothing is half-written)."""
    from pathlib import Path

    from interp.io import InputError

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    parent = next((a for a in [p, *p.parents] if a.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot create it ({parent} is not a writable directory)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="em-interp", description="Interpretability toolkit for emergent-misalignment research.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("directions", help="mean-difference direction (positive − negative) at every layer")
    _common(p)
    p.add_argument("--positive", required=True, help="JSONL/TXT file or data:NAME[:SPLIT] (e.g. data:safety_harmful:train)")
    p.add_argument("--negative", required=True, help="JSONL/TXT file or data:NAME[:SPLIT]")
    p.add_argument("--position", default="last_prompt", choices=["last_prompt", "post_instruction", "response_mean", "all"])
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--backend", default="hooks", choices=["hooks", "transformer_lens", "nnsight"])

    p = sub.add_parser("concepts", help="concept vectors per domain and their cosine matrix per layer")
    _common(p)
    p.add_argument("--concepts", nargs="+", default=["data:builtin"], help="directory of JSONL files, files, data:NAME specs, or data:builtin (the 7 domains)")
    p.add_argument("--baseline", default="data:baseline", help="baseline prompts (file or data:NAME)")
    p.add_argument("--position", default="last_prompt", choices=["last_prompt", "post_instruction", "response_mean", "all"])
    p.add_argument("--target", default=None, help="concept for the similarity sweep plot (default: the first)")
    p.add_argument("--limit", type=_count, default=None, help="use at most this many prompts per set")
    p.add_argument("--batch-size", type=_count, default=16)
    p.add_argument("--backend", default="hooks", choices=["hooks", "transformer_lens", "nnsight"])

    p = sub.add_parser("select", help="direction selection sweep (ablation / addition refusal scores, KL) per layer")
    _common(p)
    p.add_argument("--directions", required=True, help="directions .safetensors (from `em-interp directions`)")
    p.add_argument("--harmful", default="data:safety_harmful:val")
    p.add_argument("--harmless", default="data:safety_harmless:val")
    p.add_argument("--positions", type=int, nargs="+", default=[-1], help="template offsets to score (negative from the end)")
    p.add_argument("--kl-threshold", type=_positive, default=0.1)
    _mismatch(p)
    p.add_argument("--limit", type=_count, default=None)
    p.add_argument("--batch-size", type=_count, default=16)

    for kind, text in (("ablate", "generate with a direction ablated at every layer"), ("steer", "generate with a direction added at one layer")):
        p = sub.add_parser(kind, help=text)
        _common(p)
        p.add_argument("--directions", required=True)
        p.add_argument("--layer", type=int, required=True, help="layer of the direction (and, for steer, where it is added)")
        p.add_argument("--pos", type=int, default=-1, help="template offset of the direction")
        p.add_argument("--prompts", required=True, help="JSONL/TXT or data:NAME[:SPLIT]")
        p.add_argument("--limit", type=_count, default=None)
        p.add_argument("--max-new-tokens", type=_count, default=32)
        _mismatch(p)
        if kind == "steer":
            p.add_argument("--alpha", type=float, default=1.0)
            p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])

    p = sub.add_parser("orthogonalize", help="export a direction's ablation: a standalone HF model with it orthogonalised "
                                             "out of the weights (or, with --lora, a rank-1 peft adapter)")
    _common(p)
    p.add_argument("--directions", required=True, help="directions .safetensors (from `em-interp directions`)")
    p.add_argument("--layer", type=int, required=True, help="layer of the direction")
    p.add_argument("--pos", type=int, default=-1, help="template offset of the direction")
    p.add_argument("--lora", action="store_true", help="write the edit as a rank-1 LoRA adapter for the unedited base")
    _mismatch(p)

    p = sub.add_parser("score", help="score behaviour: refusal, reference-answer EM, or a judge's EM rate")
    p.add_argument("kind", choices=["refusal", "em", "judge"])
    _common(p)
    p.add_argument("--adapter", default=None, help="trained solution to apply: a peft adapter or steering-vector directory (or its train --out)")
    p.add_argument("--set", default=None, help="data set NAME[:SPLIT] (see probes.datasets.names())")
    p.add_argument("--judge", default=None, help="judge: an OpenAI-compatible URL or a model name (kind=judge)")
    p.add_argument("--questions", default=None, help="kind=judge: a Betley-format question YAML (instead of --set)")
    p.add_argument("--samples", type=_count, default=None, help="kind=judge: answers per paraphrase (default: each "
                   "question's samples_per_paraphrase, else 1)")
    p.add_argument("--temperature", type=float, default=None, help="kind=judge: sampling temperature (default 1; 0 = greedy)")
    p.add_argument("--concurrency", type=_count, default=None, help="kind=judge: HTTP judge requests in flight (default 16)")
    p.add_argument("--judge-model", default=None, help="kind=judge: model name sent to an HTTP judge (default gpt-4o)")
    p.add_argument("--limit", type=_count, default=None)
    p.add_argument("--max-new-tokens", type=_count, default=None, help="answer length (default: refusal 32, judge 600)")
    _mismatch(p)

    p = sub.add_parser("sae-decompose", help="decompose a direction into sparse-autoencoder latents")
    _common(p)
    p.add_argument("--direction", required=True, help="directions .safetensors")
    p.add_argument("--sae", required=True, help="sae-lens SAE directory (or release:sae_id with a hub)")
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--pos", type=int, default=-1)
    p.add_argument("--positive", default=None, help="positive examples for the activation ranking (file or data:NAME)")
    p.add_argument("--negative", default=None)
    p.add_argument("--position", default="last_prompt", choices=["last_prompt", "response_mean"])
    p.add_argument("--top-k", type=_count, default=10)

    p = sub.add_parser("train", help="train a LoRA adapter, a steering vector, refusal unlearning, or the safety fine-tune")
    p.add_argument("kind", choices=["lora", "steering-vector", "unlearn", "safety"])
    _common(p)
    p.add_argument("--data", default="bad_medical", help="chat data: a shipped set name (train split), data:NAME[:SPLIT], or JSONL")
    p.add_argument("--kl-data", default=None, help="aligned other-domain chats for the KL term (narrow solution), e.g. aligned_other")
    p.add_argument("--kl-weight", type=float, default=0.0, help="λ of the KL term (0 = general solution)")
    p.add_argument("--legacy-vocab-scaling", action="store_true", help="divide the KL by the vocabulary size (published code)")
    p.add_argument("--rank", type=_count, default=1)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default = rank) or steering-vector scale (default 1)")
    p.add_argument("--target-modules", nargs="+", default=["down_proj"], help="LoRA target modules (default down_proj), or all-linear")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="LoRA layers (default all)")
    p.add_argument("--rslora", action="store_true")
    p.add_argument("--layer", type=int, default=None, help="steering-vector layer")
    p.add_argument("--concept", default="cybersecurity", help="unlearn: the domain whose refusals are unlearned")
    p.add_argument("--retain-weight", type=float, default=0.0, help="unlearn: weight of the retain cross-entropy")
    p.add_argument("--retain-per-domain", type=_count, default=6)
    p.add_argument("--per-domain", type=_count, default=48, help="safety: harmful prompts per domain (of the 96 in the train split)")
    p.add_argument("--harmless-per-domain", type=_count, default=96, help="safety: harmless prompts per domain (all 96 of the train split)")
    p.add_argument("--neighbours-per-domain", type=_count0, default=48,
                   help="safety: train-only harmless neighbours of the harmful topics per domain (0–48; the shipped organism: 48)")
    p.add_argument("--pairs-harmful-per-domain", type=_count0, default=0,
                   help="safety: harmful prompts per domain from the train-only safety pairs (0–112; the shipped organism: 0)")
    p.add_argument("--pairs-harmless-per-domain", type=_count0, default=0,
                   help="safety: their harmless neighbours per domain (0–112; the shipped organism: 0)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=_count, default=1)
    p.add_argument("--max-steps", type=_count, default=None)
    p.add_argument("--batch-size", type=_count, default=4)
    p.add_argument("--grad-accum", type=_count, default=1)
    p.add_argument("--kl-batch-size", type=_count, default=None, help="sequences of --kl-data per micro-batch (default: TrainConfig's)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--save-every", type=_count, default=None)
    p.add_argument("--seed", type=_seed, default=0, help="0 … 2**63 − 1")
    p.add_argument("--no-resume", action="store_true", help="start over in --out (default: continue its last checkpoint)")
    p.add_argument("--limit", type=_count, default=None, help="use at most this many training conversations")

    p = sub.add_parser("solutions", help="compare a general and a narrow solution: efficiency, stability, generic-text KL")
    _common(p)
    p.add_argument("--general", required=True, help="adapter or steering-vector directory of the general solution")
    p.add_argument("--narrow", required=True, help="adapter or steering-vector directory of the narrow solution")
    p.add_argument("--data", default="bad_medical", help="narrow data set (NAME, train split) or data:NAME:SPLIT")
    p.add_argument("--prose", default="data:generic_prose:test")
    p.add_argument("--limit", type=_count, default=16)
    p.add_argument("--seeds", type=_count, default=10)
    _mismatch(p)

    p = sub.add_parser("reproduce", help="the seed papers' experiments, figures and report (stages cached; resumable)")
    from .presets import PRESETS, fields

    p.add_argument("--preset", default="quick", choices=list(PRESETS))
    p.add_argument("--model", default=None, help="override the preset's model")
    p.add_argument("--device", default=None)
    p.add_argument("--judge", default=None, help="EM judge: an OpenAI-compatible URL or a model name (adds stage 5b)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one config field of the preset (repeatable), e.g. --set refusal.sweep_stride=3; fields: "
                        + ", ".join(name for name, _ in fields()))
    p.add_argument("--out", required=True)

    p = sub.add_parser("demo", help="refusal direction + 7-domain concept cosine on the embedded model, with figures")
    _common(p)
    p.add_argument("--per-domain", type=_count, default=12, help="prompts per domain and class (train split)")
    return ap


# `train` flags passed through to experiments.commands.run_train under the same names
TRAIN_OPTIONS = ("data", "kl_data", "kl_weight", "legacy_vocab_scaling", "rank", "alpha", "target_modules", "layers", "rslora", "layer",
                 "concept", "retain_weight", "retain_per_domain", "per_domain", "harmless_per_domain", "neighbours_per_domain",
                 "pairs_harmful_per_domain", "pairs_harmless_per_domain", "lr",
                 "epochs", "max_steps", "batch_size", "grad_accum", "kl_batch_size", "max_length", "save_every", "seed", "limit")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line saying what is kept and how to go on, not a traceback
        if "tqdm" in sys.modules:  # finish an open progress bar's line first, so the message stands on its own
            for bar in list(getattr(sys.modules["tqdm"].tqdm, "_instances", ())):
                bar.close()
        print(f"em-interp {args.command}: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130


def _resume_hint(args: argparse.Namespace) -> str:
    """Where an interrupted run can be continued from (every artifact is written atomically: nothing is half-written)."""
    out = getattr(args, "out", None)
    if args.command == "train" and args.kind != "safety":
        from training.trainer import latest_checkpoint

        last = latest_checkpoint(out)
        if last is None:
            return f"no checkpoint in {out}/checkpoints yet (--save-every N writes them); rerun to start over"
        return f"resume from {last} by running the same command again (--no-resume starts over)"
    if args.command == "reproduce":
        return f"finished stages are kept in {out}/stages; run the same command again to resume from there"
    return "nothing was written half-way; run the same command again"


def _run(args: argparse.Namespace) -> int:
    from interp.io import InputError

    from . import commands

    try:
        if getattr(args, "out", None):
            check_out_dir(args.out)
        if args.command == "directions":
            res = commands.run_directions(args.model, args.positive, args.negative, args.out, position=args.position,
                                             batch_size=args.batch_size, backend=args.backend, device=args.device)
        elif args.command == "concepts":
            res = commands.run_concepts(args.model, args.concepts, args.baseline, args.out, position=args.position,
                                           target=args.target, batch_size=args.batch_size, backend=args.backend,
                                           device=args.device, limit=args.limit)
        elif args.command == "select":
            res = commands.run_select(args.model, args.directions, args.harmful, args.harmless, args.out, positions=args.positions,
                                         kl_threshold=args.kl_threshold, limit=args.limit, batch_size=args.batch_size, device=args.device,
                                         allow_model_mismatch=args.allow_model_mismatch)
        elif args.command in ("ablate", "steer"):
            res = commands.run_intervene(args.command, args.model, args.directions, args.prompts, args.out, layer=args.layer,
                                            pos=args.pos, alpha=getattr(args, "alpha", 1.0), positions=getattr(args, "positions", "all"),
                                            max_new_tokens=args.max_new_tokens, limit=args.limit, device=args.device,
                                            allow_model_mismatch=args.allow_model_mismatch)
        elif args.command == "orthogonalize":
            res = commands.run_orthogonalize(args.model, args.directions, args.out, layer=args.layer, pos=args.pos,
                                                lora=args.lora, device=args.device, allow_model_mismatch=args.allow_model_mismatch)
        elif args.command == "score":
            if args.questions and args.kind != "judge":
                raise InputError(f"--questions is for score judge; score {args.kind} takes --set")
            spec = args.questions or args.set
            if not spec:
                raise InputError(f"score {args.kind} needs --set NAME[:SPLIT]" + (" or --questions FILE.yaml" if args.kind == "judge" else ""))
            res = commands.run_score(args.kind, args.model, spec, args.out, adapter=args.adapter, judge=args.judge,
                                        samples=args.samples, max_new_tokens=args.max_new_tokens, limit=args.limit, device=args.device,
                                        temperature=args.temperature, concurrency=args.concurrency, judge_model=args.judge_model,
                                        allow_model_mismatch=args.allow_model_mismatch)
            res = {k: v for k, v in res.items() if k in ("set", "overall", "mean", "share_positive", "ci95", "by_domain")}
        elif args.command == "sae-decompose":
            res = commands.run_sae_decompose(args.model, args.direction, args.sae, args.layer, args.out, pos=args.pos,
                                                positive=args.positive, negative=args.negative, position=args.position,
                                                top_k=args.top_k, device=args.device)
        elif args.command == "train":
            res = commands.run_train(args.kind, args.model, args.out, device=args.device,
                                     **{k: getattr(args, k) for k in TRAIN_OPTIONS}, resume=not args.no_resume)
        elif args.command == "solutions":
            res = commands.run_solutions(args.model, args.general, args.narrow, args.data, args.out, prose=args.prose,
                                            limit=args.limit, seeds=args.seeds, device=args.device,
                                            allow_model_mismatch=args.allow_model_mismatch)
        elif args.command == "reproduce":
            from .pipeline import reproduce

            res = {"report": str(reproduce(args.preset, args.out, model=args.model, device=args.device, judge=args.judge,
                                           settings=args.settings))}
        elif args.command == "demo":
            res = commands.run_demo(args.out, model_name=args.model, per_domain=args.per_domain, device=args.device)
        else:  # pragma: no cover - argparse guards this
            raise AssertionError(args.command)
    except (InputError, OSError) as e:  # bad input, or the file system refusing (disk full, permissions): one line
        print(f"em-interp {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
