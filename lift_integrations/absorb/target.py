"""The model side of an absorption into a memory's adapter, inside a model that keeps serving requests.

One lock serialises everything that runs the shared model. An absorption takes it for each optimizer step
only, with its memory active, so requests with other memories (or none) are served between steps and
never see the memory being trained.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lift_integrations.absorb.compilation import compiled_modules, compiles_whole_layers
from lift_integrations.adapters.base import AdapterBackend
from lift_integrations.config import LIFTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

STEP_HANDOFF_S = 0.001
"""Pause of an absorbing thread between optimizer steps, so that waiting requests get the model lock."""


@dataclass(frozen=True)
class AdapterTarget:
    """Trains the adapter ``weights`` of ``backend`` inside ``model`` (a
    :class:`~lift_integrations.absorb.trainer.TrainingTarget`), holding ``lock`` for each step."""

    model: PreTrainedModel
    backend: AdapterBackend
    weights: nn.Module
    lock: AbstractContextManager[Any]
    config: LIFTConfig
    pad_id: int

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.weights.parameters())

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One optimizer step: the model lock, with the memory active, gradient checkpointing and
        compiled modules as the config asks (both only for the step, so requests served between steps
        run the model as it was).

        Before taking the lock the absorbing thread pauses for a moment if a request is waiting for the
        lock (a :class:`~lift_integrations.locking.ModelLock` counts them; any other lock always pauses),
        so that the request gets it between two steps instead of the absorption taking it straight back.
        """
        if getattr(self.lock, "waiting", 1):
            time.sleep(STEP_HANDOFF_S)
        with self.lock:
            self._activate()
            if self.config.gradient_checkpointing:
                set_gradient_checkpointing(self.model, True)
            compiled = (
                compiled_modules(
                    [*self.model.modules(), *self.weights.modules()],
                    whole_layers=compiles_whole_layers(self.model, self.backend, self.config),
                )
                if self.config.compile
                else contextlib.nullcontext()
            )
            try:
                with compiled:
                    yield
            finally:
                if self.config.gradient_checkpointing:
                    set_gradient_checkpointing(self.model, False)
                self.backend.activate(None)

    def recording_gates(self) -> AbstractContextManager[list[torch.Tensor]]:
        return self.backend.recording_gates()

    @contextlib.contextmanager
    def without_memory(self) -> Iterator[None]:
        """The base model alone, inside a step (whose lock is held)."""
        self.backend.activate(None)
        try:
            yield
        finally:
            self._activate()

    def _activate(self) -> None:
        """Make the memory active, its parameters trainable."""
        self.backend.activate(self.weights)
        for param in self.weights.parameters():  # activating may freeze everything in the model (LoRA)
            param.requires_grad_(True)


def set_gradient_checkpointing(model: PreTrainedModel, enabled: bool) -> None:
    """Turn Hugging Face's gradient checkpointing on or off (under its newer name where it has one)."""
    if enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None)
        (disable or model.gradient_checkpointing_disable)()
