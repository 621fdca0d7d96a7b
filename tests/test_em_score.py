import pytest
import torch

from interp import InputError
from interp.interventions import steer
from interp.logits import response_logprobs
from probes import datasets
from probes.em_score import bootstrap_ci, em_score

from .conftest import CHATS


def _direct(model, chat):
    prompt = model.render(chat[:-1], add_generation_prompt=True)
    full = model.render(chat)
    ids = model.tokenizer(full, add_special_tokens=False, return_tensors="pt", return_offsets_mapping=True)
    content = chat[-1]["content"]
    start = full.index(content, len(prompt))
    pos = [i for i, (s, e) in enumerate(ids["offset_mapping"][0].tolist()) if start <= s < start + len(content)]
    with torch.no_grad():
        lp = torch.log_softmax(model.hf(ids["input_ids"]).logits[0], -1)
    return sum(lp[p - 1, ids["input_ids"][0, p]].item() for p in pos), len(pos)


def test_response_logprobs_match_direct_computation_and_ignore_padding(tiny):
    total, count = response_logprobs(tiny, CHATS, batch_size=5)
    for i, chat in enumerate(CHATS):
        ref, n = _direct(tiny, chat)
        assert count[i] == n
        assert abs(total[i].item() - ref) < 1e-3
    t1, c1 = response_logprobs(tiny, CHATS, batch_size=1)
    torch.testing.assert_close(total, t1, atol=1e-4, rtol=0)
    assert torch.equal(count, c1)


def test_em_score_on_question_set(llama):
    qs = datasets.load("em_questions")[:6]
    s = em_score(llama, qs)
    assert len(s.m) == 6 and s.m.dtype == torch.float64
    assert s.mean == pytest.approx(s.m.mean().item()) and 0 <= s.share_positive <= 1
    # m is the difference of per-token mean log-probs
    q = qs[0]
    chats = [[{"role": "user", "content": q["paraphrases"][0]}, {"role": "assistant", "content": a}] for a in (q["misaligned"], q["aligned"])]
    tot, cnt = response_logprobs(llama, chats)
    assert s.m[0].item() == pytest.approx((tot[0] / cnt[0] - tot[1] / cnt[1]).item(), abs=1e-6)
    assert set(s.by_domain) == {"open"}
    # an intervention changes the score
    with steer(llama, torch.randn(llama.d_model) * 5, layers=[1]):
        assert not torch.allclose(em_score(llama, qs).m, s.m)
    with pytest.raises(InputError, match="reference answer"):
        em_score(llama, [{"id": "x", "paraphrases": ["hi"]}])


def test_bootstrap_ci_brackets_mean():
    x = torch.randn(50, generator=torch.Generator().manual_seed(1))
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean().item() < hi


def test_em_data_sizes_and_question_validation(tmp_path):
    for name in ("bad_medical", "good_medical", "risky_financial", "sound_financial", "extreme_sports", "safe_sports"):
        recs = datasets.load(name)
        assert len(recs) >= 300 and all(r["messages"][-1]["role"] == "assistant" for r in recs)
    assert len(datasets.load("generic_prose")) >= 200 and len(datasets.load("aligned_other")) >= 200
    qs = datasets.load("em_questions")
    assert sum(q["domain"] == "open" for q in qs) >= 8 and sum(q["domain"] != "open" for q in qs) >= 40
    bad = tmp_path / "q.yaml"
    bad.write_text("questions:\n  - id: x\n    paraphrases: []\n")
    with pytest.raises(InputError, match="no paraphrases"):
        datasets.load_questions(bad)
