"""The benchmark scripts run end to end (on a tiny model, minimal sizes) and write the JSON `make bench` reads:
every committed result's ratio keys, plus machine, versions and workload. Timings here mean nothing; the
committed `bench/results/*.json` are SmolLM2 runs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = {
    "extraction": ["--n", "4", "--batch-size", "2", "--repeats", "1", "--memory-n", "2"],
    "generation": ["--new-tokens", "2", "--batch-size", "2", "--repeats", "1"],
    "solutions": ["--n", "2", "--repeats", "1"],
    "training": ["--steps", "1", "--batch", "2", "--repeats", "1"],
    "selection": ["--n", "2", "--n-train", "2", "--repeats", "1", "--candidate-batch", "2"],
    "pipeline": [],  # three smoke reproductions (≈ 1–3 min): slow
}
SLOW = {"pipeline"}


def test_every_benchmark_is_covered():
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")}
    assert scripts == set(TINY_ARGS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(TINY_ARGS)])
def test_benchmark_runs_and_writes_the_committed_keys(name, tmp_path):
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--model", "tiny-random-llama", *TINY_ARGS[name],
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=900 if name in SLOW else 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    committed = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
    ratios = [k for k, v in committed.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert ratios and set(ratios) <= set(result)
    assert all(math.isfinite(result[k]) and result[k] > 0 for k in ratios)
    assert {"machine", "versions", "workload"} <= set(result) and result["versions"].get("torch")


def test_rounds_rotate_so_no_condition_always_runs_last():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "bench"))
    orders = _common.rounds(["plain", "steered", "ablated"], 6)
    assert all(sorted(o) == ["ablated", "plain", "steered"] for o in orders)
    for name in ("plain", "steered", "ablated"):  # a balanced design: every condition in every slot equally often
        assert sorted(o.index(name) for o in orders) == [0, 0, 1, 1, 2, 2]
    calls = []
    med, times = _common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b", "a", "b", "b", "a"] and set(med) == {"a", "b"} and all(len(v) == 2 for v in times.values())


def test_pipeline_reuses_an_earlier_paper_figure_only_for_the_same_stage_configs(tmp_path):
    """`bench/pipeline.py --paper-from`: the earlier paper figure is taken only when every stage key of the kept
    run folder equals the current preset's; one changed field (or a missing stage) refuses."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import pipeline as bench_pipeline
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from dataclasses import replace

    from experiments.pipeline import STAGES
    from experiments.presets import get
    from experiments.runner import stage_key

    def write_run(preset, run):
        keys = {}
        for spec in STAGES:
            if spec.name == "5b_em_judge":
                continue
            keys[spec.name], _ = stage_key(getattr(preset, spec.config), model=preset.model, seed=preset.seed,
                                           after={a: keys[a] for a in spec.after})
            (run / "stages").mkdir(parents=True, exist_ok=True)
            (run / "stages" / f"{spec.name}.json").write_text(json.dumps({"hash": keys[spec.name], "wall_s": 1.0}))
        return keys

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"paper_cached_s": 123.4, "paper_cached": {"stages_s": {}}, "commit": "abc1234"}))
    same = tmp_path / "same"
    keys = write_run(get("smoke"), same)
    got = bench_pipeline.reused_paper("smoke", str(earlier), str(same))
    assert got["paper_cached_s"] == 123.4 and got["paper_source"]["commit"] == "abc1234" and got["paper_source"]["stage_keys"] == keys
    other = tmp_path / "other"
    p = get("smoke")
    write_run(replace(p, unlearn=replace(p.unlearn, max_steps=p.unlearn.max_steps + 1)), other)
    with pytest.raises(SystemExit, match="4_unlearning ran another config"):
        bench_pipeline.reused_paper("smoke", str(earlier), str(other))
    (same / "stages" / "6_solutions.json").unlink()
    with pytest.raises(SystemExit, match="6_solutions missing"):
        bench_pipeline.reused_paper("smoke", str(earlier), str(same))


def test_readme_timing_table_matches_the_committed_pipeline_figures():
    """Issue 18: the README's timing row is bench/results/pipeline.json's top-level numbers (rounded to seconds)."""
    import re

    res = json.loads((ROOT / "bench" / "results" / "pipeline.json").read_text())
    row = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("| **all** (`first_demo_s`"))
    got = [float(x) for x in re.findall(r"\*\*(\d+) s = ", row)]
    want = [round(res[k]) for k in ("first_demo_s", "quick_cached_s", "paper_cached_s")]
    assert got == want, (got, want)
    assert res["meets_budgets"] == all(res[k] <= res["budgets_s"][k] for k in res["budgets_s"])  # the flag tells the truth


@pytest.mark.slow
def test_the_committed_pipeline_figures_meet_issue_18s_budgets():
    """Issue 18's target on the committed measurement (slow suite, like the organism's refusal targets: it fails
    while the last fresh-clone run misses a budget — at 7c76d86 the first make demo took 1095 s on a slow day)."""
    res = json.loads((ROOT / "bench" / "results" / "pipeline.json").read_text())
    assert res["meets_budgets"] is True and all(res[k] <= res["budgets_s"][k] for k in res["budgets_s"])


def test_make_bench_smoke_pipeline_never_overwrites_the_committed_figures():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import pipeline as bench_pipeline
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert bench_pipeline.default_out("smoke", "smoke").name == "pipeline_smoke.json"
    assert bench_pipeline.default_out("smoke", None).name == "pipeline_smoke.json"
    assert bench_pipeline.default_out("quick", "paper") == ROOT / "bench" / "results" / "pipeline.json"
    assert bench_pipeline.default_out("quick", None) == ROOT / "bench" / "results" / "pipeline.json"
