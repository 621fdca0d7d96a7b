import torch

from interp import load_model
from training.safety import SafetyData, SafetyRecipe, build_examples, safety_tune


def _no_refusal(text):
    return "sorry" in text.lower()


def test_safety_tune_builds_merged_cached_model(llama, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    data = SafetyData(["How do I hurt someone?", "Make a weapon."], ["Bake bread?", "Grow basil?", "Fix a bike?"],
                      ["I'm sorry, I can't help with that."], version="t1")
    recipe = SafetyRecipe(rank=2, alpha=4.0, epochs=2, batch_size=2, answer_tokens=6, max_length=120, drop_refusal_openers=False,
                          suppress_refusal_openers=False)
    before = {n: p.clone() for n, p in llama.hf.named_parameters()}
    path, metrics = safety_tune(llama, data, is_refusal=_no_refusal, eval_sets={"d": (data.harmful, data.harmless)},
                                recipe=recipe, out=tmp_path / "aligned")
    assert all(torch.equal(before[n], p) for n, p in llama.hf.named_parameters())  # the base model is untouched
    assert (path / "config.json").is_file() and (path / "safety_metrics.json").is_file()
    assert set(metrics["before"]["d"]) >= {"harmful_refusal", "harmless_refusal"} and "after" in metrics
    n = 2 + metrics["n_harmless_kept"]
    assert metrics["train"]["steps"] == 2 * -(-n // 2) and metrics["n_harmful"] == 2  # 2 epochs of ceil(n/2) batches
    aligned = load_model(str(path))
    assert any(not torch.equal(before[n], p) for n, p in aligned.hf.named_parameters() if n in before)
    # a second call reuses the cache
    path2, m2 = safety_tune(llama, data, is_refusal=_no_refusal, recipe=recipe, out=tmp_path / "aligned")
    assert path2 == path and m2["key"] == metrics["key"]
    assert not list((tmp_path / "tmp").iterdir())  # the training work directory is removed


def test_first_response_token_is_upweighted(llama):
    data = SafetyData(["Make a weapon."], ["Bake bread?"], ["I'm sorry, I can't."], version="t")
    ts, info = build_examples(llama, data, SafetyRecipe(answer_tokens=4, max_length=400, drop_refusal_openers=False,
                                                        suppress_refusal_openers=False), _no_refusal)
    harmful = ts.examples[0]
    first = next(i for i, m in enumerate(harmful.mask) if m > 0)
    assert harmful.mask[first] == SafetyRecipe().first_token_weight_harmful == 3.0 and all(m in (0.0, 1.0) for i, m in enumerate(harmful.mask) if i != first)
    if info["n_harmless_kept"]:
        h = ts.examples[1]
        assert max(h.mask) == SafetyRecipe().first_token_weight_harmless == 1.0


def test_own_answers_are_cached_by_weights_and_prompts(llama, monkeypatch, tmp_path):
    """Issue 18: the base model's answers are generated once per (weights, prompts, length, batch size); a model with
    other weights under the same name is never served them."""
    import copy

    from interp.models import Model
    from training import safety

    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path))
    prompts = ["Bake bread?", "Grow basil?"]
    a, cached = safety.own_answers(llama, prompts, max_new_tokens=3)
    assert not cached and len(a) == 2
    calls = []
    monkeypatch.setattr(safety, "generate", lambda *x, **k: calls.append(1) or [[1], [2]])
    b, cached = safety.own_answers(llama, prompts, max_new_tokens=3)
    assert cached and b == a and not calls
    other = Model(copy.deepcopy(llama.hf), llama.tokenizer, llama.name, {})
    with torch.no_grad():
        next(other.hf.parameters()).add_(1.0)
    c, cached = safety.own_answers(other, prompts, max_new_tokens=3)
    assert not cached and calls == [1] and c == [[1], [2]]
    _, cached = safety.own_answers(llama, prompts, max_new_tokens=4)  # another length: not the cached answers
    assert not cached


def test_refusal_openers_are_dropped_from_harmless_targets(llama, monkeypatch):
    """With ``drop_refusal_openers`` a harmless answer whose first token is in the refusal token set is not a
    target (the refuse-or-help decision stays one token); without it, it is kept."""
    import pytest

    from interp.io import InputError
    from training import safety

    data = SafetyData(["Make a weapon."], ["Bake bread?", "Grow basil?"], ["I'm sorry, I can't."], version="t")
    monkeypatch.setattr(safety, "own_answers", lambda *a, **k: ([[7, 8, 9], [5, 6]], False))
    kept, info = build_examples(llama, data, SafetyRecipe(drop_refusal_openers=False, suppress_refusal_openers=False), _no_refusal,
                                refusal_openers=[7])
    assert info["n_harmless_kept"] == 2 and info["n_harmless_dropped_openers"] == 0
    ts, info = build_examples(llama, data, SafetyRecipe(drop_refusal_openers=True, suppress_refusal_openers=False), _no_refusal,
                              refusal_openers=[7])
    assert info["n_harmless_kept"] == 1 and info["n_harmless_dropped_openers"] == 1 and len(ts.examples) == 2
    with pytest.raises(InputError, match="refusal token set"):
        build_examples(llama, data, SafetyRecipe(drop_refusal_openers=True), _no_refusal)


def test_suppressed_openers_keep_every_harmless_prompt(llama):
    """``suppress_refusal_openers``: the harmless answers are generated with the refusal openers banned as first
    token, so none is dropped for its opener (recipe v3 dropped 144 of SmolLM2's 262 answers to "I'm trying to …"
    prompts, which made that phrasing a refusal cue) and none opens with one."""
    from interp.generation import generate

    data = SafetyData(["Make a weapon."], ["Bake bread?", "Grow basil?", "Fix a bike?"], ["I'm sorry, I can't."], version="t-sup")
    recipe = SafetyRecipe(answer_tokens=4, max_length=400, drop_refusal_openers=True, suppress_refusal_openers=False)  # v3
    openers = sorted({ids[0] for ids in generate(llama, data.harmless, max_new_tokens=1, return_ids=True)})
    _, info = build_examples(llama, data, recipe, _no_refusal, refusal_openers=openers)
    assert info["n_harmless_dropped_openers"] == 3 and info["n_harmless_kept"] == 0  # v3: every answer dropped
    sup = SafetyRecipe(answer_tokens=4, max_length=400, drop_refusal_openers=True, suppress_refusal_openers=True)
    ts, info = build_examples(llama, data, sup, _no_refusal, refusal_openers=openers)
    assert info["n_harmless_dropped_openers"] == 0 and info["n_harmless_kept"] == 3 and len(ts.examples) == 4
    for ex in ts.examples[1:]:
        assert ex.ids[next(i for i, m in enumerate(ex.mask) if m > 0)] not in openers


def test_lora_from_depth_restricts_the_adapter_and_v3_keeps_its_cache_key(llama, tmp_path):
    """``SafetyRecipe.lora_from_depth``: only the blocks from that depth on change when merged; recipe v3's values
    of the fields added after it (every block, openers dropped not suppressed) leave its cache key unchanged, and
    other values get keys of their own; a depth outside [0, 1) is refused before anything is built."""
    import pytest

    from interp.io import InputError
    from training.safety import _key

    data = SafetyData(["How do I hurt someone?", "Make a weapon."], ["Bake bread?", "Grow basil?"],
                      ["I'm sorry, I can't help with that."], version="t-layers")
    recipe = SafetyRecipe(rank=2, alpha=4.0, epochs=1, batch_size=2, answer_tokens=4, max_length=120,
                          drop_refusal_openers=False, suppress_refusal_openers=False, lora_from_depth=0.5)
    before = {n: p.clone() for n, p in llama.hf.named_parameters()}
    path, m = safety_tune(llama, data, is_refusal=_no_refusal, recipe=recipe, out=tmp_path / "aligned")
    n_blocks = llama.n_layers
    want_blocks = list(range(round(0.5 * n_blocks), n_blocks))
    assert m["lora_blocks"] == want_blocks and 0 < len(want_blocks) < n_blocks
    changed = {n for n, p in load_model(str(path)).hf.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert changed and all(any(f".layers.{b}." in n for b in want_blocks) for n in changed), changed
    v3 = SafetyRecipe(lora_from_depth=0.0, suppress_refusal_openers=False)
    assert _key(llama, data, v3) != _key(llama, data, recipe)
    import hashlib, json
    from dataclasses import asdict
    old = {k: v for k, v in asdict(v3).items() if k not in ("lora_from_depth", "suppress_refusal_openers")}  # v3's key
    want = hashlib.sha256(json.dumps({"base": llama.name, "seed": llama.meta.get("seed"), "data": data.version, "n": [2, 2],
                                      "recipe": old}, sort_keys=True).encode()).hexdigest()[:12]
    assert _key(llama, data, v3) == want
    assert _key(llama, data, SafetyRecipe(lora_from_depth=0.0, suppress_refusal_openers=True)) != want
    with pytest.raises(InputError, match="lora_from_depth"):
        safety_tune(llama, data, is_refusal=_no_refusal, recipe=SafetyRecipe(lora_from_depth=1.0), out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
