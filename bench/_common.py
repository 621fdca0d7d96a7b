"""What every benchmark shares: offline set-up, interleaved timing with medians, peak RSS, and the result file.

Import it first (``import _common``): it makes the run offline and puts the repository on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"


def rounds(names: list[str], repeats: int) -> list[list[str]]:
    """The order of the conditions in each of ``repeats`` rounds: rotated by one per round (see :func:`interleaved`)."""
    return [names[i % len(names):] + names[: i % len(names)] for i in range(repeats)]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = True) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Seconds per call of each function: one warm-up call each, then ``repeats`` rounds that call every function
    once. Each round rotates the order by one, so drift between rounds hits all conditions alike and a condition
    is not always the one that runs last in a round (measured here: with a fixed order plain → steered → ablated,
    ablated ``generate`` read 0.94× plain; alternating the order, 0.99×). Use a multiple of ``len(fns)`` repeats
    for a balanced design. Returns (medians, all timings)."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for order in rounds(list(fns), repeats):
        for k in order:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, times


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS high-water mark (Linux ``clear_refs``; a no-op elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_kb() -> int:
    """Peak resident memory of this process since start or the last :func:`reset_peak_rss`, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def machine(device: str | None = None) -> dict:
    """CPU count, torch threads, device and GPU (the platform and versions are in ``interp.io.versions()``)."""
    import torch

    out = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device is not None:
        out["device"] = device
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def commit() -> str | None:
    """The measured code: the repository's short commit, with ``+dirty`` if tracked files other than
    ``bench/results/`` differ from it (None outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # results being written are not code
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def finish(out: str | Path, result: dict, *, device: str | None = None) -> None:
    """Add machine, versions and the measured commit, write ``out`` (JSON, atomically) and print the top-level ratios."""
    from interp.io import versions, write_json

    result = {**result, "machine": machine(device), "versions": versions(), "commit": commit()}
    write_json(out, result)
    print(json.dumps({k: round(v, 3) for k, v in result.items() if isinstance(v, float)}, indent=2))
