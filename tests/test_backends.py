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


def test_transformer_lens_backend_does_not_mutate_the_model(llama):
    pytest.importorskip("transformer_lens")
    before = type(llama.layers[0])
    collect_activations(llama, PROMPTS[:2], backend="transformer_lens")
    assert type(llama.layers[0]) is before
