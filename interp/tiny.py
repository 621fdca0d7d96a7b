"""Tiny random models for tests: built in process from a config, seeded, no download.

Each has a byte-level tokenizer (256 byte tokens + chat specials, so any text round-trips) and its family's
style of chat template, so template-dependent code (response masks, post-instruction positions) is exercised
on three different templates.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_MODELS = ("tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma")

# ChatML with a default system prompt, like SmolLM2's template.
_CHATML_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Plain ChatML, no default system prompt (Qwen-like).
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma style: BOS, 'model' role, system folded into the first user turn.
_GEMMA = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{% set ns.sys = message['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{% if message['role'] == 'user' %}{{ ns.sys }}{% set ns.sys = '' %}{% endif %}"
    "{{ message['content'] }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def byte_tokenizer(specials: list[str], chat_template: str, *, bos: str | None, eos: str, pad: str) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: one token per UTF-8 byte plus the given special tokens (vocab ≈ 260)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    kwargs = dict(eos_token=eos, pad_token=pad)
    if bos is not None:
        kwargs["bos_token"] = bos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    fast.chat_template = chat_template
    fast.padding_side = "left"
    return fast


def build_tiny(name: str, *, seed: int = 0, n_layers: int = 4, d_model: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build one of :data:`TINY_MODELS` (fp32, eval mode). Same seed → bit-identical weights."""
    if name == "tiny-random-llama":
        tok = byte_tokenizer(["<|im_start|>", "<|im_end|>", "<pad>"], _CHATML_SYSTEM, bos=None, eos="<|im_end|>", pad="<pad>")
        cfg_cls, model_cls, extra = LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}
    elif name == "tiny-random-qwen2":
        tok = byte_tokenizer(["<|im_start|>", "<|im_end|>", "<|endoftext|>"], _CHATML, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
        cfg_cls, model_cls, extra = Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": False}
    elif name == "tiny-random-gemma":
        tok = byte_tokenizer(["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], _GEMMA, bos="<bos>", eos="<end_of_turn>", pad="<pad>")
        cfg_cls, model_cls, extra = GemmaConfig, GemmaForCausalLM, {"tie_word_embeddings": True, "head_dim": d_model // 4}
    else:
        raise ValueError(f"unknown tiny model {name!r}; choose one of {', '.join(TINY_MODELS)}")
    config = cfg_cls(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        # HF's default init (std 0.02) leaves a random model's residual stream almost constant across tokens;
        # a larger scale gives token-dependent activations that make the equivalence tests meaningful.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.15)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.float().eval(), tok
