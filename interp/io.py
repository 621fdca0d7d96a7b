"""Small I/O helpers shared by every layer: clear input errors, atomic writes, provenance sidecars, JSONL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator


class InputError(ValueError):
    """Bad user input: the message names the input and what is wrong with it."""


class NonFiniteError(InputError):
    """A computation produced NaN or infinite values (activations, logits, scores): an error, never a result.
    Interventions catch it on the way out and prefix their setting (e.g. ``steer alpha=1e+20 …``)."""


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on, plus Python and the machine."""
    out = {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform()}
    for pkg in ("em-interp", "torch", "transformers", "peft", "tokenizers", "accelerate", "gguf", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# Temporary entries of atomic writes: ``.NAME.em-tmp.HOST.PID.RANDOM`` next to the target. A writer killed hard
# (SIGKILL, power loss) leaves one behind; the next atomic write into the same folder removes those whose owner is
# gone: on this host, a dead PID; from another host (a shared file system), older than STALE_TMP_S.
_TMP_MARK = ".em-tmp."
STALE_TMP_S = 3600.0
_TMP_RE = re.compile(r"^\..+" + re.escape(_TMP_MARK) + r"(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[A-Za-z0-9_]+$")


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but is not ours (or cannot be asked): keep its files
    return True


def clean_stale_temps(folder: str | os.PathLike, *, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove the temporary entries that killed atomic writes left in ``folder`` (see ``_TMP_MARK``); returns them."""
    folder, host, now, removed = Path(folder), _host_id(), time.time(), []
    try:
        entries = [e for e in folder.iterdir() if _TMP_RE.match(e.name)]
    except OSError:
        return removed
    for e in entries:
        m = _TMP_RE.match(e.name)
        try:
            age = now - e.lstat().st_mtime
        except OSError:
            continue
        stale = not _pid_alive(int(m["pid"])) if m["host"] == host else age > max_age_s
        if stale:
            if e.is_dir() and not e.is_symlink():
                shutil.rmtree(e, ignore_errors=True)
            else:
                e.unlink(missing_ok=True)
            removed.append(e)
    return removed


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _default_permissions(root: Path) -> None:
    """Give every file under ``root`` at least the umask's default permissions (safetensors writes its files 0600,
    while ``open()`` gives 0644 under the usual umask 022: the files of one artifact should not differ)."""
    mask = _umask()
    paths = [root] if root.is_file() else [root, *root.rglob("*")] if root.is_dir() else []
    for p in paths:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        want = mode | ((0o777 if p.is_dir() else 0o666) & ~mask)
        if want != mode:
            os.chmod(p, want)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    Works for files and directories, so no half-written artifact is ever left at ``path``. The temporary folder is
    named ``.NAME.em-tmp.HOST.PID.*``; stale ones of killed writers are removed first (:func:`clean_stale_temps`).
    What is written gets the permissions the umask gives (``_default_permissions``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}{_TMP_MARK}{_host_id()}.{os.getpid()}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        _default_permissions(tmp)
        if path.is_dir() and not path.is_symlink():
            os.replace(path, tmp_dir / ".old")  # moved aside, not deleted first: the gap without ``path`` is one rename
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _pointer(parts: list) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_NON_FINITE_KEY = "_non_finite"  # top-level map JSON pointer → "NaN" | "Infinity" | "-Infinity"


def _finite(o: Any, at: list, notes: dict, default=None) -> Any:
    if isinstance(o, float):
        if math.isfinite(o):
            return o
        notes[_pointer(at)] = "NaN" if o != o else ("Infinity" if o > 0 else "-Infinity")
        return None
    if isinstance(o, dict):
        return {k: _finite(v, [*at, k], notes, default) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v, [*at, i], notes, default) for i, v in enumerate(o)]
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    try:
        return _finite(_json_default(o), at, notes, default)
    except TypeError:
        if default is None:
            raise
        return _finite(default(o), at, notes, default)


def json_text(obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True, default=None) -> str:
    """Strict JSON (RFC 8259, readable by any tool): a non-finite float becomes ``null``, and a top-level object
    gets ``"_non_finite": {JSON pointer: "NaN" | "Infinity" | "-Infinity"}`` naming each such null and what it
    was (:func:`read_json` restores them). Tensors and arrays are written as lists, paths as strings, anything else
    through ``default`` (e.g. ``str``) or a ``TypeError``."""
    notes: dict = {}
    clean = _finite(obj, [], notes, default)
    if notes and isinstance(clean, dict):
        clean = {**clean, _NON_FINITE_KEY: notes}
    return json.dumps(clean, indent=indent, ensure_ascii=ensure_ascii, allow_nan=False)


def restore_non_finite(obj: Any) -> Any:
    """Undo :func:`json_text`'s nulls: put back the NaN / ±inf its ``_non_finite`` map records."""
    if not isinstance(obj, dict) or not isinstance(obj.get(_NON_FINITE_KEY), dict):
        return obj
    notes = obj.pop(_NON_FINITE_KEY)
    for ptr, value in notes.items():
        parts = [p.replace("~1", "/").replace("~0", "~") for p in ptr.split("/")[1:]]
        node = obj
        try:
            for p in parts[:-1]:
                node = node[int(p)] if isinstance(node, list) else node[p]
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = float(value)
            else:
                node[last] = float(value)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a map that does not fit the object: leave the null
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (:func:`json_text`) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file written by :func:`write_json` (non-finite values restored); a missing, non-UTF-8 or
    malformed file raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise InputError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    try:
        return restore_non_finite(json.loads(text))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def load_safetensors(path: str | os.PathLike, what: str = "safetensors file") -> tuple[dict, dict[str, str]]:
    """``(tensors, header metadata)`` of a safetensors file; a missing, truncated or corrupt one raises
    :class:`InputError` naming it (safetensors' own error is a ``SafetensorError`` from deep inside)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{what} {path}: not a readable safetensors file, truncated or corrupt "
                         f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    return tensors, header


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
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
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


def _read_text(path: Path) -> str:
    """UTF-8 text of an input file; bytes that are not UTF-8 raise :class:`InputError` naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None


def load_items(path: str | os.PathLike) -> list:
    """Load prompt items from JSONL: each record's ``messages`` (a chat) or ``prompt`` (a user prompt).

    A plain ``.txt`` file gives one prompt per non-empty line.
    """
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]
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
