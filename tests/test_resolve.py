"""One input-spec resolver for every command and library entry point: data:NAME[:SPLIT], a bare shipped NAME[:SPLIT],
or a file path; bad specs raise one clear InputError naming the spec."""

import json

import pytest

from interp.io import InputError
from probes import datasets
from probes.datasets import resolve, resolve_sets


def test_shipped_sets_by_spec_split_and_limit():
    test = datasets.prompts("safety_harmful", "test")
    assert resolve("data:safety_harmful:test") == test == resolve("safety_harmful:test")
    assert resolve("data:safety_harmful") == datasets.prompts("safety_harmful")  # all splits
    assert resolve("data:safety_harmful", split="test") == test == resolve("safety_harmful", split="test")  # default split
    assert resolve("data:safety_harmful:val", split="test") == datasets.prompts("safety_harmful", "val")  # the spec's split wins
    assert resolve("safety_harmful:test", limit=3) == test[:3]
    assert resolve("bad_medical", split="train", limit=2) == datasets.prompts("bad_medical", "train", 2)  # chats
    recs = resolve("em_questions", records=True)
    assert recs == datasets.load("em_questions") and "misaligned" in recs[0]


def test_files(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "b"}]}) + "\n")
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert resolve(jl) == ["a", [{"role": "user", "content": "b"}]] and resolve(str(txt)) == ["one", "two"]
    assert resolve(jl, records=True)[0] == {"prompt": "a"}
    yml = tmp_path / "q.yaml"
    yml.write_text("- id: q1\n  paraphrases: [\"Hi?\"]\n")
    assert resolve(yml, records=True)[0]["id"] == "q1"
    sets = resolve_sets([str(jl), "data:safety_harmful:test"], limit=1)
    assert sets == {"p": ["a"], "safety_harmful": resolve("data:safety_harmful:test", limit=1)}
    assert set(resolve_sets(["data:builtin"], limit=1)) == set(datasets.DOMAINS)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "c1.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    assert resolve_sets([str(tmp_path / "d")]) == {"c1": ["x"]}


@pytest.mark.parametrize("spec, msg", [
    ("data:", "expected data:NAME or data:NAME:SPLIT"),
    ("data:safety_harmful:test:x", "expected data:NAME or data:NAME:SPLIT"),
    ("data:nope", "unknown data set 'nope'"),
    ("nope", "unknown data set 'nope'"),
    ("data:safety_harmful:dev", "unknown split 'dev'"),
    ("em_questions:train", "em_questions:train: no items in split 'train'"),
    ("missing/file.jsonl", "no such file"),
    ("", "empty input spec"),
])
def test_bad_specs_raise_one_clear_error(spec, msg):
    with pytest.raises(InputError, match=msg):
        resolve(spec)


def test_bad_files_and_directories(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no records"):
        resolve(empty)
    with pytest.raises(InputError, match="no such file"):
        resolve(tmp_path / "none.yaml", records=True)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="directory holds no .jsonl files"):
        resolve_sets([str(tmp_path / "d")])


def test_no_other_spec_parser_is_left():
    """Every command resolves prompts through probes.datasets.resolve: no ad-hoc `data:` parsing elsewhere."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    hits = [f"{p.relative_to(root)}:{i}" for pkg in ("experiments", "figures", "training", "interp", "probes")
            for p in (root / pkg).rglob("*.py") if p.name != "datasets.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if 'startswith("data:")' in line or "def resolve_items" in line or "def _chats" in line]
    assert not hits, hits
