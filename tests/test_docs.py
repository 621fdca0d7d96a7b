"""The design travels with the code: no tracked file points outside the repository (``../shared/``), and the
documents the code refers to exist in it."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.decode().split("\0") if p]


def _texts():
    for p in _tracked():
        if p.suffix in (".png", ".pdf", ".safetensors", ".gguf") or not p.is_file():
            continue
        try:
            yield p, p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def test_no_tracked_file_references_outside_the_repository():
    me = Path(__file__).resolve()
    bad = [f"{p.relative_to(ROOT)}:{i + 1}" for p, text in _texts() if p != me
           for i, line in enumerate(text.splitlines()) if "../shared/" in line or "shared/DESIGN" in line]
    assert not bad, f"references to ../shared/ (not in a user's clone): {bad}"


def test_referenced_docs_exist():
    refs = {m for _, text in _texts() for m in re.findall(r"docs/[\w./-]+\.md", text)}
    assert {"docs/design.md", "docs/environment.md"} <= refs
    missing = sorted(r for r in refs if not (ROOT / r).is_file())
    assert not missing, missing
