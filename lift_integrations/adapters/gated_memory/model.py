"""Installing Gated Memory on a Hugging Face model through forward hooks.

The adapter needs two points inside every attention layer: the pre-RoPE query, and the attention output
just before ``o_proj``. Both are module boundaries in every supported architecture (``q_proj``, followed
by ``q_norm`` where the model has one, and ``o_proj``), so hooks reach them without copying or
overriding any attention code. This keeps the adapter independent of the attention backend (eager,
sdpa, flash), of the KV cache and of transformers' private symbols.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lift_integrations.adapters.base import AdapterBackend, unsupported_architecture_message
from lift_integrations.adapters.gated_memory.config import GatedMemoryConfig
from lift_integrations.adapters.gated_memory.layer import GatedMemoryLayer
from lift_integrations.adapters.gated_memory.stacked import GatedMemoryStack
from lift_integrations.errors import MemoryMismatchError

SUPPORTED_ATTENTION_CLASSES: tuple[str, ...] = (
    "LlamaAttention",
    "MistralAttention",
    "Qwen2Attention",
    "Qwen3Attention",
    "Gemma2Attention",
    "Gemma3Attention",
)


class GatedMemoryWeights(nn.Module):
    """The parameters of one memory: a :class:`GatedMemoryLayer` per decoder layer."""

    def __init__(self, layers: list[GatedMemoryLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


def find_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer, in order; raises for unsupported classes."""
    found = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "o_proj")]
    if not found:
        attention = [type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Attention")]
        name = attention[0] if attention else type(model).__name__
        raise ValueError(unsupported_architecture_message(name, SUPPORTED_ATTENTION_CLASSES, "Gated Memory"))
    for module in found:
        names = {cls.__name__ for cls in type(module).__mro__}
        if names.isdisjoint(SUPPORTED_ATTENTION_CLASSES):
            raise ValueError(
                unsupported_architecture_message(
                    type(module).__name__, SUPPORTED_ATTENTION_CLASSES, "Gated Memory"
                )
            )
    return found


class GatedMemoryBackend(AdapterBackend):
    """Hooks Gated Memory into every attention layer of ``model``.

    Hooks are present only while a memory is active; with none active the model runs its original
    code path, so its logits are exactly the base model's.
    """

    kind = "gated_memory"
    compiles_whole_layers = True  # per-layer state lives on LayerHooks objects, not in layer indices
    trains_side_by_side = True

    def __init__(self, model: nn.Module, config: GatedMemoryConfig | None = None) -> None:
        self.model = model
        self.config = config or GatedMemoryConfig()
        self.attention = find_attention_modules(model)
        first: Any = self.attention[0]  # a transformers attention module: config, head_dim
        self.num_heads = int(first.config.num_attention_heads)
        self.head_dim = int(first.head_dim)
        self.attention_bias = bool(getattr(first.config, "attention_bias", False))
        self._handles: list[RemovableHandle] = []
        self._slots = [
            LayerHooks(self.num_heads, self.head_dim, getattr(attention, "q_norm", None))
            for attention in self.attention
        ]

    def create(
        self, generator: torch.Generator | None = None, config: GatedMemoryConfig | None = None
    ) -> GatedMemoryWeights:
        config = config or self.config
        param = next(self.model.parameters())
        layers = []
        for _ in self.attention:
            layer = GatedMemoryLayer(self.num_heads, self.head_dim, config, bias=self._bias(config))
            layer.reset_parameters(config.initial_gate_bias, generator=generator)
            layers.append(layer)
        # Parameters stay fp32 (the optimizer's master copy); they are cast to the activations' dtype.
        return GatedMemoryWeights(layers).to(device=param.device, dtype=torch.float32)

    def create_stack(self, template: nn.Module, memories: int) -> GatedMemoryStack:
        return GatedMemoryStack(template, memories)

    def stack_group(self, weights: nn.Module) -> Hashable:
        layers = cast(nn.ModuleList, weights.layers)
        first = cast(GatedMemoryLayer, layers[0])
        shapes = tuple((name, tuple(t.shape)) for name, t in weights.state_dict().items())
        return (first.gate_scale, first.gate_shift, shapes)

    def activate(self, weights: nn.Module | None) -> None:
        if weights is None:
            self._remove_hooks()
            return
        known = isinstance(weights, (GatedMemoryWeights, GatedMemoryStack))
        layers = cast(nn.ModuleList, weights.layers)
        if not known or len(layers) != len(self.attention):
            raise ValueError("these weights do not belong to a Gated Memory of this model")
        for slot, layer in zip(self._slots, layers, strict=True):
            slot.memory = cast(GatedMemoryLayer, layer)
        if not self._handles:
            self._install_hooks()

    @contextlib.contextmanager
    def recording_gates(self) -> Iterator[list[torch.Tensor]]:
        gates: list[torch.Tensor] = []
        for slot in self._slots:
            slot.gate_sink = gates
        try:
            yield gates
        finally:
            for slot in self._slots:
                slot.gate_sink = None

    def config_dict(self, config: GatedMemoryConfig | None = None) -> dict[str, Any]:
        config = config or self.config
        return {**self._structure(), **config.to_dict(), "bias": self._bias(config)}

    def memory_config(
        self, adapter_config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
    ) -> GatedMemoryConfig:
        for field, value in self._structure().items():
            if adapter_config.get(field) != value:
                raise MemoryMismatchError(
                    f"the memory's Gated Memory has {field}={adapter_config.get(field)!r}, "
                    f"this model needs {field}={value}"
                )
        config = GatedMemoryConfig.from_dict(dict(adapter_config))
        hidden = config.hidden_multiplier * self.head_dim
        if shapes.get("layers.0.mem_in.weight", (hidden,))[-1] != hidden:
            raise MemoryMismatchError(
                f"the memory's hidden_multiplier={config.hidden_multiplier} does not fit its tensors"
            )
        return config

    def _structure(self) -> dict[str, int]:
        """The fields of a memory's configuration that the model fixes."""
        return {"num_layers": len(self.attention), "num_heads": self.num_heads, "head_dim": self.head_dim}

    def _bias(self, config: GatedMemoryConfig) -> bool:
        return self.attention_bias if config.bias is None else config.bias

    def _install_hooks(self) -> None:
        for attention, slot in zip(self.attention, self._slots, strict=True):
            q_proj, o_proj = cast(nn.Module, attention.q_proj), cast(nn.Module, attention.o_proj)
            self._handles.append(q_proj.register_forward_hook(slot.on_query))
            self._handles.append(o_proj.register_forward_pre_hook(slot.on_output))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for slot in self._slots:
            slot.memory = None
            slot.pending = None


class LayerHooks:
    """The hooks of one attention layer and what passes between them: the memory layer's ``(mem, gate)``
    for the query ``q_proj`` just produced, consumed by the pre-hook of ``o_proj``.

    Each layer's state lives on its own object rather than in a list indexed by layer, so every layer's
    hooks run the same code on different objects: a compiled decoder layer
    (:mod:`lift_integrations.absorb.compilation`) then serves every layer instead of being specialised
    to one layer index.
    """

    def __init__(self, num_heads: int, head_dim: int, query_norm: nn.Module | None) -> None:
        self.num_heads = num_heads
        self.head_dim = head_dim
        # Qwen3 and Gemma3 normalise the query per head (q_norm) before RoPE. Their layouts around q_norm
        # differ, so the norm is applied here on q_proj's output, whose layout is the same everywhere.
        self.query_norm = query_norm
        self.memory: GatedMemoryLayer | None = None
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.gate_sink: list[torch.Tensor] | None = None
        """Where the gates go while :meth:`GatedMemoryBackend.recording_gates` is entered."""

    def on_query(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if self.memory is None:
            return
        query = output.view(*output.shape[:2], self.num_heads, self.head_dim)
        if self.query_norm is not None:
            query = self.query_norm(query)
        self.pending = self.memory(query)
        if self.gate_sink is not None:
            self.gate_sink.append(self.pending[1])

    def on_output(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.pending is None or self.memory is None:
            return None
        memory, gate = self.pending
        self.pending = None
        return (self.memory.mix(args[0], memory, gate), *args[1:])  # the instance's: may be compiled
