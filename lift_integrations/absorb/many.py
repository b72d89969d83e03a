"""Training many memories side by side: one batch holds rows of several documents, each row trained into
its own memory.

Every memory gets the steps it would get alone (the same samples, shuffles and optimizer updates, see
:func:`~lift_integrations.absorb.trainer.schedule_steps`); what changes is that the steps of up to
``slots`` memories run in one fused step (:mod:`lift_integrations.absorb.fused`). Memories wait in a
queue, longest first; when one finishes, its slot is handed to the next, so the batch stays full until
the queue is empty.
"""

from __future__ import annotations

import queue
import threading
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
from lift_integrations.absorb.trainer import (
    AbsorbProgress,
    TrainingStats,
    count_steps,
    schedule_steps,
    use_bf16_autocast,
)
from lift_integrations.adapters.base import AdapterBackend
from lift_integrations.config import LIFTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class MemoryJob:
    """One memory to train: its samples and its starting weights."""

    plan: SamplePlan
    weights: nn.Module


class JobFeed:
    """The jobs of a run, handed out as they become ready.

    :meth:`ready` holds jobs made already, longest first. :meth:`planned` makes them on a background
    thread, in the order given (longest documents first, as the caller sorts them), so that planning the
    later memories (tokenisation, QA extraction) overlaps with training the first ones.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._queue: queue.Queue[tuple[int, MemoryJob | BaseException]] = queue.Queue()
        self._handed = 0

    @classmethod
    def ready(cls, jobs: Sequence[MemoryJob], config: LIFTConfig) -> JobFeed:
        feed = cls(len(jobs))
        steps = [count_steps(job.plan, config) for job in jobs]
        for index in sorted(range(len(jobs)), key=lambda i: -steps[i]):
            feed._queue.put((index, jobs[index]))
        return feed

    @classmethod
    def planned(cls, order: Sequence[int], make: Callable[[int], MemoryJob]) -> JobFeed:
        feed = cls(len(order))

        def work() -> None:
            for index in order:
                try:
                    feed._queue.put((index, make(index)))
                except BaseException as error:  # handed to the training thread, which raises it
                    feed._queue.put((index, error))
                    return

        threading.Thread(target=work, name="lift-plan-memories", daemon=True).start()
        return feed

    @property
    def exhausted(self) -> bool:
        return self._handed == self.total

    def next(self, *, wait: bool) -> tuple[int, MemoryJob] | None:
        """The next job, or ``None`` if none is ready and ``wait`` is false; raises a planning error."""
        if self.exhausted:
            return None
        try:
            index, job = self._queue.get(block=wait)
        except queue.Empty:
            return None
        if isinstance(job, BaseException):
            raise job
        self._handed += 1
        return index, job


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
    config: LIFTConfig,
    model: nn.Module,
    device: torch.device,
    schedules: Sequence[Sequence[Step]],
    memories: int,
) -> int:
    """How many of ``memories`` train side by side: as many as fit ``micro_batch_tokens`` (65,536 on
    CUDA, 8,192 elsewhere) tokens per step and, on CUDA, half the free GPU memory, a step counted as
    :data:`STEP_TOKENS_MARGIN` times the mean tokens of a step of ``schedules`` (those known so far:
    the later memories may still be being planned)."""
    tokens = sum(len(s.input_ids) for schedule in schedules for _, _, samples in schedule for s in samples)
    steps = sum(len(schedule) for schedule in schedules)
    step_tokens = STEP_TOKENS_MARGIN * max(1, tokens // max(1, steps))
    budget = config.micro_batch_tokens or (65536 if device.type == "cuda" else 8192)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 2 // activation_bytes_per_token(model))
    return max(1, min(memories, budget // step_tokens))


def train_side_by_side(
    model: PreTrainedModel,
    backend: AdapterBackend,
    lock: AbstractContextManager[Any],
    pad_id: int,
    jobs: Sequence[MemoryJob] | JobFeed,
    config: LIFTConfig,
    *,
    slots: int | None = None,
    use_graphs: bool = True,
    on_step: Callable[[int, AbsorbProgress], None] | None = None,
    on_start: Callable[[int, MemoryJob, int], None] | None = None,
) -> list[TrainedMemory]:
    """Train every job's memory with ``config``'s recipe; results in the order of the jobs' indices.

    ``jobs``: a list, or a :class:`JobFeed` that makes them while the first ones train.
    ``on_start(job, memory_job, steps)`` is called as each memory enters a slot.

    ``on_step(job, progress)`` receives each memory's step reports, in order for each memory; on CUDA a
    few steps after they ran (losses are read every :data:`~lift_integrations.absorb.fused.SYNC_EVERY`
    steps). The model lock is taken for each step, so requests are served between steps. Raises
    ``FloatingPointError`` if a memory's loss stops being finite.
    """
    feed = jobs if isinstance(jobs, JobFeed) else JobFeed.ready(jobs, config)
    if feed.total == 0:
        return []
    first = feed.next(wait=True)
    assert first is not None
    template = first[1].weights
    device = next(template.parameters()).device

    def schedule(job: MemoryJob) -> list[Step]:
        return list(schedule_steps(job.plan, config, np.random.default_rng(config.seed + 1)))

    waiting = [(first[0], first[1], schedule(first[1]))]
    count = min(feed.total, slots or fused_slots(config, model, device, [waiting[0][2]], feed.total))
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
    running: list[_Running | None] = [None] * count
    plans: dict[int, SamplePlan] = {}
    finished: dict[int, tuple[_Running, dict[str, torch.Tensor]]] = {}
    pending: list[tuple[list[tuple[int, _Running]], torch.Tensor]] = []
    start = time.perf_counter()

    def fill(slot: int, *, wait: bool) -> None:
        """Give ``slot`` the next memory ready (waiting for one if ``wait``)."""
        if not waiting:
            found = feed.next(wait=wait)
            if found is None:
                return
            waiting.append((found[0], found[1], schedule(found[1])))
        index, job, job_steps = waiting.pop()
        stack.load_row(slot, job.weights)
        steps.reset(slot)
        plans[index] = job.plan
        running[slot] = _Running(index, job_steps, time.perf_counter())
        if on_start is not None:
            on_start(index, job, len(job_steps))

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
                            num_documents=plans[job.index].num_documents,
                            elapsed_s=now - job.started,
                        ),
                    )
        pending.clear()

    sync_every = SYNC_EVERY if device.type == "cuda" else 1  # reading a CPU loss waits for nothing
    # Memories side by side meet many pass shapes, so a pass may run in a larger one already captured.
    # One memory meets few, and keeps the bucketed shapes its dev comparison measured (tuning.md).
    fit = steps.shape_for if count > 1 else None
    try:
        while True:
            for slot in range(count):
                if running[slot] is None:
                    fill(slot, wait=not any(running) and not feed.exhausted)
            members = [(slot, job) for slot, job in enumerate(running) if job is not None]
            if not members:
                break
            blocks = [_block(slot, job, config) for slot, job in members]
            batch = build_step(blocks, count, pad_id, static=steps.use_graphs, fit=fit)
            with target.step(), training_mode(model, config.gradient_checkpointing):
                pending.append((members, steps.run(batch)))
            for slot, job in members:
                job.tokens += sum(len(s.input_ids) for s in job.steps[job.done][2])
                job.done += 1
                if job.done == len(job.steps):
                    finished[job.index] = (job, stack.state_dict_of(slot))
                    running[slot] = None
            if len(pending) >= sync_every or not any(running):
                drain()
    finally:
        with torch.no_grad():
            stack.flat.requires_grad_(False)
    assert len(finished) == feed.total
    seconds = time.perf_counter() - start
    return [_trained(*finished[i], seconds) for i in sorted(finished)]


def _block(slot: int, job: _Running, config: LIFTConfig) -> BlockRows:
    """A memory's rows in the fused step: its next step's samples, weighted as the eager loop weighs them."""
    _, _, samples = job.steps[job.done]
    weights = [sample_weight(s, config) for s in samples]
    total = sum(weights) or 1.0
    number = job.done + 1
    rate = config.learning_rate * (min(1.0, number / config.warmup_steps) if config.warmup_steps else 1.0)
    return BlockRows(slot, samples, [w / total for w in weights], rate)


def _trained(job: _Running, tensors: dict[str, torch.Tensor], seconds: float) -> TrainedMemory:
    """A finished memory, once every loss has been read; ``seconds``: the run's wall time."""
    stats = TrainingStats(
        steps=len(job.steps),
        tokens_trained=job.tokens,
        tokens_computed=job.tokens,
        sum_sq_lengths=sum(len(s.input_ids) ** 2 for _, _, samples in job.steps for s in samples),
        seconds=seconds,
        final_loss=job.losses[-1] if job.losses else float("nan"),
        losses=list(job.losses),
    )
    return TrainedMemory(tensors, stats)
