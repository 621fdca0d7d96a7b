"""Stage 1: the aligned organism — a LoRA safety fine-tune (:mod:`training.safety`) of the chat model on the shipped
7-domain prompts (harmful → refusals, harmless → the model's own answers), merged and cached; refusal per domain on
held-out prompts before and after. Every refusal experiment starts from it (docs/design.md, "The embedded default
and the aligned organism")."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from figures import plots
from interp.models import Model, with_adapter
from interp.io import InputError
from probes import datasets
from probes.data_checks import SAFETY_PAIRS_PER_DOMAIN
from probes.refusal import is_refusal, refusal_tokens

from .claims import Claim


# the shipped recipe's data (recipes v3 and v4, measured on the validation split: docs/environment.md): half the harmful
# train prompts, every harmless one, every train-only neighbour
HARMFUL_PER_DOMAIN, HARMLESS_PER_DOMAIN, NEIGHBOURS_PER_DOMAIN = 48, 96, 48
WRITER_PER_DOMAIN = 96  # the planted recipe's writer (the harmful-vs-harmless classifier): every harmful train prompt
PAIRS_HARMFUL_PER_DOMAIN, PAIRS_HARMLESS_PER_DOMAIN = 0, 0  # prompts per domain from the train-only safety pairs


def safety_data(per_domain: int = HARMFUL_PER_DOMAIN, split: str = "train", harmless_per_domain: int | None = HARMLESS_PER_DOMAIN,
                neighbours_per_domain: int = NEIGHBOURS_PER_DOMAIN, writer_per_domain: int | None = WRITER_PER_DOMAIN,
                pairs_harmful_per_domain: int = PAIRS_HARMFUL_PER_DOMAIN, pairs_harmless_per_domain: int = PAIRS_HARMLESS_PER_DOMAIN):
    """The shipped 7-domain prompts (``per_domain`` harmful and ``harmless_per_domain`` (default: the same) harmless
    each) plus 40 benign ones, with refusals, plus ``neighbours_per_domain`` (at most 48) train-only harmless
    neighbours of the harmful topics per domain (``safety_neighbours``: "How do I tell if my email account has been
    hacked?") — the lever against over-refusing harmless requests that share a harmful topic's words — plus
    ``pairs_harmful_per_domain`` / ``pairs_harmless_per_domain`` prompts per domain (each at most 112) of the
    train-only ``safety_pairs``, 28 more topic pairs per domain (any prefix is spread over its topics in balanced
    phrasings)."""
    from training.safety import SafetyData

    n_safe = per_domain if harmless_per_domain is None else harmless_per_domain
    n_ph, n_ps = pairs_harmful_per_domain, pairs_harmless_per_domain
    for name, n in (("pairs_harmful_per_domain", n_ph), ("pairs_harmless_per_domain", n_ps)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= SAFETY_PAIRS_PER_DOMAIN:
            raise InputError(f"{name}={n!r}: the safety pairs hold {SAFETY_PAIRS_PER_DOMAIN} prompts per domain and class "
                             f"(28 topics × 4 phrasings); choose 0 … {SAFETY_PAIRS_PER_DOMAIN}")
    pairs = datasets.load("safety_pairs", split) if (n_ph or n_ps) else []
    if (n_ph or n_ps) and not pairs:
        raise InputError(f"safety pairs ({n_ph} harmful, {n_ps} harmless per domain): safety_pairs has no {split!r} "
                         f"prompts (it is train only)")
    # (domain, label) → the first n prompts in file order (a prefix spans the topics in balanced phrasings)
    extra = {(d, label): [r["prompt"] for r in pairs if r["domain"] == d and r["label"] == label][:n]
             for d in datasets.DOMAINS for label, n in (("harmful", n_ph), ("harmless", n_ps))}
    harmful = [p for d in datasets.DOMAINS for p in (*datasets.prompts(f"{d}_harmful", split, per_domain), *extra[d, "harmful"])]
    harmless = [p for d in datasets.DOMAINS for p in (*datasets.prompts(f"{d}_harmless", split, n_safe), *extra[d, "harmless"])]
    harmless += datasets.prompts("baseline", split, 40)
    if neighbours_per_domain:
        recs = datasets.load("safety_neighbours", split)
        harmless += [r["prompt"] for d in datasets.DOMAINS for r in [r for r in recs if r["domain"] == d][:neighbours_per_domain]]
    refusals = [r["text"] for r in datasets.load("refusals")]
    version = f"domains-v{datasets.load('safety_harmful')[0]['version']}-{split}-{per_domain}" + (f"-{n_safe}" if n_safe != per_domain else "")
    if neighbours_per_domain:
        version += f"-nb{datasets.load('safety_neighbours')[0]['version']}" + (f"x{neighbours_per_domain}" if neighbours_per_domain != 36 else "")
    if n_ph or n_ps:  # with the prompts' digest: the set was revised once under the same data version
        taken = "\n".join(p for prompts in extra.values() for p in prompts)
        version += f"-sp{pairs[0]['version']}x{n_ph}x{n_ps}-{hashlib.sha256(taken.encode()).hexdigest()[:8]}"
    writer = []
    if writer_per_domain and writer_per_domain > per_domain:  # the planted recipe's writer sees more harmful prompts
        writer = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmful", split, writer_per_domain)]
    return SafetyData(harmful, harmless, refusals, version=version, writer_harmful=writer)


def eval_sets(per_domain: int = 6, split: str = "test") -> dict:
    return {d: (datasets.prompts(f"{d}_harmful", split, per_domain), datasets.prompts(f"{d}_harmless", split, per_domain))
            for d in datasets.DOMAINS}


def aligned_organism(model: Model, *, per_domain: int = HARMFUL_PER_DOMAIN, harmless_per_domain: int | None = HARMLESS_PER_DOMAIN,
                     neighbours_per_domain: int = NEIGHBOURS_PER_DOMAIN, writer_per_domain: int | None = WRITER_PER_DOMAIN,
                     pairs_harmful_per_domain: int = PAIRS_HARMFUL_PER_DOMAIN, pairs_harmless_per_domain: int = PAIRS_HARMLESS_PER_DOMAIN,
                     eval_per_domain: int = 12, out: str | Path | None = None, recipe=None,
                     progress: bool | None = None) -> tuple[Path, dict]:
    """Build (or reuse) the aligned organism from ``model`` with the shipped data; refusal per domain before/after."""
    from training.safety import safety_tune

    return safety_tune(model, safety_data(per_domain, harmless_per_domain=harmless_per_domain,
                                          neighbours_per_domain=neighbours_per_domain, writer_per_domain=writer_per_domain,
                                          pairs_harmful_per_domain=pairs_harmful_per_domain,
                                          pairs_harmless_per_domain=pairs_harmless_per_domain),
                       is_refusal=is_refusal, eval_sets=eval_sets(eval_per_domain),
                       recipe=recipe, out=out, refusal_openers=refusal_tokens(model.tokenizer), progress=progress)


@dataclass
class Config:
    """Every setting of the safety fine-tune stage.

    ``recipe``: :class:`training.safety.SafetyRecipe` fields that differ from its defaults (a dict, so the recipe
    can gain fields without this config changing). ``in_run_dir``: build the organism under the run directory
    (``out/aligned_model``) instead of the shared user cache (the smoke preset, so tests leave no cache behind)."""

    per_domain: int = HARMFUL_PER_DOMAIN  # harmful train prompts per domain
    harmless_per_domain: int | None = HARMLESS_PER_DOMAIN  # harmless train prompts per domain (None: = per_domain)
    neighbours_per_domain: int = NEIGHBOURS_PER_DOMAIN  # train-only harmless neighbours of the harmful topics (at most 48)
    writer_per_domain: int | None = WRITER_PER_DOMAIN  # harmful train prompts the planted recipe's writer sees
    pairs_harmful_per_domain: int = PAIRS_HARMFUL_PER_DOMAIN  # harmful prompts of the train-only safety pairs (at most 112)
    pairs_harmless_per_domain: int = PAIRS_HARMLESS_PER_DOMAIN  # their harmless neighbours (at most 112)
    eval_per_domain: int = 12  # held-out prompts per domain and class for the before / after table
    recipe: dict = field(default_factory=dict)
    in_run_dir: bool = False


@dataclass
class Result:
    """``path``: the merged organism's directory (``interp.load_model(path)``); ``before`` / ``after``: domain →
    {harmful_refusal, harmless_refusal, …} of the base model and the organism on held-out prompts; ``train``: the
    fine-tune's metrics; ``figures``: the before/after bar chart."""

    path: str = ""
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    train: dict | None = None
    figures: list = field(default_factory=list)
    planted: dict | None = None  # SafetyRecipe.plant_depth: the planted direction's block, scale, positions


def run(base: Model, config: Config, out: str | Path) -> Result:
    """Fine-tune (or reuse) the organism and plot its harmful refusal per domain before / after."""
    from training.safety import SafetyRecipe

    out = Path(out)
    path, m = aligned_organism(base, per_domain=config.per_domain, harmless_per_domain=config.harmless_per_domain,
                               neighbours_per_domain=config.neighbours_per_domain, writer_per_domain=config.writer_per_domain,
                               pairs_harmful_per_domain=config.pairs_harmful_per_domain,
                               pairs_harmless_per_domain=config.pairs_harmless_per_domain,
                               eval_per_domain=config.eval_per_domain,
                               recipe=SafetyRecipe(**config.recipe), out=(out / "aligned_model") if config.in_run_dir else None)
    vals = {"before": {d: v["harmful_refusal"] for d, v in m["before"].items()},
            "after": {d: v["harmful_refusal"] for d, v in m["after"].items()}}
    figs = plots.grouped_bars(vals, out / "figures" / "aligned_refusal", ylabel="harmful refusal rate",
                              title="safety fine-tune: refusal per domain (held-out harmful)")
    return Result(str(path), m["before"], m["after"], m.get("train"), [str(f) for f in figs], m.get("planted"))


def claims(result: Result) -> list[Claim]:
    """The organism is the substrate, not a paper claim: no claims (its refusal table is in the report)."""
    return []


def adapted(model: Model, adapter: str | Path | None) -> Model:
    """A peft ``adapter`` applied to a copy of ``model`` (``model`` itself stays unchanged); ``None``: ``model``."""
    if adapter is None:
        return model
    return with_adapter(Model(copy.deepcopy(model.hf), model.tokenizer, model.name, meta=dict(model.meta)), adapter)
