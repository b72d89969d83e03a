"""Training many memories side by side: one batch holds rows of several documents, each row trained into
its own memory.

Every memory gets the steps it would get alone (the same samples, shuffles and optimizer updates, see
:func:`~lift_integrations.absorb.trainer.schedule_steps`); what changes is that the steps of up to
``slots`` memories run in one fused step (:mod:`lift_integrations.absorb.fused`). Memories wait in a
queue, longest first; when one finishes, its slot is handed to the next, so the batch stays full until
the queue is empty.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.fused import SYNC_EVERY, BlockRows, FusedSteps, build_step, training_mode
from lift_integrations.absorb.losses import sample_weight
from lift_integrations.absorb.plan import SamplePlan
from lift_integrations.absorb.samples import TrainingSample
from lift_integrations.absorb.target import AdapterTarget
from lift_integrations.absorb.trainer import AbsorbProgress, TrainingStats, schedule_steps, use_bf16_autocast
from lift_integrations.adapters.base import AdapterBackend
from lift_integrations.config import LIFTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class MemoryJob:
    """One memory to train: its samples and its starting weights."""

    plan: SamplePlan
    weights: nn.Module


Step = tuple[int, int, list[TrainingSample]]
"""One optimizer step of a memory: its stage, epoch and samples."""


@dataclass
class _Running:
    index: int
    steps: list[Step]
    started: float
    done: int = 0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class TrainedMemory:
    """A job's trained tensors (named as in its starting weights' state dict) and statistics."""

    tensors: dict[str, torch.Tensor]
    stats: TrainingStats


STEP_TOKENS_MARGIN = 3
"""A step's padded tokens over its samples' mean, at most, as :func:`fused_slots` plans them (padding
to bucket sizes, and steps longer than the mean)."""


def activation_bytes_per_token(model: nn.Module) -> int:
    """What training keeps per token for the backward pass, roughly (bf16, no gradient checkpointing):
    a Llama-like layer saves about 16 values of the hidden width and 6 of the MLP's."""
    config: Any = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    per_layer = 16 * config.hidden_size + 6 * getattr(config, "intermediate_size", 4 * config.hidden_size)
    return int(2 * per_layer * config.num_hidden_layers)


def fused_slots(
    config: LIFTConfig, model: nn.Module, device: torch.device, schedules: Sequence[Sequence[Step]]
) -> int:
    """How many memories train side by side: as many as fit ``micro_batch_tokens`` (65,536 on CUDA, 8,192
    elsewhere) tokens per step and, on CUDA, half the free GPU memory, a step counted as
    :data:`STEP_TOKENS_MARGIN` times the mean tokens of a step."""
    tokens = sum(len(s.input_ids) for schedule in schedules for _, _, samples in schedule for s in samples)
    steps = sum(len(schedule) for schedule in schedules)
    step_tokens = STEP_TOKENS_MARGIN * max(1, tokens // max(1, steps))
    budget = config.micro_batch_tokens or (65536 if device.type == "cuda" else 8192)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 2 // activation_bytes_per_token(model))
    return max(1, min(len(schedules), budget // step_tokens))


def train_side_by_side(
    model: PreTrainedModel,
    backend: AdapterBackend,
    lock: AbstractContextManager[Any],
    pad_id: int,
    jobs: Sequence[MemoryJob],
    config: LIFTConfig,
    *,
    slots: int | None = None,
    use_graphs: bool = True,
    on_step: Callable[[int, AbsorbProgress], None] | None = None,
) -> list[TrainedMemory]:
    """Train every job's memory with ``config``'s recipe; results in the order of ``jobs``.

    ``on_step(job, progress)`` receives each memory's step reports, in order for each memory; on CUDA a
    few steps after they ran (losses are read every :data:`~lift_integrations.absorb.fused.SYNC_EVERY`
    steps). The model lock is taken for each step, so requests are served between steps. Raises
    ``FloatingPointError`` if a memory's loss stops being finite.
    """
    if not jobs:
        return []
    template = jobs[0].weights
    device = next(template.parameters()).device
    schedules = [
        list(schedule_steps(job.plan, config, np.random.default_rng(config.seed + 1))) for job in jobs
    ]
    count = slots or fused_slots(config, model, device, schedules)
    stack = backend.create_stack(template, count)
    model_dtype = next(model.parameters()).dtype
    steps = FusedSteps(
        model,
        stack,
        config,
        autocast=use_bf16_autocast(config.precision, device, model_dtype),
        use_graphs=use_graphs,
    )
    target = AdapterTarget(model, backend, stack, lock, config, pad_id)
    queue = collections.deque(sorted(range(len(jobs)), key=lambda i: -len(schedules[i])))
    running: list[_Running | None] = [None] * count
    results: list[TrainedMemory | None] = [None] * len(jobs)
    pending: list[tuple[list[tuple[int, _Running]], torch.Tensor]] = []
    start = time.perf_counter()

    def fill(slot: int) -> None:
        if not queue:
            running[slot] = None
            return
        index = queue.popleft()
        stack.load_row(slot, jobs[index].weights)
        steps.reset(slot)
        running[slot] = _Running(index, schedules[index], time.perf_counter())

    def drain() -> None:
        """Read the queued steps' losses (waits for the device), report them, check divergence."""
        if not pending:
            return
        losses = torch.stack([loss for _, loss in pending]).cpu().numpy()
        now = time.perf_counter()
        for (members, _), row in zip(pending, losses, strict=True):
            for slot, job in members:
                loss = float(row[slot])
                job.losses.append(loss)
                number = len(job.losses)
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"absorption diverged: loss is {loss} at step {number} of memory {job.index + 1}; "
                        "lower the learning rate"
                    )
                if on_step is not None:
                    stage, epoch, _ = job.steps[number - 1]
                    on_step(
                        job.index,
                        AbsorbProgress(
                            step=number,
                            total_steps=len(job.steps),
                            stage=stage + 1,
                            epoch=epoch + 1,
                            loss=loss,
                            tokens_seen=job.tokens,
                            num_documents=jobs[job.index].plan.num_documents,
                            elapsed_s=now - job.started,
                        ),
                    )
        pending.clear()

    for slot in range(count):
        fill(slot)
    sync_every = SYNC_EVERY if device.type == "cuda" else 1  # reading a CPU loss waits for nothing
    try:
        while any(job is not None for job in running):
            members = [(slot, job) for slot, job in enumerate(running) if job is not None]
            blocks = [_block(slot, job, config) for slot, job in members]
            batch = build_step(blocks, count, pad_id, static=steps.use_graphs)
            with target.step(), training_mode(model, config.gradient_checkpointing):
                pending.append((members, steps.run(batch)))
            for slot, job in members:
                job.tokens += sum(len(s.input_ids) for s in job.steps[job.done][2])
                job.done += 1
                if job.done == len(job.steps):
                    results[job.index] = _finish(job, stack.state_dict_of(slot), start)
                    fill(slot)
            if len(pending) >= sync_every or not any(running):
                drain()
    finally:
        with torch.no_grad():
            stack.flat.requires_grad_(False)
    done = [r for r in results if r is not None]
    assert len(done) == len(jobs)
    return [_with_losses(r, seconds=time.perf_counter() - start) for r in done]


def _block(slot: int, job: _Running, config: LIFTConfig) -> BlockRows:
    """A memory's rows in the fused step: its next step's samples, weighted as the eager loop weighs them."""
    _, _, samples = job.steps[job.done]
    weights = [sample_weight(s, config) for s in samples]
    total = sum(weights) or 1.0
    number = job.done + 1
    rate = config.learning_rate * (min(1.0, number / config.warmup_steps) if config.warmup_steps else 1.0)
    return BlockRows(slot, samples, [w / total for w in weights], rate)


def _finish(job: _Running, tensors: dict[str, torch.Tensor], start: float) -> TrainedMemory:
    stats = TrainingStats(
        steps=len(job.steps),
        tokens_trained=job.tokens,
        tokens_computed=job.tokens,
        sum_sq_lengths=sum(len(s.input_ids) ** 2 for _, _, samples in job.steps for s in samples),
        seconds=0.0,
        final_loss=float("nan"),
        losses=job.losses,  # the same list: drain() appends the rest
    )
    return TrainedMemory(tensors, stats)


def _with_losses(result: TrainedMemory, *, seconds: float) -> TrainedMemory:
    """The result once every loss has been read: the final loss, and the run's wall time."""
    losses = result.stats.losses
    stats = TrainingStats(
        steps=result.stats.steps,
        tokens_trained=result.stats.tokens_trained,
        tokens_computed=result.stats.tokens_computed,
        sum_sq_lengths=result.stats.sum_sq_lengths,
        seconds=seconds,
        final_loss=losses[-1] if losses else float("nan"),
        losses=list(losses),
    )
    return TrainedMemory(result.tensors, stats)
