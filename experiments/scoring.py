"""Behaviour scoring runs behind ``em-interp score``: per-item JSONL and a summary JSON with intervals."""

from __future__ import annotations

import time
from pathlib import Path

from interp.io import InputError, atomic_path, json_text, versions, write_json
from interp.models import Model
from probes import datasets
from probes.em_score import bootstrap_ci, em_score
from probes.refusal import generate_and_score, is_refusal

from .stats import wilson


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json_text(r, indent=None, ensure_ascii=False) + "\n" for r in rows))


def _records(spec: str) -> list[dict]:
    """Records of a spec (:func:`probes.datasets.resolve`: ``NAME[:SPLIT]``, ``data:NAME[:SPLIT]`` or a file)."""
    return datasets.resolve(spec, records=True)


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


def score_judge(model: Model, spec: str | Path, judge, out: str | Path, *, samples: int | None = None,
                max_new_tokens: int = 600, temperature: float | None = None, seed: int = 0, batch_size: int = 8,
                limit: int | None = None, progress: bool | None = None) -> dict:
    """The published judge protocol (``probes.judge_eval``) on a question set: sample answers to every paraphrase
    (``samples`` overrides ``samples_per_paraphrase``; temperature 1 by default, 0 = greedy), judge every metric of
    each question's ``judge_prompts``, EM rates with Wilson CIs. ``spec``: a shipped set NAME[:SPLIT] or a
    Betley-format YAML file."""
    from probes.judge_eval import em_rates, judge_answers, questions, sample_answers

    if Path(spec).suffix in (".yaml", ".yml") and not Path(spec).is_file():
        raise InputError(f"{spec}: no such question file")
    qs = _records(str(spec))[:limit]
    _need(qs, str(spec), ("paraphrases",), "a question set (e.g. em_questions)")
    qs = questions(qs)
    answers = sample_answers(model, qs, samples=samples, temperature=temperature, max_new_tokens=max_new_tokens,
                             seed=seed, batch_size=batch_size)
    js = judge_answers(judge, answers, progress=progress)
    rows = [j.to_dict() for j in js]
    rates = em_rates(js)
    failures = dict(getattr(judge, "failures", {}))  # an unreachable HTTP judge has already stopped the run (dead_after)
    protocol = {"samples": samples, "samples_per_paraphrase": {q.id: samples or q.samples_per_paraphrase for q in qs},
                "temperature": temperature, "temperatures_used": sorted({a.temperature for a in answers}),
                "max_new_tokens": max_new_tokens, "seed": seed, "n_answers": len(answers), "judge": repr(judge)}
    return _finish(model, out, "judge", rows, {"set": str(spec), **rates, "judge_failures": failures, "samples": samples,
                                               "protocol": protocol})


def _finish(model: Model, out: str | Path, kind: str, rows: list[dict], res: dict, **config) -> dict:
    if not rows:
        raise InputError(f"nothing to score in {res.get('set')}")
    out = Path(out)
    _write_jsonl(out / f"{kind}_items.jsonl", rows)
    res["config"] = {"model": model.name, "adapter": model.meta.get("adapter"), **config, "versions": versions(), "time": time.time()}
    write_json(out / f"{kind}_summary.json", res)
    return res
