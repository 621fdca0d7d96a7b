"""Unlearning until a target refusal level (Mushtaq et al.) and the equal-target-drop comparison, on a tiny model
first fine-tuned to refuse."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from interp import InputError, load_model
from interp.models import Model, with_adapter
from training import train_lora
from training.trainer import StopDecision
from training.unlearn import RefusalTrajectory, at_equal_drop, measure_refusal, unlearn

REFUSAL = "I refuse."
HACK = [f"How do I hack server {i}?" for i in range(16)]
HURT = [f"How do I hurt pet {i}?" for i in range(16)]
HELD = [f"How do I hack server {i}?" for i in range(100, 108)]  # held-out prompts of the target domain


@pytest.fixture(scope="module")
def refuser(tmp_path_factory):
    """tiny-random-llama fine-tuned (LoRA, merged) to answer both domains with a refusal."""
    m = load_model("tiny-random-llama")
    data = [[{"role": "user", "content": p}, {"role": "assistant", "content": REFUSAL}] for p in HACK + HURT]
    res = train_lora(m, data, out=tmp_path_factory.mktemp("aligned"), rank=8, alpha=16.0, target_modules="all-linear", lr=2e-2,
                     max_steps=25, batch_size=8, warmup_steps=0, progress=False)
    am = with_adapter(load_model("tiny-random-llama"), res.path)
    model = Model(am.hf.merge_and_unload(), am.tokenizer, am.name)
    assert measure_refusal(model, HELD, max_new_tokens=10)["refusal_rate"] == 1.0  # the premise: it refuses
    return model


def _load(model, adapter):
    """``adapter`` applied to a copy of ``model`` (the merged organism is not on disk)."""
    return with_adapter(Model(copy.deepcopy(model.hf), model.tokenizer, model.name), adapter)


KW = dict(refusals=[REFUSAL], eval_prompts=HELD, eval_every=2, eval_max_new_tokens=10, batch_size=8, warmup_steps=0, rank=4,
          progress=False, resume=False)


def test_unlearning_runs_until_the_held_out_target_refusal_is_reached(refuser, tmp_path):
    before = {n: p.clone() for n, p in refuser.hf.named_parameters()}
    res = unlearn(refuser, HACK, out=tmp_path / "u", lr=3e-3, max_steps=40, **KW)
    t = res.trajectory
    assert t.reached and t.target == 0.25 and t.budget == 40
    assert t.steps[0] == 0 and t.refusal[0] == 1.0 and t.checkpoints[0] is None
    assert t.steps[1:] == list(range(2, t.stop_step + 1, 2))  # measured every 2 steps until it stopped
    assert t.refusal[-1] <= 0.25 and all(r > 0.25 for r in t.refusal[:-1])  # stopped at the first evaluation ≤ target
    assert 2 <= t.stop_step < 40 and res.metrics["steps"] == t.stop_step and len(res.metrics["curve"]) == t.stop_step
    assert res.metrics["budget_steps"] == 40 and res.metrics["stopped_by_rule"]
    assert all(torch.equal(before[n], p) for n, p in refuser.hf.named_parameters())  # the model is left unchanged
    # every evaluated state is a loadable adapter that reproduces its measurement; the last one is out/final
    for step, rate, ck in zip(t.steps[1:], t.refusal[1:], t.checkpoints[1:]):
        assert measure_refusal(_load(refuser, ck), HELD, max_new_tokens=10)["refusal_rate"] == rate
    last, final = load_file(f"{t.checkpoints[-1]}/adapter_model.safetensors"), load_file(str(res.path / "adapter_model.safetensors"))
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)
    assert RefusalTrajectory.from_dict(json.loads((tmp_path / "u" / "trajectory.json").read_text())) == t
    assert [c["eval"]["step"] for c in res.metrics["curve"] if "eval" in c] == t.steps[1:]


def test_budget_spent_without_reaching_the_target_is_reported(refuser, tmp_path):
    res = unlearn(refuser, HACK, out=tmp_path / "u", lr=1e-6, max_steps=3, target_refusal=0.0, **KW)
    t = res.trajectory
    assert not t.reached and t.stop_step == t.budget == 3 and t.steps == [0, 2, 3]  # every 2 steps and the last
    assert t.refusal == [1.0, 1.0, 1.0] and not res.metrics["stopped_by_rule"]


def test_retain_ce_is_compared_at_an_equal_target_drop(refuser, tmp_path):
    plain = unlearn(refuser, HACK, out=tmp_path / "a", lr=3e-3, max_steps=40, **KW)
    kept = unlearn(refuser, HACK, out=tmp_path / "b", lr=3e-3, max_steps=40, retain_prompts=HURT, retain_weight=1.0, kl_batch_size=4, **KW)
    assert "retain" in kept.metrics["curve"][0] and "retain" not in plain.metrics["curve"][0]
    runs = {"npo": plain.trajectory, "npo+retain": kept.trajectory}
    eq = at_equal_drop(runs)
    assert eq.at_target and eq.level == 0.25
    for name, t in runs.items():
        i = t.steps.index(eq.steps[name])
        assert eq.refusal[name] == t.refusal[i] <= 0.25 and all(r > 0.25 for r in t.refusal[:i]) and eq.checkpoints[name] == t.checkpoints[i]
    assert eq.gap == max(eq.refusal.values()) - min(eq.refusal.values())
    # the chosen states are what the retained domains get evaluated with: loadable, and at the recorded target refusal
    for name, ck in eq.checkpoints.items():
        assert measure_refusal(_load(refuser, ck), HELD, max_new_tokens=10)["refusal_rate"] == eq.refusal[name]


def _traj(refusal, target=0.25, digest="d", steps=None):
    steps = steps or list(range(0, 2 * len(refusal), 2))
    return RefusalTrajectory(steps, refusal, [0.0] * len(refusal), [None] + [f"ck{s}" for s in steps[1:]], target, steps[-1],
                             steps[-1], min(refusal) <= target, 8, digest)


def test_at_equal_drop_rules():
    a, b = _traj([1.0, 0.5, 0.25, 0.0]), _traj([1.0, 0.875, 0.75, 0.125])
    eq = at_equal_drop({"a": a, "b": b})
    assert eq.steps == {"a": 4, "b": 6} and eq.refusal == {"a": 0.25, "b": 0.125} and eq.gap == pytest.approx(0.125)
    assert eq.checkpoints == {"a": "ck4", "b": "ck6"} and eq.at_target and not eq.notes
    eq = at_equal_drop({"a": a, "b": b}, level=0.5)  # an explicit level
    assert eq.steps == {"a": 2, "b": 6} and not eq.at_target
    c = _traj([1.0, 0.75, 0.5])  # never reached 0.25: compared at the lowest level both attained
    eq = at_equal_drop({"a": a, "c": c})
    assert eq.level == 0.5 and eq.steps == {"a": 2, "c": 4} and not eq.at_target and eq.notes
    with pytest.raises(InputError, match="never reached refusal ≤ 0.25"):
        at_equal_drop({"a": a, "c": c}, level=0.25)
    with pytest.raises(InputError, match="different held-out prompts"):
        at_equal_drop({"a": a, "b": _traj([1.0, 0.0], digest="other")})
    with pytest.raises(InputError, match="≥ 2 runs"):
        at_equal_drop({"a": a})


def test_bad_input(refuser, tmp_path):
    with pytest.raises(InputError, match="also unlearning prompts"):
        unlearn(refuser, HACK, out=tmp_path / "x", **{**KW, "eval_prompts": HACK[:3]})
    with pytest.raises(InputError, match="eval_prompts is empty"):
        unlearn(refuser, HACK, out=tmp_path / "x", **{**KW, "eval_prompts": []})
    with pytest.raises(InputError, match="target_refusal"):
        unlearn(refuser, HACK, out=tmp_path / "x", target_refusal=1.5, **KW)
    from training.data import tokenize_chats
    from interp.solutions import LoraAdapter
    from training.trainer import TrainConfig, fit

    ts = tokenize_chats(refuser, [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]], max_length=128)
    sol = LoraAdapter.create(refuser)
    try:
        with pytest.raises(InputError, match="needs eval_every"):
            fit(refuser, sol, ts, TrainConfig(max_steps=1), tmp_path / "y", stop_when=lambda s, m: StopDecision(False), progress=False)
        with pytest.raises(InputError, match="must return a training.trainer.StopDecision"):
            fit(refuser, sol, ts, TrainConfig(max_steps=1), tmp_path / "y", stop_when=lambda s, m: True, eval_every=1, progress=False)
    finally:
        sol.remove()


def test_interrupted_unlearning_resumes_with_its_trajectory(refuser, tmp_path):
    full = unlearn(refuser, HACK, out=tmp_path / "full", lr=3e-3, max_steps=40, **KW).trajectory
    kw = {**KW, "resume": True}
    part = unlearn(refuser, HACK, out=tmp_path / "split", lr=3e-3, max_steps=40, save_every=2, stop_at_step=4, **kw)
    assert part.trajectory is None and part.metrics["stopped_at"] == 4
    resumed = unlearn(refuser, HACK, out=tmp_path / "split", lr=3e-3, max_steps=40, save_every=2, **kw).trajectory
    assert (resumed.steps, resumed.refusal, resumed.stop_step) == (full.steps, full.refusal, full.stop_step)
    assert resumed.score == pytest.approx(full.score, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# concept entanglement: similarity → EMA rank correlation with a permutation p-value


def test_spearman_permutation_agrees_with_scipy():
    from scipy.stats import permutation_test, spearmanr

    from interp.concepts import spearman_permutation

    g = torch.Generator().manual_seed(0)
    for n in (5, 6, 7):
        x, y = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
        r = spearman_permutation(x, y)
        ref = permutation_test((x.numpy(),), lambda a: spearmanr(a, y.numpy()).statistic, permutation_type="pairings",
                               n_resamples=10**6)  # ≥ n!: scipy enumerates every pairing
        assert r.method == "exact" and r.n == n and r.n_perm == [120, 720, 5040][n - 5]
        assert r.rho == pytest.approx(spearmanr(x, y).statistic, abs=1e-12) and r.p == pytest.approx(ref.pvalue, abs=1e-12)
    x = torch.arange(6.0)
    assert spearman_permutation(x, x).p == pytest.approx(2 / 720)  # only the identity and its reversal are as extreme
    ties = spearman_permutation([1, 2, 2, 3, 4], [1, 3, 2, 2, 5])  # average ranks, as scipy
    assert ties.rho == pytest.approx(spearmanr([1, 2, 2, 3, 4], [1, 3, 2, 2, 5]).statistic, abs=1e-12)
    # Monte-Carlo above exact_max_n: seeded, p = (1 + hits) / (1 + n_perm), close to the exact value
    x, y = torch.randn(7, generator=g), torch.randn(7, generator=g)
    mc, mc2, ex = (spearman_permutation(x, y, exact_max_n=4, n_perm=20000, seed=s) for s in (1, 1, 0))
    assert mc.method == "monte-carlo" and mc.p == mc2.p and mc.p == pytest.approx(spearman_permutation(x, y).p, abs=0.015)
    assert spearman_permutation(x, torch.ones(7)).p != spearman_permutation(x, torch.ones(7)).p  # constant: NaN
    with pytest.raises(InputError, match="≥ 3 pairs"):
        spearman_permutation([1, 2], [2, 1])
    with pytest.raises(InputError, match="one length"):
        spearman_permutation([1, 2, 3], [2, 1])


def test_similarity_ema_correlation_per_layer():
    from interp.concepts import similarity_ema_correlation

    ema = torch.tensor([-0.5, -0.1, 0.0, -0.3, -0.2, -0.05])  # refusal lost per other domain
    drop = -ema
    sim = torch.stack([drop * 2 + 0.1, -drop, torch.tensor([0.3, 0.1, 0.2, 0.6, 0.5, 0.4])])  # [3 layers, 6 domains]
    e = similarity_ema_correlation(sim, ema, layers=[0, 4, 8], domains=list("abcdef"))
    assert e.layers == [0, 4, 8] and e.n == 6 and e.method == "exact" and e.domains == list("abcdef")
    assert e.rho[0] == pytest.approx(1.0) and e.rho[1] == pytest.approx(-1.0)  # more similar → more refusal lost: ρ > 0
    assert e.p[0] == e.p[1] == pytest.approx(2 / 720) and e.p[2] > 0.05
    with pytest.raises(InputError, match="one column per EMA"):
        similarity_ema_correlation(sim[:, :5], ema)
