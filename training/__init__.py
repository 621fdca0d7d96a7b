"""Minimal training: LoRA SFT (general / KL-narrow), steering vectors, refusal unlearning, the safety fine-tune."""

from .sft import train_lora
from .steering_vector import train_steering_vector
from .trainer import TrainConfig, TrainResult
from .unlearn import unlearn

__all__ = ["TrainConfig", "TrainResult", "train_lora", "train_steering_vector", "unlearn"]
