"""em-interp core: model loading, hooks, activations, directions, concept vectors."""

from .activations import POSITIONS, collect_activations, mean_activations
from .hooks import hooked, residual_modules
from .io import InputError
from .models import DEFAULT_MODEL, Model, load_model

__all__ = [
    "DEFAULT_MODEL",
    "POSITIONS",
    "InputError",
    "Model",
    "collect_activations",
    "hooked",
    "load_model",
    "mean_activations",
    "residual_modules",
]
