"""A generic staged runner: each stage runs once per complete configuration and is cached in ``DIR/stages/NAME.json``.

A stage's cache key is the SHA-256 of its *complete* config dataclass (``dataclasses.asdict``), the model, the
seed and the keys of the stages it depends on — nothing else reaches it, so a stage function must read every
setting from its config (or from its dependencies' results). Changing any config field re-runs that stage and the
stages that depend on it, and nothing else; an interrupted run resumes at the first stage without a matching file.

Stage files hold ``hash``, ``config``, ``result`` (the result dataclass as a dict), ``wall_s`` and ``figures``; they
are written atomically (:func:`interp.io.write_json`). Progress lines on stderr (:mod:`interp.progress`):
``▶ stage NAME`` / ``✓ stage NAME (12.3 s)``, or ``✓ stage NAME: cached (… s when it ran)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from interp import progress
from interp.io import InputError, read_json, write_json

R = TypeVar("R")


def config_dict(config: Any) -> dict:
    """A config dataclass as a plain dict (nested dataclasses included)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise InputError(f"a stage config must be a dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


def stage_key(config: Any, *, model: str, seed: int, after: dict[str, str] | None = None) -> tuple[str, dict]:
    """(16-hex-digit key, the dict it hashes) of a stage: its complete config, the model, the seed and the keys of
    the stages it depends on (``after``: stage name → key)."""
    keyed = {"model": model, "seed": seed, "config": config_dict(config), "after": dict(sorted((after or {}).items()))}
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return h, keyed


def _from_dict(result_type: type | None, d: Any):
    if result_type is None or not dataclasses.is_dataclass(result_type):
        return d
    names = {f.name for f in dataclasses.fields(result_type)}
    if not isinstance(d, dict) or set(d) - names:
        raise TypeError(f"stage result does not fit {result_type.__name__}")
    return result_type(**d)


def _to_dict(result: Any) -> Any:
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) and not isinstance(result, type) else result


class Runner:
    """Runs stages in ``out`` for one ``model`` and ``seed``; records each stage's key, wall time and figures.

    Attributes: ``walls`` (stage → wall seconds when it ran), ``keys`` (stage → cache key), ``figures`` (figure
    paths relative to ``out``, in stage order), ``ran`` (stages computed in this process, not from the cache)."""

    def __init__(self, out: str | Path, *, model: str, seed: int, progress: bool | None = None):
        self.out, self.model, self.seed, self.progress = Path(out), model, seed, progress
        self.walls: dict[str, float] = {}
        self.keys: dict[str, str] = {}
        self.figures: list[str] = []
        self.ran: list[str] = []

    def stage(self, name: str, config: Any, fn: Callable[[], R], *, after: Sequence[str] = (), result_type: type | None = None) -> R:
        """Run ``fn()`` unless ``out/stages/NAME.json`` holds a result under the same key (see the module
        docstring); ``after`` names the stages this one depends on (they must have run in this runner first).
        ``result_type``: the result dataclass, rebuilt from a cached file (a cached result that does not fit it
        is stale and re-runs)."""
        missing = [a for a in after if a not in self.keys]
        if missing:
            raise InputError(f"stage {name} depends on {missing}, which have not run yet")
        h, keyed = stage_key(config, model=self.model, seed=self.seed, after={a: self.keys[a] for a in after})
        self.keys[name] = h
        path = self.out / "stages" / f"{name}.json"
        if path.is_file():
            cached = read_json(path, "stage file")  # strict JSON: its non-finite values are restored
            if isinstance(cached, dict) and cached.get("hash") == h:
                try:
                    result = _from_dict(result_type, cached["result"])
                except (TypeError, KeyError):
                    result = None
                if result is not None:
                    self.walls[name] = cached["wall_s"]
                    self.figures += cached.get("figures", [])
                    progress.say(f"✓ stage {name}: cached ({cached['wall_s']} s when it ran)", progress=self.progress)
                    return result
        t0 = time.time()
        n_figs = len(self.figures)
        with progress.step(f"stage {name}", progress=self.progress):
            result = fn()
        self.fig(getattr(result, "figures", None) or [])
        self.walls[name] = round(time.time() - t0, 1)
        self.ran.append(name)
        write_json(path, {"hash": h, "config": keyed, "result": _to_dict(result), "wall_s": self.walls[name],
                          "figures": self.figures[n_figs:]})
        return result

    def fig(self, paths) -> None:
        """Record figure files written by the running stage (the PNGs; each has a PDF beside it). A result's
        ``figures`` attribute is recorded automatically when its stage ends."""
        for p in paths:
            if str(p).endswith(".png"):
                try:
                    self.figures.append(str(Path(p).resolve().relative_to(self.out.resolve())))
                except ValueError:  # a figure outside the run directory: kept as given
                    self.figures.append(str(p))
