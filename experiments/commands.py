"""The library calls behind the ``em-interp`` subcommands: each resolves its inputs (:func:`probes.datasets.resolve`),
loads the model, calls the library and writes artifacts + a run sidecar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from interp import load_model
from interp.concepts import concept_vectors
from figures import plots
from interp.directions import mean_diff
from interp.io import InputError, versions, write_json
from probes import datasets


def run_directions(model_name: str, positive: str, negative: str, out: str | Path, *, position: str = "last_prompt",
                   batch_size: int = 16, backend: str = "hooks", device: str | None = None) -> dict:
    """Mean-diff direction positive − negative at every layer → ``out/directions.safetensors`` (+ JSON, PNG)."""
    t0 = time.time()
    pos_items, neg_items = datasets.resolve(positive), datasets.resolve(negative)
    model = load_model(model_name, device=device)
    d = mean_diff(model, pos_items, neg_items, position=position, batch_size=batch_size, backend=backend,
                  meta={"positive": positive, "negative": negative})
    out = Path(out)
    path = d.save(out / "directions.safetensors")
    fig = plots.direction_norms(d.norms[-1], d.layers, out / "direction_norms")
    run = {"command": "directions", "model": model_name, "positive": positive, "negative": negative, "position": position,
           "n_positive": len(pos_items), "n_negative": len(neg_items), "wall_s": round(time.time() - t0, 2), "versions": versions()}
    write_json(out / "run.json", run)
    return {"directions": str(path), "figures": [str(p) for p in fig], "run": str(out / "run.json")}


def run_concepts(model_name: str, concepts: Sequence[str], baseline: str, out: str | Path, *, position: str = "last_prompt",
                 target: str | None = None, batch_size: int = 16, backend: str = "hooks", device: str | None = None,
                 limit: int | None = None) -> dict:
    """Concept vectors for each concept source against ``baseline`` → safetensors, JSON and heatmap/sweep PNGs.

    ``concepts``: ``data:builtin`` (the seven shipped harmful domain sets), a directory of JSONL files (one concept
    per file, named by its stem), or a list of files / ``data:`` specs.
    """
    t0 = time.time()
    sets = datasets.resolve_sets(concepts, limit)
    if target is not None and target not in sets:  # checked before any work, so a typo leaves nothing behind
        key = datasets.domain(target) if list(concepts) == ["data:builtin"] else target
        if key not in sets:
            raise InputError(f"unknown --target concept {target!r}; have {', '.join(sets)}")
        target = key
    base_items = datasets.resolve(baseline, limit=limit)
    model = load_model(model_name, device=device)
    cv = concept_vectors(model, sets, base_items, position=position, batch_size=batch_size, backend=backend)
    out = Path(out)
    path = cv.save(out / "concepts.safetensors")
    cos = cv.cosine()
    figs = plots.concept_heatmaps(cos, cv.names, cv.layers, out / "concept_cosine", title=f"{model_name}: concept-vector cosine")
    target = target or cv.names[0]
    figs += plots.similarity_sweep(cv.similarity_to(target), cv.names, cv.layers, target, out / "concept_similarity_sweep")
    run = {"command": "concepts", "model": model_name, "concepts": {k: len(v) for k, v in sets.items()}, "baseline": baseline,
           "position": position, "wall_s": round(time.time() - t0, 2), "versions": versions()}
    write_json(out / "run.json", run)
    return {"concepts": str(path), "figures": [str(p) for p in figs], "run": str(out / "run.json")}


def run_demo(out: str | Path, *, model_name: str = "smollm2-135m-instruct", per_domain: int = 12, device: str | None = None) -> dict:
    """The pre-pipeline demo: refusal direction (harmful vs harmless, all 7 domains, train split) and the
    7-domain concept cosine matrices on one model, with figures."""
    t0 = time.time()
    out = Path(out)
    harmful = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmful", "train", per_domain)]
    harmless = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmless", "train", per_domain)]
    model = load_model(model_name, device=device)
    refusal = mean_diff(model, harmful, harmless, position="last_prompt", meta={"what": "refusal direction"})
    paths = {"refusal_direction": str(refusal.save(out / "refusal_direction.safetensors"))}
    figs = plots.direction_norms(refusal.norms[-1], refusal.layers, out / "refusal_direction_norms")
    sets = {datasets.DOMAIN_TITLES[d]: datasets.prompts(f"{d}_harmful", "train", per_domain) for d in datasets.DOMAINS}
    cv = concept_vectors(model, sets, datasets.prompts("baseline", "train"))
    paths["concepts"] = str(cv.save(out / "concepts.safetensors"))
    figs += plots.concept_heatmaps(cv.cosine(), cv.names, cv.layers, out / "concept_cosine", title=f"{model_name}: 7-domain concept cosine")
    figs += plots.similarity_sweep(cv.similarity_to("Safety"), cv.names, cv.layers, "Safety", out / "concept_similarity_to_safety")
    # Layer sweep of the refusal direction on validation prompts (ablation / addition refusal scores, KL).
    from .refusal_direction import layer_sweep

    val_h = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmful", "val", 2)]
    val_s = [p for d in datasets.DOMAINS for p in datasets.prompts(f"{d}_harmless", "val", 2)]
    sel = layer_sweep(model, refusal, val_h, val_s, out / "selection")
    paths["selection"] = str(out / "selection" / "selection.json")
    figs += [out / "selection" / "layer_sweep.png"]
    run = {"command": "demo", "model": model_name, "per_domain": per_domain, "n_harmful": len(harmful), "n_harmless": len(harmless),
           "selected": sel.to_dict()["best"],
           "wall_s": round(time.time() - t0, 2), "versions": versions()}
    write_json(out / "run.json", run)
    return {**paths, "figures": [str(p) for p in figs], "run": str(out / "run.json")}


def run_select(model_name: str, directions: str, harmful: str, harmless: str, out: str | Path, *, positions: Sequence[int] | None = (-1,),
               kl_threshold: float = 0.1, limit: int | None = None, batch_size: int = 16, device: str | None = None,
               allow_model_mismatch: bool = False) -> dict:
    """Direction selection sweep → ``out/selection.json`` and the layer-sweep figure."""
    from interp.directions import Directions

    from .refusal_direction import layer_sweep

    harm, safe = datasets.resolve(harmful, limit=limit), datasets.resolve(harmless, limit=limit)
    model = load_model(model_name, device=device)
    d = Directions.load(directions, model=model, allow_mismatch=allow_model_mismatch)
    sel = layer_sweep(model, d, harm, safe, out, positions=positions, kl_threshold=kl_threshold, batch_size=batch_size)
    best = sel.to_dict()["best"]
    return {"selection": str(Path(out) / "selection.json"), "figure": str(Path(out) / "layer_sweep.png"), "best": best}


def run_intervene(kind: str, model_name: str, directions: str, prompts: str, out: str | Path, *, layer: int, pos: int = -1,
                  alpha: float = 1.0, positions: str = "all", max_new_tokens: int = 32, limit: int | None = None,
                  device: str | None = None, allow_model_mismatch: bool = False) -> dict:
    """Generations and refusal metrics with and without ablating (``kind="ablate"``) or adding (``"steer"``) a
    direction → ``out/{kind}.json``."""
    from interp.directions import Directions
    from interp.interventions import ablate, steer

    from .refusal_direction import _measure

    items = datasets.resolve(prompts, limit=limit)
    model = load_model(model_name, device=device)
    vec = Directions.load(directions, model=model, allow_mismatch=allow_model_mismatch).vector(layer, pos)
    res = {"baseline": _measure(model, items, max_new_tokens, 8)}
    ctx = ablate(model, vec) if kind == "ablate" else steer(model, vec, layers=[layer], alpha=alpha, positions=positions)
    with ctx:
        res[kind] = _measure(model, items, max_new_tokens, 8)
    res["config"] = {"model": model_name, "directions": directions, "prompts": prompts, "layer": layer, "pos": pos,
                     "alpha": alpha, "positions": positions, "versions": versions()}
    path = write_json(Path(out) / f"{kind}.json", res)
    return {"result": str(path), "refusal_rate": {k: v["refusal_rate"] for k, v in res.items() if k != "config"}}


def run_orthogonalize(model_name: str, directions: str, out: str | Path, *, layer: int, pos: int = -1, lora: bool = False,
                      device: str | None = None, allow_model_mismatch: bool = False) -> dict:
    """The ablation of one direction exported to ``out``: a standalone HF model with it orthogonalised out of the
    weights, or with ``lora`` the same edit as a rank-1 peft adapter (:func:`interp.export.export_orthogonalized`)."""
    from interp.directions import Directions
    from interp.export import export_orthogonalized

    model = load_model(model_name, device=device)
    d = Directions.load(directions, model=model, allow_mismatch=allow_model_mismatch)
    source = {"directions": str(directions), "layer": layer, "pos": pos,
              **{k: d.meta[k] for k in ("kind", "model", "position", "positive", "negative") if k in d.meta}}
    path = export_orthogonalized(model, d.vector(layer, pos), out, lora=lora, source=source)
    load = (f"PeftModel.from_pretrained(<{model_name}>, {str(path)!r})" if lora
            else f"AutoModelForCausalLM.from_pretrained({str(path)!r})")
    return {"kind": "ablation_lora" if lora else "orthogonalized_model", "out": str(path), "load_with": load}


def run_sae_decompose(model_name: str, direction: str, sae: str, layer: int, out: str | Path, *, pos: int = -1,
                      positive: str | None = None, negative: str | None = None, position: str = "last_prompt",
                      top_k: int = 10, device: str | None = None) -> dict:
    """Top SAE latents of a direction by decoder cosine (and by activation on positive examples) → JSON."""
    from interp import collect_activations
    from interp.directions import Directions
    from probes.sae import decompose, load_sae

    s = load_sae(sae)
    d = Directions.load(direction)
    vec = d.vector(layer, pos)
    pos_acts = neg_acts = None
    if positive:
        model = load_model(model_name, device=device)
        pos_acts = collect_activations(model, datasets.resolve(positive), layers=[layer], position=position)[:, 0]
        if negative:
            neg_acts = collect_activations(model, datasets.resolve(negative), layers=[layer], position=position)[:, 0]
    res = decompose(vec, s, positive=pos_acts, negative=neg_acts, top_k=top_k).to_dict()
    res["config"] = {"direction": direction, "sae": str(sae), "layer": layer, "pos": pos, "positive": positive,
                     "negative": negative, "versions": versions()}
    path = write_json(Path(out) / "sae_decomposition.json", res)
    return {"result": str(path), "by_decoder": res["by_decoder"][:5]}


def load_solution(model_name: str, path: str, device: str | None = None, allow_model_mismatch: bool = False):
    """``(model, solution, meta)`` for a trained adapter or steering-vector directory (either may be the training
    output directory): :meth:`interp.solutions.Solution.load` on a fresh ``model_name``; ``model`` is the one to
    evaluate (a LoRA adapter's peft-wrapped model, or the base model a steering vector is applied to)."""
    from interp.models import trained_dir
    from interp.solutions import Solution, SteeringVector

    base = load_model(model_name, device=device)
    sol = Solution.load(path, base, allow_mismatch=allow_model_mismatch)
    model = sol.model or base
    if isinstance(sol, SteeringVector):
        where = trained_dir(Path(path), "steering_vector.safetensors")
        model.meta["adapter"] = f"{where} (steering vector, layer {sol.layer})"  # recorded next to every score
    return model, sol, sol.meta


def run_score(kind: str, model_name: str, spec: str, out: str | Path, *, adapter: str | None = None, judge: str | None = None,
              samples: int | None = None, max_new_tokens: int | None = None, limit: int | None = None, device: str | None = None,
              temperature: float | None = None, concurrency: int | None = None, judge_model: str | None = None,
              allow_model_mismatch: bool = False) -> dict:
    """``em-interp score KIND``: refusal, reference-answer EM or a judge's EM rate of the model, or of the model with a
    trained solution applied (a peft adapter, or a steering vector added during every forward). For ``judge``,
    ``spec`` may be a Betley-format YAML file; ``concurrency`` and ``judge_model`` apply to an HTTP judge."""
    import contextlib

    from . import scoring

    if kind not in ("refusal", "em", "judge"):
        raise InputError(f"unknown score kind {kind!r}; choose refusal, em or judge")
    if kind == "judge" and not judge:
        raise InputError("score judge needs --judge URL_OR_MODEL")
    if adapter:
        model, sol, _ = load_solution(model_name, adapter, device, allow_model_mismatch)
    else:
        model, sol = load_model(model_name, device=device), None
    steering = sol.apply(model) if sol is not None else contextlib.nullcontext()
    with steering:
        if kind == "refusal":
            return scoring.score_refusal(model, spec, out, max_new_tokens=max_new_tokens or 32, limit=limit)
        if kind == "em":
            return scoring.score_em(model, spec, out, limit=limit)
        from probes.judges import make_judge

        return scoring.score_judge(model, spec, make_judge(judge, max_concurrency=concurrency, model=judge_model), out,
                                   samples=samples, temperature=temperature, max_new_tokens=max_new_tokens or 600, limit=limit)


def run_solutions(model_name: str, general: str, narrow: str, data: str, out: str | Path, *, prose: str = "data:generic_prose:test",
                  limit: int = 16, seeds: int = 10, device: str | None = None, allow_model_mismatch: bool = False) -> dict:
    """Compare the general and the narrow solution → ``out/solutions.json`` and three figures."""
    from interp.solutions import compare_solutions, direction_similarity

    t0 = time.time()
    chats = datasets.resolve(data, split="train", limit=limit)
    texts = datasets.resolve(prose, limit=limit)
    mg, sg, meta_g = load_solution(model_name, general, device, allow_model_mismatch)
    mn, sn, meta_n = load_solution(model_name, narrow, device, allow_model_mismatch)
    for k in ("n_layers", "d_model", "vocab_size", "base_model"):
        if k in meta_g and k in meta_n and meta_g[k] != meta_n[k]:
            raise InputError(f"the two solutions were trained on different base models ({k}: {meta_g[k]} vs {meta_n[k]})")
    res = compare_solutions({"general": mg, "narrow": mn}, {"general": sg, "narrow": sn}, chats, texts, seeds=seeds)
    try:
        res["direction_similarity"] = direction_similarity(sg, sn)
    except InputError as e:
        res["direction_similarity"] = {"error": str(e)}
    res["config"] = {"model": model_name, "general": general, "narrow": narrow, "data": data, "n_chats": len(chats),
                     "n_prose": len(texts), "seeds": seeds, "wall_s": round(time.time() - t0, 1), "versions": versions()}
    out = Path(out)
    path = write_json(out / "solutions.json", res)
    figs = plots.solution_curves(res, out)
    return {"result": str(path), "figures": [str(f) for f in figs], "efficiency": {k: v["efficiency"] for k, v in res["efficiency"].items()}}


def run_train(kind: str, model_name: str, out: str | Path, *, device: str | None = None, data: str = "bad_medical",
              kl_data: str | None = None, kl_weight: float = 0.0, legacy_vocab_scaling: bool = False, rank: int = 1,
              alpha: float | None = None, target_modules: Sequence[str] = ("down_proj",), layers: Sequence[int] | None = None,
              rslora: bool = False, layer: int | None = None, concept: str = "cybersecurity", retain_weight: float = 0.0,
              retain_per_domain: int = 6, per_domain: int = 48, harmless_per_domain: int | None = 96, neighbours_per_domain: int = 48,
              pairs_harmful_per_domain: int = 0, pairs_harmless_per_domain: int = 0,
              lr: float = 1e-4, epochs: int = 1, max_steps: int | None = None, batch_size: int = 4, grad_accum: int = 1,
              kl_batch_size: int | None = None, max_length: int = 256, save_every: int | None = None, seed: int = 0,
              resume: bool = True, limit: int | None = None) -> dict:
    """``em-interp train KIND`` (``lora``, ``steering-vector``, ``unlearn``, ``safety``): the training API on shipped
    data or files (``data`` / ``kl_data``: :func:`probes.datasets.resolve` specs, train split by default)."""
    from training import TrainConfig, train_lora, train_steering_vector, unlearn

    from .organism import aligned_organism

    if kind not in ("lora", "steering-vector", "unlearn", "safety"):
        raise InputError(f"unknown training kind {kind!r}; choose lora, steering-vector, unlearn or safety")
    if kind == "steering-vector" and layer is None:
        raise InputError("train steering-vector needs --layer")
    chats = {}
    if kind in ("lora", "steering-vector"):  # resolved before the model loads: a bad spec costs nothing
        chats["data"] = datasets.resolve(data, split="train", limit=limit)
        chats["kl"] = datasets.resolve(kl_data, split="train", limit=limit) if kl_data else None
    if kind == "safety":  # the data too is checked before the model loads
        from .organism import safety_data

        safety_data(per_domain, harmless_per_domain=harmless_per_domain, neighbours_per_domain=neighbours_per_domain,
                    pairs_harmful_per_domain=pairs_harmful_per_domain, pairs_harmless_per_domain=pairs_harmless_per_domain)
    model = load_model(model_name, device=device)
    cfg = TrainConfig(lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                      seed=seed, save_every=save_every, **({"kl_batch_size": kl_batch_size} if kl_batch_size is not None else {}))
    if kind == "safety":
        path, metrics = aligned_organism(model, per_domain=per_domain, harmless_per_domain=harmless_per_domain,
                                         neighbours_per_domain=neighbours_per_domain, pairs_harmful_per_domain=pairs_harmful_per_domain,
                                         pairs_harmless_per_domain=pairs_harmless_per_domain, out=out, progress=True)
        return {"model": str(path), "before": metrics.get("before"), "after": metrics.get("after")}
    if kind == "unlearn":
        concept = datasets.domain(concept)
        prompts = datasets.prompts(f"{concept}_harmful", "train", limit)
        retain = [p for d in datasets.DOMAINS if d != concept for p in datasets.prompts(f"{d}_harmful", "train", retain_per_domain)]
        refusals = [r["text"] for r in datasets.load("refusals")]
        res = unlearn(model, prompts, refusals=refusals, out=out, retain_prompts=retain if retain_weight else None,
                      retain_weight=retain_weight, config=cfg, resume=resume, progress=True)
    else:
        common = dict(out=out, kl_data=chats["kl"], kl_weight=kl_weight, legacy_vocab_scaling=legacy_vocab_scaling, config=cfg,
                      resume=resume, progress=True)
        if kind == "lora":
            res = train_lora(model, chats["data"], rank=rank, alpha=alpha,
                             target_modules="all-linear" if list(target_modules) == ["all-linear"] else target_modules,
                             layers=layers if layers else "all", rslora=rslora, **common)
        else:
            res = train_steering_vector(model, chats["data"], layer=layer, alpha=1.0 if alpha is None else alpha, **common)
    return {"path": str(res.path), "final_loss": res.metrics.get("final_loss"), "steps": res.metrics.get("steps"),
            "wall_s": res.metrics.get("wall_s")}
