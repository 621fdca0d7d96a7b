"""The TransformerLens-bridge and nnsight backends give the same activations as raw hooks (within 1e-4)."""

import pytest
import torch

from interp import collect_activations

from .conftest import CHATS, PROMPTS


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_backend_parity(tiny, backend):
    pytest.importorskip(backend)
    for position, items in [("last_prompt", PROMPTS), ("response_mean", CHATS)]:
        ref = collect_activations(tiny, items, position=position, batch_size=3)
        got = collect_activations(tiny, items, position=position, batch_size=3, backend=backend)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_transformer_lens_backend_does_not_mutate_the_model(llama, tmp_path, monkeypatch):
    pytest.importorskip("transformer_lens")
    import copy

    from interp.models import Model

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    fresh = Model(copy.deepcopy(llama.hf), llama.tokenizer, llama.name, {})  # no bridge cached yet: boots one here
    before = type(fresh.layers[0])
    collect_activations(fresh, PROMPTS[:2], backend="transformer_lens")
    assert type(fresh.layers[0]) is before
    assert not list(tmp_path.iterdir())  # the tokenizer folder the bridge boots from is removed afterwards


@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-gemma3"])  # plain blocks; sandwich norms
def test_backends_honour_active_steer_and_ablate(name):
    """An open ``steer(...)`` and ``ablate(...)`` act on every backend alike (TL's bridge runs a copy of the model,
    nnsight reads a block's output before that block's own hooks): activations at every layer agree."""
    pytest.importorskip("transformer_lens")
    pytest.importorskip("nnsight")
    from interp import load_model
    from interp.interventions import ablate, steer

    model = load_model(name)
    r, v = torch.randn(model.d_model), 3 * torch.randn(model.d_model)
    plain = collect_activations(model, PROMPTS, batch_size=5)
    with steer(model, v, layers=[1], alpha=2.0), ablate(model, r, layers=[0, 1, 2]):
        got = {b: collect_activations(model, PROMPTS, batch_size=5, backend=b)
               for b in ("hooks", "transformer_lens", "nnsight")}
    assert (got["hooks"] - plain).abs().max() > 1  # the interventions change the activations …
    for backend in ("transformer_lens", "nnsight"):  # … identically on every backend
        torch.testing.assert_close(got[backend], got["hooks"], atol=1e-4, rtol=0)
    # and once the contexts close, no backend keeps them
    for backend in ("transformer_lens", "nnsight"):
        torch.testing.assert_close(collect_activations(model, PROMPTS, batch_size=5, backend=backend),
                                   plain, atol=1e-4, rtol=0)


def test_transformer_lens_refuses_an_intervention_it_cannot_place(llama, monkeypatch):
    pytest.importorskip("transformer_lens")
    from interp import InputError
    from interp.backends import transformer_lens as tl
    from interp.interventions import ablate

    collect_activations(llama, PROMPTS[:1], backend="transformer_lens")  # boot the bridge
    monkeypatch.setattr(tl, "bridge_sites", lambda br: {})  # a bridge without matching hook points
    with ablate(llama, torch.randn(llama.d_model)), pytest.raises(InputError, match="cannot apply the active ablate"):
        collect_activations(llama, PROMPTS[:1], backend="transformer_lens")
