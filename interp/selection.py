"""Direction selection as Arditi et al. publish it (andyrdt/refusal_direction ``select_direction``): score every
candidate r = r_{l,p} of a ``Directions`` set (every layer × every post-instruction offset) on validation prompts
and pick, among the candidates that pass the filters, the one whose ablation lowers refusal most.

Per candidate (refusal score = definition 5, first-token log-odds of the refusal token set R):
- ``kl``: mean over harmless prompts of KL(base ‖ ablated) of the next-token distribution, r̂ ablated at every
  layer (definition 3);
- ``steering_score``: mean refusal score on harmless prompts with α r added at the output of block l, every
  position (definition 4; α = 1 as published);
- ``ablation_score``: mean refusal score on harmful prompts with r̂ ablated at every layer (lower = better).

Filters (the published defaults): layer < ⌊0.8 L⌋ (the last 20 % of layers are pruned, ``int(L · 0.8)`` as the
published code computes it), KL ≤ 0.1, steering score > 0; a candidate with a NaN score or a zero / non-finite
vector is dropped. The selected candidate has the lowest ablation score among those that pass; when none passes
the selection says :data:`NO_DIRECTION` and ``best`` is ``None`` — a fallback (``fallback="relaxed_kl"``) is kept
apart in ``Selection.exploratory`` and is never the selection. Deviations from the published code: the steering
filter is strict (> 0; the published code keeps a score of exactly 0 — a measure-zero difference), the KL and the
log-odds are computed from log-softmax without its ε, and h_l is the *output* of block l throughout this project
(the published code reads and adds at the block input), so steering adds at the output of the layer the direction
was read from.

Two implementations give the same scores:
- ``method="naive"``: the published loop — every candidate, every score, one intervention context each;
- ``method="cheap"`` (default, issue 18): the prompts are tokenised and padded once and the baseline passes run
  once; candidates are scored in the published filter order and a candidate is not scored further once it fails
  (layer filter → KL on harmless → steering on harmless → ablation on harmful, the last only to rank survivors;
  skipped scores are NaN and the reason says "not scored"); the KL of a candidate stops once its lower bound
  Σ_{prompts scored} KL / n exceeds the threshold (per-prompt KL ≥ 0, so it has failed exactly; ``kl`` then holds
  that bound and ``kl_prompts`` says over how many of the n prompts); the steering pass reuses the unablated hidden state at
  the output of block l (blocks 0…l are unchanged by an addition after block l, so it is exact) and runs only
  blocks l+1…; ``candidate_batch`` > 1 stacks that many candidates in one forward (each replica of the batch with
  its own direction — equal up to float rounding of the larger matmuls). Ablation at every layer changes every
  position from the embedding on, so the KL and ablation passes share nothing between candidates but the
  tokenisation and the baseline.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .activations import Batch, make_batches
from .directions import Directions, mean_diff
from .generation import encode_prompts
from .hooks import hidden_of, hooked, with_hidden
from .interventions import ablate, check_direction, residual_writers, steer
from .io import InputError, versions, write_json
from .logits import kl_divergence, last_logprobs, token_set_logodds
from .models import Item, Model

NO_DIRECTION = "no direction passes the published filters"
EXPLORATORY = ("exploratory: chosen with a relaxed KL filter after no candidate passed the published filters; "
               "not the published selection and never counted as reproducing it")
FILTERS = ("nonfinite", "layer", "kl", "steering")  # the published order; ``Candidate.failed`` names these
NAN = float("nan")


@dataclass
class Candidate:
    """One candidate direction (``layer``, template offset ``pos``) and its scores; NaN = not scored.

    ``failed``: the filters it failed, among :data:`FILTERS` (with the cheap sweep only the first one is known:
    later scores are not computed); ``reason``: the same in words."""

    layer: int
    pos: int
    ablation_score: float
    steering_score: float
    kl: float
    passed: bool
    reason: str = ""
    failed: list[str] = field(default_factory=list)
    kl_prompts: int | None = None  # harmless prompts scored for ``kl``; fewer than all: ``kl`` is a lower bound


@dataclass
class Selection:
    """The sweep table, the baseline, the selected candidate (``best``; ``None`` when nothing passes) and how the
    validation (and, with :func:`refusal_direction`, training) prompts were filtered.

    ``status``: ``"selected"`` or :data:`NO_DIRECTION`. ``exploratory``: a fallback candidate when nothing passes
    (``{"candidate", "kl_threshold", "label"}``), labelled as such; ``None`` otherwise. ``directions``: the
    candidate set when the selection was made from one (not serialised)."""

    best: Candidate | None
    table: list[Candidate]
    baseline: dict
    config: dict = field(default_factory=dict)
    status: str = ""
    filtering: dict = field(default_factory=dict)
    exploratory: dict | None = None
    directions: Directions | None = field(default=None, repr=False, compare=False)

    def vector(self, directions: Directions | None = None) -> torch.Tensor:
        """The selected direction ``[d_model]``: the row at the selected layer *and* template offset."""
        d = directions if directions is not None else self.directions
        if self.best is None:
            raise InputError(f"{self.status or NO_DIRECTION}: there is no selected vector "
                             "(an exploratory fallback, if one was asked for, is in Selection.exploratory)")
        if d is None:
            raise InputError("Selection.vector needs the Directions the candidates came from")
        return d.vector(self.best.layer, self.best.pos)

    def relaxed(self, factor: float = 2.0, max_kl: float = 10.0) -> tuple[Candidate, float] | None:
        """Exploratory, never the selection: the least-relaxed KL filter that admits a candidate. The threshold is
        multiplied by ``factor`` until some candidate below the depth limit whose addition induces refusal
        (steering score > the steering threshold) has KL ≤ it (up to ``max_kl``); among those, the lowest ablation
        score. Returns (candidate, threshold used) or None. Needs a fully scored table (``method="naive"`` or
        ``early_stop=False``); ``select_direction(fallback="relaxed_kl")`` computes the same lazily into
        ``exploratory``, which this returns when present.

        Small models can fail the 0.1 filter at every layer; relaxing KL least keeps the ablated model as coherent
        as possible, where taking the lowest ablation score outright picks layers whose ablation breaks the model."""
        if self.exploratory is not None and factor == 2.0 and max_kl == 10.0:  # already computed (lazily) by the sweep
            return self.exploratory["candidate"], self.exploratory["kl_threshold"]
        limit = self.config.get("layer_limit", int(self.config.get("n_layers", 10**9) * self.config.get("max_layer_frac", 0.8)))
        thr = self.config.get("steering_threshold", 0.0)
        ok = [c for c in self.table if c.layer < limit and c.kl == c.kl and c.steering_score == c.steering_score
              and c.steering_score > thr and c.ablation_score == c.ablation_score]
        t = self.config.get("kl_threshold", 0.1)
        while ok and t <= max_kl:
            passing = [c for c in ok if c.kl <= t]
            if passing:
                return min(passing, key=lambda c: c.ablation_score), t
            t *= factor
        return None

    def to_dict(self) -> dict:
        ex = None if self.exploratory is None else {**self.exploratory, "candidate": asdict(self.exploratory["candidate"])}
        return {"status": self.status, "best": asdict(self.best) if self.best else None, "baseline": self.baseline,
                "filtering": self.filtering, "exploratory": ex, "config": self.config, "table": [asdict(c) for c in self.table]}

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())


# ----------------------------------------------------------------------------------------------------------------
# Prompt filtering by the model's own refusal score (published: run_pipeline.filter_data)


def filter_by_refusal_score(model: Model, harmful: Sequence[Item], harmless: Sequence[Item], *, refusal_tokens: Sequence[int],
                            batch_size: int = 16, what: str = "") -> tuple[list, list, dict]:
    """Keep the harmful prompts the model refuses (refusal score > 0) and the harmless ones it does not (< 0).

    Returns ``(harmful_kept, harmless_kept, counts)``, ``counts = {"harmful": {"n", "kept", "rule"}, "harmless": …}``.
    A class left empty raises :class:`InputError` (the model does not separate the two classes at all)."""
    out, counts = [], {}
    for name, items, keep, rule in (("harmful", harmful, lambda s: s > 0, "refusal score > 0"),
                                    ("harmless", harmless, lambda s: s < 0, "refusal score < 0")):
        if not items:
            raise InputError(f"{what or 'filtering'}: no {name} prompts given")
        scores = token_set_logodds(last_logprobs(model, items, batch_size=batch_size), refusal_tokens)  # [n] float64
        kept = [x for x, s in zip(items, scores.tolist()) if keep(s)]
        if not kept:
            raise InputError(f"{what or 'filtering'}: none of the {len(items)} {name} prompts has {rule} under {model.name}; "
                             f"the model does not {'refuse them' if name == 'harmful' else 'answer them'} (an aligned model is needed)")
        out.append(kept)
        counts[name] = {"n": len(items), "kept": len(kept), "rule": rule}
    return out[0], out[1], counts


# ----------------------------------------------------------------------------------------------------------------
# The scoring passes


@dataclass
class _Prompts:
    """A prompt set tokenised and padded once: ``batches`` (left-padded, length-sorted), ``n`` items."""

    batches: list[Batch]
    n: int


def _prepare(model: Model, items: Sequence[Item], batch_size: int) -> _Prompts:
    return _Prompts(make_batches(encode_prompts(model, items), batch_size, model.tokenizer.pad_token_id, model.device), len(items))


def _forward_last(model: Model, b: Batch, K: int = 1) -> torch.Tensor:
    """Last-position log-probs of batch ``b`` replicated ``K`` times (candidate-major) → ``[K, B, vocab]`` float32."""
    rep = (lambda t: t.repeat(K, 1)) if K > 1 else (lambda t: t)
    with torch.inference_mode():
        logits = model.hf(input_ids=rep(b.input_ids), attention_mask=rep(b.attention_mask), position_ids=rep(b.position_ids),
                          use_cache=False, logits_to_keep=1).logits[:, -1]  # [K·B, V]
    return torch.log_softmax(logits.float(), dim=-1).cpu().view(K, len(b.index), -1)


def _scores(model: Model, p: _Prompts, K: int = 1) -> torch.Tensor:
    """Last-position log-probs of every prompt under the active interventions → ``[K, n, vocab]`` (input order);
    the same numbers as :func:`interp.logits.last_logprobs` for K = 1 (same batches, same call)."""
    out: torch.Tensor | None = None
    for b in p.batches:
        lp = _forward_last(model, b, K)
        if out is None:
            out = torch.empty(K, p.n, lp.shape[-1])
        out[:, b.index] = lp
    assert out is not None
    return out


@contextlib.contextmanager
def _ablate_rows(model: Model, vectors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Directional ablation of K directions (``[d]`` each) at every layer, replica k of a candidate-major
    ``[K·B, T, d]`` batch ablating r̂_k: h ← h − (h·r̂_k) r̂_k at the block-0 input and every attention / MLP output
    (as :func:`interp.interventions.ablate` with ``layers="all"``). K = 1 uses ``ablate`` itself."""
    if len(vectors) == 1:
        with ablate(model, vectors[0]):
            yield
        return
    w = residual_writers(model)
    K = len(vectors)
    units = torch.stack([check_direction(model, v) for v in vectors])  # [K, d] float32 unit rows

    def proj(h: torch.Tensor) -> torch.Tensor:
        r = units.to(dtype=h.dtype, device=h.device)  # [K, d]
        h4 = h.view(K, -1, *h.shape[1:])  # [K, B, T, d]
        c = torch.einsum("kbtd,kd->kbt", h4, r)  # [K, B, T]
        return (h4 - c[..., None] * r[:, None, None, :]).view(h.shape)

    def pre(module, args, kwargs):
        if args:
            return (proj(args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = proj(kwargs["hidden_states"])
        return args, kwargs

    def post(module, args, output):
        return with_hidden(output, proj(hidden_of(output)))

    with hooked(forward=[(m, post) for m in w.attn + w.mlp], pre=[(model.layers[0], pre)]):
        yield


class _Skip(nn.Module):
    """Stands in for decoder block ``i`` ≤ l during a steering pass that starts from a cached h_l: blocks before l
    pass their input through (its value is never used), block l returns ``value``."""

    def __init__(self, original: nn.Module, value: torch.Tensor | None, as_tuple: bool):
        super().__init__()
        self.value, self.as_tuple = value, as_tuple
        if hasattr(original, "attention_type"):
            self.attention_type = original.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        out = hidden_states if self.value is None else self.value
        return (out,) if self.as_tuple else out


@contextlib.contextmanager
def _start_after(model: Model, layer: int, h: torch.Tensor, as_tuple: bool) -> Iterator[None]:
    """Run the decoder from the output of block ``layer`` = ``h`` ``[B', T, d]``: blocks 0…layer are replaced by
    :class:`_Skip` (restored on exit), so only blocks layer+1… compute."""
    blocks = model.layers
    saved = [blocks[i] for i in range(layer + 1)]
    try:
        for i in range(layer + 1):
            blocks[i] = _Skip(saved[i], h if i == layer else None, as_tuple)
        yield
    finally:
        for i, m in enumerate(saved):
            blocks[i] = m


def _hidden_states(model: Model, b: Batch, layers: list[int]) -> tuple[dict[int, torch.Tensor], bool]:
    """Unintervened h_l ``[B, T, d]`` at the output of each block in ``layers`` (one forward, stopped after the
    deepest), and whether the blocks return tuples."""
    from .activations import run_hooks_backend

    got: dict[int, torch.Tensor] = {}
    kind = {"tuple": False}

    def tuple_probe(module, args, output):
        kind["tuple"] = isinstance(output, tuple)

    with hooked(forward=[(model.layers[max(layers)], tuple_probe)]):
        run_hooks_backend(model, b, layers, lambda l, h: got.__setitem__(l, h))
    return got, kind["tuple"]


# ----------------------------------------------------------------------------------------------------------------
# The sweep


def _reason(c: Candidate, cfg: dict) -> str:
    words = {"nonfinite": "zero or non-finite direction", "layer": f"layer ≥ {cfg['layer_limit']} (last {1 - cfg['max_layer_frac']:.0%} pruned)",
             "kl": f"KL {c.kl:.3g} > {cfg['kl_threshold']}" if not _kl_partial(c, cfg) else
             f"KL ≥ {c.kl:.3g} > {cfg['kl_threshold']} (stopped after {c.kl_prompts} of {cfg['n_harmless']} prompts)",
             "steering": f"steering score {c.steering_score:.3g} ≤ {cfg['steering_threshold']}",
             "nan": "a score is NaN"}
    parts = [words[f] for f in c.failed]
    missing = [n for n, v in (("KL", c.kl), ("steering", c.steering_score), ("ablation", c.ablation_score)) if v != v]
    if missing and "nonfinite" not in c.failed and "nan" not in c.failed:
        parts.append(f"{', '.join(missing)} not scored")
    return "; ".join(parts)


def _kl_partial(c: Candidate, cfg: dict) -> bool:
    return c.kl_prompts is not None and c.kl_prompts < cfg["n_harmless"]


def _judge(c: Candidate, cfg: dict, complete: bool) -> None:
    """Set ``failed`` / ``passed`` / ``reason`` from the scores (``complete``: every filter is checked, else the
    first failure ends the checks, as in the cheap sweep)."""
    if "nonfinite" in c.failed:
        c.passed = False
        c.reason = _reason(c, cfg)
        return
    failed = []
    checks = (("layer", lambda: c.layer >= cfg["layer_limit"]), ("kl", lambda: c.kl == c.kl and c.kl > cfg["kl_threshold"]),
              ("steering", lambda: c.steering_score == c.steering_score and not c.steering_score > cfg["steering_threshold"]))
    for name, bad in checks:
        if bad():
            failed.append(name)
            if not complete:
                break
    if not failed and any(v != v for v in (c.kl, c.steering_score, c.ablation_score)):
        failed.append("nan")
    c.failed, c.passed = failed, not failed
    c.reason = _reason(c, cfg)


def select_direction(
    model: Model,
    directions: Directions,
    harmful: Sequence[Item],
    harmless: Sequence[Item],
    *,
    refusal_tokens: Sequence[int],
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    kl_threshold: float = 0.1,
    steering_threshold: float = 0.0,
    max_layer_frac: float = 0.8,
    steer_alpha: float = 1.0,
    filter_val: bool = False,
    method: Literal["cheap", "naive"] = "cheap",
    early_stop: bool = True,
    candidate_batch: int = 1,
    fallback: Literal["relaxed_kl"] | None = None,
    fallback_order: Literal["steering_first", "kl_first"] = "steering_first",
    batch_size: int = 16,
    progress: bool | None = None,
) -> Selection:
    """Score the candidates ``layers`` (default: all in ``directions``) × ``positions`` (default: every template
    offset) on the validation prompts and select as published (module docstring). Every candidate is in the table;
    those at layers ≥ ⌊max_layer_frac · L⌋ fail the layer filter (the cheap sweep does not score them).

    ``filter_val``: first keep harmful prompts with refusal score > 0 and harmless ones with score < 0 (counts in
    ``Selection.filtering["val"]``; :func:`refusal_direction` does this by default). ``early_stop=False`` makes
    the cheap sweep score every candidate fully (same numbers as ``method="naive"``). ``fallback="relaxed_kl"``:
    when nothing passes, put the :meth:`Selection.relaxed` candidate in ``Selection.exploratory`` (scoring lazily
    what it needs); ``best`` stays ``None``. ``fallback_order``: what the lazy fallback of the cheap sweep scores
    first at each relaxed threshold — the steering score of every candidate whose KL bound admits it, then the KLs
    of those that induce refusal (``"steering_first"``), or the stopped KLs, then the steering of those admitted
    (``"kl_first"``). The same exploratory candidate either way; which is faster depends on how many candidates
    induce refusal (``bench/selection.py`` times both).
    """
    if not harmful or not harmless:
        raise InputError("select_direction needs non-empty harmful and harmless validation prompts")
    if not refusal_tokens:
        raise InputError("refusal_tokens is empty")
    if method not in ("cheap", "naive"):
        raise InputError(f"method must be 'cheap' or 'naive', got {method!r}")
    if fallback not in (None, "relaxed_kl"):
        raise InputError(f"fallback must be None or 'relaxed_kl', got {fallback!r}")
    if fallback_order not in ("steering_first", "kl_first"):
        raise InputError(f"fallback_order must be 'steering_first' or 'kl_first', got {fallback_order!r}")
    if not isinstance(candidate_batch, int) or candidate_batch < 1:
        raise InputError(f"candidate_batch must be an integer ≥ 1, got {candidate_batch!r}")
    layers = list(directions.layers if layers is None else layers)
    for l in layers:
        if l not in directions.layers:
            raise InputError(f"layer {l} not in these directions (layers {directions.layers[0]}…{directions.layers[-1]})")
    positions = list(range(-directions.n_positions, 0) if positions is None else positions)
    for p in positions:
        if not -directions.n_positions <= p < directions.n_positions:
            raise InputError(f"position {p} out of range for {directions.n_positions} template offsets")
    tokens = list(refusal_tokens)
    filtering: dict = {}
    if filter_val:
        harmful, harmless, filtering["val"] = filter_by_refusal_score(model, harmful, harmless, refusal_tokens=tokens,
                                                                      batch_size=batch_size, what="validation prompts")
    cfg = {"model": model.name, "n_layers": model.n_layers, "n_harmful": len(harmful), "n_harmless": len(harmless),
           "kl_threshold": kl_threshold, "steering_threshold": steering_threshold, "max_layer_frac": max_layer_frac,
           "layer_limit": int(model.n_layers * max_layer_frac), "steer_alpha": steer_alpha, "layers": layers, "positions": positions,
           "method": method, "early_stop": early_stop if method == "cheap" else False, "candidate_batch": candidate_batch,
           "fallback": fallback, "fallback_order": fallback_order, "batch_size": batch_size,
           "direction_meta": {k: v for k, v in directions.meta.items() if k != "versions"}, "versions": versions()}
    table = [Candidate(l, p, NAN, NAN, NAN, False) for p in positions for l in layers]
    vec = {}
    for c in table:
        v = directions.vector(c.layer, c.pos)
        if not torch.isfinite(v).all() or v.norm() == 0:
            c.failed = ["nonfinite"]
        else:
            vec[(c.layer, c.pos)] = v
    disable = None if progress is None else not progress
    if method == "naive":
        base = _naive(model, table, vec, harmful, harmless, tokens, cfg, disable)
    else:
        base = _cheap(model, table, vec, harmful, harmless, tokens, cfg, early_stop, candidate_batch, disable)
    for c in table:
        _judge(c, cfg, complete=method == "naive" or not early_stop)
    passing = [c for c in table if c.passed]
    best = min(passing, key=lambda c: c.ablation_score) if passing else None
    sel = Selection(best, table, base.pop("summary"), cfg, "selected" if best else NO_DIRECTION, filtering)
    if best is None and fallback == "relaxed_kl":
        sel.exploratory = base["lazy"]() if "lazy" in base else _exploratory(sel)
        for c in table:  # the fallback may have scored more: refresh the reasons (no candidate starts passing)
            _judge(c, cfg, complete=method == "naive" or not early_stop)
    return sel


def _exploratory(sel: Selection) -> dict | None:
    r = sel.relaxed()
    return None if r is None else {"candidate": r[0], "kl_threshold": r[1], "label": EXPLORATORY}


def _naive(model, table, vec, harmful, harmless, tokens, cfg, disable) -> dict:
    """The published loop: per candidate, ablation on harmful, KL on harmless, steering on harmless."""
    kw = dict(batch_size=cfg["batch_size"])
    base_harmless = last_logprobs(model, harmless, **kw)
    summary = {"harmful_score": token_set_logodds(last_logprobs(model, harmful, **kw), tokens).mean().item(),
               "harmless_score": token_set_logodds(base_harmless, tokens).mean().item()}
    for c in tqdm([c for c in table if (c.layer, c.pos) in vec], desc="selection (naive)", disable=disable, leave=False):
        v = vec[(c.layer, c.pos)]
        with ablate(model, v):
            c.ablation_score = token_set_logodds(last_logprobs(model, harmful, **kw), tokens).mean().item()
            c.kl = kl_divergence(base_harmless, last_logprobs(model, harmless, **kw)).mean().item()
            c.kl_prompts = len(harmless)
        with steer(model, v, layers=[c.layer], alpha=cfg["steer_alpha"]):
            c.steering_score = token_set_logodds(last_logprobs(model, harmless, **kw), tokens).mean().item()
    return {"summary": summary}


def _cheap(model, table, vec, harmful, harmless, tokens, cfg, early_stop, K, disable) -> dict:
    """The cheap sweep (module docstring). Fills the candidates' scores in place; returns the baseline summary and
    the lazy exploratory fallback."""
    bs = cfg["batch_size"]
    P_harmful, P_harmless = _prepare(model, harmful, bs), _prepare(model, harmless, bs)
    base_harmless = _scores(model, P_harmless)[0]  # [n_harmless, V]
    summary = {"harmful_score": token_set_logodds(_scores(model, P_harmful)[0], tokens).mean().item(),
               "harmless_score": token_set_logodds(base_harmless, tokens).mean().item()}
    limit, alpha = cfg["layer_limit"], cfg["steer_alpha"]
    live = [c for c in table if (c.layer, c.pos) in vec and (c.layer < limit or not early_stop)]
    bar = tqdm(total=len(live), desc="selection", disable=disable, leave=False)

    def chunks(cs: list[Candidate]):
        for i in range(0, len(cs), K):
            yield cs[i : i + K]

    kl_sum: dict[int, float] = {}  # id(candidate) → Σ KL over the harmless batches scored so far
    kl_prompts = [0]  # kl_prompts[i]: harmless prompts in the first i batches
    for b in P_harmless.batches:
        kl_prompts.append(kl_prompts[-1] + len(b.index))
    kl_next: dict[int, int] = {}  # id(candidate) → index of the next harmless batch to score

    def score_kl(cs: list[Candidate], stop: float | None) -> None:
        """KL(base ‖ ablated) over the harmless batches, resuming where a candidate stopped. Per-prompt KL is ≥ 0,
        so Σ over the batches scored / n is a lower bound of the mean: with ``stop`` set, a candidate is not scored
        further once that bound exceeds ``stop`` (+ 1e-6 for float rounding) — it has failed the filter exactly —
        and keeps the bound as ``kl`` (``kl_prompts`` < n)."""
        n, nb = P_harmless.n, len(P_harmless.batches)
        by_start: dict[int, list[Candidate]] = {}
        for c in cs:
            if kl_next.get(id(c), 0) < nb:
                by_start.setdefault(kl_next.get(id(c), 0), []).append(c)
        unfinished: list[Candidate] = []  # candidates whose group was left early because others in it stopped
        for start, same in by_start.items():
            for group in chunks(same):
                with _ablate_rows(model, [vec[(c.layer, c.pos)] for c in group]):  # replica k ablates candidate k
                    for bi in range(start, nb):
                        b = P_harmless.batches[bi]
                        lp = _forward_last(model, b, len(group))  # [k, B, V]
                        for c, q in zip(group, lp):
                            kl_sum[id(c)] = kl_sum.get(id(c), 0.0) + kl_divergence(base_harmless[b.index], q).sum().item()
                            kl_next[id(c)] = bi + 1
                            c.kl, c.kl_prompts = kl_sum[id(c)] / n, kl_prompts[bi + 1]
                        if stop is not None and any(c.kl > stop + 1e-6 for c in group):
                            unfinished += [c for c in group if not c.kl > stop + 1e-6 and bi + 1 < nb]
                            break
        if unfinished:
            score_kl(unfinished, stop)

    def score_ablation(cs: list[Candidate]) -> None:
        for group in chunks(cs):
            with _ablate_rows(model, [vec[(c.layer, c.pos)] for c in group]):
                lp = _scores(model, P_harmful, len(group))
            for c, q in zip(group, lp):
                c.ablation_score = token_set_logodds(q, tokens).mean().item()

    def score_steering(cs: list[Candidate]) -> None:
        """Addition at block l's output, started from the cached unintervened h_l; candidates at one layer share
        a forward (``K`` at a time)."""
        if not cs:
            return
        by_layer: dict[int, list[Candidate]] = {}
        for c in cs:
            by_layer.setdefault(c.layer, []).append(c)
        sums = {id(c): 0.0 for c in cs}
        for b in P_harmless.batches:
            hs, as_tuple = _hidden_states(model, b, sorted(by_layer))
            for l, group_l in by_layer.items():
                h = hs[l]  # [B, T, d]
                mask = b.attention_mask.to(h.dtype)[..., None]  # [B, T, 1]: never steer padding
                for group in chunks(group_l):
                    k = len(group)
                    # the same arithmetic as steer()'s hook, in the residual's dtype: h + mask · (α v)
                    V = torch.stack([check_direction(model, vec[(c.layer, c.pos)], unit=False) * float(alpha) for c in group]).to(h.dtype)
                    start = torch.cat([h + mask * V[j] for j in range(k)]) if k > 1 else h + mask * V[0]  # [k·B, T, d]
                    with _start_after(model, l, start, as_tuple):
                        lp = _forward_last(model, b, k)  # [k, B, V]
                    for c, q in zip(group, lp):
                        sums[id(c)] += token_set_logodds(q, tokens).sum().item()
        for c in cs:
            c.steering_score = sums[id(c)] / P_harmless.n

    # 1. KL on harmless for every candidate below the depth limit; 2. steering for those within the KL filter;
    # 3. ablation on harmful for those that also induce refusal (the ranking score)
    kl_t, st_t = cfg["kl_threshold"], cfg["steering_threshold"]
    score_kl(live, kl_t if early_stop else None)
    bar.update(len(live) // 3)
    st = [c for c in live if not early_stop or (c.kl <= kl_t and c.layer < limit)]
    score_steering(st)
    bar.update(len(live) // 3)
    ab = [c for c in st if not early_stop or c.steering_score > st_t]
    score_ablation(ab)
    bar.update(len(live) - 2 * (len(live) // 3))
    bar.close()

    def lazy() -> dict | None:
        """Selection.relaxed() computed over an early-stopped table, threshold by threshold until one admits a
        candidate: steering first for every candidate whose KL (or KL bound) may be ≤ t, then the stopped KLs
        finished only for those that induce refusal — a candidate with steering ≤ the threshold is never admitted,
        whatever its KL — then ablation for the admitted. Same candidate as relaxed() on a fully scored table."""
        ok = [c for c in live if c.layer < limit and c.kl == c.kl]
        t = kl_t
        while ok and t <= 10.0:
            maybe = [c for c in ok if c.kl <= t]  # a finished KL ≤ t, or a stopped one whose bound is ≤ t
            if cfg["fallback_order"] == "kl_first":
                score_kl([c for c in maybe if _kl_partial(c, cfg)], t)  # stops again once the bound exceeds t
                maybe = [c for c in maybe if c.kl <= t]
            score_steering([c for c in maybe if c.steering_score != c.steering_score])
            steer = [c for c in maybe if c.steering_score > st_t]
            score_kl([c for c in steer if _kl_partial(c, cfg)], t)  # (steering_first) finish only those that induce
            induce = [c for c in steer if c.kl <= t]
            score_ablation([c for c in induce if c.ablation_score != c.ablation_score])
            if induce:
                return {"candidate": min(induce, key=lambda c: c.ablation_score), "kl_threshold": t, "label": EXPLORATORY}
            t *= 2.0
        return None

    return {"summary": summary, "lazy": lazy}


def refusal_direction(
    model: Model,
    harmful_train: Sequence[Item],
    harmless_train: Sequence[Item],
    harmful_val: Sequence[Item],
    harmless_val: Sequence[Item],
    *,
    refusal_tokens: Sequence[int],
    filter_train: bool = True,
    filter_val: bool = True,
    batch_size: int = 16,
    **select_kw,
) -> Selection:
    """The published pipeline up to the selected direction: train and validation prompts filtered by the model's
    own refusal score (:func:`filter_by_refusal_score`), mean-difference candidates at every post-instruction
    position × every layer from the kept train prompts, then :func:`select_direction` on the kept validation
    prompts. The Selection holds the counts (``filtering``) and the candidates (``directions``), so
    ``sel.vector()`` is the selected (layer, position) row. ``select_kw`` goes to :func:`select_direction`."""
    filtering = {}
    if filter_train:
        harmful_train, harmless_train, filtering["train"] = filter_by_refusal_score(
            model, harmful_train, harmless_train, refusal_tokens=refusal_tokens, batch_size=batch_size, what="training prompts")
    d = mean_diff(model, harmful_train, harmless_train, position="post_instruction", batch_size=batch_size,
                  meta={"what": "refusal direction", "filter_train": filter_train})
    sel = select_direction(model, d, harmful_val, harmless_val, refusal_tokens=refusal_tokens, filter_val=filter_val,
                           batch_size=batch_size, **select_kw)
    sel.filtering = {**filtering, **sel.filtering}
    sel.directions = d
    return sel
