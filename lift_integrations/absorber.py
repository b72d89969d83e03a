"""Absorbing documents into memories on a :class:`~lift_integrations.model.LIFTModel`.

What :meth:`LIFTModel.absorb` and :meth:`LIFTModel.absorb_many` do, step by step: check every argument,
plan each memory's samples (:mod:`lift_integrations.absorb.plan`), train, and wrap the trained tensors in
a :class:`Memory`. Training takes one of two paths:

- the fused path (:mod:`lift_integrations.absorb.many`): static shapes, one optimizer launch, CUDA
  graphs on CUDA, and several memories trained side by side in one batch. It serves Gated Memory
  absorptions whose recipe needs nothing else (no gate or KL replay terms, no checkpoints, one process);
- the eager loop (:mod:`lift_integrations.absorb.trainer`) for everything else, with prefix sharing.

``LIFTConfig.engine`` chooses (``auto``: fused on CUDA where it applies, eager elsewhere). Both give the
same memory up to floating-point rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lift_integrations.absorb.batching import bidirectional
from lift_integrations.absorb.checkpoint import CheckpointStore, open_checkpoints
from lift_integrations.absorb.many import JobFeed, MemoryJob, activation_bytes_per_token, train_side_by_side
from lift_integrations.absorb.plan import SamplePlan, plan_samples
from lift_integrations.absorb.qa import resolve_qa_generator
from lift_integrations.absorb.target import AdapterTarget
from lift_integrations.absorb.trainer import (
    AbsorbProgress,
    TrainingStats,
    memory_stats,
    plan_steps,
    reporter,
    train_memory,
)
from lift_integrations.config import LIFTConfig
from lift_integrations.distributed import DistributedContext, resolve_context
from lift_integrations.documents import Document, normalize_documents
from lift_integrations.memory import AbsorbedDocument, Memory
from lift_integrations.validation import check_bool, check_int, show_progress_setting

if TYPE_CHECKING:
    from torch import nn

    from lift_integrations.model import LIFTModel

Callback = Callable[[AbsorbProgress], None]
logger = logging.getLogger(__name__)

CHECKPOINTING_SHARE = 0.7
"""Share of the free GPU memory one forward pass's activations may take before gradient checkpointing
is turned on (see :func:`with_memory_fit`)."""


def check_absorption(
    lift: LIFTModel,
    config: LIFTConfig | None,
    show_progress: bool,
    callback: Callback | None,
    into: Memory | None = None,
    resume: bool = True,
) -> LIFTConfig:
    """The settings of an absorption, every argument checked before any work."""
    check_bool(show_progress, "show_progress")  # resolved from None by show_progress_setting
    check_bool(resume, "resume")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    config = LIFTConfig.for_device(lift.device.type) if config is None else config
    if not isinstance(config, LIFTConfig):
        raise TypeError(f"config must be a LIFTConfig, got {type(config).__name__}")
    config.validate()  # again: a setting may have changed since construction
    if config.replay_gate_weight > 0 and lift.backend.kind != "gated_memory":
        raise ValueError(
            "LIFTConfig.replay_gate_weight needs the Gated Memory adapter; "
            f"this model uses {lift.backend.kind}"
        )
    if into is not None and not isinstance(into, Memory):
        raise TypeError(f"into must be a Memory, got {type(into).__name__}")
    return config


def fused_reason(
    lift: LIFTModel, config: LIFTConfig, group: DistributedContext | None, plans: Sequence[SamplePlan]
) -> str | None:
    """Why the fused path cannot train this absorption (``None``: it can)."""
    if any(samples_per_step(plan, config) > config.batch_size for plan in plans):
        return "steps of more samples than batch_size (gradient accumulation)"
    if not lift.backend.trains_side_by_side:
        return f"the {lift.backend.kind} adapter"
    if config.replay_gate_weight > 0 or config.replay_kl_weight > 0:
        return "replay gate or KL terms"
    if config.checkpoint_dir is not None:
        return "checkpoints"
    if group is not None:
        return "distributed training"
    if bidirectional(lift.model):
        return "bidirectional attention"
    return None


def samples_per_step(plan: SamplePlan, config: LIFTConfig) -> int:
    """The most samples one optimizer step of ``plan`` holds."""
    return max(
        (math.ceil(len(samples) / plan_steps(len(samples), config)) for samples in plan.stages if samples),
        default=0,
    )


def uses_fused(
    lift: LIFTModel, config: LIFTConfig, group: DistributedContext | None, plans: Sequence[SamplePlan]
) -> bool:
    """Whether ``config.engine`` and the absorption's needs put it on the fused path (``auto``: on CUDA,
    where a step's cost is its launches; a CPU computes, and gains nothing from it)."""
    if config.engine == "eager" or (config.engine == "auto" and lift.device.type != "cuda"):
        return False
    reason = fused_reason(lift, config, group, plans)
    if reason is not None and config.engine == "fused":
        raise ValueError(f"LIFTConfig.engine='fused' cannot train this absorption: {reason}")
    return reason is None


def longest_sample(plans: Sequence[SamplePlan]) -> int:
    return max((len(s.input_ids) for plan in plans for stage in plan.stages for s in stage), default=0)


def with_memory_fit(lift: LIFTModel, config: LIFTConfig, longest: int, fused: bool) -> LIFTConfig:
    """``config``, with gradient checkpointing turned on where the largest forward pass (samples of up
    to ``longest`` tokens) would otherwise need more than :data:`CHECKPOINTING_SHARE` of the free GPU
    memory (big models, long samples)."""
    if config.gradient_checkpointing or lift.device.type != "cuda":
        return config
    tokens = config.batch_size * longest
    if not fused:
        tokens = min(tokens, config.micro_batch_tokens or 65536)
    free, _ = torch.cuda.mem_get_info(lift.device)
    if tokens * activation_bytes_per_token(lift.model) <= CHECKPOINTING_SHARE * free:
        return config
    logger.info("turning gradient checkpointing on: a pass of %d tokens would not fit in GPU memory", tokens)
    return dataclasses.replace(config, gradient_checkpointing=True)


def plan_memory(
    lift: LIFTModel,
    docs: Sequence[Document],
    fitted: LIFTConfig,
    generator: Any,
    group: DistributedContext | None,
) -> SamplePlan:
    return plan_samples(
        lift.tokenizer,
        docs,
        fitted,
        qa_generator=resolve_qa_generator(generator, fitted.qa_generator, lift._complete_for_qa),
        base_answers=lift._base_answers,
        distributed=group,
    )


def new_weights(lift: LIFTModel, into: Memory | None, adapter_config: Any, seed: int) -> nn.Module:
    """The adapter an absorption trains: ``into``'s weights, or fresh ones drawn from ``seed``."""
    init = torch.Generator(device="cpu").manual_seed(seed)
    with lift.lock:  # creating an adapter may change the model's modules (LoRA): not while it serves
        if into is not None:
            return lift._live.build(into, generator=init)
        return lift.backend.create(generator=init, config=adapter_config)


def absorb(
    lift: LIFTModel,
    documents: Any,
    *,
    config: LIFTConfig | None,
    generator: Any,
    show_progress: bool | None,
    callback: Callback | None,
    into: Memory | None,
    resume: bool,
    distributed: bool | None,
) -> Memory:
    """:meth:`LIFTModel.absorb`."""
    show_progress = show_progress_setting(show_progress)
    docs = normalize_documents(documents)
    config = check_absorption(lift, config, show_progress, callback, into, resume)
    fitted = config.fit_to_window(lift.context_window)
    adapter_config = lift.backend.config if into is None else lift._live.config_of(into)
    group = resolve_context(distributed, lift.device)
    plan = plan_memory(lift, docs, fitted, generator, group)
    fused = uses_fused(lift, fitted, group, [plan])
    fitted = with_memory_fit(lift, fitted, longest_sample([plan]), fused)
    base = (lift.fingerprint, lift.backend.kind, lift.backend.config_dict())
    checkpoint = None
    if not fused:
        into_id = into.id if into is not None else None
        checkpoint = open_checkpoints(plan, fitted, base, into_id, distributed=group, resume=resume)
    weights = new_weights(lift, into, adapter_config, fitted.seed)
    report = reporter(callback, show_progress and (group is None or group.is_main))
    try:
        if fused:
            [stats] = _train_fused(lift, [MemoryJob(plan, weights)], fitted, _SingleReporter(report))
        else:
            stats = _train_eager(lift, weights, plan, fitted, checkpoint, group, report)
    except BaseException:
        with lift.lock:
            lift.backend.release(weights)
        raise
    finally:
        report(None)
    memory = _memory(lift, weights, adapter_config, docs, into, fitted, stats, plan, group)
    if checkpoint is not None and (group is None or group.is_main):
        checkpoint.clear()
    return memory


def absorb_many(
    lift: LIFTModel,
    items: Any,
    *,
    config: LIFTConfig | None,
    generator: Any,
    show_progress: bool | None,
    callback: Callback | None,
    slots: int | None,
) -> list[Memory]:
    """:meth:`LIFTModel.absorb_many`."""
    show_progress = show_progress_setting(show_progress)
    groups = normalize_groups(items)
    config = check_absorption(lift, config, show_progress, callback)
    if slots is not None:
        check_int(slots, "slots", minimum=1)
    fitted = config.fit_to_window(lift.context_window)
    adapter_config = lift.backend.config
    plans: dict[int, SamplePlan] = {}
    weights: dict[int, nn.Module] = {}

    def make(index: int) -> MemoryJob:
        plans[index] = plan_memory(lift, groups[index], fitted, generator, None)
        weights[index] = new_weights(lift, None, adapter_config, fitted.seed)
        return MemoryJob(plans[index], weights[index])

    if overlaps_planning(lift, fitted):
        # Longest documents first (they take the most steps); planning the rest overlaps with training.
        order = sorted(range(len(groups)), key=lambda i: -sum(len(d.text) for d in groups[i]))
        fitted = with_memory_fit(lift, fitted, fitted.max_seq_length, True)
        feed: list[MemoryJob] | JobFeed = JobFeed.planned(order, make)
    else:
        for index, docs in enumerate(groups):
            plans[index] = plan_memory(lift, docs, fitted, generator, None)
        if not uses_fused(lift, fitted, None, list(plans.values())):
            return [
                absorb(
                    lift,
                    docs,
                    config=fitted,
                    generator=generator,
                    show_progress=show_progress,
                    callback=callback,
                    into=None,
                    resume=True,
                    distributed=False,
                )
                for docs in groups
            ]
        fitted = with_memory_fit(lift, fitted, longest_sample(list(plans.values())), True)
        feed = [make(index) for index in range(len(groups))]
    report = ManyReporter(callback, show_progress)
    try:
        stats = _train_fused(lift, feed, fitted, report, slots=slots)
    except BaseException:
        with lift.lock:
            for w in weights.values():
                lift.backend.release(w)
        raise
    finally:
        report(0, None)
    return [
        _memory(lift, weights[i], adapter_config, docs, None, fitted, stats[i], plans[i], None)
        for i, docs in enumerate(groups)
    ]


def overlaps_planning(lift: LIFTModel, config: LIFTConfig) -> bool:
    """Whether ``absorb_many`` plans its memories while the first ones train: on CUDA (a CPU has no
    cores to spare for it), on the fused engine, with steps of at most ``batch_size`` samples whatever
    the documents (``steps_per_epoch=None``)."""
    return (
        lift.device.type == "cuda"
        and config.steps_per_epoch is None
        and config.engine != "eager"
        and fused_reason(lift, config, None, []) is None
    )


def normalize_groups(items: Any) -> list[list[Document]]:
    """``absorb_many``'s argument as one list of documents per memory: each item is what ``absorb``
    takes for one memory with one document (a string, a ``(title, text)`` pair, a :class:`Document`) or
    a list of them (one memory of several documents)."""
    if isinstance(items, (str, bytes, Document)) or not isinstance(items, Sequence):
        raise TypeError(
            f"absorb_many expects a list with one item per memory, got {type(items).__name__}; "
            "use absorb() for a single memory"
        )
    if len(items) == 0:
        raise ValueError("no documents given: pass at least one non-empty text")
    groups = []
    for index, item in enumerate(items):
        try:
            groups.append(normalize_documents(item if isinstance(item, list) else [item]))
        except (TypeError, ValueError) as error:
            raise type(error)(f"memory {index}: {error}") from None
    return groups


def _train_eager(
    lift: LIFTModel,
    weights: nn.Module,
    plan: SamplePlan,
    config: LIFTConfig,
    checkpoint: CheckpointStore | None,
    group: DistributedContext | None,
    report: Callable[[AbsorbProgress | None], None],
) -> TrainingStats:
    """Train ``weights`` one optimizer step at a time under the model lock."""
    target = AdapterTarget(lift.model, lift.backend, weights, lift.lock, config, lift._generator.pad_id)
    return train_memory(target, plan, config, on_step=report, checkpoint=checkpoint, distributed=group)


def _train_fused(
    lift: LIFTModel,
    jobs: list[MemoryJob] | JobFeed,
    config: LIFTConfig,
    report: ManyReporter,
    *,
    slots: int | None = None,
) -> list[TrainingStats]:
    """Train every job's weights side by side; each job's weights then hold its trained tensors."""
    started: dict[int, MemoryJob] = {}

    def on_start(index: int, job: MemoryJob, steps: int) -> None:
        started[index] = job
        report.add_steps(steps)

    trained = train_side_by_side(
        lift.model,
        lift.backend,
        lift.lock,
        lift._generator.pad_id,
        jobs,
        config,
        slots=slots,
        on_step=report,
        on_start=on_start,
    )
    with torch.no_grad():
        for index, result in enumerate(trained):
            started[index].weights.load_state_dict(result.tensors)
    return [result.stats for result in trained]


class ManyReporter:
    """Progress of an absorption: each memory's reports to ``callback`` (``progress.memory`` names it),
    and with ``show_progress`` one bar over every memory's steps (its total grows as memories start)."""

    def __init__(self, callback: Callback | None, show_progress: bool) -> None:
        self.callback = callback
        self.show_progress = show_progress
        self._bar: Any = None

    def add_steps(self, steps: int) -> None:
        if self.show_progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=0, desc="absorbing", unit="step")
            self._bar.total += steps
            self._bar.refresh()

    def __call__(self, index: int, progress: AbsorbProgress | None) -> None:
        if progress is None:
            if self._bar is not None:
                self._bar.close()
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(memory=index + 1, loss=f"{progress.loss:.3f}")
        if self.callback is not None:
            self.callback(progress.with_memory(index))


class _SingleReporter(ManyReporter):
    """One memory's reports to ``absorb``'s reporter."""

    def __init__(self, report: Callable[[AbsorbProgress | None], None]) -> None:
        super().__init__(None, False)
        self.report = report

    def __call__(self, index: int, progress: AbsorbProgress | None) -> None:
        if progress is not None:
            self.report(progress)


def _memory(
    lift: LIFTModel,
    weights: nn.Module,
    adapter_config: Any,
    docs: Sequence[Document],
    into: Memory | None,
    fitted: LIFTConfig,
    stats: TrainingStats,
    plan: SamplePlan,
    group: DistributedContext | None,
) -> Memory:
    """The memory of trained ``weights``, registered as live on ``lift``."""
    memory = Memory(
        adapter_kind=lift.backend.kind,
        adapter_config=lift.backend.config_dict(adapter_config),
        tensors={name: t.detach() for name, t in weights.state_dict().items()},
        documents=[
            *(into.documents if into is not None else []),
            *(AbsorbedDocument(title=d.title, text=d.text) for d in docs),
        ],
        config=fitted,
        base_model_name=lift.name,
        base_fingerprint=lift.fingerprint,
        stats=memory_stats(stats, plan, group.world_size if group is not None else None),
    )
    with lift.lock:
        lift._live.add(memory, weights)
    return memory
