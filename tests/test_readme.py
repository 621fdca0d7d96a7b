"""The README's API tour runs as written (on a tiny model, with its SmolLM2 layer numbers and output paths mapped),
so the first code a researcher copies does not rot."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_tour_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    code = "\n".join(blocks)
    for old, new in [("load_model()", 'load_model("tiny-random-llama")'), ("layers=[10, 20]", "layers=[1, 2]"),
                     ("unit(15)", "unit(2)"), ('lr=2e-4', 'lr=2e-4, max_steps=1, progress=False')]:
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)  # the tour writes under runs/
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    assert tuple(ns["acts"].shape[1:]) == (2, 64)
    assert ns["refusal"].vectors.shape == (1, 4, 64) and (tmp_path / "runs" / "refusal.safetensors").is_file()
    assert ns["em_dir"].vectors.shape == (1, 4, 64)
    assert tuple(ns["S"].shape) == (4, 7, 7)
    assert (tmp_path / "runs" / "general" / "final" / "adapter_config.json").is_file()
    assert ns["narrow"].metrics["config"]["kl_weight"] == 1.0
