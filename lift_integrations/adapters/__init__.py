"""Memory adapters: the trainable parameters that hold an absorbed document.

Each adapter kind has a backend that is installed once on a base model and can then switch between
any number of memories without touching the base weights (see :class:`AdapterBackend`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from lift_integrations.adapters.base import AdapterBackend

ADAPTER_KINDS = ("gated_memory", "lora")


def adapter_config_class(kind: str) -> Any:
    """The configuration class of an adapter kind (``GatedMemoryConfig`` or ``LoRAConfig``)."""
    if kind == "gated_memory":
        from lift_integrations.adapters.gated_memory.config import GatedMemoryConfig

        return GatedMemoryConfig
    if kind == "lora":
        from lift_integrations.adapters.lora import LoRAConfig

        return LoRAConfig
    raise ValueError(f"unknown adapter {kind!r}; expected one of {ADAPTER_KINDS}")


def make_backend(kind: str, model: nn.Module, adapter_config: Any = None) -> AdapterBackend:
    """Install the adapter ``kind`` on ``model``; ``adapter_config`` (a config or its dict) is the default
    for new memories."""
    config_class = adapter_config_class(kind)
    if isinstance(adapter_config, Mapping):
        adapter_config = config_class.from_dict(dict(adapter_config))
    elif adapter_config is not None and not isinstance(adapter_config, config_class):
        raise TypeError(
            f"adapter_config for {kind!r} must be a {config_class.__name__} or a dict, "
            f"got {type(adapter_config).__name__}"
        )
    if kind == "gated_memory":
        from lift_integrations.adapters.gated_memory import GatedMemoryBackend

        return GatedMemoryBackend(model, adapter_config)
    from lift_integrations.adapters.lora import LoRABackend

    return LoRABackend(model, adapter_config)
