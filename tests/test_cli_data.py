import json

import pytest

from experiments.cli import main
from interp.io import InputError
from probes import datasets


def test_domain_accepts_keys_and_titles_and_names_the_seven_otherwise():
    for d, title in datasets.DOMAIN_TITLES.items():
        assert datasets.domain(d) == datasets.domain(title) == datasets.domain(title.upper()) == d
    assert datasets.domain(" sensitive  content ") == "sensitive_content" and datasets.domain("medical-legal") == "medical_legal"
    with pytest.raises(InputError, match="unknown domain 'cyber'.*cybersecurity, safety"):
        datasets.domain("cyber")


def test_datasets_cover_seven_domains_with_splits():
    names = datasets.names()
    for d in datasets.DOMAINS:
        for label in ("harmful", "harmless"):
            recs = datasets.load(f"{d}_{label}")
            assert len(recs) >= 160, (d, label)
            assert {r["split"] for r in recs} == {"train", "val", "test"}
            assert f"{d}_{label}" in names
            # splits are by topic: no topic in two splits
            by_topic = {}
            for r in recs:
                by_topic.setdefault(r["topic"], set()).add(r["split"])
            assert all(len(s) == 1 for s in by_topic.values())
    assert len(datasets.load("baseline")) >= 200
    assert datasets.load("safety_harmful", "test") == datasets.load("safety_harmful", "test")  # deterministic
    with pytest.raises(Exception, match="unknown data set"):
        datasets.load("nope")


def test_cli_directions_and_concepts(tmp_path, capsys):
    out = tmp_path / "dirs"
    rc = main(["directions", "--model", "tiny-random-qwen2", "--positive", "data:safety_harmful:train",
               "--negative", "data:safety_harmless:train", "--out", str(out)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert (out / "directions.safetensors").is_file() and (out / "directions.json").is_file()
    assert (out / "direction_norms.png").is_file() and (out / "run.json").is_file()
    assert res["directions"].endswith("directions.safetensors")
    out2 = tmp_path / "concepts"
    rc = main(["concepts", "--model", "tiny-random-gemma", "--limit", "4", "--out", str(out2)])
    assert rc == 0
    for f in ["concepts.safetensors", "concepts.json", "concept_cosine.png", "concept_cosine.pdf", "concept_similarity_sweep.png", "run.json"]:
        assert (out2 / f).is_file(), f
    meta = json.loads((out2 / "concepts.json").read_text())
    assert len(meta["names"]) == 7 and len(meta["cosine"]) == 4


def test_cli_malformed_jsonl_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": broken\n')
    out = tmp_path / "out"
    rc = main(["directions", "--model", "tiny-random-llama", "--positive", str(bad), "--negative", "data:baseline", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: malformed JSON" in err
    assert not out.exists()


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "directions" in capsys.readouterr().out


def test_cli_select_ablate_steer(tmp_path, capsys):
    d = tmp_path / "dirs"
    assert main(["directions", "--model", "tiny-random-llama", "--positive", "data:safety_harmful:train", "--negative",
                 "data:safety_harmless:train", "--out", str(d)]) == 0
    capsys.readouterr()
    sel = tmp_path / "sel"
    assert main(["select", "--model", "tiny-random-llama", "--directions", str(d / "directions.safetensors"), "--limit", "4",
                 "--kl-threshold", "100", "--out", str(sel)]) == 0
    assert (sel / "selection.json").is_file() and (sel / "layer_sweep.png").is_file()
    table = json.loads((sel / "selection.json").read_text())["table"]
    assert [r["layer"] for r in table] == [0, 1, 2, 3]
    for kind, extra in (("ablate", []), ("steer", ["--alpha", "4"])):
        o = tmp_path / kind
        assert main([kind, "--model", "tiny-random-llama", "--directions", str(d / "directions.safetensors"), "--layer", "1",
                     "--prompts", "data:baseline:test", "--limit", "3", "--max-new-tokens", "4", "--out", str(o), *extra]) == 0
        res = json.loads((o / f"{kind}.json").read_text())
        assert set(res) == {"baseline", kind, "config"} and res[kind]["n"] == 3
    capsys.readouterr()
    assert main(["steer", "--model", "tiny-random-llama", "--directions", str(d / "directions.safetensors"), "--layer", "9",
                 "--prompts", "data:baseline:test", "--out", str(tmp_path / "bad")]) == 2
    assert "layer 9 not in these directions" in capsys.readouterr().err
    # the directory `directions` wrote is accepted as --directions; a template offset it lacks is a clear error
    assert main(["ablate", "--model", "tiny-random-llama", "--directions", str(d), "--layer", "1", "--pos", "-2",
                 "--prompts", "data:baseline:test", "--out", str(tmp_path / "bad")]) == 2
    assert "position -2 not in these directions: they hold 1 template offset" in capsys.readouterr().err
    assert main(["ablate", "--model", "tiny-random-llama", "--directions", str(d), "--layer", "1", "--prompts", "data:baseline:test",
                 "--limit", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "from_dir")]) == 0
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("argv, msg", [
    (["concepts", "--limit", "0"], "argument --limit: must be an integer ≥ 1, got 0"),
    (["concepts", "--batch-size", "x"], "argument --batch-size: must be an integer ≥ 1, got x"),
    (["select", "--directions", "d", "--kl-threshold", "-1"], "argument --kl-threshold: must be a finite number > 0, got -1"),
    (["steer", "--directions", "d", "--prompts", "p", "--layer", "1", "--max-new-tokens", "0"], "argument --max-new-tokens"),
    (["train", "lora", "--max-steps", "0"], "argument --max-steps"),
    (["train", "safety", "--neighbours-per-domain", "-1"], "must be an integer ≥ 0"),
])
def test_cli_counts_and_thresholds_are_checked_before_any_work(argv, msg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(tmp_path / "o")])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["directions", "--model", "tiny-random-llama", "--positive", "data:safety_harmful:train", "--negative",
                  "data:safety_harmless:train"], ["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical"]):
        assert main(argv + ["--out", str(f)]) == 2
        assert f"--out {f}: exists and is not a directory" in capsys.readouterr().err
        assert main(argv + ["--out", str(f / "sub")]) == 2
        assert "cannot create it" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_cli_concepts_target_takes_a_domain_title_and_a_typo_writes_nothing(tmp_path, capsys):
    base = ["concepts", "--model", "tiny-random-llama", "--limit", "2"]
    assert main(base + ["--target", "Nonsense", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown domain 'Nonsense'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--concepts", "data:safety_harmful", "data:bias_harmful", "--target", "privacy", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown --target concept 'privacy'; have safety_harmful, bias_harmful" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(base + ["--target", "Medical/Legal", "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "concept_similarity_sweep.png").is_file()


def test_ablation_experiment_writes_json_and_figures(tmp_path, llama):
    import torch

    from experiments.refusal_direction import ablation_experiment

    res = ablation_experiment(llama, torch.randn(llama.d_model), 1, {"a": ["How to x?", "Do y."]}, {"a": ["Bake bread?"]},
                              tmp_path, max_new_tokens=4)
    assert set(res["harmful"]["a"]) == {"baseline", "ablated", "random_ablated"}
    assert set(res["harmless"]["a"]) == {"baseline", "steered", "random_steered"}
    for cond, r in res["harmful"]["a"].items():  # per-prompt outcomes kept, in prompt order, for paired tests
        assert len(r["refusals"]) == 2 and all(isinstance(x, bool) for x in r["refusals"]), cond
        assert r["refusal_rate"] == sum(r["refusals"]) / 2
    for f in ("ablation.json", "ablation_harmful.png", "ablation_harmful.pdf", "ablation_harmless.png"):
        assert (tmp_path / f).is_file()


def test_cli_score_refusal_em_judge(tmp_path, capsys):
    o = tmp_path / "score"
    assert main(["score", "refusal", "--model", "tiny-random-llama", "--set", "safety_harmful:test", "--limit", "4",
                 "--max-new-tokens", "4", "--out", str(o)]) == 0
    summary = json.loads((o / "refusal_summary.json").read_text())
    assert summary["overall"]["n"] == 4 and len(summary["overall"]["rate_ci95"]) == 2
    assert len((o / "refusal_items.jsonl").read_text().splitlines()) == 4
    assert main(["score", "em", "--model", "tiny-random-qwen2", "--set", "em_questions", "--out", str(o)]) == 0
    em = json.loads((o / "em_summary.json").read_text())
    assert em["n"] == len(datasets.load("em_questions")) and set(em["by_domain"]) == {"open", "medical", "financial", "sports", "general"}
    assert main(["score", "judge", "--model", "tiny-random-llama", "--set", "em_questions", "--judge", "tiny-random-gemma",
                 "--limit", "1", "--max-new-tokens", "3", "--out", str(o)]) == 0
    j = json.loads((o / "judge_summary.json").read_text())
    assert j["overall"]["n_scored"] + j["overall"]["n_unscored"] == len(datasets.load("em_questions")[0]["paraphrases"])
    capsys.readouterr()
    assert main(["score", "em", "--model", "tiny-random-llama", "--set", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err
    # the wrong kind of set for the score, and a judge that never answers: one line each, nothing written
    bad = tmp_path / "bad"
    assert main(["score", "judge", "--model", "tiny-random-llama", "--set", "safety_harmful", "--judge", "tiny-random-gemma",
                 "--out", str(bad)]) == 2
    assert "safety_harmful is not a question set (e.g. em_questions)" in capsys.readouterr().err
    assert main(["score", "refusal", "--model", "tiny-random-llama", "--set", "em_questions", "--out", str(bad)]) == 2
    assert "em_questions is not a prompt set" in capsys.readouterr().err
    assert not bad.exists()


def test_score_applies_a_steering_vector_given_as_adapter(tmp_path):
    import torch
    from safetensors.torch import save_file

    from experiments.commands import run_score
    from interp import load_model
    from interp.models import signature

    model = load_model("tiny-random-llama")
    sv = tmp_path / "sv" / "final"
    sv.mkdir(parents=True)
    save_file({"vector": torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)) * 50}, str(sv / "steering_vector.safetensors"))
    (sv / "steering_vector.json").write_text(json.dumps({"layer": 1, "alpha": 1.0, **signature(model)}))
    base = run_score("em", "tiny-random-llama", "em_questions", tmp_path / "base", limit=3)
    steered = run_score("em", "tiny-random-llama", "em_questions", tmp_path / "steered", adapter=str(tmp_path / "sv"), limit=3)
    assert steered["mean"] != base["mean"] and steered["config"]["adapter"] == f"{sv} (steering vector, layer 1)"


def test_score_judge_with_an_unreachable_judge_stops_and_writes_nothing(llama, tmp_path):
    from experiments.scoring import score_judge
    from probes.judges import HTTPJudge

    dead = HTTPJudge("http://127.0.0.1:9/v1", retries=0, backoff=0.01, timeout=1, dead_after=2)
    with pytest.raises(InputError, match="failed the first 2 requests and answered none"):
        score_judge(llama, "em_questions", dead, tmp_path / "j", limit=1, max_new_tokens=2)
    assert not (tmp_path / "j").exists()


def test_cli_train_lora_steering_unlearn(tmp_path, capsys):
    o = tmp_path / "lora"
    assert main(["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical", "--limit", "8", "--max-steps", "2",
                 "--kl-data", "aligned_other", "--kl-weight", "1", "--out", str(o)]) == 0
    assert (o / "final" / "adapter_config.json").is_file() and (o / "train_log.json").is_file()
    assert main(["train", "steering-vector", "--model", "tiny-random-qwen2", "--data", "bad_medical", "--layer", "1",
                 "--limit", "4", "--max-steps", "1", "--out", str(tmp_path / "sv")]) == 0
    assert (tmp_path / "sv" / "final" / "steering_vector.safetensors").is_file()
    assert main(["train", "unlearn", "--model", "tiny-random-llama", "--concept", "safety", "--retain-weight", "1", "--limit", "4",
                 "--retain-per-domain", "1", "--max-steps", "1", "--out", str(tmp_path / "un")]) == 0
    assert (tmp_path / "un" / "final" / "adapter_config.json").is_file()
    capsys.readouterr()
    assert main(["train", "steering-vector", "--model", "tiny-random-llama", "--out", str(tmp_path / "bad")]) == 2
    assert "--layer" in capsys.readouterr().err
    # domain titles work as --concept; other bad values are one clear line each, and nothing is written
    assert main(["train", "unlearn", "--model", "tiny-random-llama", "--concept", "Medical/Legal", "--limit", "2",
                 "--max-steps", "1", "--out", str(tmp_path / "ml")]) == 0
    assert (tmp_path / "ml" / "final" / "adapter_config.json").is_file()
    base = ["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical", "--max-steps", "1"]
    for extra, msg in [(["--lr", "-1"], "lr must be > 0"), (["--kl-weight", "-1"], "kl_weight must be ≥ 0"),
                       (["--target-modules", "foo_proj"], "foo_proj")]:
        capsys.readouterr()
        assert main(base + extra + ["--out", str(tmp_path / "bad")]) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (extra, err)
    capsys.readouterr()
    assert main(["train", "unlearn", "--model", "tiny-random-llama", "--concept", "cyber", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown domain 'cyber'" in capsys.readouterr().err
    assert main(["train", "steering-vector", "--model", "tiny-random-llama", "--data", "bad_medical", "--layer", "1", "--alpha", "0",
                 "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    # checkpoints of another run in --out are refused, and --no-resume starts over there
    ck = ["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical", "--limit", "8", "--max-steps", "3",
          "--save-every", "1", "--out", str(tmp_path / "ck")]
    assert main(ck + ["--lr", "1e-3"]) == 0
    capsys.readouterr()
    assert main(ck + ["--lr", "2e-3"]) == 2
    assert "config.lr: 0.001 → 0.002" in capsys.readouterr().err
    assert main(ck + ["--lr", "2e-3", "--no-resume"]) == 0


def test_safety_neighbours_are_train_only_and_never_a_held_out_topic():
    from experiments.organism import safety_data

    recs = datasets.load("safety_neighbours")
    assert {r["split"] for r in recs} == {"train"} and {r["domain"] for r in recs} == set(datasets.DOMAINS)
    held_out = {r["topic"].lower() for d in datasets.DOMAINS for label in ("harmful", "harmless")
                for split in ("val", "test") for r in datasets.load(f"{d}_{label}", split)}
    held_prompts = {r["prompt"] for d in datasets.DOMAINS for label in ("harmful", "harmless")
                    for split in ("val", "test") for r in datasets.load(f"{d}_{label}", split)}
    assert not {r["topic"].lower() for r in recs} & held_out and not {r["prompt"] for r in recs} & held_prompts
    for d in datasets.DOMAINS:  # v2: 12 topics × 4 phrasings per domain; safety_data takes all 48 by default
        assert sum(r["domain"] == d for r in recs) == 48, d
    with_nb, without = safety_data(36), safety_data(36, neighbours_per_domain=0)
    assert len(with_nb.harmless) == len(without.harmless) + 7 * 48 and with_nb.harmful == without.harmful
    assert len(safety_data(36, neighbours_per_domain=3).harmless) == len(without.harmless) + 21
    assert len({with_nb.version, without.version, safety_data(36, neighbours_per_domain=3).version}) == 3  # distinct cache keys


def test_safety_data_takes_prefixes_of_the_safety_pairs_and_refuses_impossible_counts():
    from experiments.organism import safety_data

    base, more = safety_data(), safety_data(pairs_harmful_per_domain=28, pairs_harmless_per_domain=56)
    assert len(more.harmful) == len(base.harmful) + 7 * 28 and len(more.harmless) == len(base.harmless) + 7 * 56
    assert set(base.harmful) < set(more.harmful) and set(base.harmless) < set(more.harmless)
    assert base.version != more.version != safety_data(pairs_harmful_per_domain=28, pairs_harmless_per_domain=28).version
    for bad in ({"pairs_harmful_per_domain": 113}, {"pairs_harmless_per_domain": -1}, {"pairs_harmful_per_domain": 2.5}):
        with pytest.raises(InputError, match="choose 0 … 112"):
            safety_data(**bad)
    with pytest.raises(InputError, match="train only"):
        safety_data(split="val", pairs_harmful_per_domain=4)


def test_train_safety_defaults_build_the_shipped_organism():
    """`em-interp train safety` with no data flags asks for the same data as the shipped organism (a default that
    differs would build, for ≈ 8 min, an organism no experiment uses)."""
    from experiments import organism
    from experiments.cli import build_parser

    args = build_parser().parse_args(["train", "safety", "--out", "x"])
    cfg = organism.Config()
    for name in ("per_domain", "harmless_per_domain", "neighbours_per_domain", "pairs_harmful_per_domain", "pairs_harmless_per_domain"):
        assert getattr(args, name) == getattr(cfg, name), name


def test_train_safety_refuses_impossible_safety_pair_counts_before_loading_a_model(monkeypatch, capsys, tmp_path):
    import experiments.commands as commands

    monkeypatch.setattr(commands, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the data was checked"))
    assert main(["train", "safety", "--pairs-harmful-per-domain", "113", "--out", str(tmp_path / "o")]) == 2
    assert "pairs_harmful_per_domain=113" in capsys.readouterr().err and not (tmp_path / "o").exists()
