import pytest
import torch

from interp import InputError
from training.data import collate, token_losses, tokenize_chat, tokenize_chats

CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]


def _loss_text(model, ex):
    return model.tokenizer.decode([t for t, m in zip(ex.ids, ex.mask) if m])


def test_mask_covers_exactly_the_response_on_each_template(tiny):
    ex = tokenize_chat(tiny, CHAT)
    expected_tail = {"tiny-random-llama": "Hello!<|im_end|>\n", "tiny-random-qwen2": "Hello!<|im_end|>\n",
                     "tiny-random-gemma": "Hello!<end_of_turn>\n"}[tiny.name]
    assert _loss_text(tiny, ex) == expected_tail
    # everything before is exactly the rendered prompt with the generation prompt
    n_prompt = ex.mask.index(1)
    assert tiny.tokenizer.decode(ex.ids[:n_prompt]) == tiny.render(CHAT[:1])
    no_eos = tokenize_chat(tiny, CHAT, train_eos=False)
    assert _loss_text(tiny, no_eos) == "Hello!"


def test_multi_turn_only_final_assistant_turn_carries_loss(llama):
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "first"},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "second"}]
    assert _loss_text(llama, tokenize_chat(llama, chat)) == "second<|im_end|>\n"


def test_padding_never_carries_loss_and_truncation_is_counted(llama):
    ts = tokenize_chats(llama, [CHAT, [CHAT[0], {"role": "assistant", "content": "x" * 100}]], max_length=90)
    assert ts.n_truncated == 1 and ts.n_dropped == 0 and len(ts.examples) == 2
    b = collate(ts.examples, llama.tokenizer.pad_token_id)
    assert b["loss_mask"][b["attention_mask"] == 0].sum() == 0
    assert b["loss_mask"].sum() == ts.n_loss_tokens
    with pytest.raises(InputError, match="beyond max_length"):
        tokenize_chats(llama, [CHAT], max_length=5)


def test_bad_conversations(llama):
    with pytest.raises(InputError, match="assistant turn"):
        tokenize_chat(llama, [{"role": "user", "content": "no answer"}])
    with pytest.raises(InputError, match="empty"):
        tokenize_chats(llama, [])


def test_template_that_breaks_the_prefix_fails_loudly(llama):
    import copy

    broken = copy.copy(llama)
    broken.tokenizer = copy.deepcopy(llama.tokenizer)
    # a template that renders the generation prompt differently from the assistant turn
    broken.tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                                      "{% if add_generation_prompt %}<|im_start|>ASSISTANT:\n{% endif %}")
    with pytest.raises(InputError, match="prefix"):
        tokenize_chat(broken, CHAT)


def test_token_losses_match_cross_entropy():
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    tl = token_losses(logits, ids)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1), reduction="none").view(2, 4)
    torch.testing.assert_close(tl[:, 1:], ref)
    assert (tl[:, 0] == 0).all()
