"""Benchmark: the wall time of the main job — the first ``make demo`` (organism build included), the same job
with the organism cached, and the ``paper`` preset with the organism cached — per stage and, inside the
organism build, per step (refusal before / own answers / training / refusal after).

Each figure is one ``em-interp reproduce`` process started as a user would start it (a fresh output folder):

- ``first_demo_s``: ``--demo-preset`` with an empty em-interp cache (model conversion and organism build
  included); with ``--fresh-clone`` it is ``make demo`` in a fresh ``git clone`` of this checkout's HEAD, so the
  set-up (virtual environment, installs) is included as well — the figure issue 18 budgets (≤ 900 s);
- ``quick_cached_s``: ``--demo-preset`` again in a new output folder, the cache now warm (≤ 480 s);
- ``paper_cached_s``: ``--paper-preset`` with the warm cache (≤ 5400 s).

The baseline measured in the same run is a plain forward pass of ``--model``'s first preset model over a fixed
prompt batch (``forward_tokens_per_s``): ``*_per_budget`` ratios are wall / budget (< 1 meets the goal), and
``*_forward_ktokens`` say how many thousand prompt tokens of plain forward each job costs (comparable across machines).

    python bench/pipeline.py                                    # smoke-sized (make bench) → bench/results/pipeline_smoke.json
    python bench/pipeline.py --demo-preset quick --paper-preset paper --fresh-clone   # the committed figures
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parents[1]
RESULTS = _common.RESULTS / "pipeline.json"
BUDGETS = {"first_demo_s": 900.0, "quick_cached_s": 480.0, "paper_cached_s": 5400.0}


def forward_tokens_per_s(model_name: str, repeats: int = 3) -> float:
    """Prompt tokens per second of a plain batched forward (16 prompts, no hooks): the same-run baseline."""
    import torch

    from interp import load_model
    from interp.activations import make_batches
    from interp.generation import encode_prompts
    from probes import datasets

    model = load_model(model_name)
    prompts = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmless", "train", 3)][:16]
    batch = make_batches(encode_prompts(model, prompts), 16, model.tokenizer.pad_token_id, model.device)[0]
    n = int(batch.attention_mask.sum())
    with torch.inference_mode():
        model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            best = min(best, time.perf_counter() - t)
    return n / best


def profile(out: Path) -> dict:
    """Per-stage wall times of a finished run (``run.json``) and the organism build's per-step times."""
    if (out / "run.json").is_file():
        prof: dict = {"stages_s": json.loads((out / "run.json").read_text()).get("wall_s", {})}
    else:  # a run stopped part-way: the stages it finished
        prof = {"stages_s": {f.stem: json.loads(f.read_text()).get("wall_s") for f in sorted((out / "stages").glob("*.json"))}
                if (out / "stages").is_dir() else {}, "finished": False}
    stage1 = out / "stages" / "1_aligned.json"
    if stage1.is_file():
        res = json.loads(stage1.read_text()).get("result", {})
        metrics = Path(res.get("path", "")) / "safety_metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            prof["organism"] = {"steps_s": m.get("steps_s"), "wall_s": m.get("wall_s"), "train": m.get("train"),
                                "answers_cached": m.get("answers_cached")}
    return prof


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float | None = None) -> float:
    """Wall seconds of ``cmd``; a failure or, with ``timeout``, a run past it (its process group killed) raises
    SystemExit naming it."""
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise SystemExit(f"{' '.join(cmd)} still running after {timeout:.0f} s: stopped") from None
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return round(time.perf_counter() - t, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-preset", default="smoke", help="the preset `make demo` runs (quick) — smoke by default")
    ap.add_argument("--paper-preset", default="smoke", help="the powered preset (paper) — smoke by default")
    ap.add_argument("--skip-paper", action="store_true", help="measure the demo figures only (paper_cached_s left out)")
    ap.add_argument("--fresh-clone", action="store_true", help="first_demo_s = `make demo` in a fresh clone (set-up included)")
    ap.add_argument("--model", default=None, help="the model for the forward baseline (default: the preset's)")
    ap.add_argument("--keep", default=None, help="keep the run folders (first / cached / paper) and their em-interp cache under this folder")
    ap.add_argument("--paper-from", nargs=2, metavar=("RESULT_JSON", "RUN_DIR"), default=None,
                    help="take paper_cached_s from an earlier result of this script and its kept paper run folder, instead of "
                         "running it again; refused unless every stage key of that run equals the current paper preset's")
    ap.add_argument("--paper-timeout", type=float, default=None, help="stop the paper run after this many seconds (recorded as paper_error)")
    ap.add_argument("--out", default=None, help="result file (default: bench/results/pipeline.json for a real preset, "
                                                "bench/results/pipeline_smoke.json for the smoke default)")
    args = ap.parse_args()
    args.out = args.out or str(default_out(args.demo_preset, None if args.skip_paper else args.paper_preset))

    work = Path(tempfile.mkdtemp(prefix="em-interp-pipeline-"))
    env = {**os.environ, "EM_INTERP_CACHE": str(work / "cache")}
    result: dict = {"workload": {"demo_preset": args.demo_preset, "paper_preset": None if args.skip_paper else args.paper_preset,
                                 "fresh_clone": args.fresh_clone}}  # _common.finish adds the commit
    earlier = reused_paper(args.paper_preset, *args.paper_from) if args.paper_from else None
    try:
        cli = [sys.executable, "-m", _cli_module()]
        if args.fresh_clone:  # make demo exactly as a user runs it: clone, set up, run (the cache still empty)
            clone = work / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            result["first_demo_s"] = timed(["make", "demo", f"OUT={work / 'first'}"], clone, env)
            cli = [str(clone / ".venv" / "bin" / "python"), "-m", _cli_module()]
        else:
            result["first_demo_s"] = timed([*cli, "reproduce", "--preset", args.demo_preset, "--out", str(work / "first")], ROOT, env)
        result["first_demo"] = profile(work / "first")
        result["quick_cached_s"] = timed([*cli, "reproduce", "--preset", args.demo_preset, "--out", str(work / "cached")], ROOT, env)
        result["quick_cached"] = profile(work / "cached")
        if earlier is not None:
            result.update(earlier)
        elif not args.skip_paper:
            try:
                result["paper_cached_s"] = timed([*cli, "reproduce", "--preset", args.paper_preset, "--out", str(work / "paper")], ROOT, env,
                                                 timeout=args.paper_timeout)
            except SystemExit as e:  # keep the demo figures and the stages the paper run finished
                result["paper_error"] = str(e)
            result["paper_cached"] = profile(work / "paper")
        model = args.model or _preset_model(args.demo_preset)
        os.environ["EM_INTERP_CACHE"] = env["EM_INTERP_CACHE"]  # the converted model is in the run's cache
        tps = forward_tokens_per_s(model)
        result["forward_model"], result["forward_tokens_per_s"] = model, tps
        for key, budget in BUDGETS.items():
            if key in result:
                result[key.replace("_s", "_per_budget")] = result[key] / budget
                result[key.replace("_s", "_forward_ktokens")] = result[key] * tps / 1000.0  # the job in thousands of forward tokens
        result["budgets_s"] = {k: v for k, v in BUDGETS.items() if k in result}
        result["meets_budgets"] = all(result[k] <= v for k, v in result["budgets_s"].items()) and "paper_error" not in result
    finally:
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("first", "cached", "paper", "cache"):  # the run folders and the em-interp cache they used
                if (work / name).is_dir():
                    shutil.move(str(work / name), str(keep / name))
        shutil.rmtree(work, ignore_errors=True)
    _common.finish(args.out, result)


def default_out(demo_preset: str, paper_preset: str | None) -> Path:
    """Where the result goes by default: the committed ``pipeline.json`` only for a real workload — the smoke
    default (``make bench``) must never overwrite the committed SmolLM2 figures, so it writes ``pipeline_smoke.json``."""
    smoke = demo_preset == "smoke" and paper_preset in (None, "smoke")
    return RESULTS.with_name("pipeline_smoke.json") if smoke else RESULTS


def reused_paper(preset: str, result_json: str, run_dir: str) -> dict:
    """``paper_cached_s`` / ``paper_cached`` of an earlier result, with ``paper_source`` saying where they come from.
    Raises SystemExit unless the run folder holds every stage and each stage's key (its complete config, model,
    seed and dependencies' keys: :func:`experiments.runner.stage_key`) equals the one the current ``preset`` gives —
    the same configs were run; the code it ran is the earlier result's ``commit``."""
    from experiments.pipeline import STAGES
    from experiments.presets import get
    from experiments.runner import stage_key

    earlier = json.loads(Path(result_json).read_text())
    if "paper_cached_s" not in earlier:
        raise SystemExit(f"{result_json}: no paper_cached_s to reuse")
    p, keys = get(preset), {}
    for spec in STAGES:
        if spec.name == "5b_em_judge" and not p.judge.judge:
            continue
        f = Path(run_dir) / "stages" / f"{spec.name}.json"
        if not f.is_file():
            raise SystemExit(f"{run_dir}: stage {spec.name} missing")
        keys[spec.name], _ = stage_key(getattr(p, spec.config), model=p.model, seed=p.seed, after={a: keys[a] for a in spec.after})
        got = json.loads(f.read_text()).get("hash")
        if got != keys[spec.name]:
            raise SystemExit(f"{run_dir}: stage {spec.name} ran another config (key {got}, the {preset} preset's is {keys[spec.name]})")
    return {"paper_cached_s": earlier["paper_cached_s"], "paper_cached": earlier.get("paper_cached"),
            "paper_source": {"result": Path(result_json).name, "commit": earlier.get("commit"), "stage_keys": keys,
                             "note": "measured by an earlier run of this script; every stage key equals the current preset's"}}


def _cli_module() -> str:
    """The module whose ``main`` is the ``em-interp`` console script (read from pyproject.toml)."""
    import tomllib

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["em-interp"]
    return target.split(":")[0]


def _preset_model(name: str) -> str:
    from experiments.presets import get

    return get(name).model


if __name__ == "__main__":
    main()
