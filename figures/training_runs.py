"""Training runs over the shipped data (the layer that may combine ``training`` with ``probes``)."""

from __future__ import annotations

from pathlib import Path

from interp.models import Model
from probes import datasets
from probes.refusal import is_refusal


def safety_data(per_domain: int = 20, split: str = "train"):
    """The shipped 7-domain prompts (``per_domain`` harmful + harmless each) plus 40 benign ones, with refusals."""
    from training.safety import SafetyData

    harmful = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmful", split, per_domain)]
    harmless = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmless", split, per_domain)]
    harmless += datasets.prompts("baseline", split, 40)
    refusals = [r["text"] for r in datasets.load("refusals")]
    version = f"domains-v{datasets.load('safety_harmful')[0]['version']}-{split}-{per_domain}"
    return SafetyData(harmful, harmless, refusals, version=version)


def eval_sets(per_domain: int = 6, split: str = "test") -> dict:
    return {d: (datasets.prompts(f"{d}_harmful", split, per_domain), datasets.prompts(f"{d}_harmless", split, per_domain))
            for d in datasets.DOMAINS}


def aligned_organism(model: Model, *, per_domain: int = 20, eval_per_domain: int = 6, out: str | Path | None = None,
                     recipe=None, progress: bool | None = None) -> tuple[Path, dict]:
    """Build (or reuse) the aligned organism from ``model`` with the shipped data; refusal per domain before/after."""
    from training.safety import safety_tune

    return safety_tune(model, safety_data(per_domain), is_refusal=is_refusal, eval_sets=eval_sets(eval_per_domain),
                       recipe=recipe, out=out, progress=progress)
