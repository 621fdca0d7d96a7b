"""em-interp core: model loading, hooks, activations, directions, concept vectors, interventions, solutions."""

from .activations import POSITIONS, collect_activations, mean_activations
from .concepts import ConceptVectors, concept_vectors
from .directions import Directions, mean_diff
from .export import export_orthogonalized
from .generation import generate
from .hooks import hooked, residual_modules
from .interventions import ablate, ablation_lora, orthogonalize_weights, steer
from .io import InputError
from .models import DEFAULT_MODEL, Model, load_model, with_adapter

__all__ = [
    "DEFAULT_MODEL",
    "POSITIONS",
    "ConceptVectors",
    "Directions",
    "InputError",
    "Model",
    "ablate",
    "ablation_lora",
    "collect_activations",
    "concept_vectors",
    "export_orthogonalized",
    "generate",
    "hooked",
    "load_model",
    "mean_activations",
    "mean_diff",
    "orthogonalize_weights",
    "residual_modules",
    "steer",
    "with_adapter",
]
