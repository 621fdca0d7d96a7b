"""The staged runner: a stage's cache key is its complete config (+ model, seed, its dependencies' keys), so changing
any field of any stage config re-runs exactly that stage and the stages depending on it."""

import dataclasses
import typing

import pytest

from experiments import pipeline, presets
from experiments.runner import Runner, stage_key
from interp.io import InputError


def _changed(value, hint):
    """A different value of the field's type (driven by the type hint, so a new field is covered automatically)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:  # named choices: another one
        return next(a for a in args if a != value)
    if value is None:
        return "x" if str in args else 1
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value + (value[0],) if value else ("x",)
    if isinstance(value, dict):
        return {**value, "_changed": 1}
    if isinstance(value, list):
        return value + [1]
    raise AssertionError(f"no change rule for {type(value).__name__}")


def _dependents(name: str) -> set[str]:
    out, grew = {name}, True
    while grew:
        grew = False
        for s in pipeline.STAGES:
            if s.name not in out and out & set(s.after):
                out.add(s.name)
                grew = True
    return out


def _run(out, preset, ran_log):
    runner = Runner(out, model=preset.model, seed=preset.seed, progress=False)
    fns = {s.name: (lambda r, s=s: ran_log.append(s.name) or s.result_type()) for s in pipeline.STAGES}
    pipeline.run_stages(runner, preset, fns)
    return runner


def test_every_preset_field_belongs_to_exactly_one_stage_config():
    stage_configs = [s.config for s in pipeline.STAGES]
    assert len(set(stage_configs)) == len(stage_configs)
    assert {f.name for f in dataclasses.fields(presets.Preset)} == set(stage_configs) | {"model", "seed"}


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_changing_any_config_field_reruns_exactly_its_stage_and_dependents(tmp_path, name):
    base = presets.get(name)
    base = presets.override(base, {"judge.judge": "tiny-random-llama"})  # the judge stage runs too
    ran: list[str] = []
    _run(tmp_path, base, ran)
    assert ran == [s.name for s in pipeline.STAGES]
    ran.clear()
    _run(tmp_path, base, ran)
    assert ran == []  # everything cached
    hints = dict(presets.fields())
    n = 0
    for path, hint in presets.fields(base):
        top, _, leaf = path.partition(".")
        if not leaf:  # model / seed: every stage
            expected = {s.name for s in pipeline.STAGES}
        else:
            expected = _dependents(next(s.name for s in pipeline.STAGES if s.config == top))
        value = base
        for part in path.split("."):
            value = getattr(value, part)
        changed = presets.override(base, {path: _changed(value, hints[path])})
        ran.clear()
        _run(tmp_path, changed, ran)
        assert set(ran) == expected, path
        ran.clear()
        _run(tmp_path, base, ran)  # back to the original config: the original stages re-run (files were replaced)
        assert set(ran) == expected, path
        n += 1
    assert n == len(hints) > 40


def test_runner_rebuilds_results_rejects_stale_ones_and_needs_its_dependencies(tmp_path):
    @dataclasses.dataclass
    class Cfg:
        k: int = 1

    @dataclasses.dataclass
    class Res:
        value: int = 0
        figures: list = dataclasses.field(default_factory=list)

    r = Runner(tmp_path, model="m", seed=0, progress=False)
    assert r.stage("a", Cfg(), lambda: Res(3), result_type=Res) == Res(3)
    again = Runner(tmp_path, model="m", seed=0, progress=False)
    assert again.stage("a", Cfg(), lambda: Res(4), result_type=Res) == Res(3) and again.ran == []
    stale = Runner(tmp_path, model="m", seed=0, progress=False)  # a cached result that no longer fits its type re-runs

    @dataclasses.dataclass
    class Other:
        other: int = 0

    assert stale.stage("a", Cfg(), lambda: Other(5), result_type=Other) == Other(5) and stale.ran == ["a"]
    with pytest.raises(InputError, match="depends on"):
        Runner(tmp_path, model="m", seed=0).stage("b", Cfg(), lambda: Res(), after=("a",))
    with pytest.raises(InputError, match="dataclass"):
        stage_key({"k": 1}, model="m", seed=0)
    # the key covers config, model, seed and dependency keys
    k = stage_key(Cfg(), model="m", seed=0)[0]
    assert len({k, stage_key(Cfg(2), model="m", seed=0)[0], stage_key(Cfg(), model="n", seed=0)[0],
                stage_key(Cfg(), model="m", seed=1)[0], stage_key(Cfg(), model="m", seed=0, after={"a": "x"})[0]}) == 5


def test_cli_reproduce_set_overrides_come_from_the_config_fields(tmp_path, capsys):
    from experiments.cli import build_parser, main

    base = presets.get("smoke")
    hints = dict(presets.fields())
    for path, _ in presets.fields(base):
        value = base
        for part in path.split("."):
            value = getattr(value, part)
        new = _changed(value, hints[path])
        text = new if isinstance(new, str) else repr(new)
        args = build_parser().parse_args(["reproduce", "--preset", "smoke", "--out", "x", "--set", f"{path}={text}"])
        got = presets.override(base, args.settings)
        for part in path.split("."):
            got = getattr(got, part)
        assert got == new, path
    for bad, msg in (["nope.field=1", "no such setting"], ["refusal.sweep_stride=abc", "not a valid value"],
                     ["refusal.sweep_stride=1.5", "expected int"], ["refusal.sweep_stride", "expected FIELD=VALUE"]):
        assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", bad]) == 2
        assert msg in capsys.readouterr().err, bad
        assert not (tmp_path / "r").exists()  # rejected before any work
