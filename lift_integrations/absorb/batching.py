"""How a step's samples become forward passes: grouping, shared prefixes, and the tensors fed to the model.

A step's samples are grouped into micro-batches of similar length (little padding; on a CPU, where a
padded position costs as much as a real one, into the passes of least work). Samples that start
with the same long prefix (the QA samples' document view) run that prefix once: packed into one row with
their own attention mask where the model's attention accepts one, else through the key/value cache.
Everything that needs no GPU (which positions are supervised, the packed positions) is computed on the
host, so a step never waits for the device until its loss is read.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
from lift_integrations.config import LIFTConfig

REPLAY_BATCH_TOKENS = 2048
"""Padded tokens per replay pass with a gate or KL term: it keeps full-vocabulary logits (twice with KL)."""

MIN_SHARED_PREFIX = 256
"""Shortest common start (in tokens) that is worth computing once for several samples of a step."""

CPU_PASS_OVERHEAD_TOKENS = 48
"""What one more forward and backward pass costs on a CPU, in token positions (casting the frozen weights
to bf16, the lm head, Python), estimated for SmolLM2-135M. A CPU computes every padded position at full
price, so a step's samples of very different lengths run faster in several passes (:func:`micro_batches`;
docs/benchmarks.md, CPU section)."""

ATTENTION_TOKENS = 1024
"""Sequence length at which a position's attention costs about as much again as the rest of its layer on
a CPU, estimated for SmolLM2-135M (only the split's cost model reads it)."""


def split_evenly(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous, nearly equal groups."""
    bounds = np.linspace(0, len(items), parts + 1).round().astype(int)
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def micro_batches(
    samples: Sequence[TrainingSample], max_samples: int, max_tokens: int, pass_overhead: int | None = None
) -> list[list[int]]:
    """Indices of ``samples`` grouped into forward passes: similar lengths together (little padding),
    at most ``max_samples`` samples and ``max_tokens`` padded tokens each (a longer sample goes alone).

    Without ``pass_overhead``, samples fill each pass in order of length, as many as fit (on a GPU, fewer
    and larger passes run faster). With it (the cost of one more pass, in token positions), the samples
    are split into the passes of least estimated work (:func:`pass_cost`): on a CPU a step of three
    70-token questions and one 367-token segment runs as two passes, not as four 367-token rows. The
    gradients are the same either way (up to float rounding): each sample's loss is independent of the
    other rows, and the passes' gradients add up.
    """
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    if pass_overhead is not None:
        widths = [len(samples[i].input_ids) for i in order]
        return [order[a:b] for a, b in _cheapest_split(widths, max_samples, max_tokens, pass_overhead)]
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


def pass_cost(rows: int, width: int, overhead: int) -> float:
    """Estimated work of a pass of ``rows`` padded rows of ``width`` tokens, in token positions."""
    return overhead + rows * width * (1 + width / ATTENTION_TOKENS)


def _cheapest_split(
    widths: Sequence[int], max_samples: int, max_tokens: int, overhead: int
) -> list[tuple[int, int]]:
    """``(start, end)`` bounds of the runs of ``widths`` (ascending) that make the passes of least total
    :func:`pass_cost` within the limits of :func:`micro_batches` (dynamic programming over the ends)."""
    best: list[tuple[float, int]] = [(0.0, 0)]  # best[end]: (least cost of widths[:end], start of last run)
    for end in range(1, len(widths) + 1):
        candidates = [
            (best[start][0] + pass_cost(end - start, widths[end - 1], overhead), start)
            for start in range(max(0, end - max_samples), end)
            if end - start == 1 or widths[end - 1] * (end - start) <= max_tokens
        ]
        best.append(min(candidates))
    bounds: list[tuple[int, int]] = []
    end = len(widths)
    while end > 0:
        start = best[end][1]
        bounds.append((start, end))
        end = start
    return bounds[::-1]


@dataclass(frozen=True)
class ForwardPass:
    """Samples of a step computed in one forward pass; their first ``shared`` tokens are identical, carry
    no loss, and run through the model once for all of them."""

    indices: list[int]
    shared: int = 0


def _common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def _first_supervised(sample: TrainingSample) -> int:
    return next((i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX), len(sample.labels))


def shared_prefix_groups(
    samples: Sequence[TrainingSample], min_length: int = MIN_SHARED_PREFIX
) -> tuple[list[ForwardPass], list[int]]:
    """Samples that begin with the same ``min_length`` tokens or more, grouped with the length of the
    prefix they all share, and the indices of the samples left alone.

    The QA samples of a document all start with the same chat markup and document view, so under causal
    attention that view's hidden states and keys/values are the same for each of them: computing them
    once and letting every question attend to them gives the same losses and gradients as computing
    each sample whole (backpropagation sums the questions' gradients through the shared part). The
    shared part stops before the first position that predicts a supervised token.
    """
    buckets: dict[tuple[int, ...], list[int]] = {}
    alone: list[int] = []
    for index, sample in enumerate(samples):
        if len(sample.input_ids) > min_length:
            buckets.setdefault(tuple(sample.input_ids[:min_length]), []).append(index)
        else:
            alone.append(index)
    groups: list[ForwardPass] = []
    for members in buckets.values():
        if len(members) == 1:
            alone.extend(members)
            continue
        first = np.asarray(samples[members[0]].input_ids)
        shared = min(
            min(_common_prefix_length(first, np.asarray(samples[i].input_ids)) for i in members[1:]),
            min(_first_supervised(samples[i]) - 1 for i in members),
        )
        if shared >= min_length:
            groups.append(ForwardPass(members, shared))
        else:
            alone.extend(members)
    return groups, sorted(alone)


def plan_forward_passes(
    samples: Sequence[TrainingSample],
    max_samples: int,
    max_tokens: int,
    *,
    share_prefixes: bool,
    pass_overhead: int | None = None,
) -> list[ForwardPass]:
    """The step's forward passes: samples with a long common prefix together (the prefix computed once),
    the rest packed by :func:`micro_batches` (with ``pass_overhead``: in the passes of least work). Each
    pass holds at most ``max_samples`` samples and ``max_tokens`` padded tokens besides a shared prefix."""
    groups, alone = shared_prefix_groups(samples) if share_prefixes else ([], list(range(len(samples))))
    passes = [
        ForwardPass([alone[i] for i in batch])
        for batch in micro_batches([samples[i] for i in alone], max_samples, max_tokens, pass_overhead)
    ]
    for group in groups:
        suffixes = [suffix(samples[i], group.shared) for i in group.indices]
        for batch in micro_batches(suffixes, max_samples, max_tokens):
            passes.append(ForwardPass([group.indices[i] for i in batch], group.shared))
    return passes


def suffix(sample: TrainingSample, start: int) -> TrainingSample:
    """``sample`` from token ``start`` on (what continues a shared prefix)."""
    return TrainingSample(sample.input_ids[start:], sample.labels[start:], sample.kind)


def pass_work(lengths: Sequence[int], shared: int) -> tuple[int, int]:
    """Token positions a pass runs through the model and its attention work (sum of squared sequence
    lengths), for samples of ``lengths`` tokens whose first ``shared`` are computed once."""
    computed = sum(lengths) - shared * (len(lengths) - 1)
    return computed, sum(n**2 - shared**2 for n in lengths) + shared**2


# Tensors --------------------------------------------------------------------------------------------


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device`` without waiting for the GPU.

    A copy from ordinary (pageable) host memory waits until every kernel queued before it has run, which
    stops the host from queueing the next forward pass while the GPU is still busy; a copy from pinned
    memory is queued like a kernel.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _supervision(samples: Sequence[TrainingSample], offsets: Sequence[int]) -> dict[str, torch.Tensor]:
    """Where each sample's loss is read: ``positions`` (flat indices into the decoder's output, sample
    ``r`` starting at ``offsets[r]``) of the tokens whose next token is labelled, the labels they predict
    (``targets``), the sample each belongs to (``rows``) and every sample's length (``lengths``)."""
    rows, positions, targets = [], [], []
    for row, (sample, offset) in enumerate(zip(samples, offsets, strict=True)):
        following = np.asarray(sample.labels[1:], dtype=np.int64)
        cols = np.flatnonzero(following != IGNORE_INDEX)
        rows.append(np.full(len(cols), row, dtype=np.int64))
        positions.append(offset + cols)
        targets.append(following[cols])
    return {
        "rows": torch.from_numpy(np.concatenate(rows)),
        "positions": torch.from_numpy(np.concatenate(positions)),
        "targets": torch.from_numpy(np.concatenate(targets)),
        "lengths": torch.tensor([len(s.input_ids) for s in samples]),
    }


def collate(samples: Sequence[TrainingSample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``labels`` and ``attention_mask``, with the supervised positions found
    on the host (:func:`_supervision`), so the loss needs no device-to-host synchronisation."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    batch |= _supervision(samples, [row * width for row in range(len(samples))])
    return {name: to_device(tensor, device) for name, tensor in batch.items()}


def collate_packed(
    prefix: Sequence[int],
    samples: Sequence[TrainingSample],
    device: torch.device,
    additive_mask: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """``prefix`` followed by every sample (each continuing it) in one row of ``input_ids``.

    Every sample's positions restart where the prefix ends, and the ``(1, 1, L, L)`` attention mask lets
    a token see the prefix and the earlier tokens of its own sample only: each sample computes exactly
    what it would after the prefix alone. The mask is boolean (sdpa), or additive in ``additive_mask``'s
    dtype for eager attention; it is built on ``device`` from one small index vector.
    """
    lengths = [len(s.input_ids) for s in samples]
    starts = np.cumsum([len(prefix), *lengths[:-1]])
    ids = np.concatenate([np.asarray(prefix), *(np.asarray(s.input_ids) for s in samples)])
    positions = np.concatenate([np.arange(len(prefix)), *(len(prefix) + np.arange(n) for n in lengths)])
    owner = np.concatenate([np.zeros(len(prefix)), *(np.full(n, i + 1) for i, n in enumerate(lengths))])
    batch = {
        "input_ids": torch.from_numpy(ids).long()[None],
        "position_ids": torch.from_numpy(positions).long()[None],
        "owner": torch.from_numpy(owner).long(),
    }
    batch |= _supervision(samples, starts.tolist())
    batch = {name: to_device(tensor, device) for name, tensor in batch.items()}
    owner_t = batch.pop("owner")
    index = torch.arange(len(owner_t), device=device)
    visible = (index[None, :] <= index[:, None]) & (
        (owner_t[None, :] == 0) | (owner_t[None, :] == owner_t[:, None])
    )
    if additive_mask is not None:
        blocked = torch.finfo(additive_mask).min
        visible = torch.zeros(visible.shape, dtype=additive_mask, device=device).masked_fill_(
            ~visible, blocked
        )
    batch["attention_mask"] = visible[None, None]
    return batch


@dataclass(frozen=True)
class BatchLayout:
    """How one absorption lays its samples out for the model, fixed for the whole training."""

    device: torch.device
    pad_id: int
    max_samples: int
    max_tokens: int
    """Padded tokens per forward pass at most, besides a shared prefix."""
    share_prefixes: bool
    packed: bool
    """A shared prefix and its continuations run as one packed row (:func:`collate_packed`); otherwise
    the prefix runs first and the continuations read it from the key/value cache."""
    additive_mask: torch.dtype | None
    pass_overhead: int | None = None
    """Cost of one more pass in token positions, where padding costs more than extra passes (a CPU):
    samples are then split into the passes of least work (:func:`micro_batches`)."""

    @classmethod
    def for_model(
        cls, model: nn.Module, config: LIFTConfig, device: torch.device, pad_id: int
    ) -> BatchLayout:
        # A shared prefix runs packed into one row, or else through the key/value cache, which HF's
        # gradient checkpointing turns off.
        packed = packs_shared_prefixes(model)
        sharing = config.share_prefixes and not bidirectional(model)
        dtype = next(model.parameters()).dtype
        return cls(
            device=device,
            pad_id=pad_id,
            max_samples=config.batch_size,
            max_tokens=config.micro_batch_tokens or (65536 if device.type == "cuda" else 8192),
            share_prefixes=sharing and (packed or not config.gradient_checkpointing),
            packed=packed,
            additive_mask=dtype if attention_implementation(model) == "eager" else None,
            pass_overhead=CPU_PASS_OVERHEAD_TOKENS if device.type == "cpu" else None,
        )

    def plan(self, samples: Sequence[TrainingSample]) -> list[ForwardPass]:
        """The forward passes of a step's ``samples`` (:func:`plan_forward_passes`)."""
        return plan_forward_passes(
            samples,
            self.max_samples,
            self.max_tokens,
            share_prefixes=self.share_prefixes,
            pass_overhead=self.pass_overhead,
        )

    def collate(
        self, samples: Sequence[TrainingSample], shared: int = 0
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The batch of one forward pass, and the ids of the prefix its samples continue when that prefix
        runs through the key/value cache (``None`` otherwise)."""
        if not shared:
            return collate(samples, self.pad_id, self.device), None
        prefix = samples[0].input_ids[:shared]
        suffixes = [suffix(s, shared) for s in samples]
        if self.packed:
            return collate_packed(prefix, suffixes, self.device, self.additive_mask), None
        return collate(suffixes, self.pad_id, self.device), to_device(torch.tensor([prefix]), self.device)


# What the model's attention allows ------------------------------------------------------------------


def text_config(model: nn.Module) -> Any:
    """The decoder's own config (a multimodal model keeps it in ``text_config``)."""
    return getattr(model.config, "text_config", None) or model.config


def attention_implementation(model: nn.Module) -> str | None:
    return getattr(text_config(model), "_attn_implementation", None)


def bidirectional(model: nn.Module) -> bool:
    """Whether the model lets tokens attend to later ones (then padding needs a mask and no prefix can
    be shared)."""
    return bool(getattr(text_config(model), "use_bidirectional_attention", False))


def packs_shared_prefixes(model: nn.Module) -> bool:
    """Whether a shared prefix and the samples continuing it can run as one packed row.

    The row needs its own attention mask (each continuation sees the prefix and itself, not the others),
    which the sdpa and eager attention implementations accept as a 4D tensor; a sliding-window layer would
    need a second mask, so models with one keep the key/value-cache path of
    :func:`~lift_integrations.absorb.losses.per_sample_loss`.
    """
    return attention_implementation(model) in ("sdpa", "eager") and full_causal_attention(model)


def full_causal_attention(model: nn.Module) -> bool:
    """Whether every layer attends causally to every earlier token (no sliding window, not
    bidirectional): then causal attention alone, with no mask, keeps right padding from real tokens."""
    if bidirectional(model):
        return False
    config = text_config(model)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None


def caches_shared_prefixes(model: nn.Module, config: LIFTConfig) -> bool:
    """Whether training runs shared prefixes through the key/value cache: models that cannot pack them
    (:func:`packs_shared_prefixes`), unless HF's gradient checkpointing (which turns the cache off) or a
    bidirectional model rules sharing out."""
    sharing = config.share_prefixes and not bidirectional(model)
    return sharing and not config.gradient_checkpointing and not packs_shared_prefixes(model)
