"""Each paper module on a tiny model with smoke-sized configs (Config → run → Result → claims), and the claims'
rules on constructed results (the end-to-end pipeline is tests/test_reproduce.py)."""

from dataclasses import replace

import pytest

from experiments import narrow_general, presets, refusal_direction, stats, unlearning
from experiments.claims import Claim


def test_refusal_direction_module(llama, tmp_path):
    cfg = replace(presets.get("smoke").refusal, domains=("safety", "privacy"), train_per_domain=2, eval_per_domain=2, gen_tokens=2)
    res = refusal_direction.run(llama, cfg, tmp_path, seed=0)
    assert isinstance(res, refusal_direction.Result) and res.n_per_cell == cfg.eval_per_domain
    assert (tmp_path / "figures" / "refusal_sweep" / "selection.json").is_file()
    assert (tmp_path / "artifacts" / "refusal_direction.safetensors").is_file()
    if res.layer is not None:  # the selected (or exploratory) row was evaluated on both domains, paired outcomes kept
        assert set(res.harmful) == {"safety", "privacy"} and res.layer < cfg.max_layer_frac * llama.n_layers
        assert len(res.outcomes["harmful"]["safety"]["ablated"]["refusals"]) == cfg.eval_per_domain
    if res.layer is not None:  # the addition on generic held-out requests too (smoke: 2), paired outcomes kept
        assert res.generic["n"] == cfg.generic_test == 2 and set(res.generic) == {"baseline", "steered", "random_steered", "n"}
        assert len(res.outcomes["generic"]["generic"]["steered"]["refusals"]) == 2
    cs = refusal_direction.claims(res)
    assert len(cs) == 4 and all(isinstance(c, Claim) and c.verdict in stats.VERDICTS and c.test for c in cs)
    assert refusal_direction.claims(refusal_direction.Result(**{k: v for k, v in res.__dict__.items()})) == cs  # from a stage file


def test_unlearning_module(llama, tmp_path):
    p = presets.get("smoke")
    concepts = unlearning.concept_similarity(llama, replace(p.concepts, per_domain=2), tmp_path)
    assert len(concepts.names) == 7 and len(concepts.cosine) == len(concepts.layers)
    cfg = replace(p.unlearn, concepts=("safety",), train_prompts=4, eval_per_domain=1, stop_per_domain=1, gen_tokens=2, eval_every=1)
    res = unlearning.run_unlearning(llama, concepts, cfg, tmp_path, seed=0)
    assert set(res.runs) == {"safety", "safety+retain"} and set(res.equal_drop) == {"safety"}
    for r in res.runs.values():
        t = r["trajectory"]
        assert t["target"] == cfg.target_refusal and t["budget"] == cfg.max_steps and t["n_eval"] == cfg.stop_per_domain
        assert t["reached"] == (min(t["refusal"][1:]) <= cfg.target_refusal)
        assert set(r["ema_tests"]) == set(res.aligned) and all(e["test"] == "exact McNemar (paired)" for e in r["ema_tests"].values())
        assert len(r["rank_corr_per_layer"]) == len(concepts.layers)
    ent = res.runs["safety"]["entanglement"]  # the claim's permutation test (the run without retain)
    assert ent["n"] == 6 and len(ent["p"]) == len(concepts.layers) and res.runs["safety+retain"]["entanglement"] is None
    eq = res.equal_drop["safety"]
    assert set(eq["tables"]) == {"safety", "safety+retain"}
    if all(r["trajectory"]["reached"] for r in res.runs.values()):  # compared at the stated target
        assert eq["at_target"] and eq["level"] == cfg.target_refusal
    cs = unlearning.claims(res)
    assert [c.test for c in cs][:3] == ["exact McNemar (paired)"] * 3 and "Bonferroni" in cs[3].test and len(cs) == 4


def _traj(refusal, reached, budget=20):
    return {"steps": list(range(0, 5 * len(refusal), 5)), "refusal": refusal, "target": 0.25, "budget": budget,
            "stop_step": 5 * (len(refusal) - 1), "reached": reached, "n_eval": 8}


def test_unlearning_claims_report_the_stopping_rule_and_correct_the_entanglement_p_for_layers():
    doms = ["cybersecurity", "safety", "privacy"]
    cell = lambda bits: {"refusal_rate": sum(bits) / len(bits), "n": len(bits), "refusals": bits}  # noqa: E731
    aligned = {d: cell([True] * 8) for d in doms}
    after = {d: cell([False] * 8) for d in doms}
    ent = {"layers": [0, 1, 2, 3], "rho": [0.2, 0.94, float("nan"), -0.5], "p": [0.6, 0.005, float("nan"), 0.3], "n": 6,
           "method": "exact", "n_perm": 720, "seed": 0, "domains": []}
    runs = {"cybersecurity": {"table": after, "trajectory": _traj([1.0, 0.5, 0.5, 0.4, 0.3], False), "entanglement": ent},
            "cybersecurity+retain": {"table": aligned, "trajectory": _traj([1.0, 0.2], True)}}
    eq = {"cybersecurity": {"level": 0.3, "at_target": False, "steps": {"cybersecurity": 20, "cybersecurity+retain": 5},
                            "refusal": {"cybersecurity": 0.3, "cybersecurity+retain": 0.2}, "gap": 0.1,
                            "notes": ["not every run reached its target"], "tables": {"cybersecurity": after, "cybersecurity+retain": aligned}}}
    cs = {c.text.split(": ", 1)[1]: c for c in unlearning.claims(unlearning.Result(aligned=aligned, runs=runs, equal_drop=eq))}
    target = next(c for t, c in cs.items() if "removes the target" in t)
    assert target.verdict == stats.YES and "budget of 20 steps spent" in target.evidence  # 8 → 0 of 8: p = 2·0.5⁸
    retain = next(c for t, c in cs.items() if "retain CE" in t)
    assert retain.verdict == stats.YES and "≤ 0.30" in retain.evidence and "not the stated target" in retain.evidence
    e = next(c for t, c in cs.items() if "closer to" in t)
    assert "layer 1" in e.evidence and "× 4 layers = 0.02" in e.evidence and e.verdict == stats.YES  # 0.005 × 4 = 0.02 < 0.05
    ent["p"][1] = 0.02  # × 4 = 0.08: no longer significant
    e = unlearning._entanglement_claim("cybersecurity", ent)
    assert e.verdict == stats.YES_NOT_SIGNIFICANT


def _em(general_ood=0.3, narrow_ood=0.1, matched=True):
    qs = [{"id": f"q{i}", "domain": "medical" if i < 2 else "open"} for i in range(8)]
    names = ["base", "general", "narrow", "general_ablated", "general_random_ablated", "aligned", "aligned_steered"]
    m = {k: [0.0] * 8 for k in names}
    m["general"] = [general_ood + 0.01 * i for i in range(8)]
    m["narrow"] = [narrow_ood + 0.01 * i for i in range(8)]
    summary = {k: {"in_domain": sum(v[:2]) / 2, "out_of_domain": sum(v[2:]) / 6} for k, v in m.items()}
    match = {"matched": matched, "loss": 1.5 if not matched else 1.02, "target_loss": 1.0, "rel_gap": 0.5 if not matched else 0.02,
             "tol": 0.05, "step": 40, "budget": 40, "n_heldout": 8}
    return narrow_general.OrganismsResult(summary=summary, questions=qs, per_question_m=m, domain="medical", matched=match)


def _solutions(diffs):
    st = {"eps": [0.5], "mean": [10.0], "sd": [1.0]}
    return narrow_general.SolutionsResult(
        norm_factors=[1.0], efficiency_curve={"general": {"loss": [1.0], "norms": [1.0]}, "narrow": {"loss": [1.2]}},
        stability={"general": st, "narrow": st}, generic_kl={k: {"kl": [0.01]} for k in ("general", "narrow", "general_random")},
        stability_paired={"first": "general", "second": "narrow", "eps": [0.5], "seeds": list(range(len(diffs))), "n_seeds": len(diffs),
                          "powered": len(diffs) >= 5, "diff": [diffs], "mean": [sum(diffs) / len(diffs)], "sd": [1.0]})


@pytest.mark.parametrize("matched", [True, False])
def test_narrow_vs_general_claims_need_matched_fit_and_pair_stability_over_seeds(matched):
    cs = narrow_general.claims(_em(matched=matched), _solutions([-5.0, -4.0, -6.0, -5.5, -4.5]))
    narrow = cs[0]
    assert "in-domain fit" in narrow.evidence and "in domain general" in narrow.evidence
    assert narrow.verdict == (stats.YES if matched else stats.UNDETERMINED)
    stab = next(c for c in cs if "more stable" in c.text)
    assert stab.test.startswith("paired bootstrap over seeds") and stab.verdict == stats.YES and "n = 5 seeds" in stab.evidence
    few = next(c for c in narrow_general.claims(_em(), _solutions([-5.0, 4.0, -1.0])) if "more stable" in c.text)
    assert few.verdict == stats.UNDERPOWERED  # 3 seeds, CI spans 0: below the 5-seed floor


def test_em_questions_per_domain_keeps_every_domain_in_file_order():
    from interp.io import InputError
    from probes import datasets

    every = datasets.load("em_questions")
    domains = {q["domain"] for q in every}
    assert narrow_general.em_questions(None) == every
    few = narrow_general.em_questions(2)
    assert len(few) == 2 * len(domains) and {q["domain"] for q in few} == domains
    for d in domains:  # the first two of each domain, in file order
        assert [q["id"] for q in few if q["domain"] == d] == [q["id"] for q in every if q["domain"] == d][:2]
    with pytest.raises(InputError, match="questions_per_domain"):
        narrow_general.em_questions(0)


def test_refusal_filters_run_on_generic_harmless_prompts_as_published(monkeypatch):
    """andyrdt/refusal_direction scores KL and steering on Alpaca validation instructions (``harmless_val``), not on
    prompts that share the harmful ones' topics: ``filter_harmless="generic"`` (the default) passes the `baseline`
    validation requests to the selection; "domains" the topic-matched harmless validation prompts."""
    from probes import datasets

    cfg = refusal_direction.Config(train_per_domain=1, val_per_domain=2, eval_per_domain=1)
    prompts = refusal_direction.split_prompts(cfg)
    generic = refusal_direction.filter_prompts(prompts, cfg)
    assert cfg.filter_harmless == "generic" and generic == datasets.prompts("baseline", "val", 32) and len(generic) == 32
    topical = refusal_direction.filter_prompts(prompts, replace(cfg, filter_harmless="domains"))
    assert topical == [x for d in cfg.domains for x in datasets.prompts(f"{d}_harmless", "val", 2)]
    assert not set(generic) & (set(datasets.prompts("baseline", "train")) | set(datasets.prompts("baseline", "test")))  # no leak
    seen = {}

    def fake(model, harmful_train, harmless_train, harmful_val, harmless_val, **kw):
        seen.update(harmless_train=harmless_train, harmful_val=harmful_val, harmless_val=harmless_val)
        return "selection"

    monkeypatch.setattr(refusal_direction, "refusal_direction", fake)
    model = type("M", (), {"tokenizer": None, "n_layers": 10})()
    monkeypatch.setattr(refusal_direction, "refusal_tokens", lambda tok: [1])
    for mode, expected in (("generic", generic), ("domains", topical)):
        c = replace(cfg, filter_harmless=mode)
        assert refusal_direction.select(model, prompts, c) == "selection"
        assert seen["harmless_val"] == expected
        # the candidates' mean differences keep the topic-matched train prompts either way (the deliberate deviation)
        assert seen["harmless_train"] == [x for d in cfg.domains for x in datasets.prompts(f"{d}_harmless", "train", 1)]
        assert len(seen["harmful_val"]) == 2 * len(cfg.domains)


@pytest.mark.parametrize("bad", [dict(filter_harmless="alpaca"), dict(generic_val=0), dict(generic_val=41), dict(generic_val=True),
                                 dict(generic_val=2.0)])
def test_refusal_config_refuses_unknown_filter_prompts(bad):
    from interp.io import InputError

    with pytest.raises(InputError, match="refusal.filter_harmless|refusal.generic_val"):
        refusal_direction.Config(**bad)


def test_refusal_filter_prompts_are_a_set_option_and_reported():
    from interp.io import InputError

    from experiments import report

    p = presets.override(presets.get("quick"), ["refusal.filter_harmless=domains"])
    assert p.refusal.filter_harmless == "domains"
    with pytest.raises(InputError, match="choose one of generic, domains"):
        presets.override(presets.get("quick"), ["refusal.filter_harmless=alpaca"])
    for mode, words in (("generic", "generic everyday requests"), ("domains", "the domains' topic-matched harmless validation prompts")):
        text = "\n".join(report.refusal_section(refusal_direction.Result(filter_harmless=mode)))
        assert f"KL and steering filters measured on {words}" in text
    row = "\n".join(report.refusal_section(refusal_direction.Result(generic={"baseline": 0.05, "steered": 0.9, "random_steered": 0.1, "n": 40})))
    assert "| generic requests (n = 40) | – | – | – | 0.05 | 0.90 | 0.10 |" in row


def test_generic_addition_claim_is_paired_and_absent_from_older_results():
    """The fourth Arditi claim (addition on generic requests, the published test's kind) is an exact McNemar over
    the same generic prompts; a stage result made before it was measured gives the three claims it had."""
    dom = {"safety": {"baseline": 0.9, "ablated": 0.1, "random_ablated": 0.9}}
    safe = {"safety": {"baseline": 0.1, "steered": 0.9, "random_steered": 0.1}}
    n = 10
    outs = lambda rates: {c: {"refusals": [i < round(v * n) for i in range(n)]} for c, v in rates.items()}  # noqa: E731
    base = dict(status="selected", selected_by_filters=True, n_per_cell=n, layer=3, pos=-1, harmful=dom, harmless=safe,
                outcomes={"harmful": {"safety": outs(dom["safety"])}, "harmless": {"safety": outs(safe["safety"])}})
    assert len(refusal_direction.claims(refusal_direction.Result(**base))) == 3
    gen = {"baseline": 0.0, "steered": 0.75, "random_steered": 0.05}
    outcomes = {**base["outcomes"], "generic": {"generic": {c: {"refusals": [i < round(v * 40) for i in range(40)]} for c, v in gen.items()}}}
    cs = refusal_direction.claims(refusal_direction.Result(**{**base, "generic": {**gen, "n": 40}, "outcomes": outcomes}))
    assert len(cs) == 4 and cs[3].text == refusal_direction.CLAIMS[3]
    assert cs[3].test == "exact McNemar (paired)" and "baseline 0/40" in cs[3].evidence and "steered 30/40" in cs[3].evidence
    assert cs[3].verdict == "yes"
    flat = refusal_direction.claims(refusal_direction.Result(**{**base, "generic": {"baseline": 0.5, "steered": 0.5, "random_steered": 0.5, "n": 40},
                                                                "outcomes": {**outcomes, "generic": {"generic": {c: {"refusals": [i % 2 == 0 for i in range(40)]} for c in gen}}}}))
    assert flat[3].verdict != "yes"  # a tie is never "yes"
