"""Progress output (interp.progress): bars on stderr for generation / training, forced by EM_INTERP_PROGRESS=1,
silenced by =0 or progress=False, hidden on a non-terminal by default."""

import pytest

from interp import generate, progress

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "What is 2 + 2?"]


def test_generate_bar_only_when_forced(llama, capsys, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    generate(llama, PROMPTS, max_new_tokens=2, batch_size=2)
    assert "generate" not in capsys.readouterr().err  # captured stderr is not a terminal: no bar by default
    monkeypatch.setenv(progress.ENV, "1")
    generate(llama, PROMPTS, max_new_tokens=2, batch_size=2)
    err = capsys.readouterr().err
    assert "generate (4 prompts, ≤ 2 tokens)" in err and "0/2 [" in err
    generate(llama, PROMPTS, max_new_tokens=2, batch_size=2, progress=False)  # a caller's False stays off
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(progress.ENV, "0")
    generate(llama, PROMPTS, max_new_tokens=2, batch_size=2, progress=True)  # the global switch wins
    assert capsys.readouterr().err == ""


def test_training_bar_says_what_trains(llama, tmp_path, capsys, monkeypatch):
    from training import train_lora

    monkeypatch.setenv(progress.ENV, "1")
    data = [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."}]] * 4
    train_lora(llama, data, out=tmp_path / "a", max_steps=2, batch_size=2)
    err = capsys.readouterr().err
    assert "train lora" in err and "2/2" in err and "loss=" in err


def test_refusal_generate_and_score_bar(llama, capsys, monkeypatch):
    from probes.refusal import generate_and_score

    monkeypatch.setenv(progress.ENV, "1")
    generate_and_score(llama, PROMPTS, max_new_tokens=2, batch_size=2)
    assert "generate + refusal score" in capsys.readouterr().err


def test_activations_bar(llama, capsys, monkeypatch):
    from interp import mean_activations

    monkeypatch.setenv(progress.ENV, "1")
    mean_activations(llama, PROMPTS, batch_size=1)
    assert "activations at last_prompt (4 items" in capsys.readouterr().err


def test_step_lines_and_switch(capsys, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.step("stage x"):
        pass
    err = capsys.readouterr().err
    assert "▶ stage x" in err and "✓ stage x (" in err  # lines are for logs too: shown on a non-terminal
    with pytest.raises(ValueError), progress.step("stage y"):
        raise ValueError("boom")
    assert "✗ stage y failed" in capsys.readouterr().err
    monkeypatch.setenv(progress.ENV, "0")
    with progress.step("stage z"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(progress.ENV, "maybe")  # unknown values are ignored, never an error
    assert progress.forced() is None
