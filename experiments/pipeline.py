"""``em-interp reproduce``: the seed papers' experiments, figures and a report, in stages cached by their configs.

Stages (:class:`experiments.runner.Runner`: each writes ``DIR/stages/NAME.json``; its key is its complete config +
model + seed + the keys of the stages it depends on, so an interrupted run resumes at the first unfinished stage):

==================== ============================================= ==================== ==========================
stage                paper step                                    config               depends on
==================== ============================================= ==================== ==========================
1_aligned            the aligned organism (safety fine-tune)       ``organism``         –
2_refusal_direction  Arditi et al.: select, evaluate               ``refusal``          1_aligned
3_concepts           Mushtaq et al.: concept vectors               ``concepts``         1_aligned
4_unlearning         Mushtaq et al.: unlearning, EMA, entanglement ``unlearn``          1_aligned, 3_concepts
5_em_organisms       Soligo et al.: organisms, EM, direction       ``organisms``        1_aligned
5b_em_judge          judge EM rates (only with a judge)            ``judge``            5_em_organisms
6_solutions          Soligo et al.: efficiency, stability, KL      ``solutions``        5_em_organisms
==================== ============================================= ==================== ==========================

then ``DIR/report.md`` (:mod:`experiments.report`) with every table, the figures, seeds, versions, per-stage wall
times and each claim's verdict and test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from interp import load_model

from . import narrow_general as ng
from . import organism, presets, refusal_direction, report, unlearning
from .runner import Runner


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline: its name, the preset field holding its config, the stages it depends on and its
    result type."""

    name: str
    config: str
    after: tuple[str, ...]
    result_type: type


STAGES: tuple[StageSpec, ...] = (
    StageSpec("1_aligned", "organism", (), organism.Result),
    StageSpec("2_refusal_direction", "refusal", ("1_aligned",), refusal_direction.Result),
    StageSpec("3_concepts", "concepts", ("1_aligned",), unlearning.ConceptsResult),
    StageSpec("4_unlearning", "unlearn", ("1_aligned", "3_concepts"), unlearning.Result),
    StageSpec("5_em_organisms", "organisms", ("1_aligned",), ng.OrganismsResult),
    StageSpec("5b_em_judge", "judge", ("5_em_organisms",), ng.JudgeResult),
    StageSpec("6_solutions", "solutions", ("5_em_organisms",), ng.SolutionsResult),
)


def run_stages(runner: Runner, preset: presets.Preset, fns: dict[str, Callable[[dict], Any]], *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Run :data:`STAGES` in order with ``fns[name](results so far)``, each keyed by ``getattr(preset, spec.config)``;
    stages named in ``skip`` are left out. Returns stage name → result."""
    results: dict[str, Any] = {}
    for spec in STAGES:
        if spec.name in skip:
            continue
        results[spec.name] = runner.stage(spec.name, getattr(preset, spec.config), lambda s=spec: fns[s.name](results),
                                          after=spec.after, result_type=spec.result_type)
    return results


def reproduce(preset_name: str, out: str | Path, *, model: str | None = None, device: str | None = None, judge: str | None = None,
              settings: Sequence[str] | dict | None = None, progress: bool | None = None) -> Path:
    """Run (or resume) the whole pipeline for preset ``preset_name`` (:data:`experiments.presets.PRESETS`) and write
    ``out/report.md``; returns its path.

    ``model`` overrides the preset's model; ``judge`` (an OpenAI-compatible URL or a model name,
    ``probes.judges.make_judge``) adds stage 5b; ``settings``: ``FIELD=VALUE`` overrides of any config field
    (:func:`experiments.presets.override`, e.g. ``["refusal.sweep_stride=3"]``)."""
    p = presets.get(preset_name)
    if model:
        p = replace(p, model=model)
    if judge:
        p = replace(p, judge=replace(p.judge, judge=judge))
    if settings:
        p = presets.override(p, settings)
    out = Path(out)
    runner = Runner(out, model=p.model, seed=p.seed, progress=progress)
    torch.manual_seed(p.seed)
    t_all = time.time()
    base = load_model(p.model, device=device)
    models: dict[str, Any] = {}

    def aligned(results: dict):
        if "aligned" not in models:
            models["aligned"] = load_model(results["1_aligned"].path, device=device)
        return models["aligned"]

    fns = {
        "1_aligned": lambda r: organism.run(base, p.organism, out),
        "2_refusal_direction": lambda r: refusal_direction.run(aligned(r), p.refusal, out, seed=p.seed),
        "3_concepts": lambda r: unlearning.concept_similarity(aligned(r), p.concepts, out),
        "4_unlearning": lambda r: unlearning.run_unlearning(aligned(r), r["3_concepts"], p.unlearn, out, seed=p.seed),
        "5_em_organisms": lambda r: ng.run_organisms(base, aligned(r), p.organisms, out, seed=p.seed),
        "5b_em_judge": lambda r: ng.judge_rates(base, r["5_em_organisms"], p.judge, out, seed=p.seed),
        "6_solutions": lambda r: ng.compare(base, r["5_em_organisms"], p.solutions, out),
    }
    res = run_stages(runner, p, fns, skip=() if p.judge.judge else ("5b_em_judge",))
    judged = res.get("5b_em_judge")
    claims = (organism.claims(res["1_aligned"]) + refusal_direction.claims(res["2_refusal_direction"])
              + unlearning.claims(res["4_unlearning"]) + ng.claims(res["5_em_organisms"], res["6_solutions"], judged))
    walls = {**runner.walls, "total_this_run": round(time.time() - t_all, 1)}
    return report.write(out, name=preset_name, preset=p, walls=walls, figures=runner.figures, claims=claims,
                        aligned=res["1_aligned"], refusal=res["2_refusal_direction"], unlearning=res["4_unlearning"],
                        em=res["5_em_organisms"], solutions=res["6_solutions"], judged=judged)
