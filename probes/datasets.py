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
    """A question set in Betley et al.'s YAML format, as published (e.g. their ``first_plot_questions.yaml``) or as
    shipped here: a top-level list of questions, or a mapping with ``questions`` (and ``version``). YAML anchors
    and aliases are resolved. Each question needs an ``id`` (unique) and non-empty ``paraphrases``; the optional
    fields are checked when present — ``system`` (a string), ``judge_prompts`` (a mapping of name → prompt
    template), ``samples_per_paraphrase`` (a positive integer), ``type`` (a string) — and every raw field is kept
    (``aligned`` / ``misaligned`` reference answers, ``domain``, ``judge``, …). Records are independent copies
    (aliased lists are not shared), each with ``version`` (``None`` for a top-level list)."""
    import copy

    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read question set ({e})") from None
    qs = doc.get("questions") if isinstance(doc, dict) else doc
    if not isinstance(qs, list) or not qs:
        raise InputError(f"{path}: expected a list of questions (top level, or under 'questions')")
    version = doc.get("version") if isinstance(doc, dict) else None
    out, seen = [], set()
    for i, q in enumerate(qs):
        if not isinstance(q, dict) or "id" not in q:
            raise InputError(f"{path}: question {i} has no id")
        name = q["id"]
        if name in seen:
            raise InputError(f"{path}: question id {name!r} appears twice")
        seen.add(name)
        para = q.get("paraphrases")
        if not isinstance(para, list) or not para or not all(isinstance(x, str) and x.strip() for x in para):
            raise InputError(f"{path}: question {name!r} has no paraphrases")
        for key in ("system", "type"):
            if q.get(key) is not None and not isinstance(q[key], str):
                raise InputError(f"{path}: question {name!r}: {key} must be a string, got {type(q[key]).__name__}")
        jp = q.get("judge_prompts")
        if jp is not None and not (isinstance(jp, dict) and jp and all(isinstance(k, str) and isinstance(v, str) for k, v in jp.items())):
            raise InputError(f"{path}: question {name!r}: judge_prompts must map names to prompt templates")
        n = q.get("samples_per_paraphrase")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InputError(f"{path}: question {name!r}: samples_per_paraphrase must be a positive integer, got {n!r}")
        out.append({"version": version, **copy.deepcopy(q)})
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
