import json

import pytest

from figures.cli import main
from probes import datasets


def test_datasets_cover_seven_domains_with_splits():
    names = datasets.names()
    for d in datasets.DOMAINS:
        for label in ("harmful", "harmless"):
            recs = datasets.load(f"{d}_{label}")
            assert len(recs) >= 60, (d, label)
            assert {r["split"] for r in recs} == {"train", "val", "test"}
            assert f"{d}_{label}" in names
            # splits are by topic: no topic in two splits
            by_topic = {}
            for r in recs:
                by_topic.setdefault(r["topic"], set()).add(r["split"])
            assert all(len(s) == 1 for s in by_topic.values())
    assert len(datasets.load("baseline")) >= 100
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
