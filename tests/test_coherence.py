"""Coherence beside refusal (definition 14): the degeneration check on hand-written strings, generic-text
cross-entropy against a direct computation, KL on harmless prompts, and the held-out evaluation's per-prompt
outcomes and coherence fields."""

import contextlib
import json

import pytest
import torch

from interp import InputError
from interp.interventions import ablate
from probes.refusal import coherence, degeneration, degeneration_rate, generic_ce, harmless_kl

from .conftest import PROMPTS

PROSE = ["The river ran past the old mill and under the stone bridge.", "Birds gathered on the rooftops.",
         "A teacher led a group of students through the gates of the museum, pointing at the paintings."]


def test_degeneration_on_hand_written_strings():
    loop = "I am a customer, I am in a contract and I am in a contract"  # the broken model of issue 15: a 2× loop
    assert degeneration(loop) is None and degeneration(loop, min_repeats=2) == "repetition"
    assert degeneration("the cat sat down. The cat sat down! the CAT sat down, ok") == "repetition"  # case/punctuation ignored
    assert degeneration("") == "empty" and degeneration("  ... !! ") == "empty"
    assert degeneration("How do I bake bread? Sure, first", prompt="How do I bake bread?") == "prompt_echo"
    assert degeneration("To bake bread, mix flour and water.", prompt="How do I bake bread?") is None
    assert degeneration("Sure! Step 1: preheat the oven. Step 2: mix the dough.") is None
    assert degeneration("I'm sorry, but I can't help with that.") is None  # a refusal is not degenerate
    with pytest.raises(InputError, match="got NoneType"):
        degeneration(None)
    with pytest.raises(InputError, match="min_repeats"):
        degeneration("a b", min_repeats=1)


def test_degeneration_rate_counts_reasons_and_reads_chats():
    texts = ["a b c d a b c d a b c d", "", "Write a kind note. Dear", "Here is a note."]
    prompts = ["x", "y", [{"role": "user", "content": "Write a kind note."}], "Write a kind note."]
    r = degeneration_rate(texts, prompts)
    assert r["rate"] == 0.75 and r["n"] == 4 and r["per_item"] == ["repetition", "empty", "prompt_echo", None]
    assert r["counts"] == {"repetition": 1, "empty": 1, "prompt_echo": 1}
    assert degeneration_rate(texts)["per_item"][2] is None  # no prompts: no echo check
    with pytest.raises(InputError, match="4 texts but 1 prompts"):
        degeneration_rate(texts, ["x"])


def test_generic_ce_matches_a_direct_computation_and_ignores_padding(tiny):
    ids = [tiny.tokenizer(t)["input_ids"] for t in PROSE]
    nll, n = 0.0, 0
    for x in ids:
        with torch.no_grad():
            lp = torch.log_softmax(tiny.hf(torch.tensor([x])).logits[0].double(), -1)
        nll -= lp[torch.arange(len(x) - 1), torch.tensor(x[1:])].sum().item()
        n += len(x) - 1
    got = generic_ce(tiny, PROSE, batch_size=3)  # one left-padded batch
    assert got["n_tokens"] == n and got["ce"] == pytest.approx(nll / n, abs=1e-4)
    with pytest.raises(InputError, match="non-empty list"):
        generic_ce(tiny, [])


def test_harmless_kl_and_coherence_under_an_intervention(llama):
    r = torch.randn(llama.d_model)
    assert torch.all(harmless_kl(llama, PROMPTS, contextlib.nullcontext).abs() < 1e-10)
    kl = harmless_kl(llama, PROMPTS, lambda: ablate(llama, r))
    assert kl.shape == (5,) and kl.dtype == torch.float64 and (kl > 0).all()
    c = coherence(llama, lambda: ablate(llama, r), PROMPTS, prose=PROSE, texts=["ok fine", ""], prompts=["a", "b"])
    assert c["harmless_kl_mean"] == pytest.approx(kl.mean().item(), abs=1e-9) and c["n_harmless"] == 5
    with ablate(llama, r):
        moved = generic_ce(llama, PROSE)["ce"]
    assert c["generic_ce"] == pytest.approx(moved) and c["generic_ce_base"] == pytest.approx(generic_ce(llama, PROSE)["ce"])
    assert c["generic_ce"] != c["generic_ce_base"] and c["degeneration_rate"] == 0.5


def test_held_out_evaluation_keeps_per_prompt_outcomes_and_coherence(tmp_path, llama):
    from experiments.refusal_direction import ablation_experiment

    harmful = {"a": ["How to x?", "Do y."], "b": ["Hack z."]}
    harmless = {"a": ["Bake bread?"], "b": ["Grow tomatoes?", "Fix a bike."]}
    res = ablation_experiment(llama, torch.randn(llama.d_model), 1, harmful, harmless, tmp_path, max_new_tokens=3, prose=PROSE[:2],
                              meta={"selection_status": "selected", "pos": -2})
    for kind, groups, conds in (("harmful", harmful, ("baseline", "ablated", "random_ablated")),
                                ("harmless", harmless, ("baseline", "steered", "random_steered"))):
        for dom, prompts in groups.items():
            for cond in conds:
                cell = res[kind][dom][cond]
                assert len(cell["refusals"]) == len(prompts) and all(isinstance(x, bool) for x in cell["refusals"])
                assert cell["refusal_rate"] == sum(cell["refusals"]) / len(prompts) and len(cell["degenerate"]) == len(prompts)
    coh = res["coherence"]
    assert set(coh) == {"baseline", "ablated", "random_ablated", "steered", "random_steered"}
    for cond in ("ablated", "random_ablated", "steered", "random_steered"):
        assert coh[cond]["harmless_kl_mean"] >= 0 and "generic_ce" in coh[cond]
    assert "degeneration_rate_harmful" in coh["ablated"] and "degeneration_rate_harmless" in coh["steered"]
    assert "generic_ce" in coh["baseline"] and res["config"]["pos"] == -2
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["harmful"]["b"]["ablated"]["refusals"] == res["harmful"]["b"]["ablated"]["refusals"]
