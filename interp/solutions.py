"""Solution metrics (definitions 7–10): adapter norms, exact rescaling, efficiency, stability, generic-text KL.

A *solution* is a LoRA adapter attached to the model (``PeftModel``; its active adapter) or a steering vector.
Every in-place edit (rescale, perturbation) happens inside a context manager that restores the original tensors
bit-exactly on exit, also when the body raises — no reload.

Definitions implemented:
- ‖θ‖ = sqrt(Σ_modules ‖s·B A‖_F²) with peft's scaling s (α/r, or α/√r with rsLoRA); a steering vector's norm is ‖α v‖.
- rescaling to norm s multiplies every module's B by s/‖θ‖ (so every module's s·BA scales by the same factor).
- stability: x′ = √(1−ε²) x + ε y for every trained tensor x (each A and B, or v), y Gaussian, orthogonalised to
  x and scaled to ‖x‖ — so ‖x′‖ = ‖x‖ and cos(x, x′) = √(1−ε²); R(ε) = (L(θ′) − L(θ)) / (L(θ₀) − L(θ)) × 100.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .interventions import steer
from .io import InputError
from .models import Model


@dataclass
class LoraModule:
    name: str
    A: torch.nn.Parameter  # [r, d_in]
    B: torch.nn.Parameter  # [d_out, r]
    scaling: float


@dataclass
class SteeringSolution:
    """A steering vector ``v`` added as ``α v`` after block ``layer``."""

    vector: torch.Tensor
    layer: int
    alpha: float = 1.0

    def active(self, model: Model):
        if self.alpha == 0 or not bool(self.vector.detach().abs().max() > 0):
            return contextlib.nullcontext()  # rescaled to norm 0: no steering at all
        return steer(model, self.vector, layers=[self.layer], alpha=self.alpha)


def lora_modules(peft_model, adapter: str | None = None) -> list[LoraModule]:
    """The LoRA (A, B, scaling) triples of ``adapter`` (default: the active one)."""
    adapter = adapter or getattr(peft_model, "active_adapter", None)
    if isinstance(adapter, list):
        adapter = adapter[0]
    mods = []
    for name, m in peft_model.named_modules():
        if hasattr(m, "lora_A") and adapter in getattr(m, "lora_A", {}):
            mods.append(LoraModule(name, m.lora_A[adapter].weight, m.lora_B[adapter].weight, float(m.scaling[adapter])))
    if not mods:
        raise InputError(f"no trainable LoRA weights found for adapter {adapter!r}")
    return mods


def adapter_norm(peft_model, adapter: str | None = None) -> float:
    """‖θ‖ = sqrt(Σ ‖s·B A‖_F²) (definition 7), accumulated in float64."""
    total = 0.0
    for m in lora_modules(peft_model, adapter):
        total += ((m.scaling * m.B.double()) @ m.A.double()).pow(2).sum().item()
    return math.sqrt(total)


def solution_norm(solution) -> float:
    if isinstance(solution, SteeringSolution):
        return float((solution.alpha * solution.vector.double()).norm())
    return adapter_norm(solution)


def _tensors(solution) -> list[torch.Tensor]:
    if isinstance(solution, SteeringSolution):
        return [solution.vector]
    return [t for m in lora_modules(solution) for t in (m.A, m.B)]


@contextlib.contextmanager
def _restoring(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)


@contextlib.contextmanager
def rescaled(solution, norm: float) -> Iterator[float]:
    """Scale the solution to ‖θ‖ = ``norm`` in place (LoRA: every B by norm/‖θ‖; steering: v); restore on exit.
    Yields the factor applied."""
    if not math.isfinite(norm) or norm < 0:
        raise InputError(f"target norm must be finite and ≥ 0, got {norm}")
    current = solution_norm(solution)
    if current == 0:
        raise InputError("the solution has zero norm: it cannot be rescaled")
    factor = norm / current
    targets = [solution.vector] if isinstance(solution, SteeringSolution) else [m.B for m in lora_modules(solution)]
    with _restoring(targets):
        if factor != 1.0:
            with torch.no_grad():
                for t in targets:
                    t.mul_(factor)
        yield factor


def perturb_tensor(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """√(1−ε²) x + ε y with y ~ N(0, I), orthogonalised to x and scaled to ‖x‖ (float64 math, x's dtype out)."""
    xd = x.detach().double().flatten()
    y = torch.randn(xd.shape, generator=generator, dtype=torch.float64)
    nx = xd.norm()
    if nx == 0:
        return x.detach().clone()
    y = y - (y @ xd) / (nx * nx) * xd
    y = y / y.norm() * nx
    return (math.sqrt(1 - eps * eps) * xd + eps * y).view_as(x).to(x.dtype)


@contextlib.contextmanager
def perturbed(solution, eps: float, seed: int) -> Iterator[None]:
    """Apply the stability perturbation (definition 9) to every trained tensor in place; restore on exit."""
    if not 0 <= eps <= 1:
        raise InputError(f"eps must lie in [0, 1], got {eps}")
    tensors = _tensors(solution)
    g = torch.Generator().manual_seed(seed)
    with _restoring(tensors):
        with torch.no_grad():
            for t in tensors:
                t.copy_(perturb_tensor(t, eps, g))
        yield


# ----------------------------------------------------------------------------------------------------------------
# Losses


def response_loss(model: Model, chats, *, batch_size: int = 8) -> float:
    """Token-weighted mean NLL over the response tokens of ``chats`` (float64 accumulation; padding ignored)."""
    from .logits import response_logprobs

    total, count = response_logprobs(model, chats, batch_size=batch_size)
    if count.sum() == 0:
        raise InputError("no response tokens to score")
    return float(-total.sum() / count.sum())


def _loss_under(model: Model, solution, chats, batch_size: int) -> float:
    if isinstance(solution, SteeringSolution):
        with solution.active(model):
            return response_loss(model, chats, batch_size=batch_size)
    return response_loss(model, chats, batch_size=batch_size)


def _base_loss(model: Model, solution, chats, batch_size: int) -> float:
    if isinstance(solution, SteeringSolution):
        return response_loss(model, chats, batch_size=batch_size)
    with solution.disable_adapter():
        return response_loss(model, chats, batch_size=batch_size)


@dataclass
class Efficiency:
    loss: float
    norm: float
    efficiency: float  # L / ‖θ‖²
    base_loss: float


def efficiency(model: Model, solution, chats, *, batch_size: int = 8) -> Efficiency:
    """L(θ), ‖θ‖ and L/‖θ‖² (definition 8) on the response tokens of ``chats``."""
    if len(chats) == 0:
        raise InputError("efficiency needs a non-empty data set")
    n = solution_norm(solution)
    if n == 0:
        raise InputError("the solution has zero norm")
    loss = _loss_under(model, solution, chats, batch_size)
    return Efficiency(loss, n, loss / n**2, _base_loss(model, solution, chats, batch_size))


def efficiency_curve(model: Model, solutions: dict, chats, norms: Sequence[float], *, batch_size: int = 8) -> dict:
    """Loss at each norm for each named solution (rescaled in place, restored after)."""
    out = {}
    for name, sol in solutions.items():
        losses = []
        for s in norms:
            with rescaled(sol, s):
                losses.append(_loss_under(model, sol, chats, batch_size))
        out[name] = {"norms": list(norms), "loss": losses, "norm": solution_norm(sol)}
    return out


@dataclass
class Stability:
    eps: list[float]
    mean: list[float]
    sd: list[float]
    per_seed: list[list[float]] = field(default_factory=list)  # [n_eps][n_seeds]
    loss: float = 0.0
    base_loss: float = 0.0
    seeds: list[int] = field(default_factory=list)  # the perturbation seeds, in per_seed's order


def stability(model: Model, solution, chats, *, eps: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
              seeds: int | Sequence[int] = 10, batch_size: int = 8) -> Stability:
    """R(ε) mean and sd over paired seeds — definition 9. ``seeds``: a count k (seeds 0…k−1) or the seeds
    themselves; seed s draws the same Gaussian stream for every solution, so two solutions evaluated with the same
    seeds are paired (see :func:`paired_stability`)."""
    if len(chats) == 0:
        raise InputError("stability needs a non-empty data set")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(k) for k in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise InputError(f"stability needs ≥ 1 distinct perturbation seeds, got {seeds!r}")
    L = _loss_under(model, solution, chats, batch_size)
    L0 = _base_loss(model, solution, chats, batch_size)
    if L0 == L:
        raise InputError("the solution does not change the loss (L(θ₀) = L(θ)); R(ε) is undefined")
    per = []
    for e in eps:
        rs = []
        for k in seed_list:
            with perturbed(solution, e, seed=k):
                rs.append((_loss_under(model, solution, chats, batch_size) - L) / (L0 - L) * 100.0)
        per.append(rs)
    t = torch.tensor(per, dtype=torch.float64)
    sd = t.std(1) if len(seed_list) > 1 else torch.zeros(len(eps), dtype=torch.float64)
    return Stability(list(eps), t.mean(1).tolist(), sd.tolist(), per, L, L0, seed_list)


MIN_PAIRED_SEEDS = 5  # the bar for a stability comparison (definition 9 asks ≥ 10)


def paired_stability(a: Stability, b: Stability) -> dict:
    """Per ε the paired differences R_a(ε, s) − R_b(ε, s) over the shared seeds s (e.g. a = narrow, b = general:
    > 0 where a is less stable): ``diff`` ``[n_eps][n_seeds]``, its ``mean`` and ``sd`` per ε, ``n_seeds``, and
    ``powered`` (≥ :data:`MIN_PAIRED_SEEDS` seeds). Raises unless both used the same ε grid and seeds."""
    if list(a.eps) != list(b.eps):
        raise InputError(f"the two stability runs used different ε grids ({a.eps} vs {b.eps})")
    if not a.seeds or list(a.seeds) != list(b.seeds):
        raise InputError(f"the two stability runs are not paired: seeds {a.seeds} vs {b.seeds}")
    d = torch.tensor(a.per_seed, dtype=torch.float64) - torch.tensor(b.per_seed, dtype=torch.float64)  # [n_eps, n_seeds]
    n = d.shape[1]
    sd = d.std(1) if n > 1 else torch.full((d.shape[0],), float("nan"), dtype=torch.float64)
    return {"eps": list(a.eps), "seeds": list(a.seeds), "n_seeds": n, "powered": n >= MIN_PAIRED_SEEDS, "diff": d.tolist(),
            "mean": d.mean(1).tolist(), "sd": sd.tolist()}


def generic_kl(model: Model, solutions: dict, prose: Sequence[str], norms: Sequence[float], *, batch_size: int = 8,
               random_seed: int = 0) -> dict:
    """KL(p_base ‖ p_steered) per non-padding token of plain prose (no chat template) vs norm (definition 10),
    for each named solution; steering solutions also get a norm-matched random direction at the same layer."""
    from .activations import Encoded, make_batches

    if len(prose) == 0:
        raise InputError("generic_kl needs prose")
    enc = [Encoded(model.tokenizer(t)["input_ids"], [[0]]) for t in prose]
    batches = make_batches(enc, batch_size, model.tokenizer.pad_token_id, model.device)

    def logprobs() -> list[torch.Tensor]:
        out = []
        for b in batches:
            with torch.inference_mode():
                lg = model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False).logits
            out.append(torch.log_softmax(lg.double(), -1)[b.attention_mask.bool()])  # [n_real_tokens, V]
        return out

    def mean_kl(p: list[torch.Tensor], q: list[torch.Tensor]) -> float:
        s = sum(float((a.exp() * (a - b)).sum()) for a, b in zip(p, q))
        return s / sum(a.shape[0] for a in p)

    res: dict = {}
    base = None
    for name, sol in solutions.items():
        if isinstance(sol, SteeringSolution):
            base = base or logprobs()
            g = torch.Generator().manual_seed(random_seed)
            rand = SteeringSolution(torch.randn(sol.vector.shape, generator=g, dtype=torch.float64).float(), sol.layer, sol.alpha)
            for label, s in ((name, sol), (f"{name}_random", rand)):
                kls = []
                for n in norms:
                    with rescaled(s, n):
                        with s.active(model):
                            kls.append(mean_kl(base, logprobs()))
                res[label] = {"norms": list(norms), "kl": kls}
        else:
            with sol.disable_adapter():
                b0 = logprobs()
            for label, ctx in ((name, contextlib.nullcontext), (f"{name}_random", lambda: randomized_b(sol, random_seed))):
                kls = []
                with ctx():
                    for n in norms:
                        with rescaled(sol, n):
                            kls.append(mean_kl(b0, logprobs()))
                res[label] = {"norms": list(norms), "kl": kls}
    return res


@contextlib.contextmanager
def randomized_b(peft_model, seed: int = 0) -> Iterator[None]:
    """The norm-matched random baseline of a LoRA solution: every module's B becomes a Gaussian matrix with the
    same Frobenius norm (A and the scaling kept, so each module's output direction is random); restored on exit."""
    mods = lora_modules(peft_model)
    g = torch.Generator().manual_seed(seed)
    with _restoring([m.B for m in mods]):
        with torch.no_grad():
            for m in mods:
                r = torch.randn(m.B.shape, generator=g, dtype=torch.float64)
                m.B.copy_((r / r.norm() * m.B.double().norm()).to(m.B.dtype))
        yield


def direction_similarity(a, b) -> dict:
    """Cosine between two solutions' directions: per LoRA module the rank-1 B vectors (``[d_out]``), or the
    steering vectors; ``a``/``b`` may also be plain ``[d]`` tensors, and ``b`` may be a per-layer mean-diff
    :class:`~interp.directions.Directions` (e.g. the misalignment direction), compared module by module at the
    module's layer."""
    def vecs(x) -> dict[str, torch.Tensor]:
        if isinstance(x, torch.Tensor):
            return {"vector": x.detach().double()}
        if isinstance(x, SteeringSolution):
            return {"vector": x.vector.detach().double()}
        out = {}
        for m in lora_modules(x):
            if m.B.shape[1] != 1:
                raise InputError("direction_similarity compares rank-1 adapters (B is a single column)")
            out[m.name] = m.B[:, 0].detach().double()
        return out

    from .directions import Directions

    if isinstance(b, Directions) and not isinstance(a, (torch.Tensor, SteeringSolution)):
        # LoRA vs a per-layer mean-diff direction: each module's B against the direction at that module's layer
        import re

        out = {}
        for name, vec in vecs(a).items():
            m = re.search(r"layers\.(\d+)\.", name)
            if m and int(m.group(1)) in b.layers:
                out[name] = float(torch.nn.functional.cosine_similarity(vec, b.vector(int(m.group(1))).double(), dim=0))
        if not out:
            raise InputError("no LoRA module lies in a layer covered by the directions")
        return out
    if isinstance(b, Directions):
        raise InputError("compare a steering vector with directions.vector(layer), a [d] tensor")
    va, vb = vecs(a), vecs(b)
    if set(va) == set(vb):
        return {k: float(torch.nn.functional.cosine_similarity(va[k], vb[k], dim=0)) for k in va}
    if len(va) == 1 and len(vb) == 1:
        (x,), (y,) = va.values(), vb.values()
        if x.shape != y.shape:
            raise InputError(f"directions have different widths {x.shape[0]} and {y.shape[0]}")
        return {"vector": float(torch.nn.functional.cosine_similarity(x, y, dim=0))}
    raise InputError("the two solutions have different modules; they were not trained on the same base/targets")


def compare_solutions(model_by_name: dict[str, Model], solutions: dict, chats, prose: Sequence[str], *,
                      norm_factors: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
                      eps: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0), seeds: int = 10, batch_size: int = 8) -> dict:
    """Efficiency, equal-norm loss curves, stability and generic-text KL for each named solution (e.g. ``general``
    and ``narrow``), all at the same absolute norms (``norm_factors`` × the mean of the solutions' norms) and with
    paired perturbation seeds (0…``seeds``−1 for every solution). With two solutions ``stability_paired`` holds the
    per-seed differences (first − second, :func:`paired_stability`). ``model_by_name[name]`` is the model the
    solution acts on."""
    if not solutions:
        raise InputError("no solutions to compare")
    norms0 = {k: solution_norm(s) for k, s in solutions.items()}
    if any(n == 0 for n in norms0.values()):
        raise InputError(f"zero-norm solution(s): {[k for k, n in norms0.items() if n == 0]}")
    mean_norm = sum(norms0.values()) / len(norms0)
    grid = [f * mean_norm for f in norm_factors]
    res: dict = {"norms": norms0, "grid": grid, "efficiency": {}, "efficiency_curve": {}, "stability": {}, "generic_kl": {}}
    for name, sol in solutions.items():
        m = model_by_name[name]
        e = efficiency(m, sol, chats, batch_size=batch_size)
        res["efficiency"][name] = e.__dict__
        res["efficiency_curve"].update(efficiency_curve(m, {name: sol}, chats, grid, batch_size=batch_size))
        st = stability(m, sol, chats, eps=eps, seeds=seeds, batch_size=batch_size)
        res["stability"][name] = st.__dict__
        res["generic_kl"].update(generic_kl(m, {name: sol}, prose, grid, batch_size=batch_size))
    if len(solutions) == 2:
        a, b = (Stability(**res["stability"][k]) for k in solutions)
        res["stability_paired"] = {"first": list(solutions)[0], "second": list(solutions)[1], **paired_stability(a, b)}
    return res
