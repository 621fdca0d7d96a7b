"""The smoke preset of `em-interp reproduce` proves the wiring on a tiny random model (< 90 s)."""

import json

from experiments.cli import main


def test_reproduce_smoke_writes_report_and_every_figure_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "smoke"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out)]) == 0
    err = capsys.readouterr().err  # each stage is announced as it starts and ends, with its wall time
    for stage in ("1_aligned", "2_refusal_direction", "3_concepts", "4_unlearning", "5_em_organisms", "6_solutions"):
        assert f"▶ stage {stage}" in err and f"✓ stage {stage} (" in err, stage
    assert err.index("▶ stage 1_aligned") < err.index("✓ stage 1_aligned") < err.index("▶ stage 2_refusal_direction")
    report = (out / "report.md").read_text()
    assert "| claim | reproduced here | evidence | test |" in report  # each claim names its test
    for section in ("## Claims", "## 1. Aligned organism", "## 2. Refusal direction", "## 4. Narrow refusal unlearning",
                    "## 5. EM organisms", "## 6. Narrow vs general", "## Figures", "## Run"):
        assert section in report, section
    claims = report.split("## Claims")[1].split("\n\n")[1].splitlines()[2:]
    assert len(claims) >= 12
    from experiments.stats import VERDICTS

    for row in claims:
        cells = row.strip("| ").split(" | ")
        assert cells[1] in VERDICTS and cells[3].strip(), row
    # the same prompts before / after an intervention: the exact McNemar test on the kept per-prompt outcomes (the
    # 4 unlearning claims; the 4 refusal-direction claims too — the addition on topic neighbours and on generic requests —, unless no direction passes the published filters —
    # then they say so, and are "no" whatever an exploratory candidate does)
    from interp.selection import NO_DIRECTION

    arditi = [row for row in claims if row.startswith("| Arditi")]
    assert len(arditi) == 4
    for row in arditi:
        assert "exact McNemar (paired)" in row or (NO_DIRECTION in row and row.split(" | ")[1] == "no"), row
    # per unlearning target: the target's own drop, EMA and retain-at-equal-drop on the same prompts, plus the
    # permutation-tested similarity → EMA correlation
    mushtaq = [row for row in claims if row.startswith("| Mushtaq")]
    assert len(mushtaq) == 8 and sum("exact McNemar (paired)" in row for row in mushtaq) == 6
    assert sum("Spearman ρ, permutation p (Bonferroni over layers)" in row for row in mushtaq) == 2
    assert all("stopping rule:" in row for row in mushtaq if "removes the target" in row)
    assert all("at an equal target drop" in row for row in mushtaq if "retain CE" in row)
    soligo = [row for row in claims if row.startswith("| Soligo")]
    assert all("in-domain fit" in row for row in soligo if "KL-narrow" in row)
    assert any("paired bootstrap over seeds" in row for row in soligo if "more stable" in row)
    stage4 = json.loads((out / "stages" / "4_unlearning.json").read_text())["result"]
    for tag, r in stage4["runs"].items():  # unlearning ran under the stopping rule; EMA per domain has its test
        assert r["trajectory"]["budget"] == 2 and r["trajectory"]["steps"][0] == 0 and set(r["ema_tests"]) == set(stage4["aligned"])
        assert tag.endswith("+retain") or len(r["entanglement"]["rho"]) == len(r["entanglement"]["layers"])
    stage5 = json.loads((out / "stages" / "5_em_organisms.json").read_text())["result"]
    assert stage5["matched"]["tol"] == 0.05 and stage5["direction_layer"] == stage5["layer_sweep"]["best"]["layer"]
    figs = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figs) >= 10
    for f in figs:
        assert (out / f).is_file() and (out / f).with_suffix(".pdf").is_file(), f
    stages = sorted(p.name for p in (out / "stages").glob("*.json"))
    assert stages == ["1_aligned.json", "2_refusal_direction.json", "3_concepts.json", "4_unlearning.json", "5_em_organisms.json", "6_solutions.json"]
    walls = json.loads((out / "run.json").read_text())["wall_s"]
    # a second run reuses every stage from its cache (same config hash): same recorded stage times, same report
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert main(["reproduce", "--preset", "smoke", "--out", str(out)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")} == stamp
    assert "✓ stage 6_solutions: cached" in capsys.readouterr().err
    walls2 = json.loads((out / "run.json").read_text())["wall_s"]
    assert {k: v for k, v in walls2.items() if k != "total_this_run"} == {k: v for k, v in walls.items() if k != "total_this_run"}
    # changing one stage's setting re-runs that stage only (stage hashes cover the fields each stage uses)
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--set", "solutions.eps=(0.1, 0.25, 0.5)"]) == 0
    changed = {p.name for p in (out / "stages").glob("*.json") if p.stat().st_mtime_ns != stamp[p.name]}
    assert changed == {"6_solutions.json"}
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    # --judge adds stage 5b on top of the cached stages (a local judge model: the tiny random Llama)
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--judge", "tiny-random-llama",
                 "--set", "solutions.eps=(0.1, 0.25, 0.5)"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json") if p.name in stamp} == stamp
    judged = json.loads((out / "stages" / "5b_em_judge.json").read_text())["result"]["rates"]
    assert set(judged) == {"base", "general", "narrow"}
    for v in judged.values():
        assert v["in_domain"]["n_scored"] + v["out_of_domain"]["n_scored"] == v["overall"]["n_scored"]
    assert "### 5b. Judge EM rates" in (out / "report.md").read_text()
    assert (out / "judge" / "general" / "judge_items.jsonl").is_file()
    import pytest

    with pytest.raises(SystemExit) as e:  # argparse rejects an unknown preset with usage and exit code 2
        main(["reproduce", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and not (tmp_path / "x").exists()


def test_refusal_claims_count_only_a_direction_that_passed_the_published_filters():
    from experiments.refusal_direction import claims as _claims
    from interp.selection import NO_DIRECTION

    _refusal_claims = lambda r: [(c.text, c.verdict, c.evidence) for c in _claims(r)]  # noqa: E731

    n = 12
    bits = {"baseline": [True] * n, "ablated": [False] * n, "random_ablated": [True] * n}
    soft = {"baseline": [False] * n, "steered": [True] * n, "random_steered": [False] * n}
    refusal = {"layer": 3, "pos": -1, "n_per_cell": n, "selected_by_filters": True, "kl_threshold_used": 0.1,
               "harmful": {d: {c: sum(v) / n for c, v in bits.items()} for d in ("a", "b")},
               "harmless": {d: {c: sum(v) / n for c, v in soft.items()} for d in ("a", "b")},
               "outcomes": {"harmful": {d: {c: {"refusals": v} for c, v in bits.items()} for d in ("a", "b")},
                            "harmless": {d: {c: {"refusals": v} for c, v in soft.items()} for d in ("a", "b")}}}
    selected = _refusal_claims(refusal)
    assert [v for _, v, _ in selected] == ["yes", "yes", "yes"] and all("McNemar" in ev for _, _, ev in selected)
    exploratory = _refusal_claims({**refusal, "selected_by_filters": False, "kl_threshold_used": 0.8})
    for _, v, ev in exploratory:  # the same numbers from an exploratory candidate never reproduce the claim
        assert v == "no" and NO_DIRECTION in ev and "exploratory" in ev and "its own verdict: yes" in ev
    nothing = _refusal_claims({"layer": None, "selected_by_filters": False, "n_per_cell": n})
    assert [v for _, v, _ in nothing] == ["no"] * 4 and all(NO_DIRECTION in ev for _, _, ev in nothing)  # generic addition too
