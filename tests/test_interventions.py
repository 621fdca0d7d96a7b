import math

import pytest
import torch

from interp import InputError, collect_activations
from interp.activations import encode_all, make_batches
from interp import load_model
from interp.generation import generate
from interp.hooks import hidden_of, hooked
from interp.interventions import ablate, ablation_lora, orthogonalize_weights, residual_writers, steer

from .conftest import PROMPTS


def _batch(model, items=PROMPTS):
    b = make_batches(encode_all(model, items, "all"), len(items), model.tokenizer.pad_token_id, model.device)[0]
    return dict(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids), b.attention_mask.bool()


def _logits(hf, kw):
    with torch.no_grad():
        return hf(**kw).logits


def test_ablation_equals_orthogonalisation_equals_rank1_lora(tiny):
    r = torch.randn(tiny.d_model)
    kw, mask = _batch(tiny)
    base = _logits(tiny.hf, kw)
    with ablate(tiny, r):
        act = _logits(tiny.hf, kw)
    ortho = _logits(orthogonalize_weights(tiny, r).hf, kw)
    lora = ablation_lora(tiny, r)
    lora_logits = _logits(lora.hf, kw)
    assert (act - base)[mask].abs().max() > 0.1  # the ablation changes the model
    torch.testing.assert_close(ortho[mask], act[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(lora_logits[mask], act[mask], atol=1e-4, rtol=0)
    # the LoRA is rank 1 on every residual writer
    shapes = {tuple(p.shape) for n, p in lora.hf.named_parameters() if "lora_" in n}
    assert all(1 in s for s in shapes)
    # the original model is untouched
    torch.testing.assert_close(_logits(tiny.hf, kw), base, atol=0, rtol=0)


def test_ablated_activations_have_no_component_along_direction(llama):
    r = torch.randn(llama.d_model)
    with ablate(llama, r):
        acts = collect_activations(llama, PROMPTS)  # block outputs
    r_hat = r / r.norm()
    assert (acts @ r_hat).abs().max() < 1e-4
    assert (collect_activations(llama, PROMPTS) @ r_hat).abs().max() > 1e-2


def _residual_spy(model, blocks, seen):
    """Hooks recording ``(where, l, h)`` of the inputs and outputs of ``blocks`` into ``seen`` (h: [B, T, d])."""
    pre = [(model.layers[l], lambda m, a, k, l=l: seen.append(("in", l, (a[0] if a else k["hidden_states"]).detach().clone())))
           for l in blocks]
    post = [(model.layers[l], lambda m, a, o, l=l: seen.append(("out", l, hidden_of(o).detach().clone()))) for l in blocks]
    return hooked(forward=post, pre=pre)


def _worst_relative_component(seen, r_hat):
    """max over recorded residual vectors (non-zero ones) of |h·r̂| / ‖h‖."""
    worst = 0.0
    for _, _, h in seen:
        h = h.reshape(-1, h.shape[-1]).double()
        n = h.norm(dim=-1)
        keep = n > 0
        worst = max(worst, float(((h[keep] @ r_hat.double()).abs() / n[keep]).max()))
    return worst


@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma2", "tiny-random-gemma3"])
def test_ablation_removes_the_direction_at_every_block_input_and_output(name):
    """Definition 3 on every family, Gemma 2/3's post-norms included: with the ablation active, h·r̂ = 0 (relative
    1e-5) at the input and output of every block, over the prompt forward and every generated token."""
    model = load_model(name)
    r = torch.randn(model.d_model)
    r_hat = r / r.norm()
    everything = range(model.n_layers)
    seen: list = []
    with ablate(model, r), _residual_spy(model, everything, seen):  # the spy runs after the ablation's hooks
        generate(model, PROMPTS, max_new_tokens=4, batch_size=5)
    assert {(w, l) for w, l, _ in seen} == {(w, l) for w in ("in", "out") for l in everything}
    assert any(h.shape[1] == 1 for _, _, h in seen)  # generated tokens (KV-cache steps) were recorded too
    assert _worst_relative_component(seen, r_hat) <= 1e-5
    plain: list = []
    with _residual_spy(model, everything, plain):
        generate(model, PROMPTS, max_new_tokens=4, batch_size=5)
    assert _worst_relative_component(plain, r_hat) > 1e-2  # without it the direction is there
    # some layers only: their inputs and outputs (a later block's input is an earlier block's output)
    seen.clear()
    with ablate(model, r, layers=[1, 2]), _residual_spy(model, [1, 2], seen):
        generate(model, PROMPTS[:2], max_new_tokens=3)
    assert _worst_relative_component(seen, r_hat) <= 1e-5


def test_ablation_sites_are_where_writes_enter_the_residual_stream():
    """Llama-style blocks add self_attn / mlp outputs; Gemma 2/3 add the outputs of their post-norms."""
    llama, gemma2 = load_model("tiny-random-llama"), load_model("tiny-random-gemma2")
    w = residual_writers(llama)
    assert not w.post_norms and w.attn_write[0] is llama.layers[0].self_attn and w.mlp_write[0] is llama.layers[0].mlp
    w = residual_writers(gemma2)
    assert w.post_norms
    assert w.attn_write[3] is gemma2.layers[3].post_attention_layernorm and w.mlp_write[3] is gemma2.layers[3].post_feedforward_layernorm


def test_steer_positions_split_prefill_and_generated_steps(llama):
    """``positions="generated"`` leaves the prompt forward alone and adds α v in every KV-cache step (the first
    one exactly: same token, same cache); ``"prompt"`` the reverse."""
    v = torch.randn(llama.d_model) * 5
    layer = 2

    def run(**kw):
        seen: list = []
        ctx = steer(llama, v, layers=[layer], **kw) if kw else torch.no_grad()
        with ctx, _residual_spy(llama, [layer], seen):
            ids = generate(llama, PROMPTS[:2], max_new_tokens=4, return_ids=True)
        return ids, [h for w, _, h in seen if w == "out"]

    plain_ids, plain = run()
    gen_ids, gen = run(positions="generated", alpha=1.0)
    prompt_ids, prompt = run(positions="prompt", alpha=1.0)
    assert gen[0].shape[1] > 1 and gen[1].shape[1] == 1  # prefill, then the first cached step
    assert [g[0] for g in gen_ids] == [p[0] for p in plain_ids]
    torch.testing.assert_close(gen[0], plain[0], atol=0, rtol=0)
    torch.testing.assert_close(gen[1] - plain[1], v.expand_as(gen[1]), atol=1e-4, rtol=0)
    diff = prompt[0] - plain[0]  # [B, T, d]: α v on every real prompt token, 0 on padding
    torch.testing.assert_close(diff[:, -1], v.expand_as(diff[:, -1]), atol=1e-4, rtol=0)
    steered = (diff - v).norm(dim=-1) < 1e-3
    assert bool((steered | (diff.norm(dim=-1) == 0)).all()) and not bool(steered.all())  # the shorter prompt is padded


def test_steer_adds_alpha_v_to_every_sequence_never_padding(llama):
    v = torch.randn(llama.d_model)
    ref = collect_activations(llama, PROMPTS, position="all", layers=[1], batch_size=5)
    with steer(llama, v, layers=[1], alpha=2.0):
        got = collect_activations(llama, PROMPTS, position="all", layers=[1], batch_size=5)
        single = torch.cat([collect_activations(llama, [p], position="all", layers=[1]) for p in PROMPTS])
    torch.testing.assert_close(got - ref, (2.0 * v).expand_as(ref), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, single, atol=1e-4, rtol=0)
    # Padding untouched: hook the block output directly and check padded rows are unchanged.
    kw, mask = _batch(llama)
    seen = {}

    def spy(module, args, kwargs):  # the input of block 2 is the (steered) output of block 1
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    handle = llama.layers[2].register_forward_pre_hook(spy, with_kwargs=True)
    try:
        _logits(llama.hf, kw)
        plain = seen["h"]
        with steer(llama, v, layers=[1], alpha=2.0):
            _logits(llama.hf, kw)
        steered = seen["h"]
    finally:
        handle.remove()
    assert torch.equal(steered[~mask], plain[~mask])
    assert (steered[mask] - plain[mask] - 2.0 * v).abs().max() < 1e-4


def test_steered_generation_cached_equals_uncached_loop(tiny):
    v = torch.randn(tiny.d_model) * 3
    n = 10
    with steer(tiny, v, layers=[1, 2], alpha=1.0):
        cached = generate(tiny, PROMPTS[:3], max_new_tokens=n, batch_size=3, return_ids=True)
        manual = []
        for p in PROMPTS[:3]:
            ids = tiny.tokenizer(tiny.render(p), add_special_tokens=False, return_tensors="pt")["input_ids"]
            new = []
            for _ in range(n):
                with torch.no_grad():
                    t = int(tiny.hf(ids, use_cache=False).logits[0, -1].argmax())
                new.append(t)
                ids = torch.cat([ids, torch.tensor([[t]])], 1)
                if t == tiny.tokenizer.eos_token_id:
                    break
            manual.append(new)
    assert cached == manual
    assert cached != generate(tiny, PROMPTS[:3], max_new_tokens=n, return_ids=True)


def test_batched_generation_equals_unbatched_under_ablation(tiny):
    r = torch.randn(tiny.d_model)
    with ablate(tiny, r):
        batched = generate(tiny, PROMPTS, max_new_tokens=8, batch_size=5, return_ids=True)
        single = [generate(tiny, [p], max_new_tokens=8, return_ids=True)[0] for p in PROMPTS]
    assert batched == single


def test_steer_positions_prompt_vs_generated(llama):
    v = torch.randn(llama.d_model) * 5
    plain = generate(llama, PROMPTS[:2], max_new_tokens=6, return_ids=True)
    with steer(llama, v, layers=[2], alpha=1.0, positions="generated"):
        gen_only = generate(llama, PROMPTS[:2], max_new_tokens=6, return_ids=True)
    with steer(llama, v, layers=[2], alpha=1.0, positions="prompt"):
        prompt_only = generate(llama, PROMPTS[:2], max_new_tokens=6, return_ids=True)
    # Generated-only steering cannot change the first new token (it comes from the prompt forward).
    assert [g[0] for g in gen_only] == [p[0] for p in plain]
    assert gen_only != plain or prompt_only != plain


def test_contexts_compose_and_never_leak(llama):
    kw, _ = _batch(llama)
    base = _logits(llama.hf, kw)
    r, v = torch.randn(llama.d_model), torch.randn(llama.d_model)
    with pytest.raises(RuntimeError):
        with ablate(llama, r), steer(llama, v, layers=[0, 3], alpha=1.5):
            both = _logits(llama.hf, kw)
            raise RuntimeError("interrupted")
    assert not torch.equal(both, base)
    torch.testing.assert_close(_logits(llama.hf, kw), base, atol=0, rtol=0)


def test_bad_input(llama):
    with pytest.raises(InputError, match="zero norm"):
        with ablate(llama, torch.zeros(llama.d_model)):
            pass
    with pytest.raises(InputError, match="NaN"):
        with ablate(llama, torch.full((llama.d_model,), float("nan"))):
            pass
    with pytest.raises(InputError, match=r"needs \[64\]"):
        with steer(llama, torch.ones(32), layers=[1]):
            pass
    with pytest.raises(InputError, match="alpha"):
        with steer(llama, torch.ones(64), layers=[1], alpha=math.nan):
            pass
    with pytest.raises(InputError, match="out of range"):
        with steer(llama, torch.ones(64), layers=[9]):
            pass
    with pytest.raises(InputError, match="out of range"):
        with ablate(llama, torch.ones(64), layers=[-9]):
            pass


def test_generate_suppress_first_bans_only_the_first_token(tiny):
    """``suppress_first``: the greedy first token is replaced by the best one outside the set (the first
    log-probabilities returned stay the raw ones); suppressing tokens that were never first changes nothing."""
    plain, first = generate(tiny, PROMPTS, max_new_tokens=4, batch_size=3, return_ids=True, return_first_logprobs=True)
    opened = sorted({ids[0] for ids in plain})
    got, first2 = generate(tiny, PROMPTS, max_new_tokens=4, batch_size=3, return_ids=True, return_first_logprobs=True,
                           suppress_first=opened)
    masked = first.clone()
    masked[:, opened] = -float("inf")
    assert [ids[0] for ids in got] == masked.argmax(-1).tolist() and not any(ids[0] in opened for ids in got)
    torch.testing.assert_close(first2, first)
    unused = [t for t in range(first.shape[-1]) if t not in opened][:5]
    assert generate(tiny, PROMPTS, max_new_tokens=4, batch_size=3, return_ids=True, suppress_first=unused) == plain


def test_generate_first_logprobs_equal_a_separate_prompt_pass(tiny):
    """The refusal score taken from generate's prefill must be the last-prompt-position distribution, under
    padding (mixed lengths, batch < n) and under an active intervention."""
    from interp.logits import last_logprobs

    r = torch.randn(tiny.d_model)
    for ctx in (None, ablate(tiny, r)):
        with ctx if ctx is not None else torch.no_grad():
            texts, first = generate(tiny, PROMPTS, max_new_tokens=3, batch_size=3, return_first_logprobs=True)
            ref = last_logprobs(tiny, PROMPTS, batch_size=len(PROMPTS))
            plain = generate(tiny, PROMPTS, max_new_tokens=3, batch_size=3)
        assert first.shape == ref.shape == (len(PROMPTS), ref.shape[-1])
        torch.testing.assert_close(first, ref, atol=1e-4, rtol=0)
        assert texts == plain
