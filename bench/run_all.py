"""Run every benchmark in bench/ and print one summary table of their ratios (``make bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))
    rows, failed = [], []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
            continue
        # a script may write a smoke-sized result beside the committed one (pipeline.py): read the newer
        files = [f for f in (HERE / "results" / f"{script.stem}.json", HERE / "results" / f"{script.stem}_smoke.json") if f.is_file()]
        result = json.loads(max(files, key=lambda f: f.stat().st_mtime).read_text())
        rows += [(script.stem, k, v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    print(f"\n{'benchmark':<14} {'ratio':<32} {'value':>8}")
    for bench, key, value in rows:
        print(f"{bench:<14} {key:<32} {value:>8.3f}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
