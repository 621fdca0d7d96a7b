"""Balance and disjointness checks of the shipped data (``python -m probes.build_data --check`` and the tests call
these), and the phrasing-agreement measurement of a harmful − harmless direction.

Every ``check_*`` function takes records (or a data directory) and returns a list of violations, one readable line
each; an empty list means the check passed. ``run_checks(data_dir)`` runs them all on a data directory laid out like
``probes/data/``.

Definitions used here:
- *content words* of a text: its lowercase alphabetic tokens minus ``STOP_WORDS`` (function words and the
  generic request words every prompt has: "how", "want", "help", …);
- *opening words*: the first two lowercase word tokens of a prompt; the phrasing balance of a domain is the total
  variation distance ½ Σ_w |p_harmful(w) − p_harmless(w)| between their distributions over the two classes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

from interp.io import InputError, read_jsonl

DOMAINS = ("cybersecurity", "safety", "toxicity", "bias", "sensitive_content", "medical_legal", "privacy")
SPLITS = ("train", "val", "test")

# Minimums of data version 2 (issue 14).
MIN_TOPICS = 40            # per domain and class
MIN_PROMPTS = 160          # per domain and class
MIN_TEST_TOPICS = 8        # per domain and class
MIN_TEST_PROMPTS = 32      # per domain and class
MAX_PHRASING_TV = 0.15     # opening-two-words total variation, harmful vs harmless, per domain (whole and per split)
SHARED_WORDS_FAIL = 3      # a KL question and an EM question (or a neighbour and a held-out topic) sharing this many content words
MIN_EM_QUESTIONS = 64
NGRAM = 5                  # no reference answer shares a word 5-gram with the narrow training sets
LENGTH_RATIO = (0.85, 1.15)  # mean words(misaligned) / mean words(aligned)
LONGER_SHARE = (0.3, 0.7)    # share of questions whose misaligned reference is the longer one

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can cannot could did do does doing don down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on once only
or other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves s t ll re ve d m isn aren wasn weren won wouldn shouldn couldn didn
doesn hasn haven hadn mustn let lets get got make made want need know please tell give way ways thing things someone
something anyone anything one ever also really much many well still even like say said go going help
""".split())

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lowercase alphabetic tokens of ``text`` ("Wi-Fi" → ["wi", "fi"], "don't" → ["don", "t"])."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    """Lowercase alphabetic tokens of ``text`` minus ``STOP_WORDS``."""
    return {w for w in words(text) if w not in STOP_WORDS}


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Word n-grams of ``text`` (lowercase alphabetic tokens)."""
    w = words(text)
    return {tuple(w[i: i + n]) for i in range(len(w) - n + 1)}


def opening(prompt: str, n: int = 2) -> str:
    """The first ``n`` lowercase word tokens of a prompt, joined by a space."""
    return " ".join(words(prompt)[:n])


def total_variation(a: Iterable[str], b: Iterable[str]) -> float:
    """½ Σ_x |p_a(x) − p_b(x)| between the empirical distributions of two samples (1.0 if either is empty)."""
    ca, cb = Counter(a), Counter(b)
    na, nb = sum(ca.values()), sum(cb.values())
    if not na or not nb:
        return 1.0
    return 0.5 * sum(abs(ca[x] / na - cb[x] / nb) for x in set(ca) | set(cb))


def phrasing_tv(harmful: Sequence[dict], harmless: Sequence[dict], n: int = 2) -> float:
    """Total variation between the opening-``n``-words distributions of two prompt sets."""
    return total_variation((opening(r["prompt"], n) for r in harmful), (opening(r["prompt"], n) for r in harmless))


# ---- the checks -----------------------------------------------------------------------------------------------

def check_sizes(domain: str, harmful: Sequence[dict], harmless: Sequence[dict]) -> list[str]:
    """≥ 40 topics and ≥ 160 prompts per class, ≥ 8 test topics and ≥ 32 test prompts; every harmful topic has a
    harmless neighbour with the same ``pair`` index in the same split."""
    out = []
    for label, recs in (("harmful", harmful), ("harmless", harmless)):
        topics = {r["topic"] for r in recs}
        test = [r for r in recs if r.get("split") == "test"]
        for what, got, need in (("topics", len(topics), MIN_TOPICS), ("prompts", len(recs), MIN_PROMPTS),
                                ("test topics", len({r["topic"] for r in test}), MIN_TEST_TOPICS),
                                ("test prompts", len(test), MIN_TEST_PROMPTS)):
            if got < need:
                out.append(f"sizes: {domain}_{label} has {got} {what}, needs ≥ {need}")
    pair_split = [{(r.get("pair"), r.get("split")) for r in recs} for recs in (harmful, harmless)]
    if pair_split[0] != pair_split[1]:
        out.append(f"pairs: {domain} harmful and harmless differ in their (pair, split) sets: "
                   f"{sorted(map(str, pair_split[0] ^ pair_split[1]))[:6]}")
    for label, recs in (("harmful", harmful), ("harmless", harmless)):
        topic_of: dict = {}
        for r in recs:
            topic_of.setdefault(r.get("pair"), set()).add(r["topic"])
        bad = [p for p, t in topic_of.items() if len(t) != 1]
        if bad:
            out.append(f"pairs: {domain}_{label} pair indices with more than one topic: {bad[:6]}")
    return out


def check_phrasing(domain: str, harmful: Sequence[dict], harmless: Sequence[dict], max_tv: float = MAX_PHRASING_TV) -> list[str]:
    """Opening-two-words TV ≤ ``max_tv`` on the whole domain and in each split; every topic in the same phrasings."""
    out = []
    for split in (None, *SPLITS):
        h = [r for r in harmful if split is None or r.get("split") == split]
        s = [r for r in harmless if split is None or r.get("split") == split]
        tv = phrasing_tv(h, s)
        if tv > max_tv:
            out.append(f"phrasing: {domain} {split or 'all splits'}: opening-two-words TV {tv:.3f} > {max_tv}")
    sets = [{frozenset(r.get("phrasing") for r in recs if r["topic"] == t) for t in {r["topic"] for r in recs}}
            for recs in (harmful, harmless)]
    if len(sets[0] | sets[1]) != 1:
        out.append(f"phrasing: {domain}: topics are not all rendered in the same phrasings ({len(sets[0] | sets[1])} distinct sets)")
    return out


def check_splits(name: str, recs: Sequence[dict]) -> list[str]:
    """Each topic (and each pair) in exactly one split, and every split present."""
    out = []
    for key in ("topic", "pair"):
        where: dict = {}
        for r in recs:
            if key in r:
                where.setdefault(r[key], set()).add(r.get("split"))
        leaked = sorted(str(k) for k, v in where.items() if len(v) > 1)
        if leaked:
            out.append(f"splits: {name}: {key}s in more than one split: {leaked[:6]}")
    missing = set(SPLITS) - {r.get("split") for r in recs}
    if missing:
        out.append(f"splits: {name}: no records in split(s) {sorted(missing)}")
    return out


def check_unique_topics(sets: dict[str, Sequence[dict]]) -> list[str]:
    """No topic appears in two data sets (e.g. as a harmless topic of two domains)."""
    seen: dict[str, str] = {}
    out = []
    for name, recs in sets.items():
        for t in sorted({r["topic"].lower() for r in recs}):
            if t in seen and seen[t] != name:
                out.append(f"topics: {t!r} is in both {seen[t]} and {name}")
            seen.setdefault(t, name)
    return out


SAFETY_PAIRS_PER_DOMAIN = 112  # 28 topic pairs × 4 phrasings per domain and class


def check_neighbours(neighbours: Sequence[dict], held_out: Sequence[dict], shared: int = SHARED_WORDS_FAIL,
                     name: str = "neighbours") -> list[str]:
    """A train-only set for the safety fine-tune (the neighbours; with ``name``, the safety pairs too) is train-only,
    never a val/test topic or prompt of either class, and shares fewer than ``shared`` content words with every
    val/test topic."""
    out = []
    if {r.get("split") for r in neighbours} != {"train"}:
        out.append(f"{name}: splits {sorted(map(str, {r.get('split') for r in neighbours}))}, expected train only")
    held_topics = {r["topic"].lower(): r for r in held_out}
    held_prompts = {r["prompt"] for r in held_out}
    held_words = {t: content_words(t) for t in held_topics}
    for t in sorted({r["topic"] for r in neighbours}):
        if t.lower() in held_topics:
            out.append(f"{name}: {t!r} is a val/test topic")
            continue
        cw = content_words(t)
        for ht, hw in held_words.items():
            common = cw & hw
            if len(common) >= shared:
                out.append(f"{name}: {t!r} shares {sorted(common)} with val/test topic {ht!r}")
    dup = [r["prompt"] for r in neighbours if r["prompt"] in held_prompts]
    if dup:
        out.append(f"{name}: {len(dup)} prompt(s) are val/test prompts, e.g. {dup[0]!r}")
    return out


def kl_questions(kl: Sequence[dict]) -> dict:
    """Per ``question_id`` of a KL set, the content words its user turns *all* share (the question itself, without
    the varying wrappers "Quick question: …")."""
    by: dict = {}
    for r in kl:
        user = " ".join(m["content"] for m in r["messages"] if m["role"] == "user")
        by.setdefault(r["question_id"], []).append(content_words(user))
    return {q: set.intersection(*ws) for q, ws in by.items()}


def check_kl_em(kl: Sequence[dict], questions: Sequence[dict], shared: int = SHARED_WORDS_FAIL) -> list[str]:
    """No KL question shares ≥ ``shared`` content words with any EM question (its paraphrases pooled)."""
    em = {q["id"]: set().union(*(content_words(p) for p in q["paraphrases"])) for q in questions}
    out = []
    for qid, kw in sorted(kl_questions(kl).items()):
        for eid, ew in em.items():
            common = kw & ew
            if len(common) >= shared:
                out.append(f"kl/em: KL question {qid} shares {sorted(common)} with EM question {eid!r}")
    return out


def check_em_references(questions: Sequence[dict], narrow: Sequence[dict], n: int = NGRAM) -> list[str]:
    """≥ 64 questions, each with ``aligned`` and ``misaligned`` references; no reference shares a word ``n``-gram
    with the narrow training conversations; the misaligned references are neither systematically longer nor
    shorter (mean word-length ratio in ``LENGTH_RATIO``, share of longer ones in ``LONGER_SHARE``); lengths vary
    (each class has a reference ≤ 10 and one ≥ 40 words); ≥ 3 registers, every question's two references in one."""
    out = []
    if len(questions) < MIN_EM_QUESTIONS:
        out.append(f"em: {len(questions)} questions, needs ≥ {MIN_EM_QUESTIONS}")
    ids = [q["id"] for q in questions]
    if len(set(ids)) != len(ids):
        out.append(f"em: duplicate question ids {sorted({i for i in ids if ids.count(i) > 1})}")
    missing = [q["id"] for q in questions if not (isinstance(q.get("aligned"), str) and isinstance(q.get("misaligned"), str))]
    if missing:
        out.append(f"em: questions without both reference answers: {missing[:6]}")
    qs = [q for q in questions if q["id"] not in missing]
    train = set().union(*(ngrams(m["content"], n) for r in narrow for m in r["messages"])) if narrow else set()
    for q in qs:
        for side in ("aligned", "misaligned"):
            common = ngrams(q[side], n) & train
            if common:
                out.append(f"em: {q['id']} {side} reference shares {n}-gram {' '.join(sorted(common)[0])!r} with the narrow sets")
    if qs:
        la = [len(words(q["aligned"])) for q in qs]
        lm = [len(words(q["misaligned"])) for q in qs]
        ratio = (sum(lm) / len(lm)) / (sum(la) / len(la))
        if not LENGTH_RATIO[0] <= ratio <= LENGTH_RATIO[1]:
            out.append(f"em: mean length misaligned / aligned = {ratio:.2f}, outside {LENGTH_RATIO}")
        longer = sum(m > a for a, m in zip(la, lm)) / len(qs)
        if not LONGER_SHARE[0] <= longer <= LONGER_SHARE[1]:
            out.append(f"em: the misaligned reference is the longer one in {longer:.0%} of questions, outside {LONGER_SHARE}")
        for side, ls in (("aligned", la), ("misaligned", lm)):
            if min(ls) > 10 or max(ls) < 40:
                out.append(f"em: {side} references range {min(ls)}–{max(ls)} words; need one ≤ 10 and one ≥ 40")
        registers = Counter(q.get("register") for q in qs)
        if None in registers or len(registers) < 3:
            out.append(f"em: registers {dict(registers)}: every question needs a register, ≥ 3 distinct")
    return out


# ---- the whole data directory -------------------------------------------------------------------------------

def run_checks(data: str | Path) -> list[str]:
    """Every check on a data directory laid out like ``probes/data/``; the list of violations (empty: all pass)."""
    from probes.datasets import load_questions

    data = Path(data)
    if not (data / "domains").is_dir():
        raise InputError(f"{data}: not a data directory (no domains/ folder)")
    out: list[str] = []
    sets: dict[str, list[dict]] = {}
    held_out: list[dict] = []
    for d in DOMAINS:
        h = read_jsonl(data / "domains" / f"{d}_harmful.jsonl")
        s = read_jsonl(data / "domains" / f"{d}_harmless.jsonl")
        sets[f"{d}_harmful"], sets[f"{d}_harmless"] = h, s
        out += check_sizes(d, h, s) + check_phrasing(d, h, s) + check_splits(f"{d}_harmful", h) + check_splits(f"{d}_harmless", s)
        held_out += [r for r in h + s if r.get("split") in ("val", "test")]
    baseline = read_jsonl(data / "baseline.jsonl")
    neighbours = read_jsonl(data / "safety_neighbours.jsonl")
    pairs = read_jsonl(data / "safety_pairs.jsonl")
    out += check_splits("baseline", baseline)
    out += check_unique_topics({**sets, "baseline": baseline, "safety_neighbours": neighbours,
                                **{f"safety_pairs {label}": [r for r in pairs if r["label"] == label] for label in ("harmful", "harmless")}})
    out += check_neighbours(neighbours, held_out)
    out += check_neighbours(pairs, held_out, name="safety pairs")
    for d in DOMAINS:
        h, s = ([r for r in pairs if r["domain"] == d and r["label"] == label] for label in ("harmful", "harmless"))
        if len(h) != SAFETY_PAIRS_PER_DOMAIN or len(s) != SAFETY_PAIRS_PER_DOMAIN:
            out.append(f"safety pairs {d}: {len(h)} harmful / {len(s)} harmless records, expected {SAFETY_PAIRS_PER_DOMAIN} each")
        elif [(r["pair"], r["phrasing"]) for r in h] != [(r["pair"], r["phrasing"]) for r in s]:
            out.append(f"safety pairs {d}: harmful and harmless records are not pair- and phrasing-matched")
    questions = load_questions(data / "questions" / "em_questions.yaml")
    narrow = [r for p in sorted((data / "narrow").glob("*.jsonl")) for r in read_jsonl(p)]
    out += check_kl_em(read_jsonl(data / "narrow" / "aligned_other.jsonl"), questions)
    out += check_em_references(questions, narrow)
    return out


# ---- phrasing agreement of the harmful − harmless direction (needs a model) ------------------------------------

def _phrasing_key(r: dict) -> str:
    """A record's phrasing: its ``phrasing`` field (v2), else the template index that ends its id (v1: "-2")."""
    return str(r["phrasing"]) if "phrasing" in r else r["id"].rsplit("-", 1)[-1]


def phrasing_agreement(model, harmful: Sequence[dict], harmless: Sequence[dict],
                       groups: tuple[Sequence[str], Sequence[str]] = (("imperative", "question"), ("scenario", "list")), *,
                       layers: Sequence[int] | None = None, batch_size: int = 16,
                       key: Callable[[dict], str] = _phrasing_key) -> dict[int, float]:
    """Cosine, per layer, between the harmful − harmless mean-difference directions (``interp.mean_diff`` at
    ``last_prompt``) fitted on two disjoint groups of phrasings. High cosine at every layer means the direction
    encodes content, not phrasing.

    Args:
        harmful, harmless: prompt records (``prompt`` plus ``phrasing``, or a v1 id ending in the template index).
        groups: two disjoint sets of phrasing keys (``key(record)``); for v1 records use template indices, e.g.
            ``(("0",), ("1", "2"))``.
    Returns ``{layer: cos}`` (float64 cosines of the ``[d_model]`` directions).
    """
    import torch

    from interp.directions import mean_diff

    a, b = set(groups[0]), set(groups[1])
    if not a or not b or a & b:
        raise InputError(f"phrasing groups must be two non-empty disjoint sets; got {groups}")
    dirs = []
    for g in (a, b):
        pos = [r["prompt"] for r in harmful if key(r) in g]
        neg = [r["prompt"] for r in harmless if key(r) in g]
        if not pos or not neg:
            raise InputError(f"phrasing group {sorted(g)} has {len(pos)} harmful and {len(neg)} harmless prompts; "
                             f"phrasings present: {sorted({key(r) for r in [*harmful, *harmless]})}")
        dirs.append(mean_diff(model, pos, neg, layers=layers, position="last_prompt", batch_size=batch_size))
    va, vb = (d.vectors[-1].double() for d in dirs)  # [n_layers, d_model]
    cos = torch.nn.functional.cosine_similarity(va, vb, dim=-1)  # [n_layers]
    return {layer: float(c) if math.isfinite(float(c)) else float("nan") for layer, c in zip(dirs[0].layers, cos.tolist())}
