"""Progress output for long work — the one way the project shows it.

Progress bars (tqdm) and stage lines go to stderr. Whether they show:

- ``EM_INTERP_PROGRESS=0`` turns them all off, whatever a call asks;
- a call's ``progress=False`` turns its bar off (a benchmark's timing loop, a non-main training process);
- ``progress=True``, or ``EM_INTERP_PROGRESS=1``, shows it — also when stderr is not a terminal (a log file);
- otherwise (``progress=None``, the default everywhere) a bar shows only on a terminal, and only for work of at
  least ``min_total`` steps.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

ENV = "EM_INTERP_PROGRESS"
T = TypeVar("T")


def forced() -> bool | None:
    """The environment's setting: True (``1``/``true``/``yes``/``on``), False (``0``/``false``/``no``/``off``), or
    None when unset or empty (anything else is ignored, not an error: output decoration must never stop a run)."""
    v = os.environ.get(ENV, "").strip().lower()
    return True if v in ("1", "true", "yes", "on") else False if v in ("0", "false", "no", "off") else None


def _disable(progress: bool | None, total: int | None, min_total: int) -> bool | None:
    """tqdm's ``disable``: True = hidden, False = shown, None = shown only when stderr is a terminal."""
    env = forced()
    if env is False or progress is False:
        return True
    if env or progress:
        return False
    return True if total is not None and total < min_total else None


def bar(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, progress: bool | None = None,
        min_total: int = 2, leave: bool = False, unit: str = "it", initial: int = 0):
    """A tqdm bar on stderr saying what runs (``desc``), shown by the rules above. Use it as tqdm (iterate it, or
    ``update`` / ``set_postfix`` / ``close``)."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, desc=desc, total=total, disable=_disable(progress, total, min_total), leave=leave, unit=unit,
                initial=initial, file=sys.stderr, dynamic_ncols=True)


def enabled(progress: bool | None = None) -> bool:
    """Whether plain progress lines (not bars) are printed: off only when ``EM_INTERP_PROGRESS=0`` or
    ``progress=False``; lines are useful in logs too, so a non-terminal stderr does not turn them off."""
    return forced() is not False and progress is not False


def say(message: str, *, progress: bool | None = None) -> None:
    """One progress line on stderr (see :func:`enabled`)."""
    if enabled(progress):
        print(message, file=sys.stderr, flush=True)


@contextmanager
def step(what: str, *, progress: bool | None = None) -> Iterator[None]:
    """Print ``▶ what`` as the step starts and ``✓ what (12.3 s)`` when it ends (``✗ … failed`` when it raises)."""
    say(f"▶ {what}", progress=progress)
    t0 = time.time()
    try:
        yield
    except BaseException:
        say(f"✗ {what} failed after {time.time() - t0:.1f} s", progress=progress)
        raise
    say(f"✓ {what} ({time.time() - t0:.1f} s)", progress=progress)
