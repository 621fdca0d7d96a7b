import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from interp import InputError, load_model
from interp.models import Model
from interp.solutions import (SteeringSolution, adapter_norm, direction_similarity, efficiency, efficiency_curve, generic_kl,
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
    sv = SteeringSolution(v.clone(), layer=1, alpha=2.0)
    curve = efficiency_curve(llama, {"sv": sv}, CHATS, norms=[0.0, 1.0, 4.0])
    assert curve["sv"]["loss"][0] == pytest.approx(response_loss(llama, CHATS), rel=1e-6)  # norm 0 = no steering
    assert torch.equal(sv.vector, v)
    kl = generic_kl(llama, {"sv": sv}, ["Once upon a time there was a lighthouse.", "The river was calm."], norms=[0.0, 2.0, 8.0])
    assert kl["sv"]["kl"][0] == pytest.approx(0.0, abs=1e-9) and kl["sv"]["kl"][2] > kl["sv"]["kl"][1] > 0
    assert "sv_random" in kl
    sim = direction_similarity(sv, SteeringSolution(-v, 1))
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
        direction_similarity(SteeringSolution(torch.ones(64), 1), Directions(vecs, [0, 1, 2, 3]))


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
