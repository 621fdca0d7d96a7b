import math

import pytest
import torch

from interp import InputError, collect_activations
from interp.activations import encode_all, make_batches
from interp.generation import generate
from interp.interventions import ablate, ablation_lora, orthogonalize_weights, steer

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
