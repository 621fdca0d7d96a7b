"""Training runs over the shipped data (the layer that may combine ``training`` with ``probes``)."""

from __future__ import annotations

from pathlib import Path

from interp.models import Model
from probes import datasets
from probes.refusal import is_refusal


def safety_data(per_domain: int = 36, split: str = "train", harmless_per_domain: int | None = None,
                neighbours_per_domain: int = 36):
    """The shipped 7-domain prompts (``per_domain`` harmful and ``harmless_per_domain`` (default: the same) harmless
    each) plus 40 benign ones, with refusals, plus ``neighbours_per_domain`` (at most 48) train-only harmless
    neighbours of the harmful topics per domain (``safety_neighbours``: "How do I tell if my email account has been
    hacked?") — the lever against over-refusing harmless requests that share a harmful topic's words."""
    from training.safety import SafetyData

    n_safe = per_domain if harmless_per_domain is None else harmless_per_domain
    harmful = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmful", split, per_domain)]
    harmless = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmless", split, n_safe)]
    harmless += datasets.prompts("baseline", split, 40)
    if neighbours_per_domain:
        recs = datasets.load("safety_neighbours", split)
        harmless += [r["prompt"] for d in datasets.DOMAINS for r in [r for r in recs if r["domain"] == d][:neighbours_per_domain]]
    refusals = [r["text"] for r in datasets.load("refusals")]
    version = f"domains-v{datasets.load('safety_harmful')[0]['version']}-{split}-{per_domain}" + (f"-{n_safe}" if n_safe != per_domain else "")
    if neighbours_per_domain:
        version += f"-nb{datasets.load('safety_neighbours')[0]['version']}" + (f"x{neighbours_per_domain}" if neighbours_per_domain != 36 else "")
    return SafetyData(harmful, harmless, refusals, version=version)


def eval_sets(per_domain: int = 6, split: str = "test") -> dict:
    return {d: (datasets.prompts(f"{d}_harmful", split, per_domain), datasets.prompts(f"{d}_harmless", split, per_domain))
            for d in datasets.DOMAINS}


def aligned_organism(model: Model, *, per_domain: int = 36, harmless_per_domain: int | None = None, neighbours_per_domain: int = 36,
                     eval_per_domain: int = 12, out: str | Path | None = None, recipe=None,
                     progress: bool | None = None) -> tuple[Path, dict]:
    """Build (or reuse) the aligned organism from ``model`` with the shipped data; refusal per domain before/after."""
    from training.safety import safety_tune

    return safety_tune(model, safety_data(per_domain, harmless_per_domain=harmless_per_domain,
                                                 neighbours_per_domain=neighbours_per_domain), is_refusal=is_refusal, eval_sets=eval_sets(eval_per_domain),
                       recipe=recipe, out=out, progress=progress)


def _chats(spec: str, split: str | None = "train", limit: int | None = None) -> list:
    from .experiments import resolve_items

    if not spec.startswith("data:") and ":" not in spec and spec in datasets.names():
        spec = f"data:{spec}:{split}" if split else f"data:{spec}"
    items = resolve_items(spec)
    return items[:limit] if limit else items


def run_train(kind: str, model: Model, args) -> dict:
    """``em-interp train KIND``: the thin mapping from CLI arguments to the training API."""
    from training import TrainConfig, train_lora, train_steering_vector, unlearn

    cfg = TrainConfig(lr=args.lr, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, max_length=args.max_length, seed=args.seed, save_every=args.save_every,
                      **({"kl_batch_size": args.kl_batch_size} if getattr(args, "kl_batch_size", None) is not None else {}))
    if kind == "safety":
        path, metrics = aligned_organism(model, per_domain=args.per_domain, harmless_per_domain=args.harmless_per_domain,
                                         neighbours_per_domain=args.neighbours_per_domain, out=args.out, progress=True)
        return {"model": str(path), "before": metrics.get("before"), "after": metrics.get("after")}
    if kind == "unlearn":
        concept = datasets.domain(args.concept)
        prompts = datasets.prompts(f"{concept}_harmful", "train", args.limit)
        retain = [p for d in datasets.DOMAINS if d != concept for p in datasets.prompts(f"{d}_harmful", "train", args.retain_per_domain)]
        refusals = [r["text"] for r in datasets.load("refusals")]
        res = unlearn(model, prompts, refusals=refusals, out=args.out, retain_prompts=retain if args.retain_weight else None,
                      retain_weight=args.retain_weight, config=cfg, resume=not args.no_resume, progress=True)
    else:
        data = _chats(args.data, limit=args.limit)
        kl = _chats(args.kl_data, limit=args.limit) if args.kl_data else None
        common = dict(out=args.out, kl_data=kl, kl_weight=args.kl_weight, legacy_vocab_scaling=args.legacy_vocab_scaling,
                      config=cfg, resume=not args.no_resume, progress=True)
        if kind == "lora":
            res = train_lora(model, data, rank=args.rank, alpha=args.alpha, target_modules="all-linear" if args.target_modules == ["all-linear"] else args.target_modules,
                             layers=args.layers if args.layers else "all", rslora=args.rslora, **common)
        else:
            res = train_steering_vector(model, data, layer=args.layer, alpha=1.0 if args.alpha is None else args.alpha, **common)
    return {"path": str(res.path), "final_loss": res.metrics.get("final_loss"), "steps": res.metrics.get("steps"),
            "wall_s": res.metrics.get("wall_s")}
