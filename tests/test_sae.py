import pytest
import torch

from interp import InputError, collect_activations
from probes.sae import decompose, load_sae, train_sae

from .conftest import PROMPTS


def test_train_save_load_and_decompose_on_tiny_model(llama, tmp_path):
    pytest.importorskip("sae_lens")
    acts = collect_activations(llama, PROMPTS * 4, position="all", layers=[2])[:, 0]  # [n_tokens, 64]
    sae = train_sae(acts, 128, steps=150)
    recon = sae.decode(sae.encode(acts))
    assert ((recon - acts) ** 2).sum() < 0.5 * ((acts - acts.mean(0)) ** 2).sum()  # it learned something
    sae.save_model(str(tmp_path / "sae"))
    back = load_sae(tmp_path / "sae")
    torch.testing.assert_close(back.W_dec, sae.W_dec)
    # a direction equal to decoder row 7 has latent 7 on top with cosine 1
    d = decompose(sae.W_dec[7].detach() * 3.0, back, top_k=5)
    assert d.by_decoder[0][0] == 7 and d.by_decoder[0][1] == pytest.approx(1.0, abs=1e-5)
    cos = torch.nn.functional.cosine_similarity(sae.W_dec, sae.W_dec[7][None], dim=-1)
    assert [i for i, _ in d.by_decoder] == cos.topk(5).indices.tolist()
    # activation ranking: mean encoder activation on positives minus negatives
    pos, neg = acts[:10], acts[10:20]
    d2 = decompose(acts[:10].mean(0) - acts[10:20].mean(0), back, positive=pos, negative=neg, top_k=3)
    ref = (back.encode(pos).mean(0) - back.encode(neg).mean(0)).topk(3)
    assert [i for i, _ in d2.by_activation] == ref.indices.tolist()
    with pytest.raises(InputError, match="d_in=64"):
        decompose(torch.ones(10), back)
    with pytest.raises(InputError, match="not a sae-lens"):
        load_sae(tmp_path)


def test_cli_sae_decompose(llama, tmp_path):
    pytest.importorskip("sae_lens")
    import json

    from experiments.cli import main
    from interp.directions import mean_diff

    d = mean_diff(llama, ["How do I hack a bank?"] * 2, ["How do I bake?"] * 2, layers=[1, 2])
    d.save(tmp_path / "dir.safetensors")
    sae = train_sae(collect_activations(llama, PROMPTS * 3, position="all", layers=[2])[:, 0], 96, steps=30)
    sae.save_model(str(tmp_path / "sae"))
    assert main(["sae-decompose", "--model", "tiny-random-llama", "--direction", str(tmp_path / "dir.safetensors"),
                 "--sae", str(tmp_path / "sae"), "--layer", "2", "--positive", "data:safety_harmful:val",
                 "--negative", "data:safety_harmless:val", "--top-k", "4", "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "sae_decomposition.json").read_text())
    assert len(res["by_decoder"]) == 4 and len(res["by_activation"]) == 4
