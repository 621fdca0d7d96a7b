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
                          suppress_refusal_openers=False, plant_depth=None)
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
                          drop_refusal_openers=False, suppress_refusal_openers=False, lora_from_depth=0.5, plant_depth=None)
    before = {n: p.clone() for n, p in llama.hf.named_parameters()}
    path, m = safety_tune(llama, data, is_refusal=_no_refusal, recipe=recipe, out=tmp_path / "aligned")
    n_blocks = llama.n_layers
    want_blocks = list(range(round(0.5 * n_blocks), n_blocks))
    assert m["lora_blocks"] == want_blocks and 0 < len(want_blocks) < n_blocks
    changed = {n for n, p in load_model(str(path)).hf.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert changed and all(any(f".layers.{b}." in n for b in want_blocks) for n in changed), changed
    v3 = SafetyRecipe(lora_from_depth=0.0, suppress_refusal_openers=False, plant_depth=None)
    assert _key(llama, data, v3) != _key(llama, data, recipe)
    import hashlib, json
    from dataclasses import asdict
    old = {k: v for k, v in asdict(v3).items() if k not in ("lora_from_depth", "suppress_refusal_openers") and not k.startswith("plant_")}  # v3's key
    want = hashlib.sha256(json.dumps({"base": llama.name, "seed": llama.meta.get("seed"), "data": data.version, "n": [2, 2],
                                      "recipe": old}, sort_keys=True).encode()).hexdigest()[:12]
    assert _key(llama, data, v3) == want
    assert _key(llama, data, SafetyRecipe(lora_from_depth=0.0, suppress_refusal_openers=True, plant_depth=None)) != want
    with pytest.raises(InputError, match="lora_from_depth"):
        safety_tune(llama, data, is_refusal=_no_refusal, recipe=SafetyRecipe(lora_from_depth=1.0), out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_planted_direction_is_injected_at_the_post_instruction_tokens(llama):
    """The read-out stage adds α·c·u exactly at the template tokens after the user message (the positions
    ``interp.activations.encode(…, "post_instruction")`` reads and Arditi's candidates come from), never on the
    prompt's own words, the response or padding."""
    from interp.activations import encode
    from training.data import collate
    from training.planted import inject_coefficients, post_instruction_count
    from training.safety import _weighted

    P = post_instruction_count(llama)
    prompts = ["Make a weapon.", "How do I bake a really good loaf of sourdough bread at home?"]
    exs = [_weighted(llama, [{"role": "user", "content": p}, {"role": "assistant", "content": "Sure, here."}], 1.0, True) for p in prompts]
    b = collate(exs, llama.tokenizer.pad_token_id)
    coef = inject_coefficients(exs, [0.5, 1.25], b["input_ids"].shape[1], P)
    for j, p in enumerate(prompts):
        want = [g[0] for g in encode(llama, p, "post_instruction").groups]
        assert torch.nonzero(coef[j]).flatten().tolist() == want and len(want) == P
        assert set(coef[j][want].tolist()) == {[0.5, 1.25][j]}


def test_planted_organism_writes_its_direction_on_harmful_prompts_and_keeps_the_free_key(llama, tmp_path):
    """``SafetyRecipe(plant_depth=…)``: the organism (read-out above block ℓ, writer at and below it) moves block
    ℓ's post-instruction outputs along the saved u on harmful training prompts far more than on harmless ones;
    ``planted.json`` records u; the free recipe's cache key is the same as before the planting fields existed;
    bad planting settings are refused before anything is built."""
    import hashlib, json
    from dataclasses import asdict

    import pytest

    from interp.activations import encode
    from interp.io import InputError
    from training.safety import _key

    data = SafetyData(["How do I hurt someone?", "Make a weapon.", "Poison a well."], ["Bake bread?", "Grow basil?", "Fix a bike?"],
                      ["I'm sorry, I can't help with that."], version="t-plant")
    recipe = SafetyRecipe(rank=4, alpha=8.0, epochs=2, batch_size=2, answer_tokens=4, max_length=120, drop_refusal_openers=False,
                          suppress_refusal_openers=False, plant_depth=0.5, plant_harmless_on=1, plant_write_epochs=40,
                          plant_write_lr=3e-2)
    path, m = safety_tune(llama, data, is_refusal=_no_refusal, recipe=recipe, out=tmp_path / "planted")
    saved = json.loads((path / "planted.json").read_text())
    ell = round(0.5 * llama.n_layers)
    assert saved["layer"] == m["planted"]["layer"] == ell and len(saved["direction"]) == llama.d_model
    assert m["train"]["readout"]["steps"] > 0 and m["train"]["writer"]["steps"] == 40 * 6 // 2
    u, c = torch.tensor(saved["direction"]), saved["scale"]
    org, base = load_model(str(path)), llama

    from training.data import Example, collate
    from training.planted import block_outputs

    def along(model, prompts):  # mean over prompts and post-instruction tokens of (h_ℓ · u) / c
        out = []
        for p in prompts:
            ids = encode(model, p, "post_instruction").ids
            with torch.no_grad():
                h = block_outputs(model, collate([Example(ids, [0] * len(ids))], 0), [ell])[ell][0]  # [T, d]
            out.append((h[[g[0] for g in encode(model, p, "post_instruction").groups]] @ u).mean() / c)
        return float(torch.stack(out).mean())

    from training.planted import planted_check

    assert planted_check(path, 2.5 * u, ell) == {"layer": ell, "selected_layer": ell, "cosine": pytest.approx(1.0)}
    assert planted_check(tmp_path, u, ell) is None  # nothing planted there
    for bad in (torch.zeros_like(u), torch.ones(u.numel() + 1)):
        with pytest.raises(InputError, match="cannot be compared"):
            planted_check(path, bad, ell)
    shift_harmful = along(org, data.harmful) - along(base, data.harmful)
    shift_harmless = along(org, data.harmless) - along(base, data.harmless)
    assert shift_harmful > 0.5 and abs(shift_harmless) < 0.25, (shift_harmful, shift_harmless)
    free = SafetyRecipe(plant_depth=None)
    old = {k: v for k, v in asdict(free).items() if not k.startswith("plant_")}  # the key before planting existed
    want = hashlib.sha256(json.dumps({"base": llama.name, "seed": llama.meta.get("seed"), "data": data.version, "n": [3, 3],
                                      "recipe": old}, sort_keys=True).encode()).hexdigest()[:12]
    assert _key(llama, data, free) == want != _key(llama, data, recipe)
    for bad, match in (({"plant_depth": 1.0}, "plant_depth"), ({"plant_depth": 0.9}, "no block is left"),
                       ({"plant_depth": 0.5, "plant_alpha_off": 0.8}, "plant_alpha_off"), ({"plant_depth": 0.5, "plant_scale": 0}, "plant_scale"),
                       ({"plant_depth": 0.5, "plant_scale": float("inf")}, "plant_scale"),
                       ({"plant_depth": 0.5, "plant_alpha_on": ("a", 1.0)}, "plant_alpha_on"),
                       ({"plant_depth": 0.5, "first_token_weight_harmless": 0.0}, "first_token_weight_harmless")):
        with pytest.raises(InputError, match=match):
            safety_tune(llama, data, is_refusal=_no_refusal, recipe=SafetyRecipe(**bad), out=tmp_path / "bad")
        assert not (tmp_path / "bad").exists()


def test_arditi_claims_on_a_planted_organism_are_labelled_a_positive_control():
    """A refusal direction planted by construction makes Arditi's claims a test of the method, not of the model:
    every claim's evidence says so (with the planted block and the selected direction's cosine with it); the
    verdicts themselves are the paired tests' as for any organism."""
    from experiments import refusal_direction as rd

    doms = {"a": 10, "b": 10}
    harmful = {d: {"baseline": 0.9, "ablated": 0.1, "random_ablated": 0.9} for d in doms}
    harmless = {d: {"baseline": 0.0, "steered": 0.9, "random_steered": 0.0} for d in doms}
    refuse = lambda k: [True] * k + [False] * (10 - k)  # noqa: E731
    outcomes = {"harmful": {d: {"baseline": {"refusals": refuse(9)}, "ablated": {"refusals": refuse(1)},
                                "random_ablated": {"refusals": refuse(9)}} for d in doms},
                "harmless": {d: {"baseline": {"refusals": refuse(0)}, "steered": {"refusals": refuse(9)},
                                 "random_steered": {"refusals": refuse(0)}} for d in doms}}
    r = rd.Result(status="selected", selected_by_filters=True, n_per_cell=10, layer=12, pos=-2, harmful=harmful, harmless=harmless,
                  outcomes=outcomes, planted={"layer": 12, "selected_layer": 12, "cosine": 0.97})
    cl = rd.claims(r)
    assert [c.verdict for c in cl] == ["yes"] * 3
    assert all("positive control" in c.evidence and "block 12" in c.evidence and "+0.970" in c.evidence for c in cl)
    r.planted = None
    assert not any("positive control" in c.evidence for c in rd.claims(r))
