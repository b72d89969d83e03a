"""Gated Memory (arXiv 2502.14644): a per-head memory MLP mixed into attention by a learned gate."""

from lift_integrations.adapters.gated_memory.config import GatedMemoryConfig
from lift_integrations.adapters.gated_memory.layer import GatedMemoryLayer, GroupedLinear
from lift_integrations.adapters.gated_memory.model import SUPPORTED_ATTENTION_CLASSES, GatedMemoryBackend

__all__ = [
    "SUPPORTED_ATTENTION_CLASSES",
    "GatedMemoryBackend",
    "GatedMemoryConfig",
    "GatedMemoryLayer",
    "GroupedLinear",
]
