"""Many Gated Memories in one batch: each memory's parameters are one row of a flat tensor.

Each row of a batch names its memory (``GatedMemoryStack.row_memory``); every layer gathers each row's
weights and runs one batched product over rows and heads, so several documents train side by side, each
into its own memory, in the same forward and backward passes. Keeping every memory's tensors as views of
one ``(memories, parameters)`` leaf lets the optimizer and the gradient clipping run as a handful of
kernels over all memories at once (:mod:`lift_integrations.absorb.fused`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from lift_integrations.adapters.base import MemoryStack
from lift_integrations.adapters.gated_memory.layer import GatedMemoryLayer

LAYER_TENSORS = ("mem_in", "mem_out", "gate_in", "gate_out")
ROW_CAPACITY = 1024
"""Batch rows a stack's row buffer holds before it grows (each growth compiles a layer anew)."""


@dataclass(frozen=True)
class FlatLayout:
    """Where each tensor of one memory's state dict lies in its flat row."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> FlatLayout:
        names = tuple(state)
        shapes = tuple(tuple(state[name].shape) for name in names)
        sizes = [math.prod(shape) for shape in shapes]
        offsets = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        return cls(names, shapes, offsets, sum(sizes))

    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One memory's state dict as a flat fp32 row."""
        if set(state) != set(self.names):
            raise ValueError("these tensors do not belong to a memory of this layout")
        return torch.cat([state[name].detach().reshape(-1).to(torch.float32) for name in self.names])

    def unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One flat row as a state dict of fresh tensors."""
        return {
            name: row[start : start + math.prod(shape)].reshape(shape).clone()
            for name, shape, start in zip(self.names, self.shapes, self.offsets, strict=True)
        }


class StackedGatedMemoryLayer(nn.Module):
    """One attention layer's memory and gate for every memory of a :class:`GatedMemoryStack`: row ``b`` of
    the batch runs memory ``row_memory[b]``. Same interface as :class:`GatedMemoryLayer`, so the backend's
    hooks serve either.

    The layer reads its tensors from ``tensors``, which the stack hands it before each pass, named as in
    one layer of a memory (``mem_in.weight``, ...). So nothing the layer reads names its index, and one
    compiled decoder layer serves every layer (:mod:`lift_integrations.absorb.compilation`).
    """

    def __init__(self, stack: GatedMemoryStack, gate_scale: float, gate_shift: float) -> None:
        super().__init__()
        self._stack = [stack]  # a list: not registered as a submodule (the stack owns its layers)
        self.gate_scale = gate_scale
        self.gate_shift = gate_shift
        self.tensors: dict[str, torch.Tensor] = {}
        """Each memory's tensors, ``(memories, *shape)``; with one memory, its tensors (``shape``)."""

    def _rows(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """Each of ``x``'s rows' ``name`` tensor, ``(rows, ...)``, or the only memory's, ``(...)``."""
        if not self.tensors:
            raise RuntimeError("a memory stack's forward pass needs stack.cast_for(dtype) first")
        tensor = self.tensors.get(name)
        if tensor is None:
            return None
        tensor = tensor.to(x.dtype)
        stack = self._stack[0]
        if stack.memories == 1:
            return tensor
        if not torch.compiler.is_compiling() and x.shape[0] != stack.row_count:
            raise RuntimeError(
                f"a batch of {x.shape[0]} rows, but the stack's row_memory names {stack.row_count}"
            )
        # Sliced by the batch's own size: the buffer's size is fixed, so a compiled layer stays
        # dynamic in the number of rows (a tensor read from a module is taken as fixed in shape).
        return tensor.index_select(0, stack.row_buffer[: x.shape[0]])

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``x``: ``(rows, tokens, heads, in)`` through each row's memory's ``name`` map."""
        weight = self._rows(f"{name}.weight", x)
        assert weight is not None
        one = weight.dim() == 3
        y = torch.einsum("bthi,hio->btho" if one else "bthi,bhio->btho", x, weight)
        bias = self._rows(f"{name}.bias", x)
        return y if bias is None else y + (bias if one else bias.unsqueeze(1))

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self._linear(nn.functional.silu(self._linear(query, "mem_in")), "mem_out")
        z = self._linear(nn.functional.silu(self._linear(query, "gate_in")), "gate_out")
        gate_bias = self._rows("gate_bias", query)
        assert gate_bias is not None
        z = z + (gate_bias if gate_bias.dim() == 2 else gate_bias.unsqueeze(1))
        gate = torch.sigmoid(self.gate_scale * (z - self.gate_shift))
        row_gate = self._stack[0].row_gate
        if row_gate is not None:  # 0 for a row without a memory: the mix returns its attention unchanged
            gate = gate * row_gate.to(gate.dtype).view(-1, 1, 1, 1)
        return memory, gate

    mix = staticmethod(GatedMemoryLayer.mix)


class GatedMemoryStack(MemoryStack):
    """The parameters of ``memories`` Gated Memories of one model and configuration, as one
    ``(memories, parameters)`` fp32 leaf, with a :class:`StackedGatedMemoryLayer` per decoder layer.

    Built from a template memory (its layout and gate settings); rows are filled with
    :meth:`load_row` and read back with :meth:`state_dict_of`. ``row_memory`` names each batch row's
    memory: set it before each forward pass (with one memory it is not read), and call :meth:`cast_for`
    before the pass and ``cast_for(None)`` after it. ``row_gate`` (``None``, or
    one 0/1 entry per batch row) switches rows off: a row with 0 runs the base model exactly, whatever
    its ``row_memory`` (mixed-memory generation gives its rows without a memory a 0).
    """

    row_buffer: torch.Tensor

    def __init__(self, template: nn.Module, memories: int) -> None:
        super().__init__()
        state = template.state_dict()
        self.layout = FlatLayout.of(state)
        layers = cast(nn.ModuleList, template.layers)
        first = cast(GatedMemoryLayer, layers[0])
        self.flat = nn.Parameter(
            torch.zeros(memories, self.layout.size, device=next(template.parameters()).device)
        )
        self.register_buffer(
            "row_buffer",
            torch.zeros(ROW_CAPACITY, dtype=torch.long, device=self.flat.device),
            persistent=False,
        )
        self.row_count = 0
        """How many batch rows :attr:`row_memory` names."""
        self._retired: list[torch.Tensor] = []
        self.row_gate: torch.Tensor | None = None
        self.gate_settings = (first.gate_scale, first.gate_shift)
        self._layer_names = _layer_names(self.layout, len(layers))
        self.layers = nn.ModuleList(
            StackedGatedMemoryLayer(self, *self.gate_settings) for _ in range(len(layers))
        )

    @property
    def memories(self) -> int:
        return self.flat.shape[0]

    @property
    def row_memory(self) -> torch.Tensor:
        """A view of :attr:`row_buffer`, which the next assignment overwrites."""
        return self.row_buffer[: self.row_count]

    @row_memory.setter
    def row_memory(self, rows: torch.Tensor) -> None:
        """Copied into :attr:`row_buffer`, which keeps its size (and storage, for CUDA graphs that read
        it) unless a batch has more rows: then a bigger one replaces it, and the old one is kept alive
        for the graphs captured with it."""
        count = rows.shape[0]
        if count > self.row_buffer.shape[0]:
            self._retired.append(self.row_buffer)
            self.row_buffer = torch.zeros(2 * count, dtype=torch.long, device=self.row_buffer.device)
        elif rows.untyped_storage().data_ptr() == self.row_buffer.untyped_storage().data_ptr():
            rows = rows.clone()  # a slice of the buffer itself
        self.row_buffer[:count].copy_(rows)
        self.row_count = count

    def cast_for(self, dtype: torch.dtype | None) -> None:
        """Before a forward pass: hand each layer its tensors in ``dtype``, cast once rather than once per
        layer and tensor. After it (``None``): drop them.

        One ``split`` of the (cast) parameters makes every layer's tensors, so the backward pass gathers
        their gradients in one concatenation rather than one zero-filled ``flat``-sized buffer per
        tensor. The tensors carry the pass's autograd history back to ``flat``; dropping them after the
        pass lets that history go, so a later pass (or a CUDA graph's capture on another stream) starts
        its own.
        """
        for layer in self.layers:
            cast(StackedGatedMemoryLayer, layer).tensors = {}
        if dtype is None:
            return
        weights = self.flat if dtype == self.flat.dtype else self.flat.to(dtype)
        sizes = [math.prod(shape) for shape in self.layout.shapes]
        pieces = weights.split(sizes, dim=1)
        lead = () if self.memories == 1 else (self.memories,)
        for layer, names in zip(self.layers, self._layer_names, strict=True):
            cast(StackedGatedMemoryLayer, layer).tensors = {
                local: pieces[i].view(*lead, *self.layout.shapes[i]) for i, local in names
            }

    def load_row(self, row: int, weights: nn.Module) -> None:
        """Copy one memory's weights (a ``GatedMemoryWeights`` of the same layout) into ``row``."""
        with torch.no_grad():
            self.flat[row].copy_(self.layout.flatten(weights.state_dict()))

    def state_dict_of(self, row: int) -> dict[str, torch.Tensor]:
        """Memory ``row``'s tensors, named as in a ``GatedMemoryWeights`` state dict."""
        with torch.no_grad():
            return self.layout.unflatten(self.flat[row].detach())


def _layer_names(layout: FlatLayout, layers: int) -> list[list[tuple[int, str]]]:
    """For each layer, its tensors' positions in ``layout`` and their names within the layer (without
    the ``layers.{i}.`` prefix); every layer has the same names and shapes."""
    found: list[list[tuple[int, str]]] = [[] for _ in range(layers)]
    for i, name in enumerate(layout.names):
        head, _, rest = name.partition(".")
        index, _, local = rest.partition(".")
        if head != "layers" or not index.isdigit() or int(index) >= layers:
            raise ValueError(f"{name!r} is not a tensor of one of this memory's {layers} layers")
        found[int(index)].append((i, local))

    def signature(names: list[tuple[int, str]]) -> list[tuple[str, tuple[int, ...]]]:
        return [(local, layout.shapes[i]) for i, local in names]

    if any(signature(names) != signature(found[0]) for names in found):
        raise ValueError("the layers of this memory differ in their tensors")
    return found
