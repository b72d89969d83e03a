"""lift-integrations: absorb long documents into a model's parameters (LIFT + Gated Memory).

``import lift_integrations`` is cheap: torch, transformers and the LangChain/LlamaIndex bindings load
only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "LIFTModel": "lift_integrations.model",
    "ATTACHED": "lift_integrations.model",
    "LIFTConfig": "lift_integrations.config",
    "Memory": "lift_integrations.memory",
    "MemoryFormatError": "lift_integrations.memory",
    "MemoryMismatchError": "lift_integrations.memory",
    "GenerationResult": "lift_integrations.generation",
    "TextStream": "lift_integrations.generation",
    "Document": "lift_integrations.documents",
    "QAPair": "lift_integrations.absorb.types",
    "AbsorbProgress": "lift_integrations.absorb.trainer",
    "GatedMemoryConfig": "lift_integrations.adapters.gated_memory.config",
    "LoRAConfig": "lift_integrations.adapters.lora",
    "MemoryRouter": "lift_integrations.routing",
    "MemoryBank": "lift_integrations.bank",
    "BankRouter": "lift_integrations.bank",
    "BankRouting": "lift_integrations.bank_router",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.absorb.types import QAPair
    from lift_integrations.adapters.gated_memory.config import GatedMemoryConfig
    from lift_integrations.adapters.lora import LoRAConfig
    from lift_integrations.bank import BankRouter, MemoryBank
    from lift_integrations.bank_router import BankRouting
    from lift_integrations.config import LIFTConfig
    from lift_integrations.documents import Document
    from lift_integrations.generation import GenerationResult, TextStream
    from lift_integrations.memory import Memory, MemoryFormatError, MemoryMismatchError
    from lift_integrations.model import ATTACHED, LIFTModel
    from lift_integrations.routing import MemoryRouter


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lift_integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
