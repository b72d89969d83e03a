"""The training loop that writes documents into a memory.

Plain PyTorch, top to bottom: build the optimizer over the memory's parameters only, then for each stage
and epoch shuffle the samples and, for each group of them, take one optimizer step: accumulate gradients
over forward passes (:mod:`~lift_integrations.absorb.batching`) of each sample's loss
(:mod:`~lift_integrations.absorb.losses`), clip, step, and now and then save a checkpoint
(:mod:`~lift_integrations.absorb.checkpoint`). The base model stays frozen.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.batching import (
    REPLAY_BATCH_TOKENS,
    BatchLayout,
    collate,
    micro_batches,
    pass_work,
    split_evenly,
    to_device,
)
from lift_integrations.absorb.checkpoint import CheckpointStore, ResumeState
from lift_integrations.absorb.losses import per_sample_loss, replay_losses, sample_weight
from lift_integrations.absorb.plan import SamplePlan
from lift_integrations.absorb.samples import TrainingSample
from lift_integrations.config import LIFTConfig
from lift_integrations.distributed import (
    DistributedContext,
    DistributedMismatchError,
    all_reduce_gradients,
    gather_objects,
    shard_samples,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
    memory: int = 0
    """Which memory the report is about (its index in ``absorb_many``'s list; 0 for ``absorb``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_memory(self, memory: int) -> AbsorbProgress:
        return dataclasses.replace(self, memory=memory)


@dataclass(frozen=True)
class TrainingStats:
    steps: int
    tokens_trained: int
    """Tokens of the training samples, each sample counted whole (the recipe's work)."""
    tokens_computed: int
    """Token positions actually run through the model: a prefix shared by several samples counts once."""
    sum_sq_lengths: int
    """Attention work: sum over computed sequences of length squared, a shared prefix counted once."""
    seconds: float
    final_loss: float
    losses: list[float]
    resumed_from: int = 0
    """Step of the checkpoint training continued from (0: it started from scratch)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_trained / self.seconds if self.seconds > 0 else 0.0


class TrainingTarget(Protocol):
    """The model side of an absorption: what is trained, and the contexts its steps run in."""

    @property
    def model(self) -> PreTrainedModel: ...

    @property
    def parameters(self) -> Sequence[nn.Parameter]:
        """The memory's parameters: the only ones trained."""
        ...

    @property
    def pad_id(self) -> int: ...

    def step(self) -> AbstractContextManager[Any]:
        """Entered around each optimizer step (and nothing else), with the memory active in the model."""
        ...

    def recording_gates(self) -> AbstractContextManager[list[torch.Tensor]]:
        """Collects the gate of every layer during the forward passes inside it (``replay_gate_weight``)."""
        ...

    def without_memory(self) -> AbstractContextManager[Any]:
        """The base model alone, inside a step (the reference of ``replay_kl_weight``)."""
        ...


class StepResult(NamedTuple):
    """One optimizer step's loss and work (summed over the ranks; see :class:`TrainingStats`)."""

    loss: float
    tokens: int
    computed: int
    sum_sq: int


@dataclass(frozen=True)
class StepContext:
    """What every optimizer step of one absorption shares."""

    target: TrainingTarget
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    config: LIFTConfig
    layout: BatchLayout
    autocast: torch.autocast
    distributed: DistributedContext | None


def plan_steps(num_samples: int, config: LIFTConfig) -> int:
    """Optimizer steps in one epoch over ``num_samples`` samples."""
    if num_samples == 0:
        return 0
    if config.steps_per_epoch is None:
        return math.ceil(num_samples / config.batch_size)
    return min(config.steps_per_epoch, num_samples)


def count_steps(plan: SamplePlan, config: LIFTConfig) -> int:
    """Optimizer steps of the whole absorption of ``plan``."""
    return sum(
        plan_steps(len(samples), config) * n for samples, n in zip(plan.stages, plan.epochs, strict=True)
    )


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


def train_memory(
    target: TrainingTarget,
    plan: SamplePlan,
    config: LIFTConfig,
    *,
    on_step: Callable[[AbsorbProgress], None] | None = None,
    checkpoint: CheckpointStore | None = None,
    distributed: DistributedContext | None = None,
) -> TrainingStats:
    """Train ``target``'s parameters on each stage's samples for its number of epochs.

    One AdamW optimizer spans both stages (its state carries over, as in the paper). Each sample's loss is
    the mean over its supervised tokens, weighted by :func:`~lift_integrations.absorb.losses.sample_weight`.
    ``on_step`` receives a report after every optimizer step. The settings are trusted: ``config`` was
    validated and the replay terms it asks for are ones ``target`` supports.

    With ``checkpoint``, the state is saved every ``checkpoint.every`` steps, and training continues from
    the newest valid checkpoint it holds: the shuffles are replayed, so the result equals an
    uninterrupted run's.

    With ``distributed`` (see :mod:`lift_integrations.distributed`), every rank passes the same samples
    and starting parameters; each step's samples are split between the ranks, each rank runs forward and
    backward on its share, and the gradients, loss and token counts are summed over the ranks before
    clipping and the optimizer step. Every sample's loss is divided by the whole step's weight on every
    rank, so the sum equals the single-process gradient. Only rank 0 writes checkpoints; every rank must be
    able to read them to resume.
    """
    parameters = list(target.parameters)
    for param in parameters:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        parameters,
        lr=config.learning_rate,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    device = parameters[0].device
    model_dtype = next(target.model.parameters()).dtype
    context = StepContext(
        target=target,
        parameters=parameters,
        optimizer=optimizer,
        config=config,
        layout=BatchLayout.for_model(target.model, config, device, target.pad_id),
        autocast=torch.autocast(
            device.type,
            dtype=torch.bfloat16,
            enabled=use_bf16_autocast(config.precision, device, model_dtype),
        ),
        distributed=distributed,
    )
    rng = np.random.default_rng(config.seed + 1)
    total = count_steps(plan, config)
    resumed = _resume(checkpoint, parameters, optimizer, total, distributed)
    step, tokens, computed, sum_sq, losses, earlier_s = 0, 0, 0, 0, [], 0.0
    if resumed is not None:
        step, tokens, computed, sum_sq = resumed.step, resumed.tokens, resumed.tokens_computed, resumed.sum_sq
        losses, earlier_s = list(resumed.losses), resumed.elapsed_s
    start = time.perf_counter() - earlier_s
    try:
        for position, (stage, epoch, samples) in enumerate(schedule_steps(plan, config, rng), start=1):
            if position <= step:  # done before the checkpoint: replay the shuffle only
                if resumed is not None and position == step:
                    resumed.check_rng(rng)
                continue
            with target.step():
                result = run_step(context, samples, step + 1)
            step += 1
            tokens += result.tokens
            computed += result.computed
            sum_sq += result.sum_sq
            losses.append(result.loss)
            writes = distributed is None or distributed.is_main
            if checkpoint is not None and step % checkpoint.every == 0 and step < total and writes:
                checkpoint.save(
                    step=step,
                    parameters=parameters,
                    optimizer=optimizer,
                    rng=rng,
                    progress={
                        "tokens": tokens,
                        "tokens_computed": computed,
                        "sum_sq": sum_sq,
                        "losses": losses,
                        "elapsed_s": time.perf_counter() - start,
                    },
                )
            if on_step is not None:
                on_step(
                    AbsorbProgress(
                        step=step,
                        total_steps=total,
                        stage=stage + 1,
                        epoch=epoch + 1,
                        loss=result.loss,
                        tokens_seen=tokens,
                        num_documents=plan.num_documents,
                        elapsed_s=time.perf_counter() - start,
                    )
                )
    finally:
        optimizer.zero_grad(set_to_none=True)
        for param in parameters:
            param.requires_grad_(False)
    return TrainingStats(
        steps=step,
        tokens_trained=tokens,
        tokens_computed=computed,
        sum_sq_lengths=sum_sq,
        seconds=time.perf_counter() - start,
        final_loss=losses[-1] if losses else float("nan"),
        losses=losses,
        resumed_from=resumed.step if resumed is not None else 0,
    )


def schedule_steps(
    plan: SamplePlan, config: LIFTConfig, rng: np.random.Generator
) -> Iterator[tuple[int, int, list[TrainingSample]]]:
    """Every optimizer step's ``(stage, epoch, samples)``: each epoch shuffles its stage's samples (drawn
    from ``rng`` as the epoch starts) and splits them into its steps."""
    for stage, (samples, num_epochs) in enumerate(zip(plan.stages, plan.epochs, strict=True)):
        for epoch in range(num_epochs):
            order = rng.permutation(len(samples))
            for group in split_evenly(order.tolist(), plan_steps(len(samples), config)):
                yield stage, epoch, [samples[i] for i in group]


def _resume(
    checkpoint: CheckpointStore | None,
    parameters: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    distributed: DistributedContext | None,
) -> ResumeState | None:
    """Restore the newest valid checkpoint, if any; under ``distributed``, every rank must find the same."""
    resumed = checkpoint.restore(parameters, optimizer, total_steps) if checkpoint is not None else None
    if distributed is not None:
        found = gather_objects((resumed.step, resumed.params_sha256) if resumed is not None else (0, ""))
        if len(set(found)) > 1:
            raise DistributedMismatchError(
                f"the ranks found different checkpoints to resume from (steps by rank: "
                f"{[step for step, _ in found]}); checkpoint_dir must be one folder that every rank reads "
                "(rank 0 writes it)"
            )
    return resumed


def run_step(context: StepContext, samples: list[TrainingSample], number: int) -> StepResult:
    """Optimizer step ``number`` (from 1) on ``samples``: forward and backward over this rank's share,
    gradients summed over the ranks, clipped, and applied.

    Under ``distributed``, an error on one rank is raised on every rank after the gradient all-reduce,
    which every rank still joins, so none waits in it forever.
    """
    config, model, distributed = context.config, context.target.model, context.distributed
    weights = [sample_weight(s, config) for s in samples]
    total_weight = sum(weights) or 1.0
    if distributed is not None:  # this rank's share; total_weight stays the whole step's
        mine = shard_samples([len(s.input_ids) for s in samples], distributed.rank, distributed.world_size)
        samples, weights = [samples[i] for i in mine], [weights[i] for i in mine]
    context.optimizer.zero_grad(set_to_none=True)
    was_training = model.training
    model.train(config.gradient_checkpointing)  # HF checkpoints only in train mode; dropout is 0 in LIFT
    try:
        loss = torch.zeros((), device=context.layout.device)  # read once per step: reading waits for the GPU
        tokens = computed = sum_sq = 0
        failure: Exception | None = None
        try:
            for pass_loss, pass_tokens, pass_computed, pass_sq in _backward_passes(
                context, samples, weights, total_weight
            ):
                loss += pass_loss
                tokens, computed, sum_sq = tokens + pass_tokens, computed + pass_computed, sum_sq + pass_sq
        except Exception as error:
            if distributed is None:
                raise
            failure = error  # still join the all-reduce below, so the other ranks do not hang in it
        result = StepResult(float(loss), tokens, computed, sum_sq)
        if distributed is not None:
            result = _sum_over_ranks(context.parameters, result, failure, number)
        if not math.isfinite(result.loss):
            raise FloatingPointError(
                f"absorption diverged: loss is {result.loss} at step {number}; lower the learning rate"
            )
        torch.nn.utils.clip_grad_norm_(context.parameters, config.max_grad_norm)
        if config.warmup_steps:
            scale = min(1.0, number / config.warmup_steps)
            for group in context.optimizer.param_groups:
                group["lr"] = config.learning_rate * scale
        context.optimizer.step()
    finally:
        model.train(was_training)
    return result


def _backward_passes(
    context: StepContext, samples: list[TrainingSample], weights: list[float], total_weight: float
) -> Iterator[tuple[torch.Tensor, int, int, int]]:
    """Forward and backward over ``samples`` pass by pass, each sample's loss scaled by its weight over
    ``total_weight``; yields each pass's loss (detached), tokens, computed positions and attention work.

    Replay samples with a gate or KL term run in passes of their own, with full logits
    (:func:`~lift_integrations.absorb.losses.replay_losses`); the rest share prefixes where they can.
    """
    config, target, layout = context.config, context.target, context.layout
    replays: list[TrainingSample] = []
    if config.replay_gate_weight > 0 or config.replay_kl_weight > 0:
        replays = [s for s in samples if s.kind == "replay"]
        weights = [w for s, w in zip(samples, weights, strict=True) if s.kind != "replay"]
        samples = [s for s in samples if s.kind != "replay"]
    for forward in layout.plan(samples):
        micro = [samples[i] for i in forward.indices]
        micro_weights = to_device(torch.tensor([weights[i] for i in forward.indices]), layout.device)
        batch, prefix = layout.collate(micro, forward.shared)
        with context.autocast:
            loss = per_sample_loss(target.model, batch, prefix)
        weighted = (loss * micro_weights).sum() / total_weight
        weighted.backward()
        lengths = [len(s.input_ids) for s in micro]  # whole samples, shared start included
        yield weighted.detach(), sum(lengths), *pass_work(lengths, forward.shared)
    runs = 2 if config.replay_kl_weight > 0 else 1  # the base model's pass for the KL term
    for indices in micro_batches(replays, config.batch_size, REPLAY_BATCH_TOKENS):
        micro = [replays[i] for i in indices]
        with context.autocast:
            loss = replay_losses(
                target.model,
                collate(micro, layout.pad_id, layout.device),
                config,
                record_gates=target.recording_gates,
                without_memory=target.without_memory,
            )
        weighted = loss.sum() / total_weight
        weighted.backward()
        lengths = [len(s.input_ids) for s in micro]
        yield weighted.detach(), sum(lengths), runs * sum(lengths), runs * sum(n**2 for n in lengths)


def _sum_over_ranks(
    parameters: Sequence[nn.Parameter], result: StepResult, failure: Exception | None, number: int
) -> StepResult:
    """``result`` summed over the ranks, the gradients likewise; raises on every rank if any failed."""
    loss, tokens, computed, sum_sq, failed = all_reduce_gradients(
        parameters, (*result, float(failure is not None))
    )
    if failure is not None:
        raise failure
    if failed:
        raise RuntimeError(f"another process failed at step {number}; see its error")
    return StepResult(loss, round(tokens), round(computed), round(sum_sq))


def memory_stats(stats: TrainingStats, plan: SamplePlan, processes: int | None) -> dict[str, Any]:
    """What a memory records of its absorption (``processes``: the size of a distributed group)."""
    return {
        "steps": stats.steps,
        "tokens_trained": stats.tokens_trained,
        "tokens_computed": stats.tokens_computed,
        "sum_sq_lengths": stats.sum_sq_lengths,
        "seconds": round(stats.seconds, 3),
        "final_loss": stats.final_loss,
        **plan.sample_counts(),
        **({"resumed_from_step": stats.resumed_from} if stats.resumed_from else {}),
        **({"processes": processes} if processes is not None else {}),
    }


def reporter(
    callback: Callable[[AbsorbProgress], None] | None, show_progress: bool
) -> Callable[[AbsorbProgress | None], None]:
    """Hands each progress report to ``callback`` and, with ``show_progress``, to a tqdm bar; ``None``
    closes the bar."""
    bar: list[Any] = []

    def report(progress: AbsorbProgress | None) -> None:
        if progress is None:
            if bar:
                bar[0].close()
            return
        if show_progress:
            if not bar:
                from tqdm.auto import tqdm

                bar.append(tqdm(total=progress.total_steps, desc="absorbing", unit="step"))
            bar[0].update(progress.step - bar[0].n)
            bar[0].set_postfix(loss=f"{progress.loss:.3f}", tokens=progress.tokens_seen)
        if callback is not None:
            callback(progress)

    return report
