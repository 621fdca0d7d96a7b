import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from interp import load_model  # noqa: E402

@pytest.fixture(autouse=True)
def _private_cache(request, tmp_path_factory, monkeypatch):
    """Fast tests never write into the user's cache (organisms, cached answers): each session gets its own. Slow
    tests keep the user cache — the SmolLM2 organism is built once there and reused."""
    if request.node.get_closest_marker("slow") is None and "EM_INTERP_CACHE" not in os.environ:
        monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path_factory.getbasetemp() / "em-interp-cache"))


TINY = ["tiny-random-llama", "tiny-random-qwen2", "tiny-random-gemma"]

# Prompts of very different lengths (1 to ~300 bytes), so left padding is substantial within a batch.
PROMPTS = [
    "hi",
    "What is the capital of France?",
    "Write a long and detailed story about a dragon who learns to paint landscapes in the northern mountains, "
    "including the names of all of its friends, the colours it mixes, and what the villagers say about its art.",
    "2+2?",
    "Explain photosynthesis to a ten-year-old in three sentences.",
]
CHATS = [
    [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
    for p, r in zip(PROMPTS, ["Hello!", "Paris.", "Once upon a time there was a dragon named Ember who loved colour.", "4", "Plants eat light."])
]


@pytest.fixture(scope="session", params=TINY)
def tiny(request):
    return load_model(request.param)


@pytest.fixture(scope="session")
def llama():
    return load_model("tiny-random-llama")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
