"""Named run sizes of :func:`experiments.pipeline.reproduce`, composed of the per-paper configs.

- ``smoke``: the tests' tiny random model, every stage at minimal size (a tiny random model refuses nothing, so the
  refusal-score filter is off);
- ``quick``: a demonstration on the embedded SmolLM2 (the first ``make demo`` ≤ 15 min on 2 cores, organism build
  included); its verdicts are underpowered (4 held-out prompts per cell, every 4th layer swept, one unlearned
  concept, 25 EM questions);
- ``paper``: the powered run — all 7 domains × 32 held-out prompts per class (the whole test split), Arditi's full
  sweep (every layer below 80 % depth, every post-instruction position, selection on 32 validation prompts per
  domain and class), unlearning until ≤ 25 % target refusal, the matched-fit narrow solution, ≥ 5 paired
  stability seeds, sized for a CPU;
- ``full``: larger training and more EM sets (GPU).

:func:`override` applies ``FIELD=VALUE`` settings (``refusal.sweep_stride=3``) to a preset, checked against the
dataclass fields.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from interp.io import InputError

from . import narrow_general as ng
from . import organism, refusal_direction, unlearning


@dataclass
class Preset:
    """One run's complete settings: the model, the seed and every stage's config (a stage's cache key is its
    config + model + seed + its dependencies' keys)."""

    model: str = "smollm2-135m-instruct"
    seed: int = 0
    organism: organism.Config = field(default_factory=organism.Config)
    refusal: refusal_direction.Config = field(default_factory=refusal_direction.Config)
    concepts: unlearning.ConceptsConfig = field(default_factory=unlearning.ConceptsConfig)
    unlearn: unlearning.UnlearnConfig = field(default_factory=unlearning.UnlearnConfig)
    organisms: ng.OrganismsConfig = field(default_factory=ng.OrganismsConfig)
    judge: ng.JudgeConfig = field(default_factory=ng.JudgeConfig)
    solutions: ng.SolutionsConfig = field(default_factory=ng.SolutionsConfig)


SMOKE = Preset(
    model="tiny-random-llama",
    organism=organism.Config(per_domain=3, harmless_per_domain=None, neighbours_per_domain=3, writer_per_domain=None, eval_per_domain=2,
                             recipe=dict(rank=2, alpha=4.0, epochs=1, batch_size=8, answer_tokens=6, max_length=400), in_run_dir=True),
    refusal=refusal_direction.Config(train_per_domain=3, val_per_domain=2, eval_per_domain=2, filter_by_refusal=False, generic_val=4,
                                     generic_test=2, gen_tokens=4),
    concepts=unlearning.ConceptsConfig(per_domain=3),
    unlearn=unlearning.UnlearnConfig(train_prompts=9, stop_per_domain=2, eval_every=2, max_steps=2, eval_max_new_tokens=4,
                                     retain_batch=4, eval_per_domain=2, gen_tokens=4),
    organisms=ng.OrganismsConfig(sets=("bad_medical", "risky_financial"), limit=8, max_steps=2, narrow_max_steps=4, heldout=4,
                                 matched_eval_every=2, direction_pairs=8, sweep_stride=2, sweep_limit=3),
    judge=ng.JudgeConfig(samples=1, tokens=4, limit=3),
    solutions=ng.SolutionsConfig(limit=3, seeds=2, norm_factors=(0.0, 1.0, 2.0), eps=(0.1, 0.5)),
)

# quick: sized so that the first `make demo` (organism build included) fits 15 min on a 2-core CPU (≈ 900 prompt
# tokens/s batched): 8 train / 3 validation / 4 held-out prompts per domain and class, every 4th layer below 80 %
# depth swept, 12 generated tokens (the refusal phrases open the answer), one unlearned concept (Cybersecurity; the
# paper preset also unlearns Safety) with a 15-step budget, 24 general / ≤ 48 narrow EM steps, 5 EM questions per
# question domain (25 of 68), 3 stability seeds — every verdict underpowered
QUICK = Preset(
    organism=organism.Config(eval_per_domain=12),
    refusal=refusal_direction.Config(train_per_domain=8, val_per_domain=3, eval_per_domain=4, sweep_stride=4, gen_tokens=12),
    concepts=unlearning.ConceptsConfig(per_domain=12),
    unlearn=unlearning.UnlearnConfig(concepts=("cybersecurity",), train_prompts=24, stop_per_domain=6, eval_every=5, max_steps=15,
                                     eval_max_new_tokens=12, retain_batch=2, eval_per_domain=4, gen_tokens=12),
    organisms=ng.OrganismsConfig(limit=128, max_steps=24, narrow_max_steps=48, kl_batch=2, matched_eval_every=4, direction_pairs=32,
                                 sweep_stride=4, sweep_limit=6, questions_per_domain=5),
    solutions=ng.SolutionsConfig(limit=6, seeds=3, norm_factors=(0.0, 1.0, 2.0), eps=(0.1, 0.5)),
)

# full (GPU): the organism trained 4 epochs instead of 2 (measured on the validation split, 32 prompts per domain and
# class: harmless refusal 33/224 → 20/224, exact McNemar p = 0.0002, harmful 192/224 both; docs/environment.md,
# "Longer training, not more topics"), at twice the steps, which keeps it out of `quick` / `paper` on a CPU; its
# generic-prose loss is +0.194 [+0.181, +0.208] nats/token above v4's (48 test paragraphs), no answer degenerate
FULL = Preset(
    organism=organism.Config(eval_per_domain=12, recipe={"epochs": 4}),
    refusal=refusal_direction.Config(train_per_domain=36, val_per_domain=12, eval_per_domain=12, sweep_stride=1, gen_tokens=48),
    concepts=unlearning.ConceptsConfig(per_domain=36),
    unlearn=unlearning.UnlearnConfig(train_prompts=108, stop_per_domain=12, eval_every=10, max_steps=60, eval_per_domain=12, gen_tokens=48),
    organisms=ng.OrganismsConfig(sets=("bad_medical", "risky_financial", "extreme_sports"), limit=240, max_steps=150, narrow_max_steps=300,
                                 matched_eval_every=10, heldout=48, direction_pairs=120),
    solutions=ng.SolutionsConfig(limit=48, seeds=10),
)

# paper: every domain × all 32 held-out prompts per class (the test split), the full Arditi sweep (stride 1, every
# post-instruction position, 32 validation prompts per domain and class); unlearning and EM sizes as `full`, cut
# where a 2-core CPU needs it (16 generated tokens: the refusal phrases open the answer; one EM set, 160 training
# rows, 60 general steps and a 120-step budget for the matched narrow run). Unlearning: the stopping rule measured
# every 2 steps (every 10, the "+retain" run crossed ≤ 25 % at 0.00 where the plain run crossed at 0.22: not an
# equal drop) and 16 retain prompts per other domain (2 gave a retain set of 12 sequences). Measured: ≈ 35 min.
PAPER = Preset(
    organism=organism.Config(eval_per_domain=12),
    refusal=refusal_direction.Config(train_per_domain=32, val_per_domain=32, eval_per_domain=32, sweep_stride=1, gen_tokens=16),
    concepts=unlearning.ConceptsConfig(per_domain=32),
    unlearn=unlearning.UnlearnConfig(train_prompts=96, retain_per_domain=16, stop_per_domain=32, eval_every=2, max_steps=60,
                                     retain_batch=2, eval_per_domain=32, gen_tokens=16),
    organisms=ng.OrganismsConfig(limit=160, max_steps=60, narrow_max_steps=120, kl_batch=2, matched_eval_every=10, heldout=32,
                                 direction_pairs=120, sweep_stride=1),
    solutions=ng.SolutionsConfig(limit=24, seeds=5, norm_factors=(0.0, 0.5, 1.0, 1.5, 2.0), eps=(0.01, 0.1, 0.25, 0.5, 1.0)),
)

PRESETS: dict[str, Preset] = {"smoke": SMOKE, "quick": QUICK, "paper": PAPER, "full": FULL}


def get(name: str) -> Preset:
    """The preset called ``name`` (a fresh copy)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose {', '.join(PRESETS)}")
    return replace(PRESETS[name])


def fields(preset: Any = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf setting of a preset as ``(dotted path, type)``, e.g. ``("refusal.sweep_stride", int)``."""
    cls = type(preset) if preset is not None else Preset
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from fields(getattr(preset, f.name) if preset is not None else t(), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", t


def _parse(path: str, text: str, t: Any) -> Any:
    """``text`` as a value of type ``t`` (a Python literal for tuples / dicts / None; bare words for strings)."""
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:  # a setting with named choices
        if text not in args:
            raise InputError(f"--set {path}={text}: choose one of {', '.join(map(str, args))}")
        return text
    if t is str or (args and str in args and text not in ("None",)):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise InputError(f"--set {path}={text}: not a valid value (expected {getattr(t, '__name__', t)})") from None
    allowed = tuple(a for a in (args or (t,)) if isinstance(a, type)) if origin is not None or isinstance(t, type) else ()
    if origin is tuple or t is tuple:
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if allowed and not isinstance(value, allowed):
        raise InputError(f"--set {path}={text}: expected {' or '.join(a.__name__ for a in allowed)}, got {type(value).__name__}")
    if isinstance(value, bool) and bool not in allowed:
        raise InputError(f"--set {path}={text}: expected {' or '.join(a.__name__ for a in allowed)}, got bool")
    return value


def override(preset: Preset, settings: list[str] | dict[str, Any]) -> Preset:
    """``preset`` with ``FIELD=VALUE`` settings applied (dotted paths from :func:`fields`; a dict maps paths to
    values already typed). Unknown fields and ill-typed values raise :class:`InputError`."""
    known = dict(fields(preset))
    pairs = settings.items() if isinstance(settings, dict) else [_split(s) for s in settings]
    for path, value in pairs:
        if path not in known:
            raise InputError(f"--set {path}: no such setting; choose from {', '.join(known)}")
        if isinstance(value, str) and not isinstance(settings, dict):
            value = _parse(path, value, known[path])
        head, _, leaf = path.rpartition(".")
        if head:
            sub = getattr(preset, head)
            preset = replace(preset, **{head: replace(sub, **{leaf: value})})
        else:
            preset = replace(preset, **{leaf: value})
    return preset


def _split(setting: str) -> tuple[str, str]:
    path, eq, value = setting.partition("=")
    if not eq or not path.strip():
        raise InputError(f"--set {setting!r}: expected FIELD=VALUE (e.g. refusal.sweep_stride=3)")
    return path.strip(), value.strip()
