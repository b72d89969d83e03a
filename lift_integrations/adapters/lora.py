"""LoRA memories through PEFT (the adapter of the paper's 2026 version).

PEFT keeps LoRA weights inside the wrapped linear layers, one named adapter per memory. A memory's
parameters are therefore exposed through a light module that points at those tensors.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lift_integrations.adapters.base import AdapterBackend
from lift_integrations.errors import MemoryMismatchError
from lift_integrations.validation import FLOAT16_MAX, check_float, check_int

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer


@dataclass
class LoRAConfig:
    """LoRA settings; the defaults follow the paper's LoRA recipe at a size that suits small models."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check_int(self.r, "r", minimum=1)
        check_float(self.alpha, "alpha", above=0.0, at_most=FLOAT16_MAX)
        self.dropout = check_float(self.dropout, "dropout", at_least=0.0, below=1.0)
        modules = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
        if (
            not isinstance(modules, list)
            or not modules
            or not all(isinstance(name, str) and name for name in modules)
        ):
            raise ValueError(
                "target_modules must be a module name or a non-empty list of them, "
                f"got {self.target_modules!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class LoRAWeights(nn.Module):
    """A view of one named PEFT adapter's tensors, keyed by their module path."""

    def __init__(self, adapter_name: str, tensors: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.adapter_name = adapter_name
        self._names = sorted(tensors)
        self._tensors = tensors
        for index, name in enumerate(self._names):
            self.register_parameter(f"p{index}", tensors[name])

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {name: self._tensors[name] for name in self._names}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        missing = set(self._names) - set(state_dict)
        unexpected = set(state_dict) - set(self._names)
        if strict and (missing or unexpected):
            raise ValueError(
                f"LoRA tensors do not match: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        with torch.no_grad():
            for name in self._names:
                if name in state_dict:
                    self._tensors[name].copy_(state_dict[name])
        return None


class LoRABackend(AdapterBackend):
    kind = "lora"
    # Not compiles_whole_layers: PEFT looks each memory up by its adapter name inside the layer, so a
    # compiled layer would be specialised to one memory and compile again for the next.

    def __init__(self, model: nn.Module, config: LoRAConfig | None = None) -> None:
        self.model = model
        self.config = config or LoRAConfig()
        self._counter = itertools.count()
        self._tuner_layers: list[LoraLayer] = []
        self._active: str | None = None

    def create(
        self, generator: torch.Generator | None = None, config: LoRAConfig | None = None
    ) -> LoRAWeights:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        config = config or self.config
        name = f"lift{next(self._counter)}"
        peft_config = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            bias="none",
        )
        with warnings.catch_warnings():  # one adapter per memory is the design, not a mistake
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            inject_adapter_in_model(peft_config, self.model, adapter_name=name)
        self._tuner_layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        tensors: dict[str, nn.Parameter] = {}
        for module_name, module in self.model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            if name not in module.lora_A:  # a layer of another memory's target_modules
                continue
            for kind in ("lora_A", "lora_B"):
                linear: nn.Linear = getattr(module, kind)[name]
                if kind == "lora_A" and generator is not None:
                    # Drawn on the generator's device (the CPU) and copied: the same seed gives the
                    # same memory on any device, and a CPU generator cannot fill a GPU tensor.
                    bound = 1.0 / linear.weight.shape[1] ** 0.5
                    values = torch.empty(linear.weight.shape, device=generator.device)
                    with torch.no_grad():
                        linear.weight.copy_(values.uniform_(-bound, bound, generator=generator))
                tensors[f"{module_name}.{kind}.weight"] = cast(nn.Parameter, linear.weight)
        for param in self.model.parameters():
            if not any(param is t for t in tensors.values()):
                param.requires_grad_(False)
        # The model keeps running the previously active memory (or none) until activate() is called.
        self._activate(self._active)
        return LoRAWeights(name, tensors)

    def activate(self, weights: nn.Module | None) -> None:
        if weights is not None and not isinstance(weights, LoRAWeights):
            raise ValueError("these weights do not belong to a LoRA memory of this model")
        self._activate(None if weights is None else weights.adapter_name)

    def _activate(self, adapter_name: str | None) -> None:
        for layer in self._tuner_layers:
            if adapter_name is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(adapter_name)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._active = adapter_name

    def release(self, weights: nn.Module) -> None:
        name = getattr(weights, "adapter_name", None)
        if name is None:
            return
        with warnings.catch_warnings():  # "Adapter X was active which is now deleted": activate() decides
            warnings.simplefilter("ignore", UserWarning)
            for layer in self._tuner_layers:
                if name in layer.lora_A:
                    layer.delete_adapter(name)
        if self._active == name:
            self._active = None

    def config_dict(self, config: LoRAConfig | None = None) -> dict[str, Any]:
        return (config or self.config).to_dict()

    def memory_config(
        self, adapter_config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
    ) -> LoRAConfig:
        config = LoRAConfig.from_dict(dict(adapter_config))
        ranks = {shape[0] for name, shape in shapes.items() if name.endswith("lora_A.weight") and shape}
        if ranks != {config.r}:
            raise MemoryMismatchError(
                f"the memory's LoRA rank r={config.r} does not fit its tensors (ranks {ranks})"
            )
        return config  # its target modules are checked against its tensors' names once injected
