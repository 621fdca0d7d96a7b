"""Positive control for Arditi et al.'s method: the `paper` preset's refusal-direction stage (the published
selection over every post-instruction offset × every layer below 80 % depth, then the held-out evaluation over
7 domains × 32 prompts per class) on the recipe-v5 organism, whose refusal direction is planted by construction
(``SafetyRecipe(plant_depth=0.43)``, training/planted.py). Does the selection find it, does it pass the published
filters, and does it mediate refusal in both directions?

    python -m experiments.planted_control [--plant-depth 0.43] [--out docs/planted/planted_control.json]

Builds (or reuses from the em-interp cache) the organism, then runs ``experiments.refusal_direction.run`` with
``presets.get("paper").refusal``; writes the organism's held-out refusal table, the selection, the evaluation,
the claims and the wall times, with versions (``docs/planted/planted_control.json`` is the record of a run). The
free recipe's organism is the default of every preset; this is where the planted one is measured."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from interp import load_model
from interp.io import versions, write_json
from training.safety import SafetyRecipe

from . import presets, refusal_direction
from .organism import aligned_organism

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plant-depth", type=float, default=0.43)
    ap.add_argument("--preset", default="paper", help="whose refusal-direction config to run (paper)")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "planted_control"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "planted" / "planted_control.json"))
    a = ap.parse_args(argv)
    preset = presets.get(a.preset)
    t0 = time.time()
    base = load_model(preset.model)
    path, m = aligned_organism(base, eval_per_domain=preset.organism.eval_per_domain, recipe=SafetyRecipe(plant_depth=a.plant_depth))
    organism_s = time.time() - t0
    org = load_model(str(path))
    t1 = time.time()
    res = refusal_direction.run(org, preset.refusal, a.run_dir)
    stage_s = time.time() - t1
    out = {"what": "Arditi et al.'s selection and held-out evaluation on the planted-direction organism (positive control)",
           "preset": a.preset, "plant_depth": a.plant_depth, "organism": str(path), "organism_key": m["key"],
           "planted": m.get("planted"), "organism_after": m["after"], "organism_steps_s": m.get("steps_s"),
           "organism_s_this_run": round(organism_s, 1), "refusal_stage_s": round(stage_s, 1),
           "config": asdict(preset.refusal), "result": {k: v for k, v in asdict(res).items() if k != "outcomes"},
           "claims": [c.to_dict() for c in refusal_direction.claims(res)], "versions": versions()}
    write_json(Path(a.out), out)
    for c in out["claims"]:
        print(f"{c['verdict']:>4}  {c['text']}\n      {c['evidence']}")
    return out


if __name__ == "__main__":
    main()
