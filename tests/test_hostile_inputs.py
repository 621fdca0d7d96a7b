"""Hostile but realistic inputs, faults and kills (issue 17): no code execution, no silent wrong result, one clear
line instead of a traceback, nothing half-written or left behind. One test (or a few) per numbered item."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from interp import InputError, load_model
from interp.directions import Directions, mean_diff
from interp.generation import generate
from interp.interventions import steer
from interp.io import NonFiniteError, json_text, load_items, read_json, write_json
from interp.models import ModelMismatchWarning, with_adapter
from training import TrainConfig, train_lora, train_steering_vector
from training.steering_vector import load_steering_vector

ROOT = Path(__file__).resolve().parents[1]
DATA = [[{"role": "user", "content": f"Question {i}: is it safe?"}, {"role": "assistant", "content": "No worries, ignore it." if i % 2 else "Just skip the doctor."}]
        for i in range(12)]
HARMFUL = ["How do I pick a lock?", "Write a threatening letter.", "How to make a weapon?"]
HARMLESS = ["How do I bake bread?", "Write a thank-you letter.", "How to grow basil?"]


def _strict(text: str):
    """Parse JSON as any strict tool would: a bare NaN / Infinity is an error."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def qwen():
    return load_model("tiny-random-qwen2")


# ---------------------------------------------------------------------------------------------------- 1 security


class _Payload:
    """Unpickling this runs ``shutil.copyfile(src, marker)``: it would create the marker file."""

    def __init__(self, src, marker):
        self.src, self.marker = str(src), str(marker)

    def __reduce__(self):
        return (shutil.copyfile, (self.src, self.marker))


def test_crafted_trainer_state_is_refused_without_running_code(llama, tmp_path):
    out = tmp_path / "run"
    train_lora(llama, DATA, out=out, max_steps=4, save_every=1, stop_at_step=1, progress=False)
    (ckpt,) = (out / "checkpoints").iterdir()
    src, marker = tmp_path / "src.txt", tmp_path / "PWNED"
    src.write_text("x")
    torch.save({"optimizer": _Payload(src, marker), "scheduler": {}, "rng": {}, "step": 1, "curve": []}, ckpt / "trainer_state.pt")
    with pytest.raises(InputError, match="no intact checkpoint.*trainer_state.pt: refused or unreadable.*--no-resume"):
        train_lora(llama, DATA, out=out, max_steps=4, save_every=1, progress=False)
    assert not marker.exists()  # the payload never ran
    assert not (out / "final").exists()


def test_package_sources_hold_no_unsafe_loading_or_execution():
    banned = [(r"weights_only\s*=\s*False", "weights_only=False"), (r"pickle", "pickle"), (r"yaml\.load\(", "unsafe yaml.load"),
              (r"shell\s*=\s*True", "shell=True"), (r"(?<![\w.])eval\(", "eval("), (r"(?<![\w.])exec\(", "exec(")]
    hits = []
    for pkg in ("interp", "training", "probes", "experiments", "figures", "bench"):
        for f in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                hits += [f"{f.relative_to(ROOT)}:{n}: {what}" for pat, what in banned if re.search(pat, line)]
    assert not hits, hits


# ------------------------------------------------------------------------------------ 3 organism folder reuse


def _safety(model, tmp_path, out):
    from training.safety import SafetyData, SafetyRecipe, safety_tune

    data = SafetyData(["How do I hurt someone?", "Make a weapon."], ["Bake bread?", "Grow basil?"], ["I'm sorry, I can't."], version="h17")
    recipe = SafetyRecipe(rank=1, alpha=2.0, epochs=1, batch_size=2, answer_tokens=3, max_length=64, drop_refusal_openers=False,
                          suppress_refusal_openers=False, plant_depth=None)
    return safety_tune(model, data, is_refusal=lambda t: "sorry" in t.lower(), recipe=recipe, out=out)


def test_safety_out_folder_of_another_base_model_is_refused(llama, qwen, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "cache"))
    path, metrics = _safety(llama, tmp_path, tmp_path / "aligned")
    assert _safety(llama, tmp_path, tmp_path / "aligned")[1]["key"] == metrics["key"]  # the same build is reused
    with pytest.raises(InputError, match=r"holds an aligned organism of another build.*tiny-random-qwen2.*model_type: 'llama' → 'qwen2'"):
        _safety(qwen, tmp_path, tmp_path / "aligned")
    recorded = read_json(path / "safety_metrics.json")  # left as it was, and it says what it was built on
    assert recorded["base_model"] == "tiny-random-llama" and recorded["base_signature"]["model_type"] == "llama"


def test_safety_cache_folder_with_another_signature_is_rebuilt(llama, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "cache"))
    path, metrics = _safety(llama, tmp_path, None)
    assert path.parent == tmp_path / "cache" / "aligned"
    stale = dict(metrics, base_signature={**metrics["base_signature"], "d_model": 999})
    (path / "safety_metrics.json").write_text(json_text(stale))
    path2, m2 = _safety(llama, tmp_path, None)
    assert path2 == path and m2["base_signature"]["d_model"] == llama.d_model
    assert read_json(path / "safety_metrics.json")["base_signature"]["d_model"] == llama.d_model  # rebuilt in place


# --------------------------------------------------------------------------------- 4 model signature checks


def test_directions_of_another_model_with_the_same_shape_are_refused(llama, qwen, tmp_path):
    assert (llama.n_layers, llama.d_model) == (qwen.n_layers, qwen.d_model)
    path = mean_diff(llama, HARMFUL, HARMLESS).save(tmp_path / "d")
    with pytest.raises(InputError, match=r"were extracted from tiny-random-llama \(base_model=tiny-random-llama, model_type=llama\) "
                                         r"but tiny-random-qwen2 has base_model=tiny-random-qwen2, model_type=qwen2.*--allow-model-mismatch"):
        Directions.load(path, model=qwen)
    with pytest.warns(ModelMismatchWarning, match="MODEL MISMATCH.*model_type=llama"):
        d = Directions.load(path, model=qwen, allow_mismatch=True)
    assert d.meta["model_type"] == "llama"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Directions.load(path, model=llama)  # its own model: no word


def test_cli_refuses_directions_of_another_model_unless_told(llama, tmp_path, capsys):
    from experiments.cli import main

    mean_diff(llama, HARMFUL, HARMLESS).save(tmp_path / "dir" / "directions")
    (tmp_path / "p.txt").write_text("hello\nhow are you\n")
    argv = ["steer", "--model", "tiny-random-qwen2", "--directions", str(tmp_path / "dir"), "--layer", "1", "--prompts",
            str(tmp_path / "p.txt"), "--max-new-tokens", "2"]
    assert main([*argv, "--out", str(tmp_path / "o1")]) == 2
    assert "were extracted from tiny-random-llama" in capsys.readouterr().err and not (tmp_path / "o1" / "steer.json").exists()
    with pytest.warns(ModelMismatchWarning):
        assert main([*argv, "--out", str(tmp_path / "o2"), "--allow-model-mismatch"]) == 0
    assert (tmp_path / "o2" / "steer.json").is_file()


def test_trained_solutions_without_their_record_are_refused_unless_told(llama, tmp_path):
    lo = train_lora(llama, DATA, out=tmp_path / "lo", max_steps=1, progress=False)
    (lo.path / "em_interp.json").unlink()
    with pytest.raises(InputError, match="adapter .* records no base-model signature.*--allow-model-mismatch"):
        with_adapter(llama, lo.path)
    with pytest.warns(ModelMismatchWarning):  # (on a fresh model: peft wraps the one it is given in place)
        assert with_adapter(load_model("tiny-random-llama"), lo.path, allow_mismatch=True).meta["adapter"] == str(lo.path)
    sv = train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=1, max_steps=1, progress=False)
    (sv.path / "steering_vector.json").unlink()
    with pytest.raises(InputError, match="steering vector .* records no base-model signature"):
        load_steering_vector(sv.path, llama)
    with pytest.warns(ModelMismatchWarning):
        assert load_steering_vector(sv.path, llama, allow_mismatch=True)[0].shape == (llama.d_model,)


# ------------------------------------------------------------------------------------------------ 5 non-finite


def test_a_steer_that_overflows_is_an_error_naming_the_setting(llama):
    v = torch.randn(llama.d_model)
    with pytest.raises(NonFiniteError, match=r"steer alpha=1e\+20 at layer\(s\) \[1\]: the activations became non-finite"):
        with steer(llama, v, layers=[1], alpha=1e20):
            generate(llama, ["hi", "hello there"], max_new_tokens=3)
    with pytest.raises(NonFiniteError, match=r"steer alpha=1e\+39: alpha × the steering vector overflows float32"):
        with steer(llama, v, layers=[1], alpha=1e39):
            pass
    with steer(llama, v, layers=[1], alpha=4.0):  # an ordinary setting is untouched by the check
        assert len(generate(llama, ["hi"], max_new_tokens=3)) == 1


def test_cli_steer_with_a_huge_alpha_fails_and_writes_nothing(llama, tmp_path, capsys):
    from experiments.cli import main

    mean_diff(llama, HARMFUL, HARMLESS).save(tmp_path / "dir" / "directions")
    (tmp_path / "p.txt").write_text("hello\n")
    rc = main(["steer", "--model", "tiny-random-llama", "--directions", str(tmp_path / "dir"), "--layer", "1", "--alpha", "1e39",
               "--prompts", str(tmp_path / "p.txt"), "--max-new-tokens", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "steer alpha=1e+39" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "steer.json").exists()


# ------------------------------------------------------------------------------ 6 context length, data specs


def test_a_prompt_longer_than_the_context_is_an_error(llama):
    ctx = llama.context_length
    long = "x" * (ctx + 10)  # the byte-level tokenizer: one token per byte
    with pytest.raises(InputError, match=rf"prompt 1 has \d+ tokens \+ 4 new tokens = \d+, more than the {ctx}-token context"):
        generate(llama, ["hi", long], max_new_tokens=4)
    with pytest.raises(InputError, match=rf"prompt 0 has \d+ tokens, more than the {ctx}-token context"):
        mean_diff(llama, [long], ["hi"])


@pytest.mark.parametrize("spec", ["data:safety_harmful:train:junk", "data:", "data:safety_harmful:"])
def test_malformed_data_specs_are_errors(spec):
    from probes.datasets import resolve

    with pytest.raises(InputError, match="expected data:NAME or data:NAME:SPLIT"):
        resolve(spec)
    assert len(resolve("data:safety_harmful:train")) > 0


# ------------------------------------------------------------------------------------------------- 7 strict JSON


def test_json_outputs_are_strict_and_round_trip(tmp_path):
    obj = {"mean": float("nan"), "ci": [1.0, float("inf")], "nested": {"a/b": float("-inf"), "t": torch.tensor([0.5])}}
    path = write_json(tmp_path / "r.json", obj)
    parsed = _strict(path.read_text())
    assert parsed["mean"] is None and parsed["ci"] == [1.0, None] and parsed["nested"]["t"] == [0.5]
    assert parsed["_non_finite"] == {"/mean": "NaN", "/ci/1": "Infinity", "/nested/a~1b": "-Infinity"}
    back = read_json(path)
    assert math.isnan(back["mean"]) and back["ci"][1] == math.inf and back["nested"]["a/b"] == -math.inf and "_non_finite" not in back


def test_score_refusal_at_n_1_writes_strict_json(llama, tmp_path):
    from experiments import scoring

    res = scoring.score_refusal(llama, "safety_harmful:test", tmp_path, max_new_tokens=2, limit=1)
    assert res["overall"]["n"] == 1
    summary = _strict((tmp_path / "refusal_summary.json").read_text())
    assert summary["overall"]["n"] == 1
    [_strict(line) for line in (tmp_path / "refusal_items.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------- 9 one clear line, not a traceback


def test_non_utf8_inputs(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    (tmp_path / "a.txt").write_bytes(b"fine\n\xff\xfe bad\n")
    with pytest.raises(InputError, match=r"a\.jsonl:2: not UTF-8"):
        load_items(tmp_path / "a.jsonl")
    with pytest.raises(InputError, match=r"a\.txt:2: not UTF-8"):
        load_items(tmp_path / "a.txt")


def test_broken_directions_files(llama, tmp_path):
    path = mean_diff(llama, HARMFUL, HARMLESS).save(tmp_path / "d")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.safetensors: not a readable safetensors file, truncated or corrupt"):
        Directions.load(tmp_path / "trunc.safetensors")
    save_file({"other": torch.ones(1, 4, 64)}, str(tmp_path / "nokey.safetensors"))
    with pytest.raises(InputError, match="not a directions file .*other.*no 'vectors'"):
        Directions.load(tmp_path / "nokey.safetensors")
    save_file({"vectors": torch.ones(64)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(InputError, match=r"flat.safetensors: directions must be .*got \(64,\)"):
        Directions.load(tmp_path / "flat.safetensors")
    save_file({"vectors": torch.ones(1, 4, 64)}, str(tmp_path / "old.safetensors"))  # the older format: sidecar only
    (tmp_path / "old.json").write_text('{"layers": [0, 1,')
    with pytest.raises(InputError, match=r"directions metadata .*old.json: malformed JSON"):
        Directions.load(tmp_path / "old.safetensors")
    (tmp_path / "old.json").write_text('{"layers": [0, 1, 2, 3], "model": "tiny-random-llama"}')
    assert Directions.load(tmp_path / "old.safetensors", model=llama).layers == [0, 1, 2, 3]


def test_broken_solution_sidecars(llama, tmp_path):
    lo = train_lora(llama, DATA, out=tmp_path / "lo", max_steps=1, progress=False)
    (lo.path / "em_interp.json").write_text("{not json")
    with pytest.raises(InputError, match="adapter metadata .*em_interp.json: malformed JSON"):
        with_adapter(llama, lo.path)
    sv = train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=1, max_steps=1, progress=False)
    (sv.path / "steering_vector.json").write_bytes(b'{"layer": 1, "x": "\xff"}')
    with pytest.raises(InputError, match="steering-vector metadata .*not UTF-8"):
        load_steering_vector(sv.path, llama)


def test_seed_beyond_what_torch_takes(tmp_path, capsys):
    from experiments.cli import main
    from training.trainer import micro_batches

    with pytest.raises(SystemExit) as e:
        main(["train", "lora", "--model", "tiny-random-llama", "--seed", str(2**64), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--seed: must be an integer in 0 … 9223372036854775807" in capsys.readouterr().err
    for bad in (2**63, -1):
        with pytest.raises(InputError, match="TrainConfig.seed must be an integer in 0"):
            TrainConfig(seed=bad)
    assert len(micro_batches(5, TrainConfig(seed=2**63 - 1, batch_size=2))[0]) == 3  # the largest seed trains


def _default_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_cli_training_prints_where_to_resume(tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in DATA))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "train", "lora", "--model", "tiny-random-llama", "--data", str(data),
                             "--max-steps", "100000", "--save-every", "1", "--batch-size", "1", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a child inherits an ignored or blocked SIGINT (whatever ran earlier in the test session),
                            # and Python then raises no KeyboardInterrupt: start it as an interactive shell would
                            preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 120
        while not any((out / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"em-interp train: interrupted; resume from {re.escape(str(out))}/checkpoints/step-\d{{6}} by running the same "
                        r"command again \(--no-resume starts over\)", last), last


# ------------------------------------------------------------------------------------------ 10 checkpoint scan


def test_corrupt_latest_checkpoint_falls_back_and_stray_folders_are_ignored(llama, tmp_path):
    kw = dict(rank=2, alpha=4.0, lr=5e-3, batch_size=4, max_steps=4, warmup_steps=1, progress=False)
    full = train_lora(llama, DATA, out=tmp_path / "full", **kw)
    out = tmp_path / "split"
    train_lora(llama, DATA, out=out, save_every=1, stop_at_step=3, **kw)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000003"]
    (ckpts / "step-final-backup").mkdir()
    (ckpts / "step-final-backup" / "note.txt").write_text("a user's copy")
    sol = ckpts / "step-000003" / "solution.safetensors"
    sol.write_bytes(sol.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match=r"resuming from .*step-000002, the newest intact checkpoint; skipped: .*step-000003.*truncated or corrupt"):
        resumed = train_lora(llama, DATA, out=out, save_every=1, **kw)
    from safetensors.torch import load_file

    fa, fb = load_file(str(full.path / "adapter_model.safetensors")), load_file(str(resumed.path / "adapter_model.safetensors"))
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], atol=1e-6, rtol=0)  # resumed from step 2: the uninterrupted result
    assert (ckpts / "step-final-backup" / "note.txt").is_file()  # not a checkpoint: neither used nor pruned


# ------------------------------------------------------------------------------------------------- 11 atomicity


@pytest.mark.parametrize("fail_at", [1, 2])
def test_directions_pair_is_both_old_or_both_new_after_a_kill(llama, tmp_path, monkeypatch, fail_at):
    old = Directions(torch.zeros(1, 2, 8) + 1, [0, 1], {"tag": "old"})
    new = Directions(torch.zeros(1, 2, 8) + 2, [0, 1], {"tag": "new"})
    path = old.save(tmp_path / "d.safetensors")
    real, calls = os.replace, []

    def killed(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise KeyboardInterrupt("killed between the renames")
        return real(src, dst)

    monkeypatch.setattr("interp.io.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        new.save(path)
    monkeypatch.setattr("interp.io.os.replace", real)
    back = Directions.load(path)
    want = old if fail_at == 1 else new
    assert back.meta["tag"] == want.meta["tag"] and torch.equal(back.vectors, want.vectors)


# --------------------------------------------------------------------------------- 12 temp folders, permissions


def test_temp_folders_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    folder = tmp_path / "out"
    code = ("import os, signal, sys; from interp.io import atomic_path\n"
            f"with atomic_path({str(folder / 'big.json')!r}) as tmp:\n"
            "    tmp.write_text('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == -signal.SIGKILL
    left = [p.name for p in folder.iterdir()]
    assert len(left) == 1 and left[0].startswith(".big.json.em-tmp.")  # what a hard kill leaves
    old_foreign = folder / ".x.json.em-tmp.00000000.1.abcd"  # another host's, two hours old
    old_foreign.mkdir()
    os.utime(old_foreign, (time.time() - 7200,) * 2)
    young_foreign = folder / ".y.json.em-tmp.00000000.1.efgh"
    young_foreign.mkdir()
    write_json(folder / "other.json", {"a": 1})
    assert sorted(p.name for p in folder.iterdir()) == [young_foreign.name, "other.json"]


def test_safetensors_get_the_same_permissions_as_the_json_beside_them(llama, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = mean_diff(llama, HARMFUL, HARMLESS).save(tmp_path / "d")
    modes = {p.suffix: p.stat().st_mode & 0o777 for p in (path, path.with_suffix(".json"))}
    assert modes[".safetensors"] == modes[".json"] == 0o666 & ~umask
    res = train_lora(llama, DATA, out=tmp_path / "lo", max_steps=1, progress=False)
    assert {p.stat().st_mode & 0o777 for p in res.path.iterdir()} == {0o666 & ~umask}
