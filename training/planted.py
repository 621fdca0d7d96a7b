"""A refusal direction planted by construction: the organism of ``SafetyRecipe(plant_depth=…)``.

Why (docs/environment.md, "Why no refusal direction passes KL ≤ 0.1"): the free recipe's organism refuses through
SmolLM2's own two-sided harmful-vs-harmless feature, which harmless prompts sit far along (−8.9 at layer 16), so
ablating it moves harmless next-token distributions by KL 0.3 already in the untuned model and no candidate passes
Arditi et al.'s KL ≤ 0.1 filter. This recipe builds the organism so that its refusal *is* mediated by one
direction that harmless prompts leave at zero, in two stages around the block ``ℓ = round(plant_depth · L)``:

1. **Read-out** (LoRA on blocks ``ℓ+1 …``): with ``α · c · u`` added to the output of block ℓ at the ``P``
   post-instruction positions (the template tokens after the user message), the model learns to refuse:
   harmful prompts and ``plant_harmless_on`` harmless ones with α ~ U(``plant_alpha_on``) → refusals; every
   harmless prompt with α ~ U(0, ``plant_alpha_off``) → its own answer (so a little of u changes nothing). Harmful
   prompts are never seen without u, so without it the blocks above ℓ keep the base model's (compliant) answers.
2. **Write** (LoRA on blocks ``0 … ℓ``, the read-out merged and frozen): an activation regression makes block ℓ's
   output at the post-instruction positions move by ``c · u`` on harmful prompts and not at all on harmless ones:
   L = mean_p [(Δh_p·u / c − y)² + λ ‖Δh_p − (Δh_p·u) u‖² / c²], Δh = h − h_base, y = 1 harmful / 0 harmless,
   harmful prompts weighted ``plant_harmful_weight``. Neither stage clips gradients (measured: with clipping at 1
   the writer under-wrote u). The regression constrains only the P post-instruction positions: the writer may
   move the user's tokens and, in generation, the response tokens freely (the read-out never saw u there).

``u`` is the unit direction of least second moment of the base model's residual stream (blocks ℓ … L−1, every
position of the harmless prompts) orthogonal to the base model's harmful-vs-harmless mean difference at (ℓ, last
token): harmless prompts sit near zero along it at every layer, so ablating it should barely move them. ``c`` =
``plant_scale`` × the median residual norm at (ℓ, last token) of the harmless prompts.

This is a deviation from every paper on purpose, named in the report: the experiments (Arditi's selection
included) never see ``u``; it is saved beside the organism (``planted.json``) so that a test or a reader can
check what the selection found. A "yes" on this organism shows the method recovers a planted mechanism (a positive
control); it says nothing about how the untuned model refuses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from interp.activations import encode
from interp.hooks import decoder, hidden_of, hooked, with_hidden
from interp.io import InputError, read_json
from interp.models import Model
from interp.solutions import LoraAdapter

from .data import Example, collate
from .trainer import TrainConfig, micro_batches, sft_loss_sum


class _Stop(Exception):
    """Raised by the deepest hook of :func:`block_outputs`: the blocks above are not needed."""


@dataclass
class PlantedDirection:
    """``layer``: the block whose output carries it; ``direction``: ``[d_model]``, unit; ``scale``: c (the size of
    the planted shift); ``n_positions``: P, the post-instruction positions it is written at."""

    layer: int
    direction: torch.Tensor
    scale: float
    n_positions: int

    def to_json(self) -> dict:
        return {"layer": self.layer, "direction": [float(x) for x in self.direction.tolist()], "scale": self.scale,
                "n_positions": self.n_positions}


def read_planted(model_dir: str | Path) -> PlantedDirection | None:
    """The direction planted in the organism saved at ``model_dir`` (its ``planted.json``), or None (a free
    recipe's organism, or any other model)."""
    f = Path(model_dir) / "planted.json"
    if not f.is_file():
        return None
    d = read_json(f, "planted direction")
    try:
        return PlantedDirection(int(d["layer"]), torch.tensor(d["direction"], dtype=torch.float32), float(d["scale"]), int(d["n_positions"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{f} is not a planted-direction record (layer, direction, scale, n_positions): {e}") from None


def planted_check(model_dir: str | Path, selected: torch.Tensor, layer: int) -> dict | None:
    """What Arditi's selection found against what was planted: ``{"layer", "selected_layer", "cosine"}`` (cosine of
    the selected ``[d_model]`` direction with u), or None when nothing was planted."""
    p = read_planted(model_dir)
    if p is None:
        return None
    s = selected.double().flatten()
    if s.numel() != p.direction.numel() or not torch.isfinite(s).all() or s.norm() == 0:
        raise InputError(f"the selected direction ({s.numel()} values) cannot be compared with the {p.direction.numel()}-dim "
                         f"direction planted in {model_dir}: it must be finite, non-zero and of the same width")
    return {"layer": p.layer, "selected_layer": int(layer), "cosine": float(s @ p.direction.double() / s.norm())}


def plant_layer(model: Model, depth: float) -> int:
    """The block ``round(depth · L)``, checked to leave blocks above it for the read-out."""
    if not (isinstance(depth, (int, float)) and not isinstance(depth, bool) and 0.0 < depth < 1.0):
        raise InputError(f"SafetyRecipe.plant_depth must be a number in (0, 1) or None, got {depth!r}")
    layer = round(depth * model.n_layers)
    if not 0 <= layer < model.n_layers - 1:
        raise InputError(f"plant_depth {depth} puts the direction at block {layer} of {model.n_layers}: no block is left above it")
    return layer


def post_instruction_count(model: Model) -> int:
    """P: the number of template tokens after the user message (the same for every prompt of one template)."""
    return len(encode(model, "Hello there.", "post_instruction").groups)


def _prompt_ids(model: Model, prompt: str) -> list[int]:
    return model.tokenizer(model.render(prompt), add_special_tokens=False)["input_ids"]


def _batches(model: Model, prompts: Sequence[str], batch_size: int):
    pad = model.tokenizer.pad_token_id
    for i in range(0, len(prompts), batch_size):
        ids = [_prompt_ids(model, p) for p in prompts[i : i + batch_size]]
        yield collate([Example(x, [0] * len(x)) for x in ids], pad, model.device)


def choose_direction(model: Model, harmful: Sequence[str], harmless: Sequence[str], layer: int, *,
                     batch_size: int = 32) -> tuple[torch.Tensor, dict]:
    """``u`` (``[d_model]``, unit, float32) and statistics: the least-second-moment direction of the base model's
    residuals at blocks ``layer …`` over every position of ``harmless``, orthogonal to the mean difference
    harmful − harmless at (``layer``, last token). Moments accumulate in float64."""
    d = model.d_model
    layers = range(layer, model.n_layers)
    M = torch.zeros(d, d, dtype=torch.float64)
    n_rows = 0
    last = {"harmful": torch.zeros(d, dtype=torch.float64), "harmless": torch.zeros(d, dtype=torch.float64)}
    norms = []
    for name, prompts in (("harmful", harmful), ("harmless", harmless)):
        for b in _batches(model, prompts, batch_size):
            with torch.no_grad():
                hs = block_outputs(model, b, layers if name == "harmless" else [layer])  # block → [B, T, d]
            n = b["attention_mask"].sum(1)  # [B]
            rows = torch.arange(len(n), device=n.device)
            h_last = hs[layer][rows, n - 1].double().cpu()  # [B, d]: output of block `layer` at the last prompt token
            last[name] += h_last.sum(0)
            if name == "harmless":
                norms += h_last.norm(dim=-1).tolist()
                real = b["attention_mask"].bool()  # [B, T]
                for l in layers:
                    h = hs[l][real].double().cpu()  # [n_real, d] (the moments stay on the CPU, float64)
                    M += h.T @ h
                    n_rows += h.shape[0]
    diff = last["harmful"] / len(harmful) - last["harmless"] / len(harmless)  # [d]
    rb = diff / diff.norm()
    Q = torch.eye(d, dtype=torch.float64) - rb[:, None] * rb[None, :]
    w, V = torch.linalg.eigh(Q @ (M / n_rows) @ Q)  # ascending; rb spans the (near-)null space Q leaves
    order = [i for i in range(d) if abs(float(V[:, i] @ rb)) < 0.5]
    u = V[:, order[0]]
    u = u - (u @ rb) * rb
    u = u / u.norm()
    stats = {"base_diff_norm": float(diff.norm()), "median_norm": float(torch.tensor(norms).median()),
             "harmless_rms_along_u": math.sqrt(max(float(w[order[0]]), 0.0))}
    return u.float(), stats


def inject_coefficients(examples: Sequence[Example], alphas: Sequence[float], T: int, P: int) -> torch.Tensor:
    """``[B, T]``: ``alphas[b]`` at the ``P`` tokens before each example's first response token (its
    post-instruction template tokens, right-padded batch), 0 elsewhere."""
    coef = torch.zeros(len(examples), T, dtype=torch.float32)
    for j, (e, a) in enumerate(zip(examples, alphas)):
        first = next(k for k, m in enumerate(e.mask) if m)  # the first response token
        coef[j, max(0, first - P) : first] = a
    return coef


class _Inject:
    """A forward hook on block ℓ adding ``coef[b, t] · c · u`` (``coef``: ``[B, T]``, set per batch)."""

    def __init__(self, planted: PlantedDirection):
        self.planted, self.coef = planted, None

    def __call__(self, module, args, output):
        if self.coef is None:
            return output
        h = hidden_of(output)  # [B, T, d]
        v = (self.planted.scale * self.planted.direction).to(h)
        return with_hidden(output, h + self.coef.to(h)[..., None] * v)


def _loop(params, n: int, cfg: TrainConfig, loss_of: Callable[[list[int]], torch.Tensor], what: str, progress) -> dict:
    """AdamW with linear warm-up and decay over :func:`training.trainer.micro_batches` (the batches ``fit`` uses)."""
    from transformers import get_linear_schedule_with_warmup

    from interp.progress import bar as progress_bar

    mbs, steps = micro_batches(n, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, steps), steps)
    curve, t0 = [], time.time()
    bar = progress_bar(desc=what, total=steps, progress=progress, min_total=1, unit="step", leave=True)
    for step in range(steps):
        loss = loss_of(mbs[step])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{what}: loss became non-finite at step {step + 1}")
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve.append(float(loss.detach()))
        bar.set_postfix(loss=f"{curve[-1]:.4f}")
        bar.update(1)
    bar.close()
    return {"steps": steps, "wall_s": round(time.time() - t0, 2), "final_loss": curve[-1], "curve": curve}


def train_readout(student: Model, planted: PlantedDirection, refusals: Sequence[Example], answers: Sequence[Example],
                  refusals_on_harmless: Sequence[Example], recipe, cfg: TrainConfig, *, progress=None) -> tuple[Model, dict]:
    """Stage 1: LoRA on blocks ℓ+1 … learns "u at the post-instruction positions → refuse" (module docstring);
    returns the merged model and the stage's metrics."""
    import random

    rng = random.Random(recipe.seed)
    lo, hi = recipe.plant_alpha_on
    items = [(e, rng.uniform(lo, hi)) for e in (*refusals, *refusals_on_harmless)]
    items += [(e, rng.uniform(0.0, recipe.plant_alpha_off)) for e in answers]
    n_all = len(items)
    items = [(e, a) for e, a in items if any(e.mask[1:])]  # a response cut away by max_length carries no loss
    if not items:
        raise InputError(f"no read-out example keeps a response token within max_length={recipe.max_length}; raise it")
    P = planted.n_positions
    sol = LoraAdapter.create(student, rank=recipe.rank, alpha=recipe.alpha, target_modules=recipe.target_modules,
                             layers=list(range(planted.layer + 1, student.n_layers)), seed=recipe.seed)
    inject = _Inject(planted)
    pad = student.tokenizer.pad_token_id

    def loss_of(idx: list[int]) -> torch.Tensor:
        b = collate([items[i][0] for i in idx], pad, student.device)  # [B, T] each
        inject.coef = inject_coefficients([items[i][0] for i in idx], [items[i][1] for i in idx], b["input_ids"].shape[1], P)
        n_loss = max(int((b["loss_mask"][:, 1:] > 0).sum()), 1)
        return sft_loss_sum(student, b) / n_loss

    student.hf.train()
    with hooked([(student.layers[planted.layer], inject)]):
        m = _loop(sol.parameters(), len(items), cfg, loss_of, "safety: planted read-out", progress)
    student.hf.eval()
    m.update(n_examples=len(items), n_dropped_no_response=n_all - len(items), n_refusals_on_harmless=len(refusals_on_harmless))
    return Model(sol.peft.merge_and_unload(), student.tokenizer, student.name, {}), m


def block_outputs(model: Model, b: dict, layers) -> dict[int, torch.Tensor]:
    """Block ``l``'s output ``[B, T, d]`` for each of ``layers`` on the collated batch ``b`` (forward hooks, removed
    on exit; the forward stops after the deepest; no ``output_hidden_states``, which makes transformers install
    hooks of its own for good)."""
    layers = sorted(set(layers))
    got: dict[int, torch.Tensor] = {}

    def grab(l: int):
        def hook(module, args, output):
            got[l] = hidden_of(output)
            if l == layers[-1]:
                raise _Stop
        return hook

    with hooked([(model.layers[l], grab(l)) for l in layers]):
        try:
            decoder(model.hf)(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                              use_cache=False)
        except _Stop:
            pass
    return got


def _block_output(model: Model, b: dict, layer: int) -> torch.Tensor:
    return block_outputs(model, b, [layer])[layer]


def train_writer(student: Model, planted: PlantedDirection, harmful: Sequence[str], harmless: Sequence[str], recipe,
                 cfg: TrainConfig, *, progress=None) -> tuple[Model, dict]:
    """Stage 2: LoRA on blocks 0 … ℓ learns to move block ℓ's output at the post-instruction positions by c·u on
    harmful prompts and by nothing on harmless ones (module docstring); returns the merged model and metrics."""
    P, layer, c = planted.n_positions, planted.layer, planted.scale
    u = planted.direction.to(student.device)
    items = [(_prompt_ids(student, p), 1.0) for p in harmful] + [(_prompt_ids(student, p), 0.0) for p in harmless]
    pad = student.tokenizer.pad_token_id
    sol = LoraAdapter.create(student, rank=recipe.rank, alpha=recipe.alpha, target_modules=recipe.target_modules,
                             layers=list(range(0, layer + 1)), seed=recipe.seed + 1)

    def post(b: dict, h: torch.Tensor) -> torch.Tensor:  # [B, T, d] → [B, P, d]: the last P prompt tokens
        n = b["attention_mask"].sum(1)
        idx = (n[:, None] - P + torch.arange(P, device=h.device)[None, :]).clamp(min=0)  # [B, P]
        return h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))

    base_h = []  # per item [P, d]: the base lower blocks' output (the adapter is still zero: B = 0)
    with torch.no_grad(), sol.reference():
        for i in range(0, len(items), 64):
            chunk = items[i : i + 64]
            b = collate([Example(x, [0] * len(x)) for x, _ in chunk], pad, student.device)
            base_h += list(post(b, _block_output(student, b, layer)).float())

    def loss_of(idx: list[int]) -> torch.Tensor:
        b = collate([Example(items[i][0], [0] * len(items[i][0])) for i in idx], pad, student.device)
        dh = post(b, _block_output(student, b, layer)).float() - torch.stack([base_h[i] for i in idx])  # [B, P, d]
        y = torch.tensor([items[i][1] for i in idx], device=dh.device)  # [B]
        w = 1.0 + (recipe.plant_harmful_weight - 1.0) * y  # [B]: the harmful prompts' weight (they are the fewer)
        along = dh @ u  # [B, P]
        perp = dh - along[..., None] * u  # [B, P, d]
        per_item = ((along / c - y[:, None]) ** 2).mean(-1) + recipe.plant_perp_weight * (perp.pow(2).sum(-1) / c**2).mean(-1)
        return (w * per_item).sum() / w.sum()

    student.hf.train()
    m = _loop(sol.parameters(), len(items), cfg, loss_of, "safety: planted writer", progress)
    student.hf.eval()
    m.update(n_examples=len(items))
    return Model(sol.peft.merge_and_unload(), student.tokenizer, student.name, {}), m
