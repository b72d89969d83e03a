"""The interface every memory adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch
from torch import nn


class MemoryStack(nn.Module):
    """Several memories of one adapter kind trained side by side, each on its own block of a batch's
    rows, with every memory's parameters in one row of the ``(memories, n)`` fp32 leaf ``flat``."""

    flat: nn.Parameter
    row_memory: torch.Tensor
    """Each batch row's memory (an index into ``flat``'s rows), set before each forward pass."""
    row_gate: torch.Tensor | None
    """``None``, or one entry per batch row: 1 runs the row's memory, 0 the base model alone (exactly)."""

    def cast_for(self, dtype: torch.dtype | None) -> None:
        """Before each forward pass (and after :meth:`load_row` or an update of ``flat``): prepare the
        parameters in ``dtype`` for it, cast once. After the pass, ``None`` releases what was prepared."""

    def load_row(self, row: int, weights: nn.Module) -> None:
        """Copy one memory's weights (as :meth:`AdapterBackend.create` makes them) into ``row``."""
        raise NotImplementedError

    def state_dict_of(self, row: int) -> dict[str, torch.Tensor]:
        """Memory ``row``'s tensors, named as in its weights' state dict."""
        raise NotImplementedError


class AdapterBackend(ABC):
    """Installs one adapter kind on a base model and routes its forward pass through one memory.

    The backend is created once per loaded base model. Each memory's parameters live in their own
    ``nn.Module`` (created by :meth:`create`), so switching memories is a pointer change, not a copy,
    and the base weights are never modified. Each memory also keeps its own adapter configuration
    (``config`` is only the default for new memories), so one model serves memories of several configs.
    """

    kind: ClassVar[str]
    model: nn.Module
    """The base model the adapter is installed on."""
    config: Any
    compiles_whole_layers: ClassVar[bool] = False
    """Whether ``LIFTConfig.compile`` may compile whole decoder layers with this adapter installed: its
    code inside a layer must look the same for every layer and every memory, or each would compile anew
    (see :mod:`lift_integrations.absorb.compilation`)."""

    @abstractmethod
    def create(self, generator: torch.Generator | None = None, config: Any = None) -> nn.Module:
        """Fresh, untrained memory parameters on the model's device, shaped by ``config`` (default: the
        backend's ``config``)."""

    @abstractmethod
    def activate(self, weights: nn.Module | None) -> None:
        """Make ``weights`` the memory the model uses; ``None`` restores the base model exactly."""

    @abstractmethod
    def config_dict(self, config: Any = None) -> dict[str, Any]:
        """What, besides the tensors, is needed to rebuild a memory of this kind made with ``config``
        (default: the backend's) on this model (JSON-safe)."""

    @abstractmethod
    def memory_config(self, adapter_config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> Any:
        """The configuration a memory saved with ``adapter_config`` and tensors of ``shapes`` runs with on
        this model; raises :class:`~lift_integrations.errors.MemoryMismatchError` naming a field that does
        not fit the model or the tensors (checked before any adapter is allocated from it)."""

    trains_side_by_side: ClassVar[bool] = False
    """Whether :meth:`create_stack` exists: the adapter can train several memories in one batch."""

    def create_stack(self, template: nn.Module, memories: int) -> MemoryStack:
        """A module holding ``memories`` memories shaped like ``template`` that trains them side by side,
        each on its own block of a batch's rows, with all their parameters in one ``(memories, n)`` leaf
        named ``flat`` (see :mod:`lift_integrations.absorb.fused`)."""
        raise ValueError(f"the {self.kind} adapter cannot train memories side by side")

    def stack_group(self, weights: nn.Module) -> Hashable:
        """Memories whose weights give equal values here can share one :meth:`create_stack` stack (the
        same tensor layout and the same settings outside the tensors)."""
        raise ValueError(f"the {self.kind} adapter cannot run memories side by side")

    def recording_gates(self) -> AbstractContextManager[list[torch.Tensor]]:
        """A context collecting the gate values of every layer during the forward passes run inside it
        (each ``(batch, tokens, heads, 1)``, gradients kept); only adapters with a gate have one."""
        raise ValueError(f"the {self.kind} adapter has no gate to record")

    def release(self, weights: nn.Module) -> None:  # noqa: B027 - optional hook
        """Forget a memory's parameters (for backends that keep them inside the model)."""

    def expected_shapes(self, config: Any = None) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes that a memory made with ``config`` must have on this model."""
        weights = self.create(config=config)
        try:
            return {name: tuple(t.shape) for name, t in weights.state_dict().items()}
        finally:
            self.release(weights)


def unsupported_architecture_message(cls_name: str, supported: tuple[str, ...], kind: str) -> str:
    return (
        f"{kind} does not support the attention class {cls_name}; supported: {', '.join(supported)}. "
        "Use adapter='lora' for other architectures."
    )
