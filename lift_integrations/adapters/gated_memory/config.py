"""Configuration of the Gated Memory adapter."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lift_integrations.validation import FLOAT16_MAX, check_float, check_int


@dataclass
class GatedMemoryConfig:
    """Shape and initialisation of Gated Memory.

    Per attention head, on the pre-RoPE query ``q`` (dimension ``d``):
    ``mem(q) = W2 · SiLU(W1 · q)`` with ``W1: d -> hidden_multiplier·d``, and the gate
    ``g(q) = sigmoid(gate_scale · (z(q) - gate_shift))`` with ``z`` an MLP ``d -> floor(sqrt(d)) -> 1``.
    The attention output before ``o_proj`` becomes ``(1 - g) · attention + g · mem``.

    ``initial_gate`` is the gate's value for every query before training (the memory's output starts at
    zero). The paper's code starts at ``sigmoid(-3) ≈ 0.047``. Starting far lower keeps an untrained memory
    closer to the base model, but the gate then opens too slowly in a short absorption: on the fictional
    Quillon document SmolLM2 answered 1/10 questions from memory with 0.0025 and 5/10 with 0.05
    (docs/tuning.md). A detached memory always gives the base model exactly, whatever this value.
    """

    hidden_multiplier: int = 2
    gate_scale: float = 3.0
    gate_shift: float = 1.0
    initial_gate: float = 0.05
    bias: bool | None = None
    """Biases on the memory and first gate layer; ``None`` follows the model's ``attention_bias``."""

    def __post_init__(self) -> None:
        check_int(self.hidden_multiplier, "hidden_multiplier", minimum=1)
        self.gate_scale = check_float(self.gate_scale, "gate_scale", above=0.0, at_most=FLOAT16_MAX)
        self.gate_shift = check_float(
            self.gate_shift, "gate_shift", at_least=-FLOAT16_MAX, at_most=FLOAT16_MAX
        )
        self.initial_gate = check_float(self.initial_gate, "initial_gate", above=0.0, below=1.0)
        if self.bias is not None and not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True, False or None, got {self.bias!r}")

    @property
    def initial_gate_bias(self) -> float:
        """The value of ``z`` that gives ``initial_gate``."""
        logit = math.log(self.initial_gate / (1.0 - self.initial_gate))
        return self.gate_shift + logit / self.gate_scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatedMemoryConfig:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)
