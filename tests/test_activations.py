import pytest
import torch

from interp import InputError, collect_activations, mean_activations

from .conftest import CHATS, PROMPTS

CASES = [("last_prompt", PROMPTS), ("post_instruction", PROMPTS), ("response_mean", CHATS), ("all", CHATS)]


@pytest.mark.parametrize("position,items", CASES, ids=[c[0] for c in CASES])
def test_batched_equals_one_by_one(tiny, position, items):
    batched = collect_activations(tiny, items, position=position, batch_size=len(items))
    single = torch.cat([collect_activations(tiny, [it], position=position, batch_size=1) for it in items])
    assert batched.shape == single.shape and batched.dtype == torch.float32
    assert batched.abs().max() > 0.1  # activations are not trivially small
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)


def test_matches_hf_hidden_states_reference(tiny):
    # Unpadded single prompt: block l's output equals HF's hidden_states[l + 1] (the last one is post-norm in HF).
    text = tiny.render(PROMPTS[2])
    ids = tiny.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hs = tiny.hf(ids, output_hidden_states=True).hidden_states
    acts = collect_activations(tiny, [PROMPTS[2]], layers=[0, 1, 2], position="last_prompt")
    for j, l in enumerate([0, 1, 2]):
        torch.testing.assert_close(acts[0, j], hs[l + 1][0, -1], atol=1e-5, rtol=0)


def test_shapes_and_layer_subset(llama):
    assert collect_activations(llama, PROMPTS, layers=[1, 3]).shape == (5, 2, 64)
    post = collect_activations(llama, PROMPTS, position="post_instruction")
    assert post.dim() == 4 and post.shape[0] == 5 and post.shape[2:] == (4, 64)
    # The last post-instruction offset is the last prompt token.
    torch.testing.assert_close(post[:, -1], collect_activations(llama, PROMPTS), atol=1e-5, rtol=0)
    n_tokens = sum(len(llama.tokenizer(llama.render(c), add_special_tokens=False)["input_ids"]) for c in CHATS)
    assert collect_activations(llama, CHATS, position="all").shape == (n_tokens, 4, 64)


def test_padding_never_matters(llama):
    a = collect_activations(llama, PROMPTS, position="all", batch_size=5)
    old = llama.tokenizer.pad_token_id
    llama.tokenizer.pad_token_id = 65  # a real byte token: if padding leaked, results would change
    try:
        b = collect_activations(llama, PROMPTS, position="all", batch_size=5)
    finally:
        llama.tokenizer.pad_token_id = old
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position,items", CASES, ids=[c[0] for c in CASES])
def test_mean_is_float64_and_equals_mean_of_collected(llama, position, items):
    mean = mean_activations(llama, items, position=position, batch_size=2)
    assert mean.dtype == torch.float64
    full = collect_activations(llama, items, position=position, batch_size=2).double()
    torch.testing.assert_close(mean, full.mean(0), atol=1e-6, rtol=0)


def test_response_mean_reads_only_response_tokens(llama):
    # Changing the prompt changes the response activations (attention), but the response_mean of a response that
    # is one token must equal the 'all' activation at that token.
    chat = [{"role": "user", "content": "Say a letter."}, {"role": "assistant", "content": "Q"}]
    resp = collect_activations(llama, [chat], position="response_mean")
    everything = collect_activations(llama, [chat], position="all")
    text = llama.render(chat)
    q_index = text.rindex("Q")
    offsets = llama.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    t = [i for i, (s, e) in enumerate(offsets) if s == q_index][0]
    torch.testing.assert_close(resp[0], everything[t], atol=1e-6, rtol=0)


def test_bad_input(llama):
    with pytest.raises(InputError, match="empty"):
        collect_activations(llama, [])
    with pytest.raises(InputError, match="assistant turn"):
        collect_activations(llama, PROMPTS, position="response_mean")
    with pytest.raises(InputError, match="out of range"):
        mean_activations(llama, PROMPTS, layers=[7])
    with pytest.raises(InputError, match="unknown position"):
        collect_activations(llama, PROMPTS, position="middle")
    with pytest.raises(InputError, match="list of prompts"):
        collect_activations(llama, "just one string")
    with pytest.raises(InputError, match="batch_size"):
        collect_activations(llama, PROMPTS, batch_size=0)
