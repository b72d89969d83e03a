"""The per-layer Gated Memory module: one memory MLP and one gate per attention head."""

from __future__ import annotations

import math

import torch
from torch import nn

from lift_integrations.adapters.gated_memory.config import GatedMemoryConfig


class GroupedLinear(nn.Module):
    """``heads`` independent linear maps, applied head by head.

    ``weight`` has shape ``(heads, in_features, out_features)``; input ``(..., heads, in_features)``
    gives output ``(..., heads, out_features)``.
    """

    def __init__(self, heads: int, in_features: int, out_features: int, *, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(heads, out_features)) if bias else None

    def reset_parameters(self, *, zero: bool = False, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            if zero:
                self.weight.zero_()
            else:
                bound = 1.0 / math.sqrt(self.weight.shape[1])  # the fan-in rule of nn.Linear, per head
                self.weight.uniform_(-bound, bound, generator=generator)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        y = torch.einsum("...hi,hio->...ho", x, weight)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y


class GatedMemoryLayer(nn.Module):
    """Memory and gate for every head of one attention layer.

    The output layers start at zero, so a fresh layer has ``mem(q) = 0`` and ``g(q) = initial_gate``
    for every query, whatever its input.
    """

    compiled_methods = ("forward", "mix")
    """Element-wise chains that training fuses (see :mod:`lift_integrations.absorb.compilation`)."""

    def __init__(self, num_heads: int, head_dim: int, config: GatedMemoryConfig, *, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.gate_scale = config.gate_scale
        self.gate_shift = config.gate_shift
        hidden = config.hidden_multiplier * head_dim
        gate_hidden = max(1, math.isqrt(head_dim))
        self.mem_in = GroupedLinear(num_heads, head_dim, hidden, bias=bias)
        self.mem_out = GroupedLinear(num_heads, hidden, head_dim, bias=bias)
        self.gate_in = GroupedLinear(num_heads, head_dim, gate_hidden, bias=bias)
        self.gate_out = GroupedLinear(num_heads, gate_hidden, 1, bias=False)
        self.gate_bias = nn.Parameter(torch.full((num_heads, 1), config.initial_gate_bias))

    def reset_parameters(self, initial_gate_bias: float, generator: torch.Generator | None = None) -> None:
        self.mem_in.reset_parameters(generator=generator)
        self.mem_out.reset_parameters(zero=True)
        self.gate_in.reset_parameters(generator=generator)
        self.gate_out.reset_parameters(zero=True)
        with torch.no_grad():
            self.gate_bias.fill_(initial_gate_bias)

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query``: ``(batch, tokens, heads, head_dim)`` pre-RoPE. Returns ``(mem, gate)``.

        ``mem`` has the query's shape; ``gate`` is ``(batch, tokens, heads, 1)``: one scalar per head
        and token.
        """
        memory = self.mem_out(nn.functional.silu(self.mem_in(query)))
        z = self.gate_out(nn.functional.silu(self.gate_in(query))) + self.gate_bias.to(query.dtype)
        gate = torch.sigmoid(self.gate_scale * (z - self.gate_shift))
        return memory, gate

    @staticmethod
    def mix(attention: torch.Tensor, memory: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``(1 - g) · attention + g · mem`` on the flattened ``(batch, tokens, heads·head_dim)`` output."""
        heads = attention.view(*memory.shape)
        mixed = heads + gate.to(heads.dtype) * (memory.to(heads.dtype) - heads)
        return mixed.reshape(attention.shape)
