"""Versioned data sets shipped in ``probes/data/`` (see its README): ``names()`` and ``load(name, split)``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
    items = [_item(r) for r in load(name, split)]
    return items[:limit] if limit else items


def _parse_data_spec(spec: str) -> tuple[str, str | None]:
    """``data:NAME`` / ``data:NAME:SPLIT`` → (NAME, SPLIT or None); anything else malformed raises."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[1] or (len(parts) == 3 and not parts[2]):
        raise InputError(f"{spec!r}: expected data:NAME or data:NAME:SPLIT (e.g. data:safety_harmful:train)")
    return parts[1], parts[2] if len(parts) == 3 else None


def resolve(spec: str | Path, *, split: str | None = None, limit: int | None = None, records: bool = False) -> list:
    """The one input-spec resolver: the items of ``spec`` (prompt strings or ``messages`` chats), or with
    ``records`` the raw records (e.g. EM questions with reference answers).

    ``spec`` is one of:
    - ``data:NAME`` or ``data:NAME:SPLIT`` — a shipped data set (:func:`names`), all splits or one;
    - a bare name ``NAME`` or ``NAME:SPLIT`` (no ``/``, no file suffix, no such file): a shipped data set (the
      CLI's ``--set`` / ``--data`` shorthand);
    - a path: a JSONL file (records with ``messages`` or ``prompt``), a ``.txt`` file (one prompt per line) or,
      with ``records``, a Betley-format ``.yaml`` question file.

    ``split`` is the default split when the spec names none (e.g. ``"train"`` for training data); ``limit`` keeps
    the first items. Raises :class:`InputError` naming the spec for a malformed spec, an unknown data set or split,
    a missing or unreadable file, and when nothing is left to use."""
    text = str(spec)
    if not text.strip():
        raise InputError("empty input spec; expected data:NAME[:SPLIT] or a file path")
    name = part = None
    if text.startswith("data:"):
        name, part = _parse_data_spec(text)
    elif not Path(text).exists():
        bare, _, tail = text.partition(":")
        if bare in _files() or ("/" not in text and "\\" not in text and not Path(bare).suffix):
            name, part = bare, tail or None  # a shipped name (an unknown one raises, listing the available sets)
    if name is not None:
        part = part or split
        recs = load(name, part)
        items = recs if records else [_item(r) for r in recs]
    else:
        from interp.io import load_items

        path = Path(text)
        if records:
            if not path.is_file():
                raise InputError(f"{text}: no such file (and not a shipped data set; see probes.datasets.names())")
            items = load_questions(path) if path.suffix in (".yaml", ".yml") else read_jsonl(path)
        else:
            items = load_items(path)
    if limit:
        items = items[:limit]
    if not items:
        raise InputError(f"{text}: no items" + (f" in split {part!r}" if name is not None and part else ""))
    return items


def _item(r: dict):
    if "messages" in r:
        return r["messages"]
    if "prompt" in r:
        return r["prompt"]
    if "paraphrases" in r:
        return r["paraphrases"][0]
    return r["text"]


def resolve_sets(specs: Sequence[str], limit: int | None = None) -> dict[str, list]:
    """Named item sets (e.g. concepts) from specs: ``["data:builtin"]`` (the seven shipped harmful domain sets,
    train split), a directory of JSONL files (one set per file, named by its stem), or files / ``data:`` specs
    (named by their data set name or file stem), each resolved by :func:`resolve`."""
    if list(specs) == ["data:builtin"]:
        return {d: resolve(f"data:{d}_harmful:train", limit=limit) for d in DOMAINS}
    sets: dict[str, list] = {}
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files = sorted(p.glob("*.jsonl"))
            if not files:
                raise InputError(f"{p}: directory holds no .jsonl files")
            sets.update({f.stem: resolve(f, limit=limit) for f in files})
        else:
            key = _parse_data_spec(spec)[0] if spec.startswith("data:") else p.stem
            sets[key] = resolve(spec, limit=limit)
    return sets
