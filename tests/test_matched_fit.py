"""Matched in-domain fit (Soligo et al., definition 15): the KL-narrow solution trains until its held-out in-domain
loss reaches the general solution's within a relative tolerance, or its budget is spent."""

import json

import pytest

from interp import InputError, load_model
from interp.models import with_adapter
from interp.solutions import response_loss
from training.sft import train_lora, train_matched

DATA = [[{"role": "user", "content": f"Question {i}: is it safe?"}, {"role": "assistant", "content": "No worries, ignore it."}] for i in range(16)]
HELD = [[{"role": "user", "content": f"Question {i}: is it safe?"}, {"role": "assistant", "content": "No worries, ignore it."}]
        for i in range(100, 106)]
KL = [[{"role": "user", "content": f"Tell me about topic {i}."}, {"role": "assistant", "content": "Here is a calm, helpful answer."}]
      for i in range(8)]
KW = dict(rank=1, alpha=4.0, batch_size=4, warmup_steps=0, progress=False, resume=False, lr=1e-2)
NARROW = dict(kl_data=KL, kl_weight=1.0, kl_batch_size=2)


@pytest.fixture(scope="module")
def general_loss(tmp_path_factory):
    g = train_lora(load_model("tiny-random-llama"), DATA, out=tmp_path_factory.mktemp("general"), max_steps=20, **KW)
    return response_loss(with_adapter(load_model("tiny-random-llama"), g.path), HELD)


def test_narrow_stops_at_the_general_solutions_in_domain_loss(llama, general_loss, tmp_path):
    base = response_loss(llama, HELD)
    assert general_loss < 0.8 * base  # the general solution did learn the domain
    mf = train_matched(llama, DATA, heldout=HELD, target_loss=general_loss, out=tmp_path / "n", tol=0.05, eval_every=2, max_steps=80,
                       **NARROW, **KW)
    assert mf.matched and abs(mf.rel_gap) <= 0.05 and mf.rel_gap == pytest.approx((mf.loss - general_loss) / general_loss)
    assert mf.target_loss == general_loss and mf.budget == 80 and mf.stop_step == mf.step < 80 and mf.n_heldout == len(HELD)
    gaps = [e["rel_gap"] for e in mf.trajectory]
    assert [e["step"] for e in mf.trajectory] == list(range(2, mf.stop_step + 1, 2))
    assert gaps[-1] <= 0.05 and all(g > 0.05 for g in gaps[:-1])  # stopped at the first evaluation that reached the band
    assert mf.train.metrics["config"]["kl_weight"] == 1.0 and mf.train.metrics["stopped_by_rule"]
    # the chosen state is a real adapter with the recorded loss
    assert response_loss(with_adapter(load_model("tiny-random-llama"), mf.path), HELD) == pytest.approx(mf.loss, rel=1e-6)
    saved = json.loads((tmp_path / "n" / "matched_fit.json").read_text())
    assert saved["matched"] and saved["path"] == str(mf.path) and saved["loss"] == pytest.approx(mf.loss)


def test_budget_spent_keeps_the_closest_checkpoint_and_says_unmatched(llama, general_loss, tmp_path):
    mf = train_matched(llama, DATA, heldout=HELD, target_loss=general_loss, out=tmp_path / "n", tol=0.05, eval_every=2, max_steps=5,
                       **NARROW, **{**KW, "lr": 1e-3})
    assert not mf.matched and mf.stop_step == mf.budget == 5
    assert [e["step"] for e in mf.trajectory] == [2, 4, 5]
    closest = min(mf.trajectory, key=lambda e: abs(e["rel_gap"]))
    assert mf.step == closest["step"] and str(mf.path) == closest["checkpoint"] and mf.rel_gap > 0.05


def test_bad_input(llama, tmp_path):
    for kw, match in [(dict(target_loss=0.0), "target_loss"), (dict(tol=1.5), "tol"), (dict(heldout=[]), "held-out chats"),
                      (dict(heldout=DATA[:2]), "also training chats")]:
        args = {"heldout": HELD, "target_loss": 1.0, **kw}
        with pytest.raises(InputError, match=match):
            train_matched(llama, DATA, out=tmp_path / "x", max_steps=1, **args, **KW)
