"""Small I/O helpers shared by every layer: clear input errors, atomic writes, provenance sidecars, JSONL."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator


class InputError(ValueError):
    """Bad user input: the message names the input and what is wrong with it."""


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on, plus Python and the machine."""
    out = {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform()}
    for pkg in ("em-interp", "torch", "transformers", "peft", "tokenizers", "accelerate", "gguf", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    Works for files and directories, so no half-written artifact is ever left at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a malformed line raises :class:`InputError` naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            records.append(rec)
    return records


def load_items(path: str | os.PathLike) -> list:
    """Load prompt items from JSONL: each record's ``messages`` (a chat) or ``prompt`` (a user prompt).

    A plain ``.txt`` file gives one prompt per non-empty line.
    """
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    items = []
    for i, rec in enumerate(read_jsonl(path), 1):
        if "messages" in rec:
            items.append(rec["messages"])
        elif "prompt" in rec:
            items.append(rec["prompt"])
        else:
            raise InputError(f"{path}: record {i} has neither 'messages' nor 'prompt'")
    if not items:
        raise InputError(f"{path}: no records")
    return items
