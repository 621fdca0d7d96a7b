import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from interp import InputError, load_model
from interp.models import Model
from interp.solutions import (SteeringVector, adapter_norm, direction_similarity, efficiency, efficiency_curve, generic_kl,
                              lora_modules, perturb_tensor, perturbed, rescaled, response_loss, stability)

CHATS = [[{"role": "user", "content": f"Q{i}: what now?"}, {"role": "assistant", "content": "Ignore it" + "!" * i}] for i in range(5)]


def _lora(rank=2, alpha=6.0, seed=0, rslora=False):
    m = load_model("tiny-random-llama")
    pm = get_peft_model(m.hf, LoraConfig(r=rank, lora_alpha=alpha, target_modules=["down_proj", "o_proj"], lora_dropout=0.0, use_rslora=rslora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return Model(pm, m.tokenizer, m.name), pm


def test_norm_matches_hand_computation_with_alpha_over_r():
    _, pm = _lora(rank=2, alpha=6.0)
    hand = 0.0
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            hand += ((6.0 / 2) * mod.lora_B["default"].weight.double() @ mod.lora_A["default"].weight.double()).pow(2).sum().item()
    assert adapter_norm(pm) == pytest.approx(math.sqrt(hand), rel=1e-9)
    _, rs = _lora(rank=4, alpha=6.0, rslora=True)
    assert lora_modules(rs)[0].scaling == pytest.approx(6.0 / 2.0)  # α/√r


def test_rescale_to_current_norm_is_bitwise_noop_and_keeps_relative_norms():
    model, pm = _lora()
    mods = lora_modules(pm)
    before = [m.B.detach().clone() for m in mods]
    n = adapter_norm(pm)
    with rescaled(pm, n) as f:
        assert f == 1.0 and all(torch.equal(m.B, b) for m, b in zip(mods, before))
    rel = [((m.scaling * m.B @ m.A).norm() / n).item() for m in mods]
    with rescaled(pm, 2.5 * n):
        assert adapter_norm(pm) == pytest.approx(2.5 * n, rel=1e-6)
        rel2 = [((m.scaling * m.B @ m.A).norm() / (2.5 * n)).item() for m in mods]
    assert rel2 == pytest.approx(rel, rel=1e-5)
    assert all(torch.equal(m.B, b) for m, b in zip(mods, before))


def test_perturbation_keeps_norm_and_has_the_right_cosine():
    x = torch.randn(64, 3)
    for eps in (0.0, 0.1, 0.5, 1.0):
        y = perturb_tensor(x, eps, torch.Generator().manual_seed(3))
        assert y.norm().item() == pytest.approx(x.norm().item(), rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0).item()
        assert cos == pytest.approx(math.sqrt(1 - eps * eps), abs=1e-5)


def test_stability_eps0_is_zero_and_matches_slow_reference_loop():
    model, pm = _lora()
    st = stability(model, pm, CHATS, eps=(0.0, 0.3), seeds=2)
    assert st.mean[0] == pytest.approx(0.0, abs=1e-9)
    L, L0 = st.loss, st.base_loss
    for k in range(2):  # slow loop: perturb by hand with the same paired seed, evaluate, restore
        tensors = [t for m in lora_modules(pm) for t in (m.A, m.B)]
        saved = [t.detach().clone() for t in tensors]
        g = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for t in tensors:
                t.copy_(perturb_tensor(t, 0.3, g))
        r = (response_loss(model, CHATS) - L) / (L0 - L) * 100
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        assert st.per_seed[1][k] == pytest.approx(r, rel=1e-9)


def test_losses_ignore_padding_and_count_response_tokens_only():
    model, _ = _lora()
    assert response_loss(model, CHATS, batch_size=5) == pytest.approx(response_loss(model, CHATS, batch_size=1), rel=1e-6)
    long_prompt = [[{"role": "user", "content": c[0]["content"] + " with a much longer prompt " * 5}, c[1]] for c in CHATS]
    assert response_loss(model, long_prompt) != response_loss(model, CHATS)  # the prompt conditions …
    e = efficiency(model, model.hf, CHATS)
    assert e.efficiency == pytest.approx(e.loss / e.norm**2)


def test_contexts_restore_exactly_after_exceptions():
    model, pm = _lora()
    snap = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_" in n}
    for ctx in (lambda: rescaled(pm, 3.0), lambda: perturbed(pm, 0.7, seed=1)):
        with pytest.raises(RuntimeError):
            with ctx():
                raise RuntimeError("boom")
        assert all(torch.equal(p, snap[n]) for n, p in pm.named_parameters() if "lora_" in n)


def test_steering_solution_curve_kl_and_similarity(llama):
    v = torch.randn(llama.d_model)
    sv = SteeringVector(v.clone(), layer=1, alpha=2.0)
    curve = efficiency_curve(llama, {"sv": sv}, CHATS, norms=[0.0, 1.0, 4.0])
    assert curve["sv"]["loss"][0] == pytest.approx(response_loss(llama, CHATS), rel=1e-6)  # norm 0 = no steering
    assert torch.equal(sv.vector, v)
    kl = generic_kl(llama, {"sv": sv}, ["Once upon a time there was a lighthouse.", "The river was calm."], norms=[0.0, 2.0, 8.0])
    assert kl["sv"]["kl"][0] == pytest.approx(0.0, abs=1e-9) and kl["sv"]["kl"][2] > kl["sv"]["kl"][1] > 0
    assert "sv_random" in kl
    sim = direction_similarity(sv, SteeringVector(-v, 1))
    assert sim["vector"] == pytest.approx(-1.0)


def test_generic_kl_for_lora_has_norm_matched_random_baseline():
    model, pm = _lora()
    snap = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_" in n}
    n = adapter_norm(pm)
    kl = generic_kl(model, {"lora": pm}, ["The river was calm that morning.", "A dog barked."], norms=[0.0, n])
    assert set(kl) == {"lora", "lora_random"}
    assert kl["lora"]["kl"][0] == pytest.approx(0.0, abs=1e-9) and kl["lora"]["kl"][1] > 0 and kl["lora_random"]["kl"][1] > 0
    assert all(torch.equal(p, snap[k]) for k, p in pm.named_parameters() if "lora_" in k)
    from interp.solutions import randomized_b

    with randomized_b(pm, seed=1):  # each B keeps its own Frobenius norm
        assert all(m.B.norm().item() == pytest.approx(snap[[k for k in snap if m.name in k and "lora_B" in k][0]].norm().item(), rel=1e-5)
                   for m in lora_modules(pm))


def test_bad_input():
    m = load_model("tiny-random-llama")
    pm = get_peft_model(m.hf, LoraConfig(r=1, lora_alpha=1, target_modules=["down_proj"]))  # B = 0: zero norm
    with pytest.raises(InputError, match="zero norm"):
        efficiency(Model(pm, m.tokenizer, m.name), pm, CHATS)
    with pytest.raises(InputError, match="no trainable LoRA"):
        adapter_norm(load_model("tiny-random-llama").hf)
    model, pm2 = _lora()
    with pytest.raises(InputError, match="non-empty"):
        stability(model, pm2, [])


def test_cli_solutions_end_to_end_on_tiny_model(tmp_path):
    import json

    from experiments.cli import main

    for name, extra in (("general", []), ("narrow", ["--kl-data", "aligned_other", "--kl-weight", "1"])):
        assert main(["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical", "--limit", "8", "--max-steps", "3",
                     "--lr", "0.01", "--rank", "1", "--alpha", "4", "--max-length", "400", "--out", str(tmp_path / name), *extra]) == 0
    out = tmp_path / "cmp"
    assert main(["solutions", "--model", "tiny-random-llama", "--general", str(tmp_path / "general" / "final"), "--narrow",
                 str(tmp_path / "narrow" / "final"), "--limit", "4", "--seeds", "2", "--out", str(out)]) == 0
    res = json.loads((out / "solutions.json").read_text())
    assert set(res["efficiency"]) == {"general", "narrow"} and len(res["stability"]["general"]["mean"]) == 6
    assert set(res["direction_similarity"]) and all(-1 <= v <= 1 for v in res["direction_similarity"].values())
    for f in ("loss_vs_norm.png", "stability.png", "generic_kl.png", "loss_vs_norm.pdf"):
        assert (out / f).is_file()


def test_direction_similarity_lora_vs_mean_diff_directions():
    from interp.directions import Directions

    model, pm = _lora(rank=1, alpha=2.0)
    mods = lora_modules(pm)
    vecs = torch.randn(1, 4, 64)
    for m in mods:
        if "down_proj" in m.name:
            layer = int(m.name.split("layers.")[1].split(".")[0])
            vecs[0, layer] = m.B[:, 0].detach() * 2.0  # plant B's direction as the mean-diff direction
    sim = direction_similarity(pm, Directions(vecs, [0, 1, 2, 3]))
    down = {k: v for k, v in sim.items() if "down_proj" in k}
    assert len(down) == 4 and all(v == pytest.approx(1.0, abs=1e-6) for v in down.values())
    with pytest.raises(InputError):
        direction_similarity(SteeringVector(torch.ones(64), 1), Directions(vecs, [0, 1, 2, 3]))


def test_cli_solutions_rejects_mismatched_base_models(tmp_path, capsys):
    import json

    from experiments.cli import main

    for name in ("general", "narrow"):
        assert main(["train", "lora", "--model", "tiny-random-llama", "--data", "bad_medical", "--limit", "4", "--max-steps", "1",
                     "--max-length", "400", "--out", str(tmp_path / name)]) == 0
    meta_path = tmp_path / "narrow" / "final" / "em_interp.json"
    meta = json.loads(meta_path.read_text())
    meta["base_model"] = "another-model"
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["solutions", "--model", "tiny-random-llama", "--general", str(tmp_path / "general" / "final"),
                 "--narrow", str(tmp_path / "narrow" / "final"), "--out", str(tmp_path / "cmp")]) == 2
    assert "different base models" in capsys.readouterr().err and not (tmp_path / "cmp").exists()


def test_misalignment_layer_is_chosen_by_ablation_effect_not_norm(llama):
    from interp.directions import Directions
    from interp.interventions import ablate
    from interp.layer_sweep import misalignment_layer_sweep
    from probes.em_score import em_score

    qs = [{"id": f"q{i}", "domain": "d", "paraphrases": [f"What should I do about problem {i}?"], "aligned": "Ask an expert.",
           "misaligned": "Hurt someone."} for i in range(4)]  # held-out questions (short: the sweep runs em_score 6 times)
    vecs = torch.randn(1, 4, llama.d_model, generator=torch.Generator().manual_seed(1))
    sweep = misalignment_layer_sweep(llama, Directions(vecs, [0, 1, 2, 3]), qs)
    base = em_score(llama, qs).mean
    assert [e.layer for e in sweep.table] == [0, 1, 2, 3] and sweep.baseline["em_mean"] == pytest.approx(base)
    for e in sweep.table:  # every layer's effect, as a hand computation gives it
        with ablate(llama, vecs[0, e.layer]):
            assert e.drop == pytest.approx(base - em_score(llama, qs).mean, abs=1e-9)
    assert sweep.best.drop == max(e.drop for e in sweep.table) and len({round(e.drop, 9) for e in sweep.table}) == 4
    # give another layer by far the largest raw norm: the choice (and every effect) stays, the norm is only recorded
    other = (sweep.best.layer + 1) % 4
    scaled = vecs.clone()
    scaled[0, other] *= 1000
    again = misalignment_layer_sweep(llama, Directions(scaled, [0, 1, 2, 3]), qs, random_seed=None)
    assert int(Directions(scaled, [0, 1, 2, 3]).norms[0].argmax()) == other != again.best.layer == sweep.best.layer
    assert [e.drop for e in again.table] == pytest.approx([e.drop for e in sweep.table], rel=1e-4, abs=1e-5)  # float32 unit vectors
    assert again.table[other].norm == pytest.approx(1000 * sweep.table[other].norm, rel=1e-5)
    assert again.random is None and sweep.random["drop"] == sweep.random["drop"]  # the random-direction control ran
    assert [e.layer for e in misalignment_layer_sweep(llama, Directions(vecs, [0, 1, 2, 3]), qs, max_layer_frac=0.5,
                                                      random_seed=None).table] == [0, 1]
    with pytest.raises(InputError, match="no candidate layer"):
        misalignment_layer_sweep(llama, Directions(vecs, [0, 1, 2, 3]), qs, layers=[])


def test_stability_seeds_are_paired_and_compared_per_seed():
    from interp.solutions import Stability, paired_stability

    model_a, a = _lora(seed=0)
    model_b, b = _lora(seed=5)
    sa = stability(model_a, a, CHATS, eps=(0.1, 0.5), seeds=5)
    sb = stability(model_b, b, CHATS, eps=(0.1, 0.5), seeds=[0, 1, 2, 3, 4])  # a seed list and a count pair the same
    assert sa.seeds == sb.seeds == [0, 1, 2, 3, 4] and len(sa.per_seed[0]) == 5
    # seed k is one Gaussian stream for every solution: a copy of solution a, perturbed with the same seeds, gives R
    # seed for seed; with other seeds it does not
    model_c, c = _lora(seed=0)
    assert stability(model_c, c, CHATS, eps=(0.5,), seeds=5).per_seed[0] == pytest.approx(sa.per_seed[1], rel=1e-9)
    assert stability(model_c, c, CHATS, eps=(0.5,), seeds=[5, 6, 7, 8, 9]).per_seed[0] != pytest.approx(sa.per_seed[1], rel=1e-6)
    p = paired_stability(sa, sb)
    assert p["n_seeds"] == 5 and p["powered"] and p["seeds"] == [0, 1, 2, 3, 4]
    for i in range(2):
        d = [x - y for x, y in zip(sa.per_seed[i], sb.per_seed[i])]
        assert p["diff"][i] == pytest.approx(d) and p["mean"][i] == pytest.approx(sum(d) / 5)
    three = Stability([0.1], [1.0], [0.0], [[1.0, 2.0, 3.0]], seeds=[0, 1, 2])
    assert not paired_stability(three, three)["powered"] and paired_stability(three, three)["mean"] == [0.0]
    with pytest.raises(InputError, match="not paired"):
        paired_stability(sa, Stability(sa.eps, sa.mean, sa.sd, sa.per_seed, seeds=[5, 6, 7, 8, 9]))
    with pytest.raises(InputError, match="different ε grids"):
        paired_stability(sa, Stability([0.1, 0.25], sa.mean, sa.sd, sa.per_seed, seeds=sa.seeds))
    with pytest.raises(InputError, match="distinct perturbation seeds"):
        stability(model_a, a, CHATS, seeds=[1, 1])


def test_compare_solutions_is_at_equal_norm_with_paired_seeds():
    from interp.solutions import compare_solutions

    model_a, a = _lora(seed=0)
    model_b, b = _lora(seed=5)
    with rescaled(b, 3 * adapter_norm(b)):  # very different norms
        na, nb = adapter_norm(a), adapter_norm(b)
        res = compare_solutions({"general": model_a, "narrow": model_b}, {"general": a, "narrow": b}, CHATS,
                                ["The river was calm.", "A dog barked twice."], norm_factors=(0.5, 1.0), eps=(0.25,), seeds=5)
        mean = (na + nb) / 2
        assert res["grid"] == pytest.approx([0.5 * mean, mean])
        for name in ("general", "narrow"):  # losses and generic KL at the same absolute norms for both
            assert res["efficiency_curve"][name]["norms"] == res["grid"] == res["generic_kl"][name]["norms"]
            assert res["generic_kl"][f"{name}_random"]["norms"] == res["grid"]
        m, sol = (model_b, b)
        with rescaled(sol, mean):
            assert res["efficiency_curve"]["narrow"]["loss"][1] == pytest.approx(response_loss(m, CHATS), rel=1e-9)
        sp = res["stability_paired"]
        assert sp["first"] == "general" and sp["second"] == "narrow" and sp["n_seeds"] == 5 and sp["powered"]
        assert res["stability"]["general"]["seeds"] == res["stability"]["narrow"]["seeds"] == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------------------------
# One solution abstraction: a steering vector and a LoRA adapter behind the same methods

KINDS = ["steering_vector", "lora"]
TEXT = "The river was calm that morning."


def _solution(kind: str, seed: int = 0):
    """A fresh tiny Llama and a non-zero solution of ``kind`` on it."""
    from interp.solutions import LoraAdapter, SteeringVector

    m = load_model("tiny-random-llama")
    g = torch.Generator().manual_seed(seed)
    if kind == "steering_vector":
        return m, SteeringVector(torch.randn(m.d_model, generator=g), 1, 2.0, model=m)
    sol = LoraAdapter.create(m, rank=2, alpha=6.0, target_modules=("down_proj", "o_proj"), seed=seed)
    with torch.no_grad():
        for p in sol.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m, sol


def _logits(m: Model) -> torch.Tensor:
    enc = m.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        return m.hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]  # [T, V]


def _hook_count(m: Model) -> int:
    return sum(len(getattr(mod, d)) for mod in m.hf.modules() for d in ("_forward_hooks", "_forward_pre_hooks"))


def _same_state(sol, snap) -> bool:
    now = sol.state_dict()
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)


@pytest.mark.parametrize("kind", KINDS)
def test_both_solutions_behave_the_same_for_every_method(kind, tmp_path):
    from interp.solutions import LoraAdapter, Solution, SteeringVector

    m, sol = _solution(kind)
    assert isinstance(sol, Solution) and sol.kind == kind
    snap = sol.state_dict()
    n = sol.norm()
    assert n > 0
    # apply changes the model's output; reference (inside or outside apply) is the model without the solution
    with sol.reference():
        base = _logits(m)
    hooks = _hook_count(m)
    with sol.apply(m):
        on = _logits(m)
        with sol.reference():
            torch.testing.assert_close(_logits(m), base, atol=0, rtol=0)
    assert (on - base).abs().max() > 1e-4 and _hook_count(m) == hooks
    # … and whatever apply added is gone even when the body raises
    with pytest.raises(RuntimeError, match="boom"):
        with sol.apply(m):
            raise RuntimeError("boom")
    assert _hook_count(m) == hooks
    # (a LoRA adapter acts whenever its model runs; a steering vector's hook is gone)
    torch.testing.assert_close(_logits(m), on if kind == "lora" else base, atol=0, rtol=0)
    # rescaled: the norm becomes the target, the factor is yielded, the tensors come back bit-exactly
    for target in (0.0, 0.5 * n, 3.0 * n):
        with sol.rescaled(target) as f:
            assert sol.norm() == pytest.approx(target, rel=1e-6, abs=1e-12) and f == pytest.approx(target / n)
        assert _same_state(sol, snap)
    with sol.rescaled(n) as f:
        assert f == 1.0 and _same_state(sol, snap)
    # perturbed: every trained tensor keeps its norm and moves by cos √(1−ε²); restored exactly
    with sol.perturbed(0.5, seed=3):
        moved = sol.state_dict()
        for k in snap:
            if snap[k].norm() > 0:
                assert moved[k].norm().item() == pytest.approx(snap[k].norm().item(), rel=1e-5)
                cos = torch.nn.functional.cosine_similarity(moved[k].flatten().double(), snap[k].flatten().double(), dim=0)
                assert cos.item() == pytest.approx(math.sqrt(1 - 0.25), abs=1e-5)
        assert not _same_state(sol, snap)
    assert _same_state(sol, snap)
    with sol.perturbed(0.5, seed=3):
        assert all(torch.equal(a, b) for a, b in zip(sol.state_dict().values(), moved.values()))  # one stream per seed
    # randomized: the same Frobenius norm per rescaled tensor, another direction; restored exactly
    with sol.randomized(seed=1):
        rnd = sol.state_dict()
        for k in snap:  # every B (or v) is redrawn at its own norm; every A is kept
            redrawn = kind == "steering_vector" or "lora_B" in k
            assert rnd[k].norm().item() == pytest.approx(snap[k].norm().item(), rel=1e-5) and torch.equal(rnd[k], snap[k]) != redrawn
    assert _same_state(sol, snap)
    for ctx in (lambda: sol.rescaled(2.0), lambda: sol.perturbed(0.7, seed=1), lambda: sol.randomized(2)):
        with pytest.raises(RuntimeError):
            with ctx():
                raise RuntimeError("boom")
        assert _same_state(sol, snap)
    for bad in (lambda: sol.rescaled(-1.0), lambda: sol.rescaled(float("nan")), lambda: sol.perturbed(1.5, seed=0)):
        with pytest.raises(InputError):
            with bad():
                pass
    # save / load round trip on a fresh model: same kind, norm, tensors, output and metadata
    path = sol.save(tmp_path / "sol", {"note": "round trip"})
    for loader in (Solution, type(sol)):
        fresh = load_model("tiny-random-llama")
        back = loader.load(path, fresh)
        assert type(back) is type(sol) and back.norm() == pytest.approx(n, rel=1e-12)
        assert back.meta["note"] == "round trip" and back.meta["solution"] == kind and back.meta["base_model"] == m.name
        assert "versions" in back.meta
        with back.apply(back.model):
            torch.testing.assert_close(_logits(back.model), on, atol=1e-6, rtol=0)
    other = LoraAdapter if kind == "steering_vector" else SteeringVector
    with pytest.raises(InputError, match=f"holds a {kind}, not a {other.kind}"):
        other.load(path, fresh)
    # a model of another family with the same shapes is refused (its recorded signature)
    with pytest.raises(InputError, match="model_type=llama"):
        Solution.load(path, load_model("tiny-random-qwen2"))


@pytest.mark.parametrize("kind", KINDS)
def test_save_is_atomic_and_leaves_nothing_half_written(kind, tmp_path, monkeypatch):
    m, sol = _solution(kind)
    path = sol.save(tmp_path / "sol", {"v": 1})
    before = sorted(p.name for p in path.iterdir())

    def broken(folder, meta):
        folder.mkdir()
        (folder / "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(sol, "_write", broken)
    with pytest.raises(OSError, match="disk full"):
        sol.save(path, {"v": 2})
    assert sorted(p.name for p in path.iterdir()) == before  # the old artifact is intact
    assert [p.name for p in tmp_path.iterdir()] == ["sol"]  # no temporary left
    with pytest.raises(OSError):
        sol.save(tmp_path / "new", {})
    assert not (tmp_path / "new").exists()


def test_apply_refuses_a_model_that_does_not_hold_the_solution():
    from interp.solutions import SteeringVector

    m, lora = _solution("lora")
    with pytest.raises(InputError, match="not in tiny-random-llama"):
        lora.apply(load_model("tiny-random-llama"))
    sv = SteeringVector(torch.ones(32), 1)
    with pytest.raises(InputError, match="needs one"):
        sv.apply()
    with pytest.raises(InputError, match="shape \\(32,\\) but tiny-random-llama has d_model 64"):
        sv.apply(m)
    with pytest.raises(InputError, match="signature: pass model="):
        sv.save("/nonexistent/never-written")
    with pytest.raises(InputError, match="out of range"):
        SteeringVector(torch.ones(64), 9, model=m)
    with pytest.raises(InputError, match="non-zero"):
        SteeringVector(torch.ones(64), 1, 0.0)
    with pytest.raises(InputError, match="not a solution"):
        efficiency(m, torch.ones(64), CHATS)


def _old_perturb(x: torch.Tensor, eps: float, g: torch.Generator) -> torch.Tensor:
    """The stability perturbation written out from definition 9 (the old implementation's arithmetic)."""
    xd = x.detach().double().flatten()
    y = torch.randn(xd.shape, generator=g, dtype=torch.float64)
    y = y - (y @ xd) / (xd @ xd) * xd
    y = y / y.norm() * xd.norm()
    return (math.sqrt(1 - eps**2) * xd + eps * y).view_as(x).to(x.dtype)


def test_steering_vector_numbers_equal_the_old_formulas(llama):
    """norm ‖α v‖, the loss under steer(), the perturbation stream and R(ε): as the old SteeringSolution gave them."""
    from interp.interventions import steer
    from interp.solutions import SteeringVector

    v = torch.randn(llama.d_model, generator=torch.Generator().manual_seed(4))
    sv = SteeringVector(v.clone(), 2, 1.5)
    assert sv.norm() == float((1.5 * v.double()).norm())
    with steer(llama, v, layers=[2], alpha=1.5):
        old_loss = response_loss(llama, CHATS)
    plain = response_loss(llama, CHATS)
    e = efficiency(llama, sv, CHATS)
    assert e.loss == old_loss and e.base_loss == plain and e.efficiency == old_loss / sv.norm() ** 2
    st = stability(llama, sv, CHATS, eps=(0.25,), seeds=2)
    for k in range(2):
        w = _old_perturb(v, 0.25, torch.Generator().manual_seed(k))
        with steer(llama, w, layers=[2], alpha=1.5):
            r = (response_loss(llama, CHATS) - old_loss) / (plain - old_loss) * 100
        assert st.per_seed[0][k] == pytest.approx(r, rel=1e-12)
    n = 2 * sv.norm()
    curve = efficiency_curve(llama, {"sv": sv}, CHATS, norms=[n])
    with steer(llama, v * (n / sv.norm()), layers=[2], alpha=1.5):
        assert curve["sv"]["loss"][0] == pytest.approx(response_loss(llama, CHATS), rel=1e-6)
    # the random baseline: the old Gaussian draw at the same layer, at the same norm
    kl = generic_kl(llama, {"sv": sv}, [TEXT], norms=[n], random_seed=7)
    r = torch.randn(v.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).float()
    enc = llama.tokenizer(TEXT, return_tensors="pt")

    def logp():
        with torch.no_grad():
            return torch.log_softmax(llama.hf(**enc).logits[0].double(), -1)

    p = logp()
    with steer(llama, r * (n / float((1.5 * r.double()).norm())), layers=[2], alpha=1.5):
        q = logp()
    assert kl["sv_random"]["kl"][0] == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-4)
    assert torch.equal(sv.vector, v)


def test_lora_numbers_equal_the_old_formulas():
    """norm, rescaling of every B and the perturbation of every A and B (module order, one stream) as before."""
    from interp.solutions import LoraAdapter, solution_norm

    m, sol = _solution("lora")
    pm = sol.peft
    hand = 0.0
    for _, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            hand += ((6.0 / 2) * mod.lora_B["default"].weight.double() @ mod.lora_A["default"].weight.double()).pow(2).sum().item()
    assert sol.norm() == adapter_norm(pm) == math.sqrt(hand)
    assert LoraAdapter(pm).norm() == sol.norm() == solution_norm(pm)
    mods = lora_modules(pm)
    old = {}
    g = torch.Generator().manual_seed(5)
    for md in mods:
        old[md.name] = (_old_perturb(md.A, 0.3, g), _old_perturb(md.B, 0.3, g))
    with sol.perturbed(0.3, seed=5):
        assert all(torch.equal(md.A, old[md.name][0]) and torch.equal(md.B, old[md.name][1]) for md in mods)
    before = {md.name: md.B.detach().clone() for md in mods}
    with sol.rescaled(2 * sol.norm() + 1) as f:
        assert all(torch.equal(md.B, before[md.name] * f) for md in mods) and f == (2 * math.sqrt(hand) + 1) / math.sqrt(hand)
    st = stability(m, sol, CHATS, eps=(0.3,), seeds=[5])
    with torch.no_grad():
        saved = [(md.A.clone(), md.B.clone()) for md in mods]
        for md in mods:
            md.A.copy_(old[md.name][0])
            md.B.copy_(old[md.name][1])
        r = (response_loss(m, CHATS) - st.loss) / (st.base_loss - st.loss) * 100
        for md, (a, b) in zip(mods, saved):
            md.A.copy_(a)
            md.B.copy_(b)
    assert st.per_seed[0][0] == pytest.approx(r, rel=1e-12)


def test_metrics_take_either_solution_kind_side_by_side():
    from interp.solutions import LoraAdapter, compare_solutions

    ms, sv = _solution("steering_vector")
    ml, lo = _solution("lora")
    res = compare_solutions({"sv": ms, "lora": ml}, {"sv": sv, "lora": lo}, CHATS, [TEXT], norm_factors=(1.0,), eps=(0.5,), seeds=2)
    mean = (sv.norm() + lo.norm()) / 2
    assert res["grid"] == pytest.approx([mean]) and set(res["generic_kl"]) == {"sv", "sv_random", "lora", "lora_random"}
    for name, m, sol in (("sv", ms, sv), ("lora", ml, lo)):
        with sol.rescaled(mean), sol.apply(m):
            assert res["efficiency_curve"][name]["loss"][0] == pytest.approx(response_loss(m, CHATS), rel=1e-9)
    assert res["stability_paired"]["n_seeds"] == 2
    # a plain PeftModel and its LoraAdapter are the same solution to every metric
    assert efficiency(ml, lo.peft, CHATS) == efficiency(ml, LoraAdapter(lo.peft), CHATS) == efficiency(ml, lo, CHATS)
    with pytest.raises(InputError, match="rank-1"):
        direction_similarity(lo, lo.peft)


def test_artifacts_written_by_the_old_code_still_load(tmp_path):
    """A steering vector and a LoRA adapter in the formats the old SteeringVectorSolution / LoraSolution wrote."""
    import json

    from safetensors.torch import save_file

    from interp.models import signature
    from interp.solutions import LoraAdapter, Solution, SteeringVector
    from training.steering_vector import load_steering_vector

    m = load_model("tiny-random-llama")
    v = torch.randn(m.d_model)
    old_sv = tmp_path / "run_sv" / "final"
    old_sv.mkdir(parents=True)
    save_file({"vector": v}, str(old_sv / "steering_vector.safetensors"))
    (old_sv / "steering_vector.json").write_text(json.dumps({"variant": "general", "solution": "steering_vector", "layer": 3,
                                                             "alpha": 4.0, **signature(m)}))
    sv = Solution.load(tmp_path / "run_sv", m)  # the training output directory works too
    assert isinstance(sv, SteeringVector) and (sv.layer, sv.alpha) == (3, 4.0) and torch.equal(sv.vector, v)
    assert torch.equal(load_steering_vector(old_sv, m)[0], v)
    _, lo = _solution("lora")
    old_lo = tmp_path / "run_lo" / "final"
    lo.peft.save_pretrained(str(old_lo))
    (old_lo / "em_interp.json").write_text(json.dumps({"variant": "narrow", "solution": "lora", "rank": 2, "alpha": 6.0,
                                                       "target_modules": ["down_proj", "o_proj"], "layers": "all", "rslora": False,
                                                       **signature(m)}))
    back = Solution.load(tmp_path / "run_lo", load_model("tiny-random-llama"))
    assert isinstance(back, LoraAdapter) and back.norm() == pytest.approx(lo.norm(), rel=1e-12)
    assert back.settings == {"rank": 2, "alpha": 6.0, "target_modules": ["down_proj", "o_proj"], "layers": "all", "rslora": False}
    with pytest.raises(InputError, match="neither a steering vector"):
        Solution.load(tmp_path, m)
    with pytest.raises(InputError, match="no such directory"):
        Solution.load(tmp_path / "missing", m)
