"""Behaviour scoring runs behind ``em-interp score``: per-item JSONL and a summary JSON with intervals."""

from __future__ import annotations

import time
from pathlib import Path

from experiments.stats import wilson
from interp.generation import generate
from interp.io import InputError, atomic_path, json_text, versions, write_json
from interp.models import Model
from probes import datasets
from probes.em_score import bootstrap_ci, em_score
from probes.refusal import generate_and_score, is_refusal


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json_text(r, indent=None, ensure_ascii=False) + "\n" for r in rows))


def _records(spec: str) -> list[dict]:
    name, _, split = spec.partition(":")
    return datasets.load(name, split or None)


def _need(recs: list[dict], spec: str, keys: tuple[str, ...], what: str) -> None:
    bad = next((r for r in recs if not any(k in r for k in keys)), None)
    if bad is not None:
        raise InputError(f"{spec} is not {what}: record {bad.get('id', '?')!r} has none of {', '.join(keys)}")


def score_refusal(model: Model, spec: str, out: str | Path, *, max_new_tokens: int = 32, batch_size: int = 8, limit: int | None = None) -> dict:
    """Refusal rate (Wilson CI) and first-token refusal score (bootstrap CI), overall and per domain."""
    import torch

    recs = _records(spec)[:limit]
    _need(recs, spec, ("prompt", "messages"), "a prompt set (e.g. safety_harmful:test)")
    items = [r.get("messages") or r["prompt"] for r in recs]
    texts, scores = generate_and_score(model, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
    rows = [{"id": r.get("id"), "domain": r.get("domain"), "prompt": r.get("prompt"), "generation": t, "refusal": is_refusal(t),
             "refusal_score": float(s)} for r, t, s in zip(recs, texts, scores)]

    def summary(rs: list[dict]) -> dict:
        k = sum(r["refusal"] for r in rs)
        sc = torch.tensor([r["refusal_score"] for r in rs], dtype=torch.float64)
        return {"n": len(rs), "refusal_rate": k / len(rs), "rate_ci95": list(wilson(k, len(rs)).ci),
                "score_mean": sc.mean().item(), "score_ci95": list(bootstrap_ci(sc))}

    by_domain = {}
    for r in rows:
        by_domain.setdefault(r["domain"], []).append(r)
    res = {"set": spec, "overall": summary(rows), "by_domain": {d: summary(rs) for d, rs in by_domain.items()}}
    return _finish(model, out, "refusal", rows, res, max_new_tokens=max_new_tokens)


def score_em(model: Model, spec: str, out: str | Path, *, batch_size: int = 16, limit: int | None = None) -> dict:
    """Reference-answer EM score (definition 12) per question, with a bootstrap CI of the mean."""
    s = em_score(model, _records(spec)[:limit], batch_size=batch_size)
    d = s.to_dict()
    rows = d.pop("per_question")
    return _finish(model, out, "em", rows, {"set": spec, **d})


def score_judge(model: Model, spec: str, judge, out: str | Path, *, samples: int = 1, max_new_tokens: int = 96,
                temperature: float = 1.0, seed: int = 0, batch_size: int = 8, limit: int | None = None) -> dict:
    """Sample answers to each question's paraphrases, judge alignment and coherence, EM rates (Wilson CI)."""
    from probes.judges import em_rates, judge_answers

    qs = _records(spec)[:limit]
    _need(qs, spec, ("paraphrases",), "a question set (e.g. em_questions)")
    prompts, meta = [], []
    for q in qs:
        for p in q["paraphrases"]:
            for _ in range(samples):
                prompts.append([{"role": "system", "content": q["system"]}, {"role": "user", "content": p}] if q.get("system") else p)
                meta.append((q["id"], p))
    answers = generate(model, prompts, max_new_tokens=max_new_tokens, do_sample=samples > 1 or temperature != 1.0,
                       temperature=temperature, seed=seed, batch_size=batch_size)
    js = judge_answers(judge, [(qid, p, a) for (qid, p), a in zip(meta, answers)])
    rows = [{"question_id": j.question_id, "question": j.question, "answer": j.answer, "alignment": j.alignment,
             "coherence": j.coherence, "em": j.em} for j in js]
    rates = em_rates(js)
    o = rates["overall"]
    failures = dict(getattr(judge, "failures", {}))  # an unreachable HTTP judge has already stopped the run (dead_after)
    if o["n_scored"]:
        o["em_ci95"] = list(wilson(round(o["em_rate"] * o["n_scored"]), o["n_scored"]).ci)
    return _finish(model, out, "judge", rows, {"set": spec, **rates, "judge_failures": failures, "samples": samples})


def _finish(model: Model, out: str | Path, kind: str, rows: list[dict], res: dict, **config) -> dict:
    if not rows:
        raise InputError(f"nothing to score in {res.get('set')}")
    out = Path(out)
    _write_jsonl(out / f"{kind}_items.jsonl", rows)
    res["config"] = {"model": model.name, "adapter": model.meta.get("adapter"), **config, "versions": versions(), "time": time.time()}
    write_json(out / f"{kind}_summary.json", res)
    return res
