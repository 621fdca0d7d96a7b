"""Tiny random models for tests: built in process from a config, seeded, no download.

Each has a byte-level tokenizer (256 byte tokens + chat specials, so any text round-trips) and its family's
style of chat template, so template-dependent code (response masks, post-instruction positions) is exercised
on three different templates. Gemma 2 and Gemma 3 normalise each sub-layer's output before adding it to the
residual stream (post-attention / post-feed-forward norms) and tie their embeddings: the architecture case for
exact ablation and for refusing a weight-space form.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_MODELS = ("tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma", "tiny-random-gemma2", "tiny-random-gemma3")

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
    elif name in ("tiny-random-gemma", "tiny-random-gemma2", "tiny-random-gemma3"):
        tok = byte_tokenizer(["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], _GEMMA, bos="<bos>", eos="<end_of_turn>", pad="<pad>")
        extra = {"tie_word_embeddings": True, "head_dim": d_model // 4}
        if name == "tiny-random-gemma":
            cfg_cls, model_cls = GemmaConfig, GemmaForCausalLM
        else:  # sandwich norms; query scale 1/sqrt(head_dim) and alternating sliding / full attention, as published
            kinds = ["sliding_attention", "full_attention"]
            extra.update(query_pre_attn_scalar=d_model // 4, layer_types=[kinds[i % 2] for i in range(n_layers)])
            cfg_cls, model_cls = (Gemma2Config, Gemma2ForCausalLM) if name == "tiny-random-gemma2" else (Gemma3TextConfig, Gemma3ForCausalLM)
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
    config.architectures = [model_cls.__name__]  # as a saved checkpoint records it (TransformerLens reads it)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        # HF's default init (std 0.02) leaves a random model's residual stream almost constant across tokens;
        # a larger scale gives token-dependent activations that make the equivalence tests meaningful.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.15)
            if name in ("tiny-random-gemma2", "tiny-random-gemma3"):
                # Per-channel norm gains (Gemma's scale is 1 + w, w = 0 at init): with uniform gains a norm only
                # rescales each token, so a post-norm could not put a component along a direction back.
                for n, p in model.named_parameters():
                    if p.dim() == 1 and n.endswith("norm.weight"):
                        p.normal_(0.0, 0.3)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.float().eval(), tok
