"""The training loop that writes documents into a memory.

Plain PyTorch, top to bottom: build the optimizer over the memory's parameters only, then for each stage
and epoch shuffle the samples, accumulate gradients over micro-batches, clip, step. The base model is
frozen; the loss is computed only at supervised positions, so the vocabulary-sized logits are never
materialised for the whole sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
from lift_integrations.config import LIFTConfig


@dataclass(frozen=True)
class AbsorbProgress:
    """One optimizer step's report (JSON-serialisable through :meth:`to_dict`)."""

    step: int
    total_steps: int
    stage: int
    epoch: int
    loss: float
    tokens_seen: int
    num_documents: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingStats:
    steps: int
    tokens_trained: int
    sum_sq_lengths: int
    """Sum over trained sequences of length squared (attention cost grows with it)."""
    seconds: float
    final_loss: float
    losses: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_trained / self.seconds if self.seconds > 0 else 0.0


def plan_steps(num_samples: int, config: LIFTConfig) -> int:
    """Optimizer steps in one epoch over ``num_samples`` samples."""
    if num_samples == 0:
        return 0
    if config.steps_per_epoch is None:
        return math.ceil(num_samples / config.batch_size)
    return min(config.steps_per_epoch, num_samples)


def _split(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous, nearly equal groups."""
    bounds = np.linspace(0, len(items), parts + 1).round().astype(int)
    return [list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def micro_batches(samples: Sequence[TrainingSample], max_samples: int, max_tokens: int) -> list[list[int]]:
    """Indices of ``samples`` grouped into forward passes: similar lengths together (little padding),
    at most ``max_samples`` samples and ``max_tokens`` padded tokens each (a longer sample goes alone)."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = len(samples[index].input_ids)  # sorted, so the newest sample is the widest
        if current and (len(current) >= max_samples or width * (len(current) + 1) > max_tokens):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def _collate(samples: Sequence[TrainingSample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def use_bf16_autocast(precision: str, device: torch.device, model_dtype: torch.dtype) -> bool:
    """Whether training runs its matrix products in bf16 (see ``LIFTConfig.precision``)."""
    if precision == "fp32" or model_dtype != torch.float32:
        return False
    if precision == "bf16" or device.type == "cuda":
        return True
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        return bool(amx() or avx512_bf16())
    return False


def per_sample_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over each sample's supervised tokens; shape ``(batch,)``."""
    decoder = model.get_decoder()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    logits = model.get_output_embeddings()(hidden[rows, cols])
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    token_loss = nn.functional.cross_entropy(logits.float(), targets[rows, cols], reduction="none")
    size = batch["input_ids"].shape[0]
    sums = torch.zeros(size, device=token_loss.device).index_add(0, rows, token_loss)
    counts = torch.zeros(size, device=token_loss.device).index_add(0, rows, torch.ones_like(token_loss))
    return sums / counts.clamp(min=1)


def train_memory(
    model: nn.Module,
    parameters: Sequence[nn.Parameter],
    stages: Sequence[Sequence[TrainingSample]],
    epochs: Sequence[int],
    config: LIFTConfig,
    *,
    pad_id: int,
    num_documents: int = 1,
    on_step: Callable[[AbsorbProgress], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainingStats:
    """Train ``parameters`` on each stage's samples for its number of epochs.

    One AdamW optimizer spans both stages (its state carries over, as in the paper). Each sample's loss is
    the mean over its supervised tokens; QA samples are weighted by ``config.qa_weight``, so a short
    answer counts as much as a long segment instead of being diluted by token counting.
    """
    device = next(iter(parameters)).device
    for param in parameters:
        param.requires_grad_(True)
    if optimizer is None:
        optimizer = torch.optim.AdamW(
            parameters,
            lr=config.learning_rate,
            betas=config.adam_betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
    rng = np.random.default_rng(config.seed + 1)
    token_budget = config.micro_batch_tokens or (65536 if device.type == "cuda" else 8192)
    model_dtype = next(model.parameters()).dtype
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=use_bf16_autocast(config.precision, device, model_dtype)
    )
    total = sum(plan_steps(len(samples), config) * n for samples, n in zip(stages, epochs, strict=True))
    step, tokens, sum_sq, losses = 0, 0, 0, []
    start = time.perf_counter()
    was_training = model.training
    model.train(config.gradient_checkpointing)  # HF checkpoints only in train mode; dropout is 0 in LIFT
    try:
        for stage_index, (samples, num_epochs) in enumerate(zip(stages, epochs, strict=True)):
            for epoch in range(num_epochs):
                order = rng.permutation(len(samples))
                for group in _split(order.tolist(), plan_steps(len(samples), config)):
                    step_samples = [samples[i] for i in group]
                    weights = [config.qa_weight if s.kind == "qa" else 1.0 for s in step_samples]
                    total_weight = sum(weights) or 1.0
                    optimizer.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for indices in micro_batches(step_samples, config.batch_size, token_budget):
                        micro = [step_samples[i] for i in indices]
                        micro_weights = torch.tensor([weights[i] for i in indices], device=device)
                        with autocast:
                            loss = per_sample_loss(model, _collate(micro, pad_id, device))
                        weighted = (loss * micro_weights).sum() / total_weight
                        weighted.backward()
                        step_loss += float(weighted.detach())
                        tokens += sum(len(s.input_ids) for s in micro)
                        sum_sq += sum(len(s.input_ids) ** 2 for s in micro)
                    if not math.isfinite(step_loss):
                        raise FloatingPointError(
                            f"absorption diverged: loss is {step_loss} at step {step + 1}; "
                            "lower the learning rate"
                        )
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                    if config.warmup_steps:
                        scale = min(1.0, (step + 1) / config.warmup_steps)
                        for group_ in optimizer.param_groups:
                            group_["lr"] = config.learning_rate * scale
                    optimizer.step()
                    step += 1
                    losses.append(step_loss)
                    if on_step is not None:
                        on_step(
                            AbsorbProgress(
                                step=step,
                                total_steps=total,
                                stage=stage_index + 1,
                                epoch=epoch + 1,
                                loss=step_loss,
                                tokens_seen=tokens,
                                num_documents=num_documents,
                                elapsed_s=time.perf_counter() - start,
                            )
                        )
    finally:
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
        for param in parameters:
            param.requires_grad_(False)
    return TrainingStats(
        steps=step,
        tokens_trained=tokens,
        sum_sq_lengths=sum_sq,
        seconds=time.perf_counter() - start,
        final_loss=losses[-1] if losses else float("nan"),
        losses=losses,
    )
