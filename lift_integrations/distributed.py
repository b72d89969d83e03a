"""Absorption across several processes with ``torch.distributed`` (launched by ``torchrun``).

Two ways to use several processes (one per GPU, or several CPU processes):

* **one large document, one memory** (:meth:`LIFTModel.absorb` with ``distributed=True``, or
  automatically when a process group is initialised): every process builds the same training samples,
  each optimizer step's samples are split between the processes, each process runs forward and backward
  on its share only, and the gradients are summed with one all-reduce before clipping and the optimizer
  step. Every process ends with the same memory, equal to a single-process absorption up to the order of
  floating-point sums (see docs/distributed.md for the math).
* **many documents, one memory each** (:func:`absorb_each`): process ``r`` absorbs the documents
  ``r, r + world_size, ...`` independently and saves each memory.

NCCL is used on GPUs and gloo on CPUs. This module is imported only by code that already uses torch;
``import lift_integrations`` does not import it.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.config import LIFTConfig
    from lift_integrations.model import LIFTModel


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
:func:`absorb_each`, absorbs a longer document: NCCL's own default (10 minutes) would abort them."""


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


# Sharding the work of one step ------------------------------------------------------------------------


def balanced_partition(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices ``0 .. len(costs) - 1`` in ``parts`` groups of nearly equal total cost.

    Greedy longest-processing-time: items in decreasing cost (ties: lower index first), each to the group
    with the smallest load so far (ties: fewer items, then lower group). Deterministic, so every rank
    computes the same partition; the largest and smallest loads differ by at most the largest cost. Each
    group's indices are ascending; a group is empty when there are fewer items than groups.
    """
    if parts <= 0:
        raise ValueError(f"parts must be positive, got {parts}")
    groups: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0.0, 0, part) for part in range(parts)]  # (load, items, part), smallest first
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, count, part = heapq.heappop(heap)
        groups[part].append(index)
        heapq.heappush(heap, (load + costs[index], count + 1, part))
    return [sorted(group) for group in groups]


def shard_samples(lengths: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Indices of the samples (of one optimizer step) that ``rank`` trains on, balanced by token count.

    The step's samples are split first and each rank groups its share into micro-batches, so the work is
    split even when the whole step would fit in one micro-batch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is out of range for world size {world_size}")
    return balanced_partition([float(n) for n in lengths], world_size)[rank]


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
                (params[i].grad if params[i].grad is not None else torch.zeros_like(params[i])).reshape(-1)
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
        "(or use lift_integrations.distributed.absorb_each)"
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


# Many documents, one memory each -----------------------------------------------------------------------


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"memory names must be non-empty folder names without slashes, got {name!r}")
    return name


def absorb_each(
    lift: LIFTModel,
    documents: Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    config: LIFTConfig | None = None,
    generator: Any = None,
    show_progress: bool = False,
    callback: Callable[[str, AbsorbProgress], None] | None = None,
    context: DistributedContext | None = None,
) -> dict[str, Path]:
    """Absorb each entry of ``documents`` into its own fresh memory, saved at ``output_dir / name``.

    ``documents`` maps a memory name (a folder name) to what :meth:`LIFTModel.absorb` accepts (a text, a
    ``(title, text)`` pair or a list of documents). With a process group (``context``, default: the one
    initialised in this process), rank ``r`` absorbs the names ``r, r + world_size, ...`` in the mapping's
    order, so every rank must pass the same mapping; each absorption runs on one process
    (``distributed=False``) and equals a single-process one. ``callback(name, report)`` receives the
    progress reports; ``show_progress`` draws a bar on rank 0 only. Returns the folders this process
    wrote; all ranks wait for each other before returning, so every memory is saved when it returns.
    """
    names = [_check_name(name) for name in documents]
    if len(set(names)) != len(names):
        raise ValueError("memory names must be unique")
    if context is None:
        context = current()
    rank, world_size = (context.rank, context.world_size) if context is not None else (0, 1)
    from lift_integrations.memory import check_save_target, save_or_rescue

    root = Path(output_dir)
    mine = names[rank::world_size]
    for name in mine:  # refuse now, not after hours of training, a folder the save would refuse
        check_save_target(root / name)
    written: dict[str, Path] = {}
    for name in mine:

        def report(progress: AbsorbProgress, name: str = name) -> None:
            if callback is not None:
                callback(name, progress)

        memory = lift.absorb(
            documents[name],
            config=config,
            generator=generator,
            show_progress=show_progress and rank == 0,
            callback=report,
            distributed=False,
        )
        try:
            written[name] = save_or_rescue(memory, root / name)
        finally:
            lift.release(memory)
    if context is not None:
        barrier(context)
    return written
