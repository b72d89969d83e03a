"""Absorption across several processes with ``torch.distributed`` (launched by ``torchrun``).

Two ways to use several processes (one per GPU, or several CPU processes):

* **one large document, one memory** (:meth:`LIFTModel.absorb` with ``distributed=True``, or
  automatically when a process group is initialised): every process builds its share of the training
  samples and the processes swap them (:func:`work_share`), so all hold the same samples; each optimizer
  step's samples are split between the processes, each process runs forward and backward
  on its share only, and the gradients are summed with one all-reduce before clipping and the optimizer
  step. Every process ends with the same memory, equal to a single-process absorption up to the order of
  floating-point sums (see docs/distributed.md for the math).
* **many documents, one memory each** (:func:`lift_integrations.cli.absorb_each`, the CLI's ``--mode
  each``): the documents are dealt to the processes by length (:func:`deal_by_length`), each process
  absorbs its documents independently and saves each memory.

NCCL is used on GPUs and gloo on CPUs. This module is imported only by code that already uses torch;
``import lift_integrations`` does not import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lift_integrations.sharing import WorkShare, balanced_partition


class DistributedMismatchError(RuntimeError):
    """The processes of one distributed absorption disagree (documents, settings, model or checkpoint)."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in an initialised process group (``world_size > 1``)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    """Where this process keeps its model: ``cuda:LOCAL_RANK`` under NCCL, the CPU under gloo."""
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, shows progress and saves a sharded memory."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def current() -> DistributedContext | None:
    """The context of the process group already initialised in this process; ``None`` when there is none
    or it has a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world_size = dist.get_world_size()
    if world_size <= 1:
        return None
    rank = dist.get_rank()
    backend = str(dist.get_backend())
    local_rank = _env_int("LOCAL_RANK", rank)
    # "nccl", "gloo", or both ("cpu:gloo,cuda:nccl") for a group initialised without naming a backend
    uses_cuda = "nccl" in backend and torch.cuda.is_available()
    device = torch.device("cpu")
    if uses_cuda:
        # torchrun's LOCAL_RANK names this process's GPU even before torch.cuda.set_device is called;
        # with one GPU visible per process (CUDA_VISIBLE_DEVICES), it is that one.
        by_rank = "LOCAL_RANK" in os.environ and local_rank < torch.cuda.device_count()
        device = torch.device("cuda", local_rank if by_rank else torch.cuda.current_device())
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend
    )


DEFAULT_TIMEOUT = timedelta(hours=3)
"""How long a collective may wait. Processes wait at barriers while another downloads the model or, in
:func:`lift_integrations.cli.absorb_each`, absorbs a longer document: NCCL's own default (10 minutes)
would abort them."""


def init_from_env(
    backend: str | None = None, timeout: timedelta = DEFAULT_TIMEOUT
) -> DistributedContext | None:
    """Initialise the default process group from ``torchrun``'s environment and return this process's
    context; ``None`` for a single process (``WORLD_SIZE`` unset or 1).

    ``backend``: ``"nccl"`` or ``"gloo"``; ``None`` picks NCCL when CUDA is available, gloo otherwise.
    Under NCCL the process's GPU is ``cuda:LOCAL_RANK``, set as the current device. A group that is
    already initialised is used as it is. ``timeout``: how long any collective may wait (see
    :data:`DEFAULT_TIMEOUT`).
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    if _env_int("WORLD_SIZE", 1) <= 1:
        return None
    if not dist.is_available():
        raise RuntimeError("this build of torch has no torch.distributed; cannot run on several processes")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("the NCCL backend needs CUDA; use backend='gloo' on CPUs")
        local_rank = _env_int("LOCAL_RANK", 0)
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} has no GPU (this machine has {torch.cuda.device_count()}); "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timeout)
    return current()


def resolve_context(requested: bool | None, device: torch.device) -> DistributedContext | None:
    """The process group an absorption on ``device`` is split over (``None``: this process alone), for
    ``LIFTModel.absorb``'s ``distributed`` argument: ``None`` uses a group of several processes if one
    is initialised, ``True`` requires one (initialising it from torchrun's environment if needed),
    ``False`` never uses one."""
    if requested is not None and not isinstance(requested, bool):
        raise TypeError(f"distributed must be True, False or None, got {type(requested).__name__}")
    if requested is False:
        return None
    if requested is None and not (dist.is_available() and dist.is_initialized()):
        return None  # the common case: no process group
    if requested is None:
        group = current()
    else:
        group = init_from_env(backend="nccl" if device.type == "cuda" else "gloo")
    if requested and group is None:
        raise RuntimeError(
            "distributed=True needs several processes: launch with torchrun (for example "
            "`torchrun --nproc_per_node 2 script.py`) or initialise torch.distributed first"
        )
    if group is not None and "gloo" not in group.backend and device.type != "cuda":
        raise RuntimeError(
            f"the process group uses {group.backend}, which cannot reduce tensors on {device}: initialise "
            "it with backend='gloo' for a model on the CPU"
        )
    if group is not None and group.backend == "nccl" and device != group.device:
        raise RuntimeError(
            f"this process's model is on {device} but its NCCL rank uses {group.device}: load the model "
            "with device=context.device (cuda:LOCAL_RANK)"
        )
    return group


def barrier(context: DistributedContext) -> None:
    """Wait until every process of the group gets here."""
    if context.backend == "nccl":
        dist.barrier(device_ids=[context.device.index])
    else:
        dist.barrier()


def gather_objects(value: Any) -> list[Any]:
    """``value`` from every rank, in rank order (small picklable objects only)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def work_share(context: DistributedContext) -> WorkShare:
    """This rank's share of work split over the group, exchanged with ``all_gather_object`` (the training
    samples each rank builds part of: see :func:`lift_integrations.absorb.plan.plan_samples`)."""
    return WorkShare(rank=context.rank, world_size=context.world_size, gather=gather_objects)


# Sharding the work of one step ------------------------------------------------------------------------


def shard_samples(lengths: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Indices of the samples (of one optimizer step) that ``rank`` trains on, balanced by token count.

    The step's samples are split first and each rank groups its share into micro-batches, so the work is
    split even when the whole step would fit in one micro-batch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is out of range for world size {world_size}")
    return deal_by_length(lengths, world_size)[rank]


def deal_by_length(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """The documents (indices into ``sizes``) each rank absorbs in ``--mode each``, dealt by size.

    A rank's time grows with the text it trains on, so dealing in order (``r, r + world_size, ...``)
    leaves ranks idle whenever lengths differ (one long document and many short ones: the long one's
    rank finishes last by hours). The documents are split by :func:`balanced_partition` of their sizes
    (characters, say) instead: every rank computes the same deal from the same sizes, the loads differ
    by at most the largest document, and each rank's indices are ascending (the mapping's order).
    """
    if world_size <= 0:
        raise ValueError(f"world_size must be positive, got {world_size}")
    if any(size < 0 for size in sizes):
        raise ValueError(f"document sizes must not be negative, got {list(sizes)}")
    return balanced_partition([float(size) for size in sizes], world_size)


# Summing gradients -------------------------------------------------------------------------------------


def all_reduce_gradients(
    parameters: Iterable[torch.nn.Parameter], stats: Sequence[float] = ()
) -> list[float]:
    """Sum every parameter's gradient over the group, in place, and return ``stats`` summed likewise.

    The gradients are packed into one buffer per dtype (a missing gradient counts as zeros) and reduced
    with one all-reduce each; ``stats`` and a has-gradient flag per parameter travel in one float64
    all-reduce. A parameter that has no gradient on any rank keeps none, as in a single process (AdamW
    then skips it). Collective: every rank must call it with the same parameters.
    """
    params = list(parameters)
    device = params[0].device if params else torch.device("cpu")
    flags = [0.0 if p.grad is None else 1.0 for p in params]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, param in enumerate(params):
        by_dtype.setdefault(param.dtype, []).append(index)
    for indices in by_dtype.values():
        flat = torch.cat(
            [
                (grad if (grad := params[i].grad) is not None else torch.zeros_like(params[i])).reshape(-1)
                for i in indices
            ]
        )
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in indices:
            size = params[i].numel()
            params[i].grad = flat[offset : offset + size].view_as(params[i])
            offset += size
    totals = torch.tensor([*stats, *flags], dtype=torch.float64, device=device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    values = totals.tolist()
    for param, count in zip(params, values[len(stats) :], strict=True):
        if count == 0:
            param.grad = None
    return values[: len(stats)]


def check_same_absorption(samples_digest: str, plan_key: str) -> None:
    """Raise :class:`DistributedMismatchError` on every rank unless all ranks built the same training samples
    (``samples_digest``) and the same plan (``plan_key``: settings, base model, adapter, starting memory).

    Collective: every rank of the group must call it.
    """
    gathered = gather_objects((samples_digest, plan_key))
    samples = [g[0] for g in gathered]
    plans = [g[1] for g in gathered]
    hint = (
        "every process must absorb the same documents with the same config, model, adapter, QA generator "
        "and `into` memory; to absorb different documents on each process pass distributed=False "
        "(or use lift_integrations.cli.absorb_each)"
    )
    differing = [rank for rank, digest in enumerate(samples) if digest != samples[0]]
    if differing:
        raise DistributedMismatchError(
            f"rank(s) {differing} built different training samples from rank 0; {hint}"
        )
    differing = [rank for rank, key in enumerate(plans) if key != plans[0]]
    if differing:
        raise DistributedMismatchError(
            f"rank(s) {differing} use different settings, base model, adapter or starting memory from "
            f"rank 0; {hint}"
        )
