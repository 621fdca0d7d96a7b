"""Exported edits (weight-orthogonalised HF model, rank-1 peft LoRA) reload with plain transformers / peft and give
the logits of activation ablation."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp import InputError, load_model
from interp.activations import encode_all, make_batches
from interp.export import SIDECAR, export_orthogonalized
from interp.interventions import ablate

from .conftest import PROMPTS


def _padded(model, tokenizer=None):
    """A left-padded batch of PROMPTS (prompt + generation prompt) with position ids from the mask."""
    b = make_batches(encode_all(model, PROMPTS, "last_prompt"), len(PROMPTS), model.tokenizer.pad_token_id, model.device)[0]
    if tokenizer is not None:  # the exported tokenizer encodes the same ids
        ids = tokenizer([model.render(PROMPTS[i]) for i in b.index], add_special_tokens=False, padding=True, return_tensors="pt")
        assert torch.equal(ids["input_ids"], b.input_ids) and torch.equal(ids["attention_mask"], b.attention_mask)
    assert (b.attention_mask == 0).any()  # padding is exercised
    return dict(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids), b.attention_mask.bool()


def _logits(hf, kw):
    with torch.no_grad():
        return hf(**kw).logits


# Llama and Qwen2 untied; Gemma (1) ties its embeddings and has no post-norms, so it exports exactly too.
@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma"])
def test_exported_model_and_lora_reload_with_plain_libraries_and_equal_ablation(name, tmp_path):
    from peft import PeftModel

    model = load_model(name)
    r = torch.randn(model.d_model)
    kw, mask = _padded(model)
    base = _logits(model.hf, kw)
    with ablate(model, r):
        ablated = _logits(model.hf, kw)
    assert (ablated - base)[mask].abs().max() > 0.1  # the ablation matters

    out = export_orthogonalized(model, r, tmp_path / "ortho", source={"directions": "test", "layer": 1, "pos": -1})
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.padding_side == "left" and tok.chat_template == model.tokenizer.chat_template
    kw2, _ = _padded(model, tok)
    torch.testing.assert_close(_logits(hf, kw2)[mask], ablated[mask], atol=1e-4, rtol=0)
    # the unembedding is the original one (tied embeddings were untied, not edited)
    torch.testing.assert_close(hf.get_output_embeddings().weight, model.hf.get_output_embeddings().weight, atol=0, rtol=0)
    assert (hf.get_input_embeddings().weight @ (r / r.norm())).abs().max() < 1e-5
    meta = json.loads((out / SIDECAR).read_text())
    assert meta["kind"] == "orthogonalized_model" and meta["source"]["layer"] == 1 and meta["n_layers"] == model.n_layers
    assert "torch" in meta["versions"] and len(meta["direction"]["sha256"]) == 64

    out = export_orthogonalized(model, r, tmp_path / "lora", lora=True)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    fresh = load_model(name)  # the plain base, as a user would load it
    peft = PeftModel.from_pretrained(fresh.hf, str(out)).eval()
    torch.testing.assert_close(_logits(peft, kw)[mask], ablated[mask], atol=1e-4, rtol=0)
    ranks = {min(p.shape) for n, p in peft.named_parameters() if "lora_" in n}
    assert ranks == {1}
    assert json.loads((out / SIDECAR).read_text())["kind"] == "ablation_lora"
    # the exporting model itself is untouched
    torch.testing.assert_close(_logits(model.hf, kw), base, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["tiny-random-gemma2", "tiny-random-gemma3"])
@pytest.mark.parametrize("lora", [False, True])
def test_gemma_post_norms_are_refused_and_nothing_is_written(name, lora, tmp_path):
    model = load_model(name)
    with pytest.raises(InputError, match="post_feedforward_layernorm.*cannot reproduce activation ablation exactly"):
        export_orthogonalized(model, torch.randn(model.d_model), tmp_path / "out", lora=lora)
    assert list(tmp_path.iterdir()) == []


def test_a_gguf_quantisation_marker_does_not_block_the_export(tmp_path):
    """A GGUF-loaded model keeps a marker that makes save_pretrained raise; the export drops it on its copy."""
    model = load_model("tiny-random-llama")
    marker = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"), is_serializable=lambda: False)
    model.hf.hf_quantizer = marker
    model.hf.config.quantization_config = {"quant_method": "gguf"}
    with pytest.raises(ValueError, match="quantized with gguf"):  # what a plain save does
        model.hf.save_pretrained(tmp_path / "plain")
    out = export_orthogonalized(model, torch.randn(model.d_model), tmp_path / "ortho")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == model.n_layers
    assert model.hf.hf_quantizer is marker  # the given model keeps its own state
    model.hf.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="bitsandbytes"))
    model.hf.config.quantization_config = {"quant_method": "bitsandbytes"}
    with pytest.raises(InputError, match="quantised with bitsandbytes"):
        export_orthogonalized(model, torch.randn(model.d_model), tmp_path / "bnb")
    assert not (tmp_path / "bnb").exists()


def test_export_never_overwrites_an_unrelated_directory(llama, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an earlier export"):
        export_orthogonalized(llama, torch.randn(llama.d_model), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    out = export_orthogonalized(llama, torch.randn(llama.d_model), tmp_path / "m")
    first = (out / "model.safetensors").read_bytes()
    export_orthogonalized(llama, torch.randn(llama.d_model), out)  # an earlier export is replaced
    assert (out / "model.safetensors").read_bytes() != first
    with pytest.raises(InputError, match="zero norm"):
        export_orthogonalized(llama, torch.zeros(llama.d_model), tmp_path / "z")
    assert not (tmp_path / "z").exists()


def test_cli_orthogonalize_writes_a_loadable_model_and_adapter(llama, tmp_path, capsys):
    from peft import PeftModel

    from experiments.cli import main
    from interp.directions import Directions
    from interp.models import signature

    vectors = torch.randn(2, llama.n_layers, llama.d_model)  # two template offsets
    meta = {"kind": "mean_diff", "positive": "p", "negative": "n", **signature(llama)}  # as mean_diff records it
    d = Directions(vectors, list(range(llama.n_layers)), meta).save(tmp_path / "d.safetensors")
    kw, mask = _padded(llama)
    with ablate(llama, vectors[0, 2]):  # layer 2, offset -2
        ablated = _logits(llama.hf, kw)

    out = tmp_path / "ortho"
    assert main(["orthogonalize", "--model", "tiny-random-llama", "--directions", str(d), "--layer", "2", "--pos", "-2", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out) and printed["kind"] == "orthogonalized_model"
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(out).eval(), kw)[mask], ablated[mask], atol=1e-4, rtol=0)
    source = json.loads((out / SIDECAR).read_text())["source"]
    assert source["layer"] == 2 and source["pos"] == -2 and source["positive"] == "p"

    out = tmp_path / "lora"
    assert main(["orthogonalize", "--model", "tiny-random-llama", "--directions", str(d), "--layer", "2", "--pos", "-2",
                 "--out", str(out), "--lora"]) == 0
    capsys.readouterr()
    peft = PeftModel.from_pretrained(load_model("tiny-random-llama").hf, str(out)).eval()
    torch.testing.assert_close(_logits(peft, kw)[mask], ablated[mask], atol=1e-4, rtol=0)

    gemma = tmp_path / "g.safetensors"
    Directions(torch.randn(4, 64), list(range(4)), signature(load_model("tiny-random-gemma2"))).save(gemma)
    assert main(["orthogonalize", "--model", "tiny-random-gemma2", "--directions", str(gemma), "--layer", "1", "--out", str(tmp_path / "g")]) == 2
    assert "cannot reproduce activation ablation exactly" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
