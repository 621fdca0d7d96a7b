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


def domain(name: str) -> str:
    """The key of a responsible-AI domain from its key or title, case-insensitive: ``"Medical/Legal"``,
    ``"sensitive content"`` and ``"cybersecurity"`` all work; anything else raises naming the seven."""
    key = "_".join(name.strip().lower().replace("/", " ").replace("-", " ").split())
    if key not in DOMAINS:
        raise InputError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)} (or their titles: "
                         f"{', '.join(DOMAIN_TITLES.values())})")
    return key


def _files() -> dict[str, Path]:
    files = {p.stem: p for p in DATA.glob("*.jsonl")}
    for sub in ("domains", "narrow", "questions"):
        files.update({p.stem: p for p in (DATA / sub).glob("*.jsonl")})
        files.update({p.stem: p for p in (DATA / sub).glob("*.yaml")})
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
    path = files[name]
    recs = load_questions(path) if path.suffix == ".yaml" else read_jsonl(path)
    return [r for r in recs if split is None or r.get("split") == split]


def load_questions(path: str | Path) -> list[dict]:
    """A Betley-style YAML question set: each question has ``id`` and non-empty ``paraphrases`` (optional
    ``system``, ``aligned``/``misaligned`` reference answers, ``domain``)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read question set ({e})") from None
    qs = doc.get("questions") if isinstance(doc, dict) else doc
    if not isinstance(qs, list) or not qs:
        raise InputError(f"{path}: expected a list of questions")
    version = doc.get("version") if isinstance(doc, dict) else None
    out = []
    for i, q in enumerate(qs):
        if not isinstance(q, dict) or "id" not in q:
            raise InputError(f"{path}: question {i} has no id")
        para = q.get("paraphrases")
        if not isinstance(para, list) or not para or not all(isinstance(x, str) and x.strip() for x in para):
            raise InputError(f"{path}: question {q['id']!r} has no paraphrases")
        out.append({"version": version, **q})
    return out


def prompts(name: str, split: str | None = None, limit: int | None = None) -> list:
    """The items (``prompt`` strings or ``messages`` chats) of a data set, optionally the first ``limit``."""
    items = []
    for r in load(name, split):
        if "messages" in r:
            items.append(r["messages"])
        elif "prompt" in r:
            items.append(r["prompt"])
        elif "paraphrases" in r:
            items.append(r["paraphrases"][0])
        else:
            items.append(r["text"])
    return items[:limit] if limit else items
