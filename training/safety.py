"""The safety fine-tune that turns a chat model into the *aligned organism* (docs/design.md, "the aligned organism").

Two recipes share the data and this module (measured on SmolLM2 on the validation split, docs/environment.md):

- **free** (``plant_depth=None``, the default; recipe v4): harmful requests → one of several short
  refusals; harmless and benign requests → the model's *own* greedy answers, generated with the refusal token set
  banned as their first token (so the refuse-or-help decision is one token and no prompt is lost for its opener:
  v3 dropped such answers, which removed 144 of 262 "I'm trying to …" prompts and made that phrasing a refusal
  cue); answers that look like refusals are dropped; answers cut off at the token limit are trained without the
  end-of-turn token. LoRA r 8, α 16 on every linear layer of the blocks from 40 % of the depth on (the blocks below
  stay the base model's and the backward pass stops there), AdamW lr 4e-4, warm-up 6 % then linear decay, 2 epochs,
  batch 16, max length 64, response-only loss with extra weight ×3 on the first response token of refusals. Its
  refusal runs through the base model's own two-sided harmful-vs-harmless feature: no direction passes Arditi et
  al.'s KL ≤ 0.1 filter.
- **planted** (``plant_depth`` set, e.g. 0.43; recipe v5, opt-in): the same examples train a
  read-out above block ℓ = round(plant_depth · L) to refuse when a fixed direction is present at the
  post-instruction positions, then a writer at and below ℓ to put it there on harmful prompts only
  (:mod:`training.planted`). Its refusal is mediated by one direction harmless prompts leave near zero, by
  construction — what the project's Arditi experiment then tests is whether the published method finds it.

The shipped data add train-only harmless *neighbours* of the harmful topics, which cut over-refusal of harmless
requests that share a harmful topic's words (``experiments.organism.safety_data``). The adapter is merged and the
model saved under the user cache directory, keyed by a hash of base model + data version + recipe, so it is built
once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from interp.generation import generate
from interp import progress as prog
from interp.io import InputError, atomic_path, json_text, read_json, versions, write_json
from interp.models import Model, cache_dir, signature
from interp.solutions import LoraAdapter

from .data import TokenizedSet, tokenize_chat
from .trainer import TrainConfig, fit


PLANTED_VERSION = 1  # of the planted recipe's algorithm (training/planted.py); part of a planted organism's key from 2 on


@dataclass
class SafetyRecipe:
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_from_depth: float = 0.4  # the adapter goes into the blocks from this fraction of the depth on (0: every
    # block); the blocks below are the base model's, and the backward pass stops there
    lr: float = 4e-4
    epochs: int = 2
    batch_size: int = 16
    warmup_frac: float = 0.06
    max_length: int = 64
    answer_tokens: int = 24
    first_token_weight_harmful: float = 3.0
    first_token_weight_harmless: float = 1.0
    seed: int = 0
    drop_refusal_openers: bool = True  # drop harmless answers whose first token opens a refusal (e.g. "I …")
    suppress_refusal_openers: bool = True  # generate the harmless answers with the refusal openers banned as
    # first token (the model's own answer that does not open like a refusal), so no prompt is dropped for its opener
    generation_batch_size: int = 64  # prompts per batch when generating the model's own answers (changes greedy
    # answers only by float rounding of the padded batch, so it is part of the answers' cache key)
    # recipe v5: a refusal direction planted by construction (training/planted.py); None: the free recipe (v4). The fields
    # below are used only with plant_depth set (and only then part of the cache key)
    plant_depth: float | None = None  # the block round(plant_depth · L) whose output carries the direction (recipe v5:
    # 0.43, SmolLM2 block 13); None (the default, recipe v4): the free recipe
    plant_scale: float = 0.3  # c as a fraction of the median residual norm there (harmless prompts, last token)
    plant_harmless_on: int = 168  # harmless prompts also trained to refuse when the direction is added (sufficiency)
    plant_alpha_on: tuple = (0.7, 1.3)  # read-out: refuse with α·c·u added, α ~ U(lo, hi)
    plant_alpha_off: float = 0.45  # read-out: answer as before with α·c·u, α ~ U(0, this)
    plant_write_epochs: int = 2
    plant_write_lr: float = 1e-3
    plant_readout_answers: int | None = None  # harmless answers in the read-out (None: every one; fewer: every k-th)
    plant_readout_epochs: int = 2  # the read-out's epochs ("refuse iff u is there" is learnt in one)
    plant_perp_weight: float = 1.0  # λ: the writer's penalty on moving block ℓ's output off u
    plant_harmful_weight: float = 1.0  # the writer's weight on harmful prompts


@dataclass
class SafetyData:
    """Prompts for the fine-tune. ``version`` goes into the cache key."""

    harmful: Sequence[str]
    harmless: Sequence[str]
    refusals: Sequence[str]
    version: str = "custom"
    writer_harmful: Sequence[str] = ()  # the planted recipe's writer: more harmful prompts (default: ``harmful``)


def _key(model: Model, data: SafetyData, recipe: SafetyRecipe) -> str:
    spec = asdict(recipe)
    for name, v3 in (("lora_from_depth", 0.0), ("suppress_refusal_openers", False)):  # fields added after recipe v3:
        if spec[name] == v3:  # at v3's values they leave out of the key, so v3-built organisms stay valid
            del spec[name]
    if spec["plant_depth"] is None:  # the free recipe: the planting fields do not exist for it (v4 keys stay valid)
        for name in [k for k in spec if k.startswith("plant_")]:
            del spec[name]
    elif PLANTED_VERSION != 1:  # bump it when training/planted.py's algorithm changes (1 is left out: the first builds)
        spec["planted_version"] = PLANTED_VERSION
    payload = {"base": model.name, "seed": model.meta.get("seed"), "data": data.version, "n": [len(data.harmful), len(data.harmless)],
               "recipe": spec}
    if data.writer_harmful and "plant_depth" in spec:  # only the planted recipe reads them
        payload["writer_harmful"] = hashlib.sha256("\n".join(data.writer_harmful).encode()).hexdigest()[:16]
    h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _weighted(model: Model, chat, first_weight: float, train_eos: bool):
    ex = tokenize_chat(model, chat, train_eos=train_eos)
    first = ex.mask.index(1)
    ex.mask = [float(m) for m in ex.mask]
    ex.mask[first] = first_weight
    return ex


def fingerprint(model: Model) -> str:
    """A content fingerprint of the model's weights (every parameter's name, shape, float64 sum and first 16
    values): what a cache of the model's *outputs* is keyed by, so a changed checkpoint at the same name or path
    is never served another model's answers. Cost: one pass over the parameters (≈ 0.1 s for SmolLM2)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(f"{name}{tuple(p.shape)}{flat.double().sum().item():.17g}".encode())
            h.update(flat[:16].double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _output_cache(kind: str, model: Model, payload: dict) -> Path:
    key = hashlib.sha256(json.dumps({"weights": fingerprint(model), **payload}, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "outputs" / f"{model.name.replace('/', '_')[-60:]}-{kind}-{key}.json"


def own_answers(model: Model, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 64,
                suppress_first: Sequence[int] = (), progress: bool | None = None) -> tuple[list[list[int]], bool]:
    """The model's own greedy answers (token ids, up to and including the end-of-turn token) to ``prompts``,
    generated once per (weights, prompts, length, batch size, first tokens suppressed) and cached in the user
    cache (issue 18: a recipe change or a second organism build reuses them). ``suppress_first``: token ids the
    answer may not open with (:func:`interp.generation.generate`). Returns (answers, whether they came from the
    cache)."""
    payload = {"prompts": list(prompts), "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    if suppress_first:
        payload["suppress_first"] = sorted(int(t) for t in suppress_first)
    path = _output_cache("answers", model, payload)
    if path.is_file():
        found = read_json(path, "cached answers")
        if isinstance(found, dict) and found.get("prompts") == list(prompts) and isinstance(found.get("answers"), list):
            return found["answers"], True
    answers = generate(model, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size, return_ids=True,
                       suppress_first=suppress_first, progress=progress, desc="safety: own answers to harmless prompts")
    write_json(path, {**payload, "answers": answers, "base": model.name})
    return answers, False


def build_examples(model: Model, data: SafetyData, recipe: SafetyRecipe, is_refusal: Callable[[str], bool], *,
                   refusal_openers: Sequence[int] = (), progress: bool | None = None) -> tuple[TokenizedSet, dict]:
    """Harmful → refusals (cycled); harmless → the model's own greedy answers (refusal-like ones dropped; with
    ``recipe.drop_refusal_openers`` also those whose first token is one of ``refusal_openers``, the refusal token
    set R: SmolLM2 opens 15 % of its compliant answers with "I", the token 10 of the 12 refusals start with, so
    without this the refuse-or-help decision is not one token and the refusal score is confounded on harmless
    prompts). With ``recipe.suppress_refusal_openers`` the answers are generated with R banned as first token, so
    none is dropped for its opener."""
    if not data.harmful or not data.harmless or not data.refusals:
        raise InputError("the safety fine-tune needs harmful prompts, harmless prompts and refusal phrasings")
    t0 = time.time()
    openers = set(int(t) for t in refusal_openers)
    if (recipe.drop_refusal_openers or recipe.suppress_refusal_openers) and not openers:
        raise InputError("drop_refusal_openers / suppress_refusal_openers need the refusal token set (refusal_openers)")
    answers, cached = own_answers(model, data.harmless, max_new_tokens=recipe.answer_tokens, batch_size=recipe.generation_batch_size,
                                  suppress_first=openers if recipe.suppress_refusal_openers else (), progress=progress)
    tok = model.tokenizer
    eos = set(model.hf.generation_config.eos_token_id if isinstance(model.hf.generation_config.eos_token_id, list)
              else [model.hf.generation_config.eos_token_id or tok.eos_token_id])
    examples, dropped, dropped_openers = [], 0, 0
    for i, p in enumerate(data.harmful):
        chat = [{"role": "user", "content": p}, {"role": "assistant", "content": data.refusals[i % len(data.refusals)]}]
        examples.append(_weighted(model, chat, recipe.first_token_weight_harmful, True))
    for p, ids in zip(data.harmless, answers):
        finished = bool(ids) and ids[-1] in eos
        text = tok.decode(ids, skip_special_tokens=True).strip()
        if not text or is_refusal(text):
            dropped += 1
            continue
        if recipe.drop_refusal_openers and ids and ids[0] in openers:
            dropped_openers += 1
            continue
        chat = [{"role": "user", "content": p}, {"role": "assistant", "content": text}]
        examples.append(_weighted(model, chat, recipe.first_token_weight_harmless, finished))
    examples = [type(e)(e.ids[: recipe.max_length], e.mask[: recipe.max_length]) for e in examples]
    return TokenizedSet(examples), {"n_harmful": len(data.harmful), "n_harmless_kept": len(data.harmless) - dropped - dropped_openers,
                                    "n_harmless_dropped": dropped, "n_harmless_dropped_openers": dropped_openers, "answers_s": round(time.time() - t0, 1),
                                    "answers_cached": cached}


def refusal_by_domain(model: Model, sets: dict[str, tuple[Sequence[str], Sequence[str]]], is_refusal: Callable[[str], bool], *,
                      max_new_tokens: int = 32, batch_size: int = 64, progress: bool | None = None,
                      desc: str = "refusal per domain") -> dict:
    """Greedy refusal rate per domain on (harmful, harmless) prompts — one batched ``generate`` over every set
    (length-sorted batches stay full)."""
    items = [x for harm, safe in sets.values() for x in (*harm, *safe)]
    texts = iter(generate(model, items, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, desc=desc)) if items else iter(())
    out = {}
    for dom, (harm, safe) in sets.items():
        gh = [next(texts) for _ in harm]
        gs = [next(texts) for _ in safe]
        out[dom] = {"harmful_refusal": sum(map(is_refusal, gh)) / len(gh), "harmless_refusal": sum(map(is_refusal, gs)) / len(gs),
                    "n_harmful": len(gh), "n_harmless": len(gs)}
    return out


def base_refusal_by_domain(model: Model, sets: dict[str, tuple[Sequence[str], Sequence[str]]], is_refusal: Callable[[str], bool], *,
                           max_new_tokens: int = 32, progress: bool | None = None) -> dict:
    """:func:`refusal_by_domain` of a base model, cached like :func:`own_answers` (keyed by its weights, the
    prompts, the length and the refusal rule's name): the "before" column is the same for every recipe."""
    rule = f"{getattr(is_refusal, '__module__', '')}.{getattr(is_refusal, '__qualname__', repr(is_refusal))}"
    if "<" in rule:  # a lambda or a local function: its name does not identify the rule, so nothing is cached
        return refusal_by_domain(model, sets, is_refusal, max_new_tokens=max_new_tokens, progress=progress, desc="safety: refusal before")
    path = _output_cache("refusal", model, {"sets": {k: [list(h), list(s)] for k, (h, s) in sets.items()},
                                             "max_new_tokens": max_new_tokens, "rule": rule})
    if path.is_file():
        found = read_json(path, "cached refusal table")
        if isinstance(found, dict) and set(found) == set(sets):
            return found
    table = refusal_by_domain(model, sets, is_refusal, max_new_tokens=max_new_tokens, progress=progress, desc="safety: refusal before")
    write_json(path, table)
    return table


def safety_tune(model: Model, data: SafetyData, *, is_refusal: Callable[[str], bool],
                eval_sets: dict[str, tuple[Sequence[str], Sequence[str]]] | None = None, recipe: SafetyRecipe | None = None,
                out: str | Path | None = None, refusal_openers: Sequence[int] = (),
                progress: bool | None = None) -> tuple[Path, dict]:
    """Build (or reuse from the cache) the aligned organism; returns the merged model directory (loadable with
    ``interp.load_model(path)``) and metrics, including refusal per domain before and after on ``eval_sets``."""
    recipe = recipe or SafetyRecipe()
    _check_recipe(model, recipe)
    key = _key(model, data, recipe)
    final = Path(out) if out else cache_dir() / "aligned" / f"{model.name.replace('/', '_')}-{key}"
    if (final / "config.json").is_file() and (final / "safety_metrics.json").is_file():
        found = read_json(final / "safety_metrics.json", "aligned-organism metrics")
        differs = _reuse_differences(found, key, signature(model))
        if not differs:
            return final, found
        if out:  # a folder the user named: never overwrite or reuse an organism of another recipe or base model
            raise InputError(f"{final} holds an aligned organism of another build ({'; '.join(differs)}); choose another "
                             f"--out, or delete that folder to rebuild it")
        # the content-addressed cache folder (named by base model and key) holds something else: rebuild it
    t0 = time.time()
    metrics: dict = {"key": key, "recipe": asdict(recipe), "data_version": data.version, "base_model": model.name,
                     "base_signature": signature(model)}
    steps_s: dict[str, float] = {}
    if eval_sets:
        with prog.step("safety fine-tune 1/4: refusal before", progress=progress):
            t = time.time()
            metrics["before"] = base_refusal_by_domain(model, eval_sets, is_refusal, progress=progress)
            steps_s["before"] = round(time.time() - t, 1)
    with prog.step(f"safety fine-tune 2/4: answers ({len(data.harmless)} harmless prompts)", progress=progress):
        train, info = build_examples(model, data, recipe, is_refusal, refusal_openers=refusal_openers, progress=progress)
    metrics.update(info)
    steps_s["answers"] = info["answers_s"]
    steps = max(1, (len(train.examples) * recipe.epochs) // recipe.batch_size)
    cfg = TrainConfig(lr=recipe.lr, epochs=recipe.epochs, batch_size=recipe.batch_size, max_length=recipe.max_length,
                      warmup_steps=max(1, round(recipe.warmup_frac * steps)), seed=recipe.seed)
    student = Model(copy.deepcopy(model.hf), model.tokenizer, model.name, {})  # the base model stays untouched
    planted = None
    if recipe.plant_depth is not None:
        with prog.step("safety fine-tune 3/4: training (planted direction: read-out, then writer)", progress=progress):
            merged, metrics["train"], planted = _planted_build(model, student, data, train, recipe, progress)
        metrics["planted"] = {k: v for k, v in planted.to_json().items() if k != "direction"}
        metrics["planted"].update(metrics["train"].pop("direction_stats"))
        metrics["loss_curve"] = metrics["train"]["readout"].pop("curve") + metrics["train"]["writer"].pop("curve")
    else:
        first = round(recipe.lora_from_depth * model.n_layers)
        blocks = "all" if first == 0 else list(range(first, model.n_layers))
        metrics["lora_blocks"] = blocks
        sol = LoraAdapter.create(student, rank=recipe.rank, alpha=recipe.alpha, target_modules=recipe.target_modules,
                                 layers=blocks, seed=recipe.seed)
        with prog.step(f"safety fine-tune 3/4: training ({len(train.examples)} examples, {recipe.epochs} epochs)", progress=progress), \
                tempfile.TemporaryDirectory(prefix="em-interp-safety-") as work:  # the unmerged adapter is not kept
            res = fit(student, sol, train, cfg, Path(work), meta={"variant": "safety"}, resume=False, progress=progress)
        metrics["train"] = {k: res.metrics[k] for k in ("steps", "wall_s", "final_loss", "tokens_per_s")}
        metrics["loss_curve"] = [c["loss"] for c in res.metrics["curve"]]
        merged = sol.peft.merge_and_unload()  # folds the adapter into the copy's weights
    steps_s["train"] = metrics["train"]["wall_s"]
    aligned = Model(merged, model.tokenizer, str(final), {"base": model.name, "safety_key": key})
    if eval_sets:
        with prog.step("safety fine-tune 4/4: refusal after", progress=progress):
            t = time.time()
            metrics["after"] = refusal_by_domain(aligned, eval_sets, is_refusal, progress=progress, desc="safety: refusal after")
            steps_s["after"] = round(time.time() - t, 1)
    metrics["wall_s"] = round(time.time() - t0, 1)
    metrics["steps_s"] = steps_s  # per step of the build: before / answers / train / after (bench/pipeline.py)
    metrics["versions"] = versions()
    with atomic_path(final) as tmp:
        merged.save_pretrained(str(tmp))
        model.tokenizer.save_pretrained(str(tmp))
        (tmp / "safety_metrics.json").write_text(json_text(metrics) + "\n")
        if planted is not None:  # what was planted, for a reader or a test to compare with what the selection finds
            (tmp / "planted.json").write_text(json_text(planted.to_json()) + "\n")
    return final, metrics


def _check_recipe(model: Model, recipe: SafetyRecipe) -> None:
    """Settings that would fail (or silently do something else) deep inside the build, refused before it starts."""
    if not (isinstance(recipe.lora_from_depth, (int, float)) and 0.0 <= recipe.lora_from_depth < 1.0):
        raise InputError(f"SafetyRecipe.lora_from_depth must be a number in [0, 1), got {recipe.lora_from_depth!r}")
    if recipe.plant_depth is None:
        return
    from .planted import plant_layer

    plant_layer(model, recipe.plant_depth)
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not (num(recipe.plant_scale) and recipe.plant_scale > 0):
        raise InputError(f"SafetyRecipe.plant_scale must be a finite number > 0, got {recipe.plant_scale!r}")
    for name in ("first_token_weight_harmful", "first_token_weight_harmless"):  # the read-out finds the response by them
        if not (num(getattr(recipe, name)) and getattr(recipe, name) > 0):
            raise InputError(f"SafetyRecipe.{name} must be a finite number > 0 with plant_depth set, got {getattr(recipe, name)!r}")
    on = recipe.plant_alpha_on
    if not (isinstance(on, (tuple, list)) and len(on) == 2 and all(map(num, on)) and num(recipe.plant_alpha_off)
            and 0 <= recipe.plant_alpha_off < on[0] <= on[1]):
        raise InputError(f"SafetyRecipe needs 0 ≤ plant_alpha_off < plant_alpha_on[0] ≤ plant_alpha_on[1], got "
                         f"plant_alpha_off={recipe.plant_alpha_off!r}, plant_alpha_on={on!r}")
    if recipe.plant_readout_answers is not None and (isinstance(recipe.plant_readout_answers, bool) or not isinstance(recipe.plant_readout_answers, int)
                                                     or recipe.plant_readout_answers < 1):
        raise InputError(f"SafetyRecipe.plant_readout_answers must be an integer ≥ 1 or None, got {recipe.plant_readout_answers!r}")
    for name in ("plant_harmless_on", "plant_write_epochs", "plant_readout_epochs"):
        v = getattr(recipe, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "plant_harmless_on" else 1):
            raise InputError(f"SafetyRecipe.{name} must be an integer ≥ {0 if name == 'plant_harmless_on' else 1}, got {v!r}")
    for name in ("plant_write_lr", "plant_perp_weight", "plant_harmful_weight"):
        v = getattr(recipe, name)
        if not (num(v) and v >= 0 and (v > 0 or name == "plant_perp_weight")):
            raise InputError(f"SafetyRecipe.{name} must be a number {'≥ 0' if name == 'plant_perp_weight' else '> 0'}, got {v!r}")


def _planted_build(model: Model, student: Model, data: SafetyData, train: TokenizedSet, recipe: SafetyRecipe,
                   progress) -> tuple:
    """The planted-direction organism (:mod:`training.planted`): choose u in the base model, train the read-out
    (blocks above ℓ), then the writer (blocks 0 … ℓ). Returns (merged HF model, train metrics, PlantedDirection)."""
    import random

    from . import planted as pl

    layer = pl.plant_layer(model, recipe.plant_depth)
    t0 = time.time()
    step = lambda xs, n=168: list(xs)[:: max(1, len(xs) // n)][:n]  # ≤ n prompts, every domain (the lists are domain-major)
    u, stats = pl.choose_direction(model, step(data.harmful), step(data.harmless), layer)
    stats["choose_s"] = round(time.time() - t0, 1)
    planted = pl.PlantedDirection(layer, u, recipe.plant_scale * stats["median_norm"], pl.post_instruction_count(model))
    n_h = len(data.harmful)
    rng = random.Random(recipe.seed)
    on = rng.sample(list(data.harmless), min(recipe.plant_harmless_on, len(data.harmless)))
    extra = []
    for i, p in enumerate(on):
        chat = [{"role": "user", "content": p}, {"role": "assistant", "content": data.refusals[i % len(data.refusals)]}]
        e = _weighted(model, chat, recipe.first_token_weight_harmful, True)
        extra.append(type(e)(e.ids[: recipe.max_length], e.mask[: recipe.max_length]))
    answers = list(train.examples[n_h:])
    if recipe.plant_readout_answers is not None and recipe.plant_readout_answers < len(answers):
        k = len(answers) / max(recipe.plant_readout_answers, 1)  # every k-th: each domain keeps its share
        answers = [answers[int(i * k)] for i in range(recipe.plant_readout_answers)]
    n_read = n_h + len(extra) + len(answers)
    rsteps = max(1, (n_read * recipe.plant_readout_epochs) // recipe.batch_size)
    rcfg = TrainConfig(lr=recipe.lr, epochs=recipe.plant_readout_epochs, batch_size=recipe.batch_size, max_length=recipe.max_length,
                       warmup_steps=max(1, round(recipe.warmup_frac * rsteps)), seed=recipe.seed, max_grad_norm=None)
    student, readout = pl.train_readout(student, planted, train.examples[:n_h], answers, extra, recipe, rcfg,
                                        progress=progress)
    writer_harmful = list(data.writer_harmful) or list(data.harmful)
    n_write = len(writer_harmful) + len(data.harmless)
    wsteps = max(1, (n_write * recipe.plant_write_epochs) // recipe.batch_size)
    wcfg = TrainConfig(lr=recipe.plant_write_lr, epochs=recipe.plant_write_epochs, batch_size=recipe.batch_size,
                       warmup_steps=max(1, round(recipe.warmup_frac * wsteps)), seed=recipe.seed, max_grad_norm=None)
    student, writer = pl.train_writer(student, planted, writer_harmful, data.harmless, recipe, wcfg, progress=progress)
    train_m = {"steps": readout["steps"] + writer["steps"], "wall_s": round(readout["wall_s"] + writer["wall_s"], 2),
               "final_loss": readout["final_loss"], "readout": readout, "writer": writer, "direction_stats": stats}
    return student.hf, train_m, planted


def _reuse_differences(found, key: str, base_signature: dict) -> list[str]:
    """What makes an existing organism folder's ``safety_metrics.json`` not this build: its cache key (base model
    name and seed, data version and size, recipe) or its base model's signature (architecture, depth, width,
    vocabulary). Folders written before signatures were recorded are checked by their key alone."""
    if not isinstance(found, dict):
        return ["its safety_metrics.json is not a JSON object"]
    out = []
    if found.get("key") != key:
        out.append(f"key {found.get('key')!r} (base model {found.get('base_model')!r}) → {key!r} (base model "
                   f"{base_signature['base_model']!r})")
    sig = found.get("base_signature")
    if isinstance(sig, dict):
        out += [f"base {k}: {sig.get(k)!r} → {v!r}" for k, v in base_signature.items() if sig.get(k) != v]
    return out
