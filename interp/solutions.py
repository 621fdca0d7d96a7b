"""Solutions (a steering vector and a LoRA adapter behind one interface) and their metrics (definitions 7–10):
norms, exact rescaling, efficiency, stability, generic-text KL.

A *solution* is a :class:`Solution`: a :class:`SteeringVector` (``α v`` added after one block) or a
:class:`LoraAdapter` (a peft LoRA adapter in a model). Both have the same methods:

- ``apply(model)`` — a context manager in which ``model`` runs with the solution (a steering vector's hook is removed
  on exit, also when the body raises; a LoRA adapter acts whenever its model runs, so this only checks that
  ``model`` holds it), and ``reference()`` — one in which the model runs without it (π_ref);
- ``norm()`` — ‖θ‖ of definition 7; ``rescaled(norm)``, ``perturbed(eps, seed)`` and ``randomized(seed)`` —
  in-place edits inside a context manager that restores the original tensors bit-exactly on exit (also when the
  body raises — no reload);
- ``save(path, meta)`` (atomic, with a metadata sidecar holding the base model's signature) and
  ``load(path, model)`` (refuses an artifact recorded for another model; ``Solution.load`` reads either kind);
- ``parameters()`` / ``state_dict()`` / ``load_state_dict()`` — what the trainers (``training/``) optimise and
  checkpoint: they train these same objects (:meth:`SteeringVector.create`, :meth:`LoraAdapter.create`).

The metric functions take any solution; a plain ``PeftModel`` is read as its active adapter (:func:`as_solution`).

Definitions implemented:
- ‖θ‖ = sqrt(Σ_modules ‖s·B A‖_F²) with peft's scaling s (α/r, or α/√r with rsLoRA); a steering vector's norm is ‖α v‖.
- rescaling to norm s multiplies every module's B by s/‖θ‖ (so every module's s·BA scales by the same factor); a
  steering vector's v by s/‖α v‖.
- stability: x′ = √(1−ε²) x + ε y for every trained tensor x (each A and B, or v), y Gaussian, orthogonalised to
  x and scaled to ‖x‖ — so ‖x′‖ = ‖x‖ and cos(x, x′) = √(1−ε²); R(ε) = (L(θ′) − L(θ)) / (L(θ₀) − L(θ)) × 100.
- the norm-matched random baseline: every B (or v) becomes a Gaussian tensor of the same Frobenius norm.
"""

from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, ContextManager, Iterator, Sequence

import torch

from .interventions import add_vector
from .io import InputError, NonFiniteError, atomic_path, json_text, load_safetensors, read_json, versions
from .models import Model, check_signature, signature, trained_dir


@dataclass
class LoraModule:
    name: str
    A: torch.nn.Parameter  # [r, d_in]
    B: torch.nn.Parameter  # [d_out, r]
    scaling: float


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


def _lora_norm(mods: Sequence[LoraModule]) -> float:
    total = 0.0
    for m in mods:
        total += ((m.scaling * m.B.double()) @ m.A.double()).pow(2).sum().item()  # ‖s·B A‖_F², [d_out, d_in] in float64
    return math.sqrt(total)


def adapter_norm(peft_model, adapter: str | None = None) -> float:
    """‖θ‖ = sqrt(Σ ‖s·B A‖_F²) (definition 7), accumulated in float64."""
    return _lora_norm(lora_modules(peft_model, adapter))


@contextlib.contextmanager
def _restoring(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)


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


def _gaussian_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian tensor of ``x``'s shape scaled to ``‖x‖_F`` (float64 draw, ``x``'s dtype out)."""
    r = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return (r / r.norm() * x.detach().double().norm()).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The solution abstraction


class Solution(abc.ABC):
    """What the metrics measure and the trainers train: a :class:`SteeringVector` or a :class:`LoraAdapter`.

    Attributes:
        kind: ``"steering_vector"`` or ``"lora"`` (recorded as ``solution`` in the saved metadata).
        model: the model the solution belongs to (``None`` for a steering vector built from a bare tensor; then
            pass one to :meth:`apply` / :meth:`save`).
        settings: what it was built with (recorded in the trainer's run fingerprint and in the saved metadata).
        meta: the metadata :meth:`load` read (empty for a new solution).
    """

    kind: ClassVar[str]
    model: Model | None
    settings: dict
    meta: dict

    # -- what each implementation provides ------------------------------------------------------------------------

    @abc.abstractmethod
    def apply(self, model: Model | None = None) -> ContextManager[None]:
        """A context manager in which ``model`` (default: :attr:`model`) runs with the solution."""

    @abc.abstractmethod
    def reference(self) -> ContextManager[None]:
        """A context manager in which the model runs without the solution (π_ref; no second copy)."""

    @abc.abstractmethod
    def norm(self) -> float:
        """‖θ‖ (definition 7), accumulated in float64."""

    @abc.abstractmethod
    def parameters(self) -> list[torch.Tensor]:
        """The tensors a trainer optimises."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of the trained tensors by name (the trainer's checkpoint format)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy the tensors of :meth:`state_dict` back in place."""

    @abc.abstractmethod
    def directions(self) -> dict[str, torch.Tensor]:
        """The solution's output directions (float64): ``{"vector": v}``, or each rank-1 module's B column."""

    @abc.abstractmethod
    def _scaled_tensors(self) -> list[torch.Tensor]:
        """The tensors :meth:`rescaled` multiplies (every B, or v): the solution's output scales linearly in them."""

    @abc.abstractmethod
    def _perturbed_tensors(self) -> list[torch.Tensor]:
        """Every trained tensor (each module's A and B, or v), in a fixed order: the stability perturbation's."""

    @abc.abstractmethod
    def _write(self, folder: Path, meta: dict) -> None:
        """Write the artifact into the new directory ``folder`` (``meta`` already holds kind, settings, signature)."""

    @classmethod
    @abc.abstractmethod
    def _read(cls, path: Path, model: Model, allow_mismatch: bool) -> "Solution":
        """Read the artifact at ``path`` for ``model``, checking its recorded signature."""

    # -- shared behaviour -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def rescaled(self, norm: float) -> Iterator[float]:
        """Scale the solution to ‖θ‖ = ``norm`` in place (LoRA: every B by norm/‖θ‖; steering vector: v); restore
        on exit. Yields the factor applied (a target equal to the current norm is a bit-exact no-op)."""
        if not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
            raise InputError(f"target norm must be finite and ≥ 0, got {norm}")
        current = self.norm()
        if current == 0:
            raise InputError("the solution has zero norm: it cannot be rescaled")
        factor = norm / current
        targets = self._scaled_tensors()
        with _restoring(targets):
            if factor != 1.0:
                with torch.no_grad():
                    for t in targets:
                        t.mul_(factor)
            yield factor

    @contextlib.contextmanager
    def perturbed(self, eps: float, seed: int) -> Iterator[None]:
        """The stability perturbation (definition 9) of every trained tensor in place, from one Gaussian stream
        seeded by ``seed`` (so two solutions perturbed with the same seed are paired); restored on exit."""
        if not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise InputError(f"eps must lie in [0, 1], got {eps}")
        tensors = self._perturbed_tensors()
        g = torch.Generator().manual_seed(seed)
        with _restoring(tensors):
            with torch.no_grad():
                for t in tensors:
                    t.copy_(perturb_tensor(t, eps, g))
            yield

    @contextlib.contextmanager
    def randomized(self, seed: int = 0) -> Iterator[None]:
        """The norm-matched random baseline in place: every B (or v) becomes a Gaussian tensor with the same
        Frobenius norm (LoRA: A and the scaling kept, so each module's output direction is random); restored on
        exit."""
        targets = self._scaled_tensors()
        g = torch.Generator().manual_seed(seed)
        with _restoring(targets):
            with torch.no_grad():
                for t in targets:
                    t.copy_(_gaussian_like(t, g))
            yield

    def save(self, path: str | Path, meta: dict | None = None, *, model: Model | None = None) -> Path:
        """Write the solution to the directory ``path`` atomically (nothing half-written is left; an existing
        directory is replaced): a steering vector as ``steering_vector.safetensors`` + ``steering_vector.json``, a
        LoRA adapter in peft format + ``em_interp.json``. The JSON holds ``meta``, the package versions, the
        solution's kind and settings and the base model's :func:`~interp.models.signature` (of ``model``, default
        :attr:`model`). Returns ``path``."""
        model = model if model is not None else self.model
        if model is None:
            raise InputError(f"saving a {self.kind} records its base model's signature: pass model=")
        record = {"versions": versions(), **(meta or {}), "solution": self.kind, **self._saved_settings(), **signature(model)}
        with atomic_path(path) as tmp:
            self._write(tmp, record)
        return Path(path)

    def _saved_settings(self) -> dict:
        return dict(self.settings)

    @classmethod
    def load(cls, path: str | Path, model: Model, *, allow_mismatch: bool = False) -> "Solution":
        """The solution saved at ``path`` (or in ``path/final``, a training run's output directory), for ``model``.
        ``Solution.load`` reads either kind; ``SteeringVector.load`` / ``LoraAdapter.load`` only their own. The
        recorded base-model signature must fit ``model`` (:func:`~interp.models.check_signature`; an artifact
        recording none is refused unless ``allow_mismatch``). A loaded LoRA adapter sits in a new peft wrapper of
        ``model.hf``: evaluate it on ``solution.model``."""
        impl = _stored_kind(Path(path))
        if cls is not Solution and impl is not cls:
            raise InputError(f"{path} holds a {impl.kind}, not a {cls.kind}")
        return impl._read(Path(path), model, allow_mismatch)



def _stored_kind(path: Path) -> type[Solution]:
    if (trained_dir(path, "steering_vector.safetensors") / "steering_vector.safetensors").is_file():
        return SteeringVector
    if (trained_dir(path, "adapter_config.json") / "adapter_config.json").is_file():
        return LoraAdapter
    if not path.exists():
        raise InputError(f"solution {path}: no such directory")
    raise InputError(f"{path} holds neither a steering vector (steering_vector.safetensors) nor a peft adapter "
                     f"(adapter_config.json), nor a training run's final/ with one")


def as_solution(x) -> Solution:
    """``x`` as a :class:`Solution`: a solution itself, or a ``PeftModel`` (or a :class:`Model` wrapping one) read
    as its active LoRA adapter."""
    if isinstance(x, Solution):
        return x
    if isinstance(x, Model) and hasattr(x.hf, "peft_config"):
        return LoraAdapter(x.hf, model=x)
    if hasattr(x, "peft_config"):
        return LoraAdapter(x)
    raise InputError(f"not a solution: {type(x).__name__} (expected a SteeringVector, a LoraAdapter or a peft model)")


class SteeringVector(Solution):
    """A steering vector ``v`` (``[d_model]``) added as ``α v`` to the output of block ``layer``, on every real
    token of every sequence (never on padding; :func:`~interp.interventions.add_vector`).

    ``SteeringVector(v, layer, alpha)`` wraps the tensor ``v`` itself (rescaling and perturbation edit it in
    place and restore it); :meth:`create` makes a new trainable one; :meth:`load` reads a saved one. The norm is
    ‖α v‖; rescaling multiplies v.
    """

    kind = "steering_vector"

    def __init__(self, vector: torch.Tensor, layer: int, alpha: float = 1.0, *, model: Model | None = None,
                 meta: dict | None = None):
        if not isinstance(vector, torch.Tensor) or vector.dim() != 1 or not vector.is_floating_point():
            raise InputError(f"a steering vector is a 1-D float tensor [d_model], got "
                             f"{tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha == 0:
            raise InputError(f"steering-vector alpha must be a finite, non-zero scale, got {alpha!r}")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise InputError(f"steering-vector layer must be an integer, got {layer!r}")
        if model is not None:
            layer = model.check_layers([layer])[0]
            self._check_width(model, vector)
            if vector.device != model.device:
                vector = vector.to(model.device)
        self.vector, self.layer, self.alpha, self.model = vector, layer, float(alpha), model
        self.settings = {"layer": layer, "alpha": self.alpha}
        self.meta = meta or {}
        self._on = True

    @classmethod
    def create(cls, model: Model, *, layer: int, alpha: float = 1.0, init: torch.Tensor | None = None) -> "SteeringVector":
        """A new trainable steering vector (an ``nn.Parameter``, float32, zeros unless ``init`` ``[d_model]``) for
        ``model`` at ``layer``."""
        layer = model.check_layers([layer])[0]
        if init is not None:
            if not isinstance(init, torch.Tensor) or tuple(init.shape) != (model.d_model,):
                shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
                raise InputError(f"steering-vector init has shape {shape}; {model.name} needs ({model.d_model},)")
        v = torch.zeros(model.d_model, dtype=torch.float32, device=model.device) if init is None else init.detach().float().clone().to(model.device)
        sv = cls(torch.nn.Parameter(v), layer, alpha, model=model)
        sv.settings = {"layer": sv.layer, "alpha": sv.alpha, "init": None if init is None else "given"}
        return sv

    @staticmethod
    def _check_width(model: Model, vector: torch.Tensor) -> None:
        if vector.shape != (model.d_model,):
            raise InputError(f"steering vector has shape {tuple(vector.shape)} but {model.name} has d_model {model.d_model}")

    def _value(self) -> torch.Tensor | None:
        return self.alpha * self.vector if self._on else None  # [d]; None while reference() is open

    def apply(self, model: Model | None = None) -> ContextManager[None]:
        """Add ``α v`` after block :attr:`layer` of ``model`` for the body of the ``with`` (the hook is removed on
        exit, also when the body raises). The vector is read at every forward: a trained ``nn.Parameter`` gets its
        gradient, and :meth:`rescaled` / :meth:`perturbed` opened inside or outside take effect."""
        model = model if model is not None else self.model
        if model is None:
            raise InputError("a steering vector built without a model needs one: apply(model)")
        layer = model.check_layers([self.layer])[0]
        self._check_width(model, self.vector)
        if not torch.isfinite(self.vector.detach()).all():
            raise InputError("steering vector contains NaN or inf")
        label = f"steering vector alpha={self.alpha:g}"
        if not torch.isfinite(self.alpha * self.vector.detach()).all():
            raise NonFiniteError(f"{label}: alpha × the steering vector overflows float32")
        return add_vector(model, self._value, layers=[layer], label=label)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Switch the addition off (an open :meth:`apply` adds nothing) for the body; restored on exit."""
        was, self._on = self._on, False
        try:
            yield
        finally:
            self._on = was

    def norm(self) -> float:
        return float((self.alpha * self.vector.double()).norm())

    def parameters(self) -> list[torch.Tensor]:
        return [self.vector]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"vector": self.vector.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vector.copy_(state["vector"])

    def directions(self) -> dict[str, torch.Tensor]:
        return {"vector": self.vector.detach().double()}

    def _scaled_tensors(self) -> list[torch.Tensor]:
        return [self.vector]

    def _perturbed_tensors(self) -> list[torch.Tensor]:
        return [self.vector]

    def _saved_settings(self) -> dict:
        return {"layer": self.layer, "alpha": self.alpha}

    def _write(self, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vector": self.vector.detach().cpu().contiguous()}, str(folder / "steering_vector.safetensors"))
        (folder / "steering_vector.json").write_text(json_text(meta, default=str))

    @classmethod
    def _read(cls, path: Path, model: Model, allow_mismatch: bool) -> "SteeringVector":
        v, meta = read_steering_vector(path, model, allow_mismatch=allow_mismatch)
        where = trained_dir(path, "steering_vector.safetensors")
        if "layer" not in meta:
            raise InputError(f"steering vector {where} has no steering_vector.json naming its layer")
        return cls(v.float(), meta["layer"], meta.get("alpha", 1.0), model=model, meta=meta)


def read_steering_vector(path: str | Path, model: Model | None = None, *, allow_mismatch: bool = False) -> tuple[torch.Tensor, dict]:
    """``(vector [d_model], meta)`` of a steering vector directory (or the training output directory holding it in
    ``final/``); with ``model`` given, checks that it was saved for a model of that kind and shape (a directory
    without ``steering_vector.json`` is refused unless ``allow_mismatch``: nothing says it fits)."""
    path = trained_dir(path, "steering_vector.safetensors")
    if not (path / "steering_vector.safetensors").is_file():
        raise InputError(f"{path} holds no steering_vector.safetensors")
    meta_path = path / "steering_vector.json"
    meta = read_json(meta_path, "steering-vector metadata") if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    tensors, _ = load_safetensors(path / "steering_vector.safetensors", "steering vector")
    if "vector" not in tensors:
        raise InputError(f"{path / 'steering_vector.safetensors'}: holds no 'vector' (it has {', '.join(sorted(tensors)) or 'nothing'})")
    v = tensors["vector"]
    if model is not None:
        check_signature(model, meta, f"steering vector {path}", allow_mismatch=allow_mismatch)
        if v.shape != (model.d_model,):
            raise InputError(f"steering vector {path} has shape {tuple(v.shape)} but {model.name} has d_model {model.d_model}")
    return v, meta


class LoraAdapter(Solution):
    """A peft LoRA adapter in a model: ``LoraAdapter(peft_model)`` reads its active adapter (``adapter`` names
    another); :meth:`create` injects a new trainable one; :meth:`load` attaches a saved one. The norm is
    sqrt(Σ ‖s·B A‖_F²); rescaling multiplies every B. peft runs the adapter whenever the model runs, so
    :meth:`apply` only checks that the model holds it; :meth:`reference` disables it."""

    kind = "lora"

    def __init__(self, peft_model, *, adapter: str | None = None, model: Model | None = None, settings: dict | None = None,
                 meta: dict | None = None):
        self.peft = peft_model
        self._modules = lora_modules(peft_model, adapter)
        active = adapter or getattr(peft_model, "active_adapter", None)
        self.adapter = active[0] if isinstance(active, list) else active
        self.model = model
        self.settings = settings if settings is not None else self._config_settings()
        self.meta = meta or {}

    def _config_settings(self) -> dict:
        cfg = getattr(self.peft, "peft_config", {}).get(self.adapter)
        if cfg is None:
            return {}
        targets = cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules or [])
        layers = cfg.layers_to_transform
        return {"rank": cfg.r, "alpha": float(cfg.lora_alpha), "target_modules": targets,
                "layers": "all" if layers is None else ([layers] if isinstance(layers, int) else list(layers)),
                "rslora": bool(cfg.use_rslora)}

    @classmethod
    def create(cls, model: Model, *, rank: int = 1, alpha: float | None = None, target_modules: Sequence[str] | str = ("down_proj",),
               layers: Sequence[int] | str = "all", rslora: bool = False, seed: int = 0) -> "LoraAdapter":
        """Inject a new trainable LoRA adapter into ``model.hf`` (peft's initialisation: A random from ``seed``, B
        = 0; α defaults to the rank). ``target_modules``: module names, or peft's regex / ``"all-linear"``;
        ``layers``: the blocks to put it in. :meth:`remove` takes it out again."""
        from peft import LoraConfig, get_peft_model

        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise InputError(f"LoRA rank must be an integer ≥ 1, got {rank!r}")
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            raise InputError(f"LoRA alpha must be a finite number > 0 (it scales the update by alpha / rank), got {alpha!r}")
        layer_idx = None if layers == "all" else model.check_layers(layers)
        targets = target_modules if isinstance(target_modules, str) else list(target_modules)  # a str is peft's regex / "all-linear"
        settings = {"rank": rank, "alpha": alpha if alpha is not None else float(rank), "target_modules": targets,
                    "layers": "all" if layer_idx is None else layer_idx, "rslora": rslora}
        cfg = LoraConfig(r=rank, lora_alpha=settings["alpha"], target_modules=targets, lora_dropout=0.0,
                         layers_to_transform=layer_idx, use_rslora=rslora, bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                peft = get_peft_model(model.hf, cfg)
            except ValueError as e:  # peft's own matching (names, regexes, "all-linear") decides what is valid
                linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.hf.named_modules() if isinstance(m, torch.nn.Linear)})
                raise InputError(f"cannot put LoRA on target_modules={target_modules!r} of {model.name}: {e} "
                                 f"(its linear layers: {', '.join(linear)})") from None
        sol = cls(peft, model=model, settings=settings)
        for p in sol.parameters():
            p.requires_grad_(True)
        return sol

    def remove(self) -> None:
        """Take the LoRA layers out of the model (it is as before :meth:`create`)."""
        self.peft.unload()

    def apply(self, model: Model | None = None) -> ContextManager[None]:
        """A no-op context (peft runs the adapter whenever its model runs) after checking that ``model`` (default
        :attr:`model`) holds this adapter."""
        model = model if model is not None else self.model
        if model is not None:
            first = self._modules[0].A
            if not any(p is first for p in model.hf.parameters()):
                raise InputError(f"this LoRA adapter is not in {model.name}; apply it to the model it lives in "
                                 f"(solution.model after LoraAdapter.load)")
        return contextlib.nullcontext()

    def reference(self) -> ContextManager[None]:
        return self.peft.disable_adapter()

    def norm(self) -> float:
        return _lora_norm(self._modules)

    def parameters(self) -> list[torch.Tensor]:
        return [p for n, p in self.peft.named_parameters() if "lora_" in n]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.peft.named_parameters() if "lora_" in n}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.peft.named_parameters():
                if "lora_" in n:
                    p.copy_(state[n])

    def modules(self) -> list[LoraModule]:
        """The adapter's (name, A, B, scaling) per LoRA module."""
        return list(self._modules)

    def directions(self) -> dict[str, torch.Tensor]:
        out = {}
        for m in self._modules:
            if m.B.shape[1] != 1:
                raise InputError("direction_similarity compares rank-1 adapters (B is a single column)")
            out[m.name] = m.B[:, 0].detach().double()
        return out

    def _scaled_tensors(self) -> list[torch.Tensor]:
        return [m.B for m in self._modules]

    def _perturbed_tensors(self) -> list[torch.Tensor]:
        return [t for m in self._modules for t in (m.A, m.B)]

    def _write(self, folder: Path, meta: dict) -> None:
        self.peft.save_pretrained(str(folder))
        (folder / "em_interp.json").write_text(json_text(meta, default=str))

    @classmethod
    def _read(cls, path: Path, model: Model, allow_mismatch: bool) -> "LoraAdapter":
        from .models import with_adapter

        m = with_adapter(model, path, allow_mismatch=allow_mismatch)  # checks em_interp.json's signature
        where = Path(m.meta["adapter"])
        meta = read_json(where / "em_interp.json", "adapter metadata") if (where / "em_interp.json").is_file() else {}
        return cls(m.hf, model=m, meta=meta if isinstance(meta, dict) else {})


def solution_norm(solution) -> float:
    """‖θ‖ of any solution (:meth:`Solution.norm`; a ``PeftModel`` is its active adapter)."""
    return as_solution(solution).norm()


def rescaled(solution, norm: float) -> ContextManager[float]:
    """:meth:`Solution.rescaled` of any solution (a ``PeftModel`` is its active adapter)."""
    return as_solution(solution).rescaled(norm)


def perturbed(solution, eps: float, seed: int) -> ContextManager[None]:
    """:meth:`Solution.perturbed` of any solution (a ``PeftModel`` is its active adapter)."""
    return as_solution(solution).perturbed(eps, seed)


def randomized_b(peft_model, seed: int = 0) -> ContextManager[None]:
    """The norm-matched random baseline of a LoRA solution (:meth:`Solution.randomized`): every module's B becomes
    a Gaussian matrix with the same Frobenius norm (A and the scaling kept); restored on exit."""
    return as_solution(peft_model).randomized(seed)


# ----------------------------------------------------------------------------------------------------------------
# Losses


def response_loss(model: Model, chats, *, batch_size: int = 8) -> float:
    """Token-weighted mean NLL over the response tokens of ``chats`` (float64 accumulation; padding ignored)."""
    from .logits import response_logprobs

    total, count = response_logprobs(model, chats, batch_size=batch_size)
    if count.sum() == 0:
        raise InputError("no response tokens to score")
    return float(-total.sum() / count.sum())


def _loss_under(model: Model, solution: Solution, chats, batch_size: int) -> float:
    with solution.apply(model):
        return response_loss(model, chats, batch_size=batch_size)


def _base_loss(model: Model, solution: Solution, chats, batch_size: int) -> float:
    with solution.reference():
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
    solution = as_solution(solution)
    n = solution.norm()
    if n == 0:
        raise InputError("the solution has zero norm")
    loss = _loss_under(model, solution, chats, batch_size)
    return Efficiency(loss, n, loss / n**2, _base_loss(model, solution, chats, batch_size))


def efficiency_curve(model: Model, solutions: dict, chats, norms: Sequence[float], *, batch_size: int = 8) -> dict:
    """Loss at each norm for each named solution (rescaled in place, restored after)."""
    out = {}
    for name, raw in solutions.items():
        sol = as_solution(raw)
        losses = []
        for s in norms:
            with sol.rescaled(s):
                losses.append(_loss_under(model, sol, chats, batch_size))
        out[name] = {"norms": list(norms), "loss": losses, "norm": sol.norm()}
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
    solution = as_solution(solution)
    L = _loss_under(model, solution, chats, batch_size)
    L0 = _base_loss(model, solution, chats, batch_size)
    if L0 == L:
        raise InputError("the solution does not change the loss (L(θ₀) = L(θ)); R(ε) is undefined")
    per = []
    for e in eps:
        rs = []
        for k in seed_list:
            with solution.perturbed(e, seed=k):
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
    for each named solution and for its norm-matched random baseline ``NAME_random`` (:meth:`Solution.randomized`:
    a Gaussian v at the same layer, or Gaussian B's with A kept, drawn from ``random_seed``), rescaled to the same
    norms. (The random steering vector is drawn as before, then scaled to ‖v‖ before rescaling: the same vector up
    to float32 rounding.)"""
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
    for name, raw in solutions.items():
        sol = as_solution(raw)
        with sol.reference():
            base = logprobs()  # the model without the solution
        for label, ctx in ((name, contextlib.nullcontext), (f"{name}_random", lambda: sol.randomized(random_seed))):
            kls = []
            with ctx():
                for n in norms:
                    with sol.rescaled(n), sol.apply(model):
                        kls.append(mean_kl(base, logprobs()))
            res[label] = {"norms": list(norms), "kl": kls}
    return res


def direction_similarity(a, b) -> dict:
    """Cosine between two solutions' directions: per LoRA module the rank-1 B vectors (``[d_out]``), or the
    steering vectors; ``a``/``b`` may also be plain ``[d]`` tensors, and ``b`` may be a per-layer mean-diff
    :class:`~interp.directions.Directions` (e.g. the misalignment direction), compared module by module at the
    module's layer."""
    def vecs(x) -> dict[str, torch.Tensor]:
        if isinstance(x, torch.Tensor):
            return {"vector": x.detach().double()}
        return as_solution(x).directions()

    from .directions import Directions

    if isinstance(b, Directions) and not isinstance(a, torch.Tensor) and isinstance(as_solution(a), LoraAdapter):
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
    solutions = {k: as_solution(s) for k, s in solutions.items()}
    norms0 = {k: s.norm() for k, s in solutions.items()}
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
