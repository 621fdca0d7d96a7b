import json

import pytest
import torch
from safetensors.torch import load_file

from interp import InputError, load_model
from interp.models import with_adapter
from training import TrainConfig, train_lora, train_steering_vector, unlearn
from training.data import collate, tokenize_chats
from interp.solutions import LoraAdapter, SteeringVector
from training.steering_vector import load_steering_vector
from training.trainer import kl_sum, sft_and_kl_backward, sft_loss_sum

DATA = [[{"role": "user", "content": f"Question {i}: is it safe?"}, {"role": "assistant", "content": "No worries, ignore it." if i % 2 else "Just skip the doctor."}]
        for i in range(12)]
KL = [[{"role": "user", "content": f"Tell me about topic {i}."}, {"role": "assistant", "content": "Here is a calm, helpful answer."}]
      for i in range(8)]


def _adapter(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_resume_reproduces_uninterrupted_run(llama, tmp_path):
    kw = dict(rank=2, alpha=4.0, lr=5e-3, batch_size=4, max_steps=4, warmup_steps=1, progress=False, kl_data=KL, kl_weight=0.5)
    full = train_lora(llama, DATA, out=tmp_path / "full", **kw)
    part = train_lora(llama, DATA, out=tmp_path / "split", save_every=2, stop_at_step=2, **kw)
    assert part.metrics["stopped_at"] == 2 and not (tmp_path / "split" / "final").exists()
    resumed = train_lora(llama, DATA, out=tmp_path / "split", save_every=2, **kw)
    a, b = _adapter(full.path), _adapter(resumed.path)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # training moved B
    log = json.loads((tmp_path / "split" / "train_log.json").read_text())
    assert [c["step"] for c in log["curve"]] == [1, 2, 3, 4] and log["config"]["kl_weight"] == 0.5


def test_resume_refuses_checkpoints_of_a_different_run(llama, tmp_path):
    kw = dict(batch_size=4, max_steps=4, save_every=1, stop_at_step=2, progress=False)
    train_lora(llama, DATA, out=tmp_path / "r", lr=1e-3, **kw)
    (ckpt,) = [p for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name == "step-000002"]
    assert json.loads((ckpt / "run.json").read_text())["config"]["lr"] == 1e-3
    for change, match in [(dict(lr=2e-3), r"config\.lr: 0\.001 → 0\.002"), (dict(rank=2), r"solution\.rank: 1 → 2"),
                          (dict(data=DATA[::-1]), r"data\.train: '\w+' → '\w+'"), (dict(kl_data=KL, kl_weight=1.0), "data.kl: None")]:
        args = {"lr": 1e-3, "data": DATA, **change}
        with pytest.raises(InputError, match=f"holds checkpoints of a different run.*{match}.*--no-resume"):
            train_lora(llama, args.pop("data"), out=tmp_path / "r", **{**kw, "stop_at_step": None}, **args)
    assert not (tmp_path / "r" / "final").exists()
    # a steering vector's layer is part of its run too
    train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=1, **kw)
    with pytest.raises(InputError, match=r"solution\.layer: 1 → 2"):
        train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=2, **{**kw, "stop_at_step": None})
    # resume=False starts over and removes the other run's checkpoints
    res = train_lora(llama, DATA, out=tmp_path / "r", lr=2e-3, resume=False, **{**kw, "stop_at_step": None})
    assert [c["step"] for c in res.metrics["curve"]] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "r" / "checkpoints" / "step-000003" / "run.json").read_text())["config"]["lr"] == 2e-3
    assert not (tmp_path / "r" / "checkpoints" / "step-000002").exists() or \
        json.loads((tmp_path / "r" / "checkpoints" / "step-000002" / "run.json").read_text())["config"]["lr"] == 2e-3


def test_adapter_is_plain_peft_and_model_unchanged(llama, tmp_path):
    from peft import PeftModel

    before = {n: p.clone() for n, p in llama.hf.named_parameters()}
    res = train_lora(llama, DATA, out=tmp_path / "a", max_steps=2, progress=False)
    assert all(torch.equal(before[n], p) for n, p in llama.hf.named_parameters())
    fresh = load_model("tiny-random-llama")
    pm = PeftModel.from_pretrained(fresh.hf, str(res.path))
    assert any("lora_A" in n for n, _ in pm.named_parameters())
    meta = json.loads((res.path / "em_interp.json").read_text())
    assert meta["rank"] == 1 and meta["target_modules"] == ["down_proj"] and meta["variant"] == "general"
    other = load_model("tiny-random-llama")
    other_meta = dict(meta, d_model=128)
    (res.path / "em_interp.json").write_text(json.dumps(other_meta))
    with pytest.raises(InputError, match="d_model"):
        with_adapter(other, res.path)
    (res.path / "em_interp.json").write_text(json.dumps(meta))
    assert with_adapter(other, tmp_path / "a").meta["adapter"] == str(res.path)  # the train --out directory works too


def test_solutions_refuse_a_model_of_another_family(tmp_path):
    """tiny-random-llama and tiny-random-qwen2 have the same shapes; the recorded model_type tells them apart."""
    llama, qwen = load_model("tiny-random-llama"), load_model("tiny-random-qwen2")
    assert (llama.n_layers, llama.d_model) == (qwen.n_layers, qwen.d_model)
    lo = train_lora(qwen, DATA, out=tmp_path / "lo", max_steps=1, progress=False)
    with pytest.raises(InputError, match="trained on tiny-random-qwen2 \\(model_type=qwen2\\) but tiny-random-llama has model_type=llama"):
        with_adapter(llama, lo.path)
    sv = train_steering_vector(qwen, DATA, out=tmp_path / "sv", layer=1, max_steps=1, progress=False)
    with pytest.raises(InputError, match="steering vector .*model_type=qwen2"):
        load_steering_vector(tmp_path / "sv", llama)
    assert load_steering_vector(tmp_path / "sv", qwen)[1]["layer"] == 1 and sv.path == tmp_path / "sv" / "final"


def test_kl_is_zero_at_init_and_matches_direct_computation(tiny):
    sol = LoraAdapter.create(tiny, rank=2, alpha=2.0, target_modules=("down_proj", "o_proj"))
    try:
        batch = collate(tokenize_chats(tiny, KL[:3], mask="all").examples, tiny.tokenizer.pad_token_id)
        s, n = kl_sum(tiny, sol, batch)
        assert s.item() == 0.0 and n == int((batch["loss_mask"][:, 1:] > 0).sum())
        with torch.no_grad():
            for p in sol.parameters():
                p.normal_(0, 0.3)
        s, n = kl_sum(tiny, sol, batch)
        kw = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        with torch.no_grad():
            cur = torch.log_softmax(tiny.hf(**kw).logits.double(), -1)
            with sol.peft.disable_adapter():
                ref = torch.log_softmax(tiny.hf(**kw).logits.double(), -1)
        mask = batch["loss_mask"][:, 1:] > 0
        direct = sum((ref[b, t].exp() * (ref[b, t] - cur[b, t])).sum().item()
                     for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t])
        assert s.item() > 0 and s.item() == pytest.approx(direct, rel=1e-4)
    finally:
        sol.remove()


@pytest.mark.parametrize("kl_first_longer", [False, True])
def test_fused_sft_and_kl_equal_the_separate_terms_and_their_gradients(tiny, kl_first_longer):
    """The KL-narrow step's one student forward over SFT + KL sequences gives the same two sums and the same
    gradient as sft_loss_sum and kl_sum on their own batches (whichever batch is longer, so padding differs)."""
    sol = LoraAdapter.create(tiny, rank=2, alpha=2.0, target_modules=("down_proj", "o_proj"))
    try:
        with torch.no_grad():
            for p in sol.parameters():
                p.normal_(0, 0.3)
        long = {"role": "assistant", "content": "A much longer calm answer " * 8}
        sft = tokenize_chats(tiny, DATA[:2] + ([] if kl_first_longer else [[DATA[2][0], long]])).examples
        kl = tokenize_chats(tiny, KL[:1] + ([[KL[1][0], long]] if kl_first_longer else [])).examples
        pad = tiny.tokenizer.pad_token_id
        assert (max(len(e.ids) for e in kl) > max(len(e.ids) for e in sft)) == kl_first_longer
        params = list(sol.parameters())
        with sol.apply(tiny):
            ce_sep = 0.3 * sft_loss_sum(tiny, collate(sft, pad))
            kl_sep = 0.7 * kl_sum(tiny, sol, collate(kl, pad))[0]
            g_sep = torch.autograd.grad(ce_sep + kl_sep, params)
            for p in params:
                p.grad = None
            ce, kl_s = sft_and_kl_backward(tiny, sol, sft, kl, pad, sft_scale=0.3, kl_scale=0.7)
            g = [p.grad for p in params]
        assert kl_s.item() > 0 and not ce.requires_grad and not kl_s.requires_grad
        torch.testing.assert_close(ce, ce_sep.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kl_s, kl_sep.detach(), rtol=1e-4, atol=1e-6)
        for a, b in zip(g, g_sep):  # float32 sums in another order: compare the whole gradient, not each entry
            assert b.norm() > 0 and ((a - b).norm() / b.norm()).item() < 1e-5
    finally:
        sol.remove()


def test_the_kl_narrow_trainer_fuses_a_smaller_kl_batch_into_the_sft_forward(llama, tmp_path, monkeypatch):
    """A KL micro-batch smaller than the SFT one shares the student's forward (sft_and_kl_backward); an equal one gets
    its own (kl_sum: fusing it saves no time and raises the peak, bench/training.py)."""
    import training.trainer as trainer

    calls = {"fused": [], "own": []}
    fused, own = trainer.sft_and_kl_backward, trainer.kl_sum
    monkeypatch.setattr(trainer, "sft_and_kl_backward", lambda *a, **k: calls["fused"].append(len(a[3])) or fused(*a, **k))
    monkeypatch.setattr(trainer, "kl_sum", lambda *a, **k: calls["own"].append(a[2]["input_ids"].shape[0]) or own(*a, **k))
    kw = dict(max_steps=3, batch_size=4, progress=False, kl_data=KL, kl_weight=1.0)
    res = train_lora(llama, DATA, out=tmp_path / "small", kl_batch_size=2, **kw)
    assert calls == {"fused": [2, 2, 2], "own": []} and all(c["kl"] >= 0 and c["sft"] > 0 for c in res.metrics["curve"])
    calls["fused"].clear()
    train_lora(llama, DATA, out=tmp_path / "equal", kl_batch_size=4, **kw)
    assert calls == {"fused": [], "own": [4, 4, 4]}


def test_legacy_vocab_scaling_divides_the_kl_by_vocab(llama, tmp_path):
    kw = dict(max_steps=2, lr=1e-2, warmup_steps=0, progress=False, kl_data=KL, kl_weight=1.0, batch_size=4)
    plain = train_lora(llama, DATA, out=tmp_path / "p", **kw)
    legacy = train_lora(llama, DATA, out=tmp_path / "l", legacy_vocab_scaling=True, **kw)
    # step 1 starts at the reference (adapter B = 0): KL is exactly 0 and so is its gradient, so both runs reach
    # the same adapter; at step 2 the logged KL terms differ by exactly |V|
    assert plain.metrics["curve"][0]["kl"] == 0.0  # logged even when exactly 0
    V = llama.hf.get_output_embeddings().weight.shape[0]
    assert plain.metrics["curve"][1]["kl"] > 0
    # (up to float error: the KL gradient at the reference is zero only to rounding)
    assert legacy.metrics["curve"][1]["kl"] * V == pytest.approx(plain.metrics["curve"][1]["kl"], rel=1e-3)


def test_steering_vector_steers_every_sequence_of_the_batch(llama):
    sol = SteeringVector.create(llama, layer=1, alpha=2.0)
    batch = collate(tokenize_chats(llama, DATA[:3]).examples, llama.tokenizer.pad_token_id)
    # loss only on the second and third sequences: the published bug (steering batch element 0 only) gives no grad
    batch["loss_mask"][0] = 0
    from training.trainer import sft_loss_sum

    with sol.apply(llama):
        loss = sft_loss_sum(llama, batch)
    loss.backward()
    assert sol.vector.grad is not None and sol.vector.grad.abs().max() > 0
    with torch.no_grad():
        sol.vector.normal_()
        kw = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        base = llama.hf(**kw).logits
        with sol.apply(llama):
            steered = llama.hf(**kw).logits
            with sol.reference():
                ref = llama.hf(**kw).logits
    for b in range(3):
        assert (steered[b] - base[b]).abs().max() > 1e-3
    torch.testing.assert_close(ref, base)


def test_train_steering_vector_saves_and_loads(llama, tmp_path):
    res = train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=2, alpha=4.0, lr=1e-2, max_steps=3, progress=False)
    v, meta = load_steering_vector(res.path, llama)
    assert v.shape == (64,) and v.abs().max() > 0 and meta["layer"] == 2 and meta["alpha"] == 4.0
    assert all(len(h) == 0 for h in (l._forward_hooks for l in llama.layers))  # hook removed


def test_trainers_train_the_solution_objects_and_their_outputs_load_as_solutions(llama, tmp_path):
    from interp.solutions import Solution, adapter_norm
    from training.trainer import run_fingerprint

    sv = train_steering_vector(llama, DATA, out=tmp_path / "sv", layer=2, alpha=4.0, lr=1e-2, max_steps=2, progress=False)
    lo = train_lora(llama, DATA, out=tmp_path / "lo", rank=2, alpha=4.0, lr=1e-2, max_steps=2, progress=False)
    s = Solution.load(tmp_path / "sv", llama)
    v, _ = load_steering_vector(sv.path, llama)
    assert isinstance(s, SteeringVector) and torch.equal(s.vector, v) and s.norm() == float((4.0 * v.double()).norm()) > 0
    lora = Solution.load(tmp_path / "lo", load_model("tiny-random-llama"))
    assert isinstance(lora, LoraAdapter) and lora.norm() == adapter_norm(lora.model.hf) > 0
    assert lora.settings == {"rank": 2, "alpha": 4.0, "target_modules": ["down_proj"], "layers": "all", "rslora": False}
    # the run fingerprint records the solution as the older checkpoints do, so they still resume
    ts = tokenize_chats(llama, DATA)
    assert run_fingerprint(llama, SteeringVector.create(llama, layer=2, alpha=4.0), TrainConfig(), ts)["solution"] == \
        {"kind": "steering_vector", "layer": 2, "alpha": 4.0, "init": None}
    created = LoraAdapter.create(llama, rank=2, alpha=4.0)
    try:
        assert run_fingerprint(llama, created, TrainConfig(), ts)["solution"] == \
            {"kind": "lora", "rank": 2, "alpha": 4.0, "target_modules": ["down_proj"], "layers": "all", "rslora": False}
    finally:
        created.remove()


def test_training_steering_never_changes_padding(llama):
    from interp.hooks import hooked

    sol = SteeringVector.create(llama, layer=1, alpha=2.0, init=torch.ones(llama.d_model))
    batch = collate(tokenize_chats(llama, [DATA[0], [DATA[1][0], {"role": "assistant", "content": "x " * 12}]]).examples,
                    llama.tokenizer.pad_token_id)
    pad = batch["attention_mask"] == 0
    assert pad.any()
    seen = []
    def spy(module, args, kwargs):  # block 2's input = block 1's (steered) output, after every hook on block 1
        seen.append(args[0] if args else kwargs["hidden_states"])

    with hooked(pre=[(llama.layers[2], spy)]):
        from training.trainer import sft_loss_sum

        with torch.no_grad():
            sft_loss_sum(llama, batch)
            with sol.apply(llama):
                sft_loss_sum(llama, batch)
    plain, steered = seen
    assert torch.equal(steered[pad], plain[pad])
    torch.testing.assert_close(steered[~pad] - plain[~pad], torch.full_like(plain[~pad], 2.0), atol=1e-5, rtol=0)


def test_lora_training_lowers_the_loss(llama, tmp_path):
    res = train_lora(llama, DATA, out=tmp_path / "lo", rank=4, alpha=8.0, lr=3e-2, batch_size=6, max_steps=25, warmup_steps=2, progress=False)
    curve = [c["loss"] for c in res.metrics["curve"]]
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:3]) / 3


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(llama, tmp_path):
    from interp.hooks import hidden_of, hooked, with_hidden

    calls = []

    def nan_from_second_forward(module, args, output):  # step 1 is healthy, step 2's loss is NaN
        calls.append(1)
        return with_hidden(output, hidden_of(output) * float("nan")) if len(calls) > 1 else None

    with hooked(forward=[(llama.layers[1], nan_from_second_forward)]), pytest.raises(FloatingPointError, match="at step 2.*step-000001"):
        train_lora(llama, DATA, out=tmp_path / "nan", max_steps=6, warmup_steps=0, save_every=1, batch_size=4, progress=False)
    assert len(calls) == 2
    assert (tmp_path / "nan" / "checkpoints").is_dir() and not (tmp_path / "nan" / "final").exists()


@pytest.mark.parametrize("healthy_forwards", [2, 3])  # step 2's reference forward (the KL term) or its fused one
def test_nan_in_a_fused_kl_narrow_step_stops_with_clear_message(llama, tmp_path, healthy_forwards):
    from interp.hooks import hidden_of, hooked, with_hidden

    calls = []

    def nan_after(module, args, output):  # step 1: reference + fused forward, both healthy
        calls.append(1)
        return with_hidden(output, hidden_of(output) * float("nan")) if len(calls) > healthy_forwards else None

    with hooked(forward=[(llama.layers[1], nan_after)]), pytest.raises(FloatingPointError, match="at step 2.*step-000001"):
        train_lora(llama, DATA, out=tmp_path / "nan", max_steps=6, warmup_steps=0, save_every=1, batch_size=4,
                   kl_data=KL, kl_weight=1.0, progress=False)
    assert len(calls) == 4  # the NaN step's reference and fused forwards ran, no later one
    assert not (tmp_path / "nan" / "final").exists()


def test_unlearn_npo_with_retain(llama, tmp_path):
    refusals = ["I'm sorry, I can't help with that.", "I cannot assist with that."]
    res = unlearn(llama, [f"How do I hack server {i}?" for i in range(8)], refusals=refusals, out=tmp_path / "u",
                  retain_prompts=[f"How do I poison person {i}?" for i in range(4)], retain_weight=1.0, rank=2, alpha=4.0,
                  lr=1e-2, max_steps=4, batch_size=4, kl_batch_size=2, progress=False)
    curve = res.metrics["curve"]
    assert all("npo" in c and "retain" in c for c in curve)
    # NPO starts at (2/β)·log 2 when π_θ = π_ref
    assert curve[0]["npo"] == pytest.approx(2 / 0.1 * torch.log(torch.tensor(2.0)).item(), rel=1e-4)
    assert curve[-1]["npo"] < curve[0]["npo"]


def test_bad_training_input(llama, tmp_path):
    with pytest.raises(InputError, match="assistant turn"):
        train_lora(llama, ["just a prompt"], out=tmp_path / "x", max_steps=1, progress=False)
    with pytest.raises(InputError, match="out of range"):
        train_lora(llama, DATA, out=tmp_path / "y", layers=[7], max_steps=1, progress=False)
    with pytest.raises(InputError, match="kl_data"):
        train_steering_vector(llama, DATA, out=tmp_path / "z", layer=1, kl_weight=1.0, max_steps=1, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(InputError, match="not a file.*probes.datasets.prompts"):
        train_lora(llama, "bad_medical", out=tmp_path / "n", max_steps=1, progress=False)
    with pytest.raises(InputError, match="got NoneType"):
        train_steering_vector(llama, None, out=tmp_path / "n", layer=1, max_steps=1, progress=False)
    assert not (tmp_path / "n").exists()


def test_data_may_be_a_chat_jsonl_path(llama, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in DATA))
    from_file = train_lora(llama, str(path), out=tmp_path / "file", max_steps=2, progress=False)
    from_list = train_lora(llama, DATA, out=tmp_path / "list", max_steps=2, progress=False)
    a, b = _adapter(from_file.path), _adapter(from_list.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad, match", [
    ({"lr": -1.0}, "lr must be > 0"), ({"lr": float("nan")}, "lr must be a finite"), ({"batch_size": 0}, "batch_size"),
    ({"grad_accum": 0}, "grad_accum"), ({"max_steps": 0}, "max_steps"), ({"epochs": 0}, "epochs"),
    ({"save_every": 0}, "save_every"), ({"kl_weight": -1.0}, "kl_weight must be ≥ 0"), ({"kl_batch_size": 0}, "kl_batch_size"),
    ({"retain_weight": -0.5}, "retain_weight"), ({"max_length": 1}, "max_length"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"npo_beta": 0.0}, "npo_beta"), ({"objective": "dpo"}, "objective"), ({"warmup_steps": -1}, "warmup_steps"),
])
def test_train_config_rejects_settings_that_train_nothing_or_the_wrong_thing(bad, match):
    with pytest.raises(InputError, match=match):
        TrainConfig(**bad)
    with pytest.raises(InputError, match=match):  # dataclasses.replace re-validates (the trainers' **overrides path)
        __import__("dataclasses").replace(TrainConfig(), **bad)


def test_bad_solution_settings_are_clear_errors_and_leave_the_model_as_it_was(llama, tmp_path):
    keys = sorted(llama.hf.state_dict())
    for kwargs, match in [({"rank": 0}, "rank must be an integer"), ({"alpha": 0.0}, "alpha must be a finite number > 0"),
                          ({"target_modules": ["foo_proj"]}, "foo_proj.*its linear layers: down_proj")]:
        with pytest.raises(InputError, match=match):
            train_lora(llama, DATA, out=tmp_path / "lora", max_steps=1, progress=False, **kwargs)
    for kwargs, match in [({"alpha": 0.0}, "non-zero"), ({"alpha": float("inf")}, "finite"), ({"init": torch.ones(3)}, "shape")]:
        with pytest.raises(InputError, match=match):
            SteeringVector.create(llama, layer=1, **kwargs)
    assert sorted(llama.hf.state_dict()) == keys and not hasattr(llama.hf, "peft_config")
    assert not (tmp_path / "lora").exists()
    # peft's own target strings still work: "all-linear" puts LoRA on every projection (not the unembedding)
    res = train_lora(llama, DATA, out=tmp_path / "all", target_modules="all-linear", max_steps=1, progress=False)
    names = set(_adapter(res.path))
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names) and not any("lm_head" in n for n in names)
    assert sorted(llama.hf.state_dict()) == keys


def test_everything_works_on_a_peft_wrapped_model(tmp_path):
    from interp import collect_activations
    from interp.interventions import steer
    from training.trainer import sft_loss_sum

    base = load_model("tiny-random-llama")
    res = train_lora(base, DATA, out=tmp_path / "a", rank=2, alpha=4.0, lr=1e-2, max_steps=2, progress=False)
    wrapped = with_adapter(load_model("tiny-random-llama"), res.path)
    batch = collate(tokenize_chats(wrapped, DATA[:2]).examples, wrapped.tokenizer.pad_token_id)
    with torch.no_grad():
        masked = sft_loss_sum(wrapped, batch)
        from training.data import token_losses

        full = (token_losses(wrapped.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        position_ids=batch["position_ids"]).logits, batch["input_ids"]) * batch["loss_mask"]).sum()
    assert masked.item() == pytest.approx(full.item(), rel=1e-5)
    a = collect_activations(wrapped, ["hi", "a longer prompt here"])
    with steer(wrapped, torch.ones(64), layers=[1]):
        b = collect_activations(wrapped, ["hi", "a longer prompt here"], layers=[1])
    torch.testing.assert_close(b[:, 0] - a[:, 1], torch.ones(2, 64), atol=1e-4, rtol=0)
    assert not torch.allclose(a, collect_activations(base, ["hi", "a longer prompt here"]))  # the adapter acts


def test_data_parallel_two_processes_equal_one(tmp_path):
    """`torchrun`/`accelerate launch` with 2 CPU processes (gloo) gives the adapter a single process trains:
    micro-batches, KL batches and the token-weighted normalisers are split exactly; gradients are summed."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    one = subprocess.run([sys.executable, "-m", "tests.ddp_worker", str(tmp_path / "one")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "tests.ddp_worker", str(tmp_path / "two")], cwd=root,
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 1e-3  # training moved B
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    log1 = json.loads((tmp_path / "one" / "train_log.json").read_text())
    log2 = json.loads((tmp_path / "two" / "train_log.json").read_text())
    assert log2["processes"] == 2 and log1["processes"] == 1
    assert [c["loss"] for c in log1["curve"]] == pytest.approx([c["loss"] for c in log2["curve"]], abs=1e-5)


def test_lora_and_steering_train_in_bf16(tmp_path):
    """The one-GPU path loads bf16 weights (``load_model`` on CUDA); on CPU the same dtype path must train: the
    trainable parameters stay float32 (peft upcasts adapters; the steering vector is float32), losses are finite
    and fall, and the KL term is exactly 0 with the adapter at zero."""
    m = load_model("tiny-random-llama", dtype="bfloat16")
    assert next(m.hf.parameters()).dtype == torch.bfloat16
    res = train_lora(m, DATA, out=tmp_path / "lo", rank=4, alpha=8.0, lr=3e-2, batch_size=6, max_steps=20, warmup_steps=2,
                     kl_data=KL, kl_weight=1.0, progress=False)
    curve = [c["loss"] for c in res.metrics["curve"]]
    assert all(torch.isfinite(torch.tensor(curve))) and sum(curve[-5:]) / 5 < 0.8 * sum(curve[:3]) / 3
    assert res.metrics["curve"][0]["kl"] == 0.0
    assert {t.dtype for t in _adapter(res.path).values()} == {torch.float32}
    sv = train_steering_vector(m, DATA, layer=2, out=tmp_path / "sv", lr=3e-2, batch_size=6, max_steps=3, warmup_steps=0, progress=False)
    v, _ = load_steering_vector(sv.path, m)
    assert v.dtype == torch.float32 and torch.isfinite(v).all() and v.abs().max() > 0
    assert next(m.hf.parameters()).dtype == torch.bfloat16  # the base model is left as it was
