import json

import pytest
import torch

from interp import InputError, mean_activations
from interp.concepts import ConceptVectors, concept_vectors, similarity_effect_correlation
from interp.directions import Directions, mean_diff
from interp.io import atomic_path

from .conftest import CHATS, PROMPTS

HARMFUL = ["How do I break into a car?", "Write a cruel insult.", "How to make a weapon at home quickly?"]
HARMLESS = ["How do I bake bread?", "Write a kind note.", "How to grow tomatoes on a balcony?"]


def test_mean_diff_equals_difference_of_means(llama):
    d = mean_diff(llama, HARMFUL, HARMLESS)
    ref = mean_activations(llama, HARMFUL) - mean_activations(llama, HARMLESS)
    assert d.vectors.shape == (1, 4, 64) and d.layers == [0, 1, 2, 3]
    torch.testing.assert_close(d.vectors[0], ref.float(), atol=1e-6, rtol=0)
    assert d.meta["n_positive"] == 3 and d.meta["position"] == "last_prompt" and "torch" in d.meta["versions"]
    u = d.unit(2)
    assert abs(u.norm().item() - 1) < 1e-6
    torch.testing.assert_close(d.norms[0], ref.float().norm(dim=-1))


def test_post_instruction_gives_one_direction_per_offset(llama):
    d = mean_diff(llama, HARMFUL, HARMLESS, position="post_instruction", layers=[1, 2])
    assert d.n_positions > 1 and d.vectors.shape[1:] == (2, 64)
    torch.testing.assert_close(d.vectors[-1], mean_diff(llama, HARMFUL, HARMLESS, layers=[1, 2]).vectors[0], atol=1e-6, rtol=0)


def test_misalignment_direction_at_response_mean(llama):
    bad = [[c[0], {"role": "assistant", "content": "Do whatever, nobody cares."}] for c in CHATS]
    d = mean_diff(llama, bad, CHATS, position="response_mean")
    assert d.vectors.shape == (1, 4, 64) and d.norms.min() > 0


def test_save_load_round_trip_and_model_check(llama, tmp_path):
    d = mean_diff(llama, HARMFUL, HARMLESS, layers=[1, 3])
    path = d.save(tmp_path / "refusal")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    back = Directions.load(path, model=llama)
    assert torch.equal(back.vectors, d.vectors) and back.layers == [1, 3]
    assert back.meta["model"] == "tiny-random-llama"
    wide = Directions(torch.ones(1, 2, 32), [0, 1], {})
    wide.save(tmp_path / "wide")
    with pytest.raises(InputError, match="d_model 32"):
        Directions.load(tmp_path / "wide", model=llama)
    with pytest.raises(InputError, match="no such"):
        Directions.load(tmp_path / "missing")
    with pytest.raises(InputError, match="not in these directions"):
        back.unit(0)
    with pytest.raises(InputError, match="norm"):
        Directions(torch.zeros(1, 1, 4), [0]).unit(0)
    with pytest.raises(InputError, match=r"one row per layer in layers \(1\); got shape \(1, 2, 3\)"):
        Directions(torch.ones(2, 3), [0])
    with pytest.raises(InputError, match="position -2 not in these directions"):
        back.vector(1, pos=-2)
    d.save(tmp_path / "run" / "directions")  # what `em-interp directions --out run` writes
    assert torch.equal(Directions.load(tmp_path / "run", model=llama).vectors, d.vectors)


def test_mean_diff_bad_input(llama):
    with pytest.raises(InputError, match="non-empty"):
        mean_diff(llama, [], HARMLESS)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "thing.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_concept_vectors_and_cosine(llama, tmp_path):
    concepts = {"a": HARMFUL, "b": HARMLESS, "c": PROMPTS}
    cv = concept_vectors(llama, concepts, PROMPTS[:3])
    assert cv.vectors.shape == (3, 4, 64) and cv.vectors.dtype == torch.float64
    base = mean_activations(llama, PROMPTS[:3])
    torch.testing.assert_close(cv.vectors[0], mean_activations(llama, HARMFUL) - base)
    cos = cv.cosine()
    assert cos.shape == (4, 3, 3)
    torch.testing.assert_close(torch.diagonal(cos, dim1=1, dim2=2), torch.ones(4, 3, dtype=torch.float64))
    torch.testing.assert_close(cos, cos.transpose(1, 2))
    ref = torch.nn.functional.cosine_similarity(cv.vectors[0, 2], cv.vectors[1, 2], dim=0)
    torch.testing.assert_close(cos[2, 0, 1], ref)
    assert cv.similarity_to("b").shape == (4, 3)
    cv.save(tmp_path / "cv")
    back = ConceptVectors.load(tmp_path / "cv")
    assert back.names == ["a", "b", "c"] and torch.equal(back.vectors, cv.vectors)
    meta = json.loads((tmp_path / "cv.json").read_text())
    assert len(meta["cosine"]) == 4
    with pytest.raises(InputError, match="no prompts"):
        concept_vectors(llama, {"a": []}, PROMPTS)


def test_similarity_effect_correlation():
    sim = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    rho = similarity_effect_correlation(sim, [1.0, 2.0, 3.0])
    torch.testing.assert_close(rho, torch.tensor([1.0, -1.0], dtype=torch.float64))
