"""Versioned data sets shipped in ``probes/data/`` (see its README): ``names()`` and ``load(name, split)``."""

from __future__ import annotations

from pathlib import Path

from interp.io import InputError, read_jsonl

DATA = Path(__file__).parent / "data"
DOMAINS = ("cybersecurity", "safety", "toxicity", "bias", "sensitive_content", "medical_legal", "privacy")
DOMAIN_TITLES = {
    "cybersecurity": "Cybersecurity", "safety": "Safety", "toxicity": "Toxicity", "bias": "Bias",
    "sensitive_content": "Sensitive Content", "medical_legal": "Medical/Legal", "privacy": "Privacy",
}
SPLITS = ("train", "val", "test")


def _files() -> dict[str, Path]:
    files = {p.stem: p for p in DATA.glob("*.jsonl")}
    files.update({p.stem: p for p in (DATA / "domains").glob("*.jsonl")})
    return dict(sorted(files.items()))


def names() -> list[str]:
    """Names of the shipped data sets, e.g. ``cybersecurity_harmful``, ``baseline``."""
    return list(_files())


def load(name: str, split: str | None = None) -> list[dict]:
    """Records of data set ``name`` (all splits, or one of train/val/test), in file order."""
    files = _files()
    if name not in files:
        raise InputError(f"unknown data set {name!r}; available: {', '.join(files)}")
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    recs = read_jsonl(files[name])
    return [r for r in recs if split is None or r.get("split") == split]


def prompts(name: str, split: str | None = None, limit: int | None = None) -> list:
    """The items (``prompt`` strings or ``messages`` chats) of a data set, optionally the first ``limit``."""
    items = [r["messages"] if "messages" in r else r["prompt"] for r in load(name, split)]
    return items[:limit] if limit else items
