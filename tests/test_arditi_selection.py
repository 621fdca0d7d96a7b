"""The published refusal-direction selection (Arditi et al.): the cheap sweep's exactness against the naive
per-candidate loop, the filters, the "nothing passes" label, the exploratory fallback, prompt filtering by the
model's own refusal score, and the selected (layer, position) vector."""

import pytest
import torch

from interp import InputError
from interp.activations import encode
from interp.directions import mean_diff
from interp.interventions import ablate
from interp.logits import kl_divergence, last_logprobs, token_set_logodds
from interp.selection import EXPLORATORY, NO_DIRECTION, filter_by_refusal_score, refusal_direction, select_direction
from probes.refusal import filter_prompts, refusal_tokens

from .test_refusal_selection import HARMFUL, HARMLESS

SCORES = ("kl", "steering_score", "ablation_score")


@pytest.fixture(scope="module")
def cands(llama):
    return mean_diff(llama, HARMFUL, HARMLESS, position="post_instruction")


def _naive(model, d, **kw):
    return select_direction(model, d, HARMFUL, HARMLESS, refusal_tokens=refusal_tokens(model.tokenizer), method="naive", **kw)


def _by_key(sel):
    return {(c.layer, c.pos): c for c in sel.table}


def _check_cheap_equals_naive(model, candidate_batch):
    d = mean_diff(model, HARMFUL, HARMLESS, position="post_instruction")
    toks = refusal_tokens(model.tokenizer)
    naive = _naive(model, d, kl_threshold=10.0)
    assert all(c.kl == c.kl and c.steering_score == c.steering_score for c in naive.table)  # published: all scored
    full = select_direction(model, d, HARMFUL, HARMLESS, refusal_tokens=toks, early_stop=False, candidate_batch=candidate_batch,
                            kl_threshold=10.0)
    limit = naive.config["layer_limit"]
    st = sorted(c.steering_score for c in naive.table if c.layer < limit)
    thr = (st[len(st) // 2 - 1] + st[len(st) // 2]) / 2  # about half the candidates stop at the steering filter
    cheap = select_direction(model, d, HARMFUL, HARMLESS, refusal_tokens=toks, candidate_batch=candidate_batch, kl_threshold=10.0,
                             steering_threshold=thr)
    assert full.baseline == pytest.approx(naive.baseline, abs=1e-12)
    n = _by_key(naive)
    compared = 0
    for sel in (full, cheap):
        for key, c in _by_key(sel).items():
            for s in SCORES:
                v = getattr(c, s)
                if v == v:  # scored by both
                    assert v == pytest.approx(getattr(n[key], s), abs=1e-4), (key, s)
                    compared += 1
    assert compared > len(naive.table) * 3
    # early stop: nothing beyond the depth limit is scored, and no ablation score for a candidate failing steering
    for c in cheap.table:
        if c.layer >= limit:
            assert all(getattr(c, s) != getattr(c, s) for s in SCORES) and c.failed == ["layer"]
        elif c.steering_score <= thr:
            assert c.ablation_score != c.ablation_score and c.failed == ["steering"] and "ablation not scored" in c.reason
    assert any(c.failed == ["steering"] for c in cheap.table) and any(c.passed for c in cheap.table)
    want = min((c for c in naive.table if c.layer < limit and c.kl <= 10.0 and c.steering_score > thr), key=lambda c: c.ablation_score)
    assert (cheap.best.layer, cheap.best.pos) == (want.layer, want.pos)


def test_cheap_sweep_scores_equal_the_naive_loop(tiny):
    _check_cheap_equals_naive(tiny, 1)


def test_cheap_sweep_with_candidates_batched_equals_the_naive_loop(llama):
    _check_cheap_equals_naive(llama, 3)


def test_the_published_filters_on_a_fully_scored_table(llama, cands):
    limit = int(llama.n_layers * 0.8)
    scores = _naive(llama, cands, kl_threshold=float("inf"))
    below = sorted((c for c in scores.table if c.layer < limit), key=lambda c: c.kl)
    kl_t = below[len(below) // 2].kl  # about half fail KL
    st = [c.steering_score for c in below if c.kl <= kl_t]
    st_t = (min(st) + max(st)) / 2  # some of the rest fail steering
    sel = _naive(llama, cands, kl_threshold=kl_t, steering_threshold=st_t)
    for c in sel.table:
        want = [f for f, bad in (("layer", c.layer >= limit), ("kl", c.kl > kl_t), ("steering", not c.steering_score > st_t)) if bad]
        assert c.failed == want and c.passed == (not want)
    assert {f for c in sel.table for f in c.failed} == {"layer", "kl", "steering"}
    passing = [c for c in sel.table if c.passed]
    assert passing and sel.best == min(passing, key=lambda c: c.ablation_score)
    # the KL recorded is KL(base ‖ ablated) on the harmless prompts, measured directly
    c = passing[0]
    base = last_logprobs(llama, HARMLESS)
    with ablate(llama, cands.vector(c.layer, c.pos)):
        kl = kl_divergence(base, last_logprobs(llama, HARMLESS)).mean().item()
    assert kl == pytest.approx(c.kl, abs=1e-6)
    # early stop: a candidate failing KL is not scored further, and the cheap table fails the same candidates
    cheap = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=refusal_tokens(llama.tokenizer), kl_threshold=kl_t,
                             steering_threshold=st_t)
    nk = _by_key(sel)
    for key, c in _by_key(cheap).items():
        assert c.passed == nk[key].passed and c.failed == nk[key].failed[:1]
        if c.failed == ["kl"]:
            assert c.steering_score != c.steering_score and c.ablation_score != c.ablation_score
    assert cheap.best.layer == sel.best.layer and cheap.best.pos == sel.best.pos


def test_the_kl_stops_exactly_once_its_lower_bound_fails(llama, cands):
    """Per-prompt KL ≥ 0, so Σ over the batches scored / n bounds the mean from below: the cheap sweep stops a
    candidate's KL once that bound exceeds the threshold. Same selection and the same failures as the naive loop,
    the bound never above the full KL, and the relaxed-KL fallback (which must finish stopped KLs) unchanged."""
    toks = refusal_tokens(llama.tokenizer)
    naive = _naive(llama, cands, kl_threshold=float("inf"), batch_size=2)
    limit = naive.config["layer_limit"]
    below = sorted((c for c in naive.table if c.layer < limit), key=lambda c: c.kl)
    kl_t = below[len(below) // 3].kl  # two thirds fail KL
    nk = _by_key(naive)
    cheap = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=kl_t, steering_threshold=-1e9, batch_size=2)
    n = len(HARMLESS)
    stopped = [c for c in cheap.table if c.kl_prompts is not None and c.kl_prompts < n]
    assert stopped, "no KL stopped early: the test does not exercise the bound"
    for key, c in _by_key(cheap).items():
        full = nk[key].kl
        if c.layer >= limit:
            continue
        assert (c.kl > kl_t) == (full > kl_t), key  # the same candidates fail KL
        if c.kl_prompts < n:
            assert kl_t < c.kl <= full + 1e-9 and "stopped after" in c.reason
        else:
            assert c.kl == pytest.approx(full, abs=1e-6)
    want = min((c for c in naive.table if c.layer < limit and c.kl <= kl_t), key=lambda c: c.ablation_score)
    assert (cheap.best.layer, cheap.best.pos) == (want.layer, want.pos)
    # nothing passes at a tiny threshold: the fallback finishes stopped KLs as the relaxed threshold admits them
    fb = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e-9, steering_threshold=-1e9,
                          fallback="relaxed_kl", batch_size=2)
    r_want, t = _naive(llama, cands, kl_threshold=1e-9, steering_threshold=-1e9, batch_size=2).relaxed()
    got = fb.exploratory["candidate"]
    assert (got.layer, got.pos) == (r_want.layer, r_want.pos) and fb.exploratory["kl_threshold"] == pytest.approx(t)
    assert got.kl == pytest.approx(r_want.kl, abs=1e-6) and got.kl_prompts == n
    # with a real steering filter the fallback scores steering first and finishes only the KLs of candidates that
    # induce refusal: the same exploratory candidate, and the others' KLs stay stopped
    scored = [c for c in naive.table if c.layer < limit]
    st_t = sorted(c.steering_score for c in scored)[len(scored) // 2]
    r_want, t = _naive(llama, cands, kl_threshold=1e-9, steering_threshold=st_t, batch_size=2).relaxed()
    fb = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e-9, steering_threshold=st_t,
                          fallback="relaxed_kl", batch_size=2)
    got = fb.exploratory["candidate"]
    assert (got.layer, got.pos) == (r_want.layer, r_want.pos) and fb.exploratory["kl_threshold"] == pytest.approx(t)
    left = [c for c in fb.table if c.layer < limit and c.steering_score == c.steering_score and c.steering_score <= st_t]
    assert left and all(c.kl_prompts < n for c in left if c.kl > 1e-9), "steering-first did not skip any KL"
    kf = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e-9, steering_threshold=st_t,
                          fallback="relaxed_kl", fallback_order="kl_first", batch_size=2)
    got = kf.exploratory["candidate"]
    assert (got.layer, got.pos) == (r_want.layer, r_want.pos) and kf.exploratory["kl_threshold"] == pytest.approx(t)
    assert got.kl == pytest.approx(r_want.kl, abs=1e-6) and got.steering_score == pytest.approx(r_want.steering_score, abs=1e-6)
    with pytest.raises(InputError, match="fallback_order"):
        select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, fallback="relaxed_kl", fallback_order="fast")


def test_nothing_passes_is_said_and_the_fallback_is_exploratory(llama, cands):
    toks = refusal_tokens(llama.tokenizer)
    sel = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e-9, steering_threshold=-1e9)
    assert sel.best is None and sel.status == NO_DIRECTION == "no direction passes the published filters"
    assert sel.exploratory is None and sel.to_dict()["status"] == NO_DIRECTION
    with pytest.raises(InputError, match="no direction passes the published filters"):
        sel.vector(cands)
    fb = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e-9, steering_threshold=-1e9,
                          fallback="relaxed_kl")
    assert fb.best is None and fb.status == NO_DIRECTION
    assert fb.exploratory["label"] == EXPLORATORY and fb.exploratory["label"].startswith("exploratory")
    # the lazily scored fallback is the one relaxed() finds on the naive, fully scored table
    naive = _naive(llama, cands, kl_threshold=1e-9, steering_threshold=-1e9)
    want, t = naive.relaxed()
    got = fb.exploratory["candidate"]
    assert (got.layer, got.pos) == (want.layer, want.pos) and fb.exploratory["kl_threshold"] == pytest.approx(t)
    assert got.ablation_score == pytest.approx(want.ablation_score, abs=1e-4)
    assert fb.to_dict()["exploratory"]["candidate"]["layer"] == want.layer


def test_the_selected_position_is_the_vector_used(llama, cands):
    sel = select_direction(llama, cands, HARMFUL, HARMLESS, refusal_tokens=refusal_tokens(llama.tokenizer), positions=[-3, -2],
                           kl_threshold=1e9, steering_threshold=-1e9)
    b = sel.best
    assert b.pos in (-3, -2)
    v = sel.vector(cands)
    assert torch.equal(v, cands.vectors[cands.n_positions + b.pos, cands.layers.index(b.layer)])
    assert not torch.equal(v, cands.vector(b.layer))  # the last offset is not what was selected
    with pytest.raises(InputError, match="needs the Directions"):
        sel.vector()


def _splitting_tokens(model, harmful, harmless):
    """A token set under which some harmful prompts score > 0, some harmless ones < 0, and the filter drops at
    least one prompt (a random model refuses nothing with the real refusal openers)."""
    lp = last_logprobs(model, list(harmful) + list(harmless))
    order = lp.exp().mean(0).argsort(descending=True).tolist()
    for k in range(1, len(order)):
        s = token_set_logodds(lp, order[:k])
        h, n = s[: len(harmful)], s[len(harmful):]
        if (h > 0).any() and (n < 0).any() and ((h <= 0).any() or (n >= 0).any()):
            return order[:k], s
    raise AssertionError("no splitting token set")


def test_prompts_are_filtered_by_the_models_refusal_score(llama):
    toks, s = _splitting_tokens(llama, HARMFUL, HARMLESS)
    kh, ks, counts = filter_by_refusal_score(llama, HARMFUL, HARMLESS, refusal_tokens=toks)
    sh, ss = s[: len(HARMFUL)].tolist(), s[len(HARMFUL):].tolist()
    assert kh == [p for p, v in zip(HARMFUL, sh) if v > 0] and ks == [p for p, v in zip(HARMLESS, ss) if v < 0]
    assert counts == {"harmful": {"n": 4, "kept": len(kh), "rule": "refusal score > 0"},
                      "harmless": {"n": 4, "kept": len(ks), "rule": "refusal score < 0"}}
    assert len(kh) + len(ks) < 8 and (kh, ks, counts) == filter_prompts(llama, HARMFUL, HARMLESS, tokens=toks)
    # the random model does not refuse: with the tokenizer's refusal openers no harmful prompt is kept
    with pytest.raises(InputError, match="none of the 4 harmful prompts has refusal score > 0"):
        filter_prompts(llama, HARMFUL, HARMLESS)


def test_refusal_direction_runs_the_published_pipeline(llama):
    train_h, train_s = HARMFUL + [p + " Now." for p in HARMFUL], HARMLESS + [p + " Now." for p in HARMLESS]
    toks, _ = _splitting_tokens(llama, HARMFUL, HARMLESS)  # the train sets contain the val sets
    sel = refusal_direction(llama, train_h, train_s, HARMFUL, HARMLESS, refusal_tokens=toks, kl_threshold=1e9, steering_threshold=-1e9)
    f = sel.filtering
    assert set(f) == {"train", "val"} and f["train"]["harmful"]["n"] == 8 and f["val"]["harmless"]["n"] == 4
    kh, ks, _ = filter_by_refusal_score(llama, HARMFUL, HARMLESS, refusal_tokens=toks)
    assert sel.config["n_harmful"] == len(kh) == f["val"]["harmful"]["kept"] and sel.config["n_harmless"] == len(ks)
    P = len(encode(llama, HARMFUL[0], "post_instruction").groups)  # every template token after the user message
    d = sel.directions
    assert d.n_positions == P and d.meta["position"] == "post_instruction" and d.meta["n_positive"] == f["train"]["harmful"]["kept"]
    assert len(sel.table) == P * llama.n_layers
    assert torch.equal(sel.vector(), d.vector(sel.best.layer, sel.best.pos))
