"""The training loop that writes documents into a memory.

Plain PyTorch, top to bottom: build the optimizer over the memory's parameters only, then for each stage
and epoch shuffle the samples, accumulate gradients over micro-batches, clip, step. The base model is
frozen; the loss is computed only at supervised positions, so the vocabulary-sized logits are never
materialised for the whole sequence.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from array import array
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
from lift_integrations.config import LIFTConfig
from lift_integrations.distributed import (
    DistributedContext,
    DistributedMismatchError,
    all_reduce_gradients,
    gather_objects,
    shard_samples,
)


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
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


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


REPLAY_BATCH_TOKENS = 2048
"""Padded tokens per replay pass with a gate or KL term: it keeps full-vocabulary logits (twice with KL)."""

MIN_SHARED_PREFIX = 256
"""Shortest common start (in tokens) that is worth computing once for several samples of a step."""


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
    samples: Sequence[TrainingSample], max_samples: int, max_tokens: int, *, share_prefixes: bool
) -> list[ForwardPass]:
    """The step's forward passes: samples with a long common prefix together (the prefix computed once),
    the rest packed by :func:`micro_batches`. Each pass holds at most ``max_samples`` samples and
    ``max_tokens`` padded tokens besides a shared prefix."""
    groups, alone = shared_prefix_groups(samples) if share_prefixes else ([], list(range(len(samples))))
    passes = [
        ForwardPass([alone[i] for i in batch])
        for batch in micro_batches([samples[i] for i in alone], max_samples, max_tokens)
    ]
    for group in groups:
        suffixes = [_suffix(samples[i], group.shared) for i in group.indices]
        for batch in micro_batches(suffixes, max_samples, max_tokens):
            passes.append(ForwardPass([group.indices[i] for i in batch], group.shared))
    return passes


def _suffix(sample: TrainingSample, start: int) -> TrainingSample:
    return TrainingSample(sample.input_ids[start:], sample.labels[start:], sample.kind)


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


def _collate(samples: Sequence[TrainingSample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
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


def packs_shared_prefixes(model: nn.Module) -> bool:
    """Whether a shared prefix and the samples continuing it can run as one packed row.

    The row needs its own attention mask (each continuation sees the prefix and itself, not the others),
    which the sdpa and eager attention implementations accept as a 4D tensor; a sliding-window layer would
    need a second mask, so models with one keep the key/value-cache path of :func:`per_sample_loss`.
    """
    if _attention_implementation(model) not in ("sdpa", "eager") or bidirectional(model):
        return False
    config = _text_config(model)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None


def _collate_packed(
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


def caches_shared_prefixes(model: nn.Module, config: LIFTConfig) -> bool:
    """Whether training runs shared prefixes through the key/value cache: models that cannot pack them
    (:func:`packs_shared_prefixes`), unless HF's gradient checkpointing (which turns the cache off) or a
    bidirectional model rules sharing out."""
    sharing = config.share_prefixes and not bidirectional(model)
    return sharing and not config.gradient_checkpointing and not packs_shared_prefixes(model)


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


LOSS_CHUNK_ROWS = 4096
"""Supervised positions whose vocabulary-sized logits exist at once (see :func:`token_losses`)."""


def _chunk_loss(
    head: nn.Module, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def token_losses(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of ``hidden`` (supervised positions) against ``targets``.

    The output projection and the loss run in chunks of :data:`LOSS_CHUNK_ROWS` rows whose logits are
    recomputed in the backward pass instead of stored: a step's full logits (rows x vocabulary, in fp32)
    would otherwise take more memory than the rest of training together, capping the batch size.
    """
    from torch.utils.checkpoint import checkpoint

    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if hidden.shape[0] <= LOSS_CHUNK_ROWS or not torch.is_grad_enabled():
        return _chunk_loss(head, softcap, hidden, targets)
    chunks = [
        checkpoint(_chunk_loss, head, softcap, h, t, use_reentrant=False)
        for h, t in zip(hidden.split(LOSS_CHUNK_ROWS), targets.split(LOSS_CHUNK_ROWS), strict=True)
    ]
    return torch.cat(chunks)


def per_sample_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], prefix: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over each sample's supervised tokens; shape ``(batch,)``.

    Samples are right-padded, so under causal attention no real token ever sees a pad: the attention
    mask is left out, which lets sdpa take its fused causal kernels (flash attention on GPUs) instead of
    the masked path. The pads' own outputs are never supervised. A model configured for bidirectional
    attention (``use_bidirectional_attention``) would let tokens see the pads after them: it gets the mask.

    With ``prefix`` (``(1, length)`` token ids, no loss), every sample of ``batch`` continues that prefix:
    it runs once, and its keys and values, gradients kept, serve every row of the batch. A batch from
    :func:`_collate_packed` holds the prefix and its continuations in one row with their own mask and
    positions: one pass, no cache.
    """
    decoder = model.get_decoder()
    if "position_ids" in batch:
        hidden = decoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            use_cache=False,
        ).last_hidden_state
    elif prefix is None:
        mask = batch["attention_mask"] if bidirectional(model) else None
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False).last_hidden_state
    else:
        cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(batch["input_ids"].shape[0])
        suffixes = decoder(input_ids=batch["input_ids"], use_cache=True, **_cache_argument(decoder, cache))
        hidden = suffixes.last_hidden_state
    token_loss = token_losses(model, hidden.flatten(0, 1)[batch["positions"]], batch["targets"])
    return _mean_per_sample(token_loss, batch["rows"], batch["lengths"].shape[0])


def _mean_per_sample(values: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of ``values`` per sample (``rows`` names each value's sample); 0 for a sample without any."""
    sums = torch.zeros(size, device=values.device).index_add(0, rows, values.float())
    counts = torch.zeros(size, device=values.device).index_add(
        0, rows, torch.ones_like(values, dtype=torch.float)
    )
    return sums / counts.clamp(min=1)


def replay_losses(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    config: LIFTConfig,
    *,
    record_gates: Callable[[], AbstractContextManager[list[torch.Tensor]]] | None,
    without_memory: Callable[[], AbstractContextManager[Any]] | None,
) -> torch.Tensor:
    """Each replay sample's loss, shape ``(batch,)``: ``replay_weight`` x the answer's cross-entropy,
    plus ``replay_gate_weight`` x the mean gate over its tokens, plus ``replay_kl_weight`` x the mean
    KL divergence of the model's next-token distribution with the memory from the base model's
    (``without_memory``), over every token of the prompt and answer. The KL term asks the memory to leave
    unrelated requests exactly as it found them, not only their greedy answer.

    Replay prompts are short, so the full vocabulary logits of a batch of them are affordable.
    """
    mask = batch["attention_mask"]
    ids = batch["input_ids"]
    size = ids.shape[0]
    total = torch.zeros(size, device=ids.device)
    teacher = None
    if config.replay_kl_weight > 0:
        if without_memory is None:
            raise ValueError("LIFTConfig.replay_kl_weight needs the base model's outputs (without_memory)")
        with torch.no_grad(), without_memory():
            teacher = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)
    gated = config.replay_gate_weight > 0
    if gated and record_gates is None:
        raise ValueError("LIFTConfig.replay_gate_weight needs an adapter with a gate (Gated Memory)")
    with record_gates() if gated else contextlib.nullcontext() as gates:
        logits = model(input_ids=ids, use_cache=False).logits
    answer_weight = config.qa_weight if config.replay_weight is None else config.replay_weight
    if answer_weight > 0:
        supervised = logits.flatten(0, 1)[batch["positions"]].float()
        cross_entropy = nn.functional.cross_entropy(supervised, batch["targets"], reduction="none")
        total = total + answer_weight * _mean_per_sample(cross_entropy, batch["rows"], size)
    if gated:
        total = total + config.replay_gate_weight * mean_gate_per_sample(gates, mask)
    if teacher is not None:
        student = logits.float().log_softmax(-1)
        divergence = (teacher.exp() * (teacher - student)).sum(-1)  # KL(base || with memory), per token
        real = mask.to(divergence.dtype)
        total = total + config.replay_kl_weight * (divergence * real).sum(1) / real.sum(1).clamp(min=1)
    return total


def sample_weight(sample: TrainingSample, config: LIFTConfig) -> float:
    """A sample's weight in its step's loss: 1 for a segment, ``qa_weight`` for a QA pair and
    ``replay_weight`` (default ``qa_weight``) for a replay prompt."""
    if sample.kind == "segment":
        return 1.0
    if sample.kind == "replay" and config.replay_weight is not None:
        return config.replay_weight
    return config.qa_weight


def mean_gate_per_sample(gates: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Each sample's gate averaged over layers, heads and its real tokens; shape ``(batch,)``.
    ``gates``: one ``(batch, tokens, heads, 1)`` tensor per layer; ``mask``: ``(batch, tokens)``."""
    per_token = torch.stack([gate.float().mean(dim=(2, 3)) for gate in gates]).mean(0)
    real = mask.to(per_token.dtype)
    return (per_token * real).sum(1) / real.sum(1).clamp(min=1)


def _cache_argument(decoder: nn.Module, cache: Any) -> dict[str, Any]:
    """The key/value cache as the decoder's ``forward`` names it (``cache`` in newer transformers,
    ``past_key_values`` before)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


def _text_config(model: nn.Module) -> Any:
    """The decoder's own config (a multimodal model keeps it in ``text_config``)."""
    return getattr(model.config, "text_config", None) or model.config


def _attention_implementation(model: nn.Module) -> str | None:
    return getattr(_text_config(model), "_attn_implementation", None)


def bidirectional(model: nn.Module) -> bool:
    """Whether the model lets tokens attend to later ones (then padding needs a mask and no prefix can
    be shared)."""
    return bool(getattr(_text_config(model), "use_bidirectional_attention", False))


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
    step_guard: Callable[[], AbstractContextManager[Any]] | None = None,
    checkpoint: CheckpointStore | None = None,
    distributed: DistributedContext | None = None,
    record_gates: Callable[[], AbstractContextManager[list[torch.Tensor]]] | None = None,
    without_memory: Callable[[], AbstractContextManager[Any]] | None = None,
) -> TrainingStats:
    """Train ``parameters`` on each stage's samples for its number of epochs.

    One AdamW optimizer spans both stages (its state carries over, as in the paper). Each sample's loss is
    the mean over its supervised tokens; QA and replay samples are weighted by ``config.qa_weight``, so a
    short answer counts as much as a long segment instead of being diluted by token counting.

    ``step_guard`` is entered around each optimizer step (and nothing else): :meth:`LIFTModel.absorb`
    takes the model lock there, so other memories are served between steps. With ``checkpoint``, the
    state is saved every ``checkpoint.every`` steps, and training continues from the newest valid
    checkpoint it holds: the shuffles are replayed, so the result equals an uninterrupted run's.

    With ``distributed`` (see :mod:`lift_integrations.distributed`), every rank passes the same samples
    and starting parameters; each step's samples are split between the ranks, each rank runs forward and
    backward on its share, and the gradients, loss and token counts are summed over the ranks before
    clipping and the optimizer step. Every sample's loss is divided by the whole step's weight on every
    rank, so the sum equals the single-process gradient. Only rank 0 writes checkpoints; every rank must be
    able to read them to resume.
    """
    if config.replay_gate_weight > 0 and record_gates is None:
        raise ValueError("LIFTConfig.replay_gate_weight needs an adapter with a gate (Gated Memory)")
    if config.replay_kl_weight > 0 and without_memory is None:
        raise ValueError("LIFTConfig.replay_kl_weight needs the base model's outputs (without_memory)")
    # Replay samples with a gate or KL term run in passes of their own (replay_losses).
    regularised_replay = config.replay_gate_weight > 0 or config.replay_kl_weight > 0
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
    # A shared prefix runs packed into one row, or else through the key/value cache, which HF's gradient
    # checkpointing turns off.
    packed = packs_shared_prefixes(model)
    sharing = config.share_prefixes and not bidirectional(model)
    share_prefixes = sharing and (packed or not config.gradient_checkpointing)
    additive_mask = next(model.parameters()).dtype if _attention_implementation(model) == "eager" else None
    model_dtype = next(model.parameters()).dtype
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=use_bf16_autocast(config.precision, device, model_dtype)
    )
    total = sum(plan_steps(len(samples), config) * n for samples, n in zip(stages, epochs, strict=True))
    guard = step_guard or contextlib.nullcontext
    resumed = checkpoint.restore(parameters, optimizer, total) if checkpoint is not None else None
    if distributed is not None:
        found = gather_objects((resumed.step, resumed.params_sha256) if resumed is not None else (0, ""))
        if len(set(found)) > 1:
            raise DistributedMismatchError(
                f"the ranks found different checkpoints to resume from (steps by rank: "
                f"{[step for step, _ in found]}); checkpoint_dir must be one folder that every rank reads "
                "(rank 0 writes it)"
            )
    step, tokens, computed, sum_sq, losses, earlier_s = 0, 0, 0, 0, [], 0.0
    if resumed is not None:
        step, tokens, computed, sum_sq, losses, earlier_s = (
            resumed.step,
            resumed.tokens,
            resumed.tokens_computed,
            resumed.sum_sq,
            list(resumed.losses),
            resumed.elapsed_s,
        )
    start = time.perf_counter() - earlier_s
    was_training = model.training

    def run_step(step_samples: list[TrainingSample]) -> tuple[float, int, int]:
        weights = [sample_weight(s, config) for s in step_samples]
        total_weight = sum(weights) or 1.0
        if distributed is not None:  # this rank's share; total_weight stays the whole step's
            mine = shard_samples(
                [len(s.input_ids) for s in step_samples], distributed.rank, distributed.world_size
            )
            step_samples = [step_samples[i] for i in mine]
            weights = [weights[i] for i in mine]
        replays = [s for s in step_samples if s.kind == "replay"] if regularised_replay else []
        if replays:
            weights = [w for s, w in zip(step_samples, weights, strict=True) if s.kind != "replay"]
            step_samples = [s for s in step_samples if s.kind != "replay"]
        step_tokens, step_computed, step_sq = 0, 0, 0
        loss_sum = torch.zeros((), device=device)  # read once per step: reading it waits for the GPU
        optimizer.zero_grad(set_to_none=True)
        model.train(config.gradient_checkpointing)  # HF checkpoints only in train mode; dropout is 0 in LIFT
        try:
            failure: Exception | None = None
            try:
                passes = plan_forward_passes(
                    step_samples, config.batch_size, token_budget, share_prefixes=share_prefixes
                )
                for forward in passes:
                    micro = [step_samples[i] for i in forward.indices]
                    micro_weights = to_device(torch.tensor([weights[i] for i in forward.indices]), device)
                    prefix = None
                    if not forward.shared:
                        batch = _collate(micro, pad_id, device)
                    else:
                        shared_ids = micro[0].input_ids[: forward.shared]
                        suffixes = [_suffix(s, forward.shared) for s in micro]
                        if packed:
                            batch = _collate_packed(shared_ids, suffixes, device, additive_mask)
                        else:
                            prefix = to_device(torch.tensor([shared_ids]), device)
                            batch = _collate(suffixes, pad_id, device)
                    with autocast:
                        loss = per_sample_loss(model, batch, prefix)
                    weighted = (loss * micro_weights).sum() / total_weight
                    weighted.backward()
                    loss_sum += weighted.detach()
                    lengths = [len(s.input_ids) for s in micro]  # whole samples, shared start included
                    step_tokens += sum(lengths)
                    step_computed += sum(lengths) - forward.shared * (len(micro) - 1)
                    step_sq += sum(n**2 - forward.shared**2 for n in lengths) + forward.shared**2
                for indices in micro_batches(replays, config.batch_size, REPLAY_BATCH_TOKENS):
                    micro = [replays[i] for i in indices]
                    with autocast:
                        loss = replay_losses(
                            model,
                            _collate(micro, pad_id, device),
                            config,
                            record_gates=record_gates,
                            without_memory=without_memory,
                        )
                    weighted = loss.sum() / total_weight
                    weighted.backward()
                    loss_sum += weighted.detach()
                    lengths = [len(s.input_ids) for s in micro]
                    runs = 2 if config.replay_kl_weight > 0 else 1  # the base model's pass for the KL term
                    step_tokens += sum(lengths)
                    step_computed += runs * sum(lengths)
                    step_sq += runs * sum(n**2 for n in lengths)
            except Exception as error:
                if distributed is None:
                    raise
                failure = error  # still join the all-reduce below, so the other ranks do not hang in it
            step_loss = float(loss_sum)
            if distributed is not None:
                step_loss, summed_tokens, summed_computed, summed_sq, failed = all_reduce_gradients(
                    parameters, (step_loss, step_tokens, step_computed, step_sq, float(failure is not None))
                )
                if failure is not None:
                    raise failure
                if failed:
                    raise RuntimeError(f"another process failed at step {step + 1}; see its error")
                step_tokens, step_computed, step_sq = (
                    round(summed_tokens),
                    round(summed_computed),
                    round(summed_sq),
                )
            if not math.isfinite(step_loss):
                raise FloatingPointError(
                    f"absorption diverged: loss is {step_loss} at step {step + 1}; lower the learning rate"
                )
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            if config.warmup_steps:
                scale = min(1.0, (step + 1) / config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate * scale
            optimizer.step()
        finally:
            model.train(was_training)
        return step_loss, step_tokens, step_computed, step_sq

    position = 0  # optimizer steps planned so far, including those a checkpoint already holds
    try:
        for stage_index, (samples, num_epochs) in enumerate(zip(stages, epochs, strict=True)):
            for epoch in range(num_epochs):
                order = rng.permutation(len(samples))
                for group in _split(order.tolist(), plan_steps(len(samples), config)):
                    position += 1
                    if position <= step:  # done before the checkpoint: replay the shuffle only
                        if resumed is not None and position == step:
                            resumed.check_rng(rng)
                        continue
                    with guard():
                        step_loss, step_tokens, step_computed, step_sq = run_step([samples[i] for i in group])
                    step += 1
                    tokens += step_tokens
                    computed += step_computed
                    sum_sq += step_sq
                    losses.append(step_loss)
                    if (
                        checkpoint is not None
                        and step % checkpoint.every == 0
                        and step < total
                        and (distributed is None or distributed.is_main)
                    ):
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
                                stage=stage_index + 1,
                                epoch=epoch + 1,
                                loss=step_loss,
                                tokens_seen=tokens,
                                num_documents=num_documents,
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


# Checkpoints ---------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "lift-absorb-checkpoint"
CHECKPOINT_VERSION = 2
_PARAMS_FILE = "params.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"
_STEP_PREFIX = "step-"


class CheckpointError(ValueError):
    """A checkpoint is damaged or belongs to another absorption (it is then skipped, never half-used)."""


def samples_digest(stages: Sequence[Sequence[TrainingSample]], epochs: Sequence[int]) -> str:
    """SHA-256 of every training sample and the epoch plan: a checkpoint resumes only the same training."""
    digest = hashlib.sha256(json.dumps([CHECKPOINT_VERSION, list(epochs)]).encode())
    for samples in stages:
        digest.update(b"stage")
        for sample in samples:
            digest.update(sample.kind.encode())
            digest.update(array("i", sample.input_ids).tobytes())
            digest.update(b"|")
            digest.update(array("i", sample.labels).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint restores besides the tensors: counters, losses so far and the shuffle state."""

    step: int
    tokens: int
    tokens_computed: int
    sum_sq: int
    losses: list[float]
    elapsed_s: float
    rng_state: dict[str, Any]
    params_sha256: str = ""
    """SHA-256 of the checkpoint's parameters file: ranks resume only from the very same checkpoint."""

    def check_rng(self, rng: np.random.Generator) -> None:
        """The replayed shuffles must reach the saved state; anything else means a different plan."""
        if _jsonable(rng.bit_generator.state) != self.rng_state:
            raise CheckpointError("the replayed shuffle does not match the checkpoint's; not resuming")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


class CheckpointStore:
    """Resumable training state of one absorption, in its own folder.

    Each checkpoint is a folder ``step-NNNNNNNN`` holding the parameters and the optimizer's tensors as
    safetensors, and counters, losses, optimizer scalars and the shuffle state as JSON (nothing is ever
    pickled). It is written in a temporary sibling and renamed into place, so a kill at any moment
    leaves the previous checkpoint whole; older ones are deleted only after the new one is in place.
    A checkpoint is used only if every file matches the SHA-256 its ``state.json`` records and it was
    made for the same ``key`` (documents, samples, settings, model and adapter).
    """

    def __init__(self, folder: str | os.PathLike[str], key: str, every: int) -> None:
        if not isinstance(key, str) or not key.isalnum():
            raise ValueError(f"a checkpoint key must be alphanumeric, got {key!r}")
        self.root = Path(folder).expanduser().resolve()
        self.folder = self.root / key
        self.key = key
        self.every = every

    def _checkpoints(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [
            p
            for p in self.folder.iterdir()
            if p.name.startswith(_STEP_PREFIX)
            and p.is_dir()
            and not p.is_symlink()
            and p.name[len(_STEP_PREFIX) :].isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX) :]), reverse=True)

    @property
    def latest_step(self) -> int | None:
        """Step of the newest checkpoint folder (not yet verified), ``None`` when there is none."""
        found = self._checkpoints()
        return int(found[0].name[len(_STEP_PREFIX) :]) if found else None

    def save(
        self,
        *,
        step: int,
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        progress: dict[str, Any],
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and delete the older ones."""
        from safetensors.torch import save_file

        from lift_integrations._fs import fsync_dir, sha256_file

        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        final = self.folder / f"{_STEP_PREFIX}{step:08d}"
        try:
            params = {f"param.{i}": p.detach().to("cpu").contiguous() for i, p in enumerate(parameters)}
            state = optimizer.state_dict()
            tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
            if params and next(iter(params.values())).device.type == "cuda":  # pragma: no cover - GPU only
                tensors["rng.cuda"] = torch.cuda.get_rng_state(parameters[0].device)
            scalars: dict[str, dict[str, Any]] = {}
            for index, entry in state["state"].items():
                for name, value in entry.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
                    else:
                        scalars.setdefault(str(index), {})[name] = value
            groups = [
                {k: v for k, v in group.items() if k != "params" and _is_scalar(v)}
                for group in state["param_groups"]
            ]
            save_file(params, str(staging / _PARAMS_FILE))
            save_file(tensors, str(staging / _OPTIMIZER_FILE))
            record = {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_VERSION,
                "key": self.key,
                "step": step,
                "tokens": progress["tokens"],
                "tokens_computed": progress["tokens_computed"],
                "sum_sq": progress["sum_sq"],
                "losses": list(progress["losses"]),
                "elapsed_s": progress["elapsed_s"],
                "rng": _jsonable(rng.bit_generator.state),
                "optimizer_scalars": scalars,
                "param_groups": groups,
                "files": {name: sha256_file(staging / name) for name in (_PARAMS_FILE, _OPTIMIZER_FILE)},
            }
            (staging / _STATE_FILE).write_text(json.dumps(record), encoding="utf-8")
            for name in (_PARAMS_FILE, _OPTIMIZER_FILE, _STATE_FILE):
                with (staging / name).open("rb") as handle:
                    os.fsync(handle.fileno())
            fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            fsync_dir(self.folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        for other in self.folder.iterdir():
            if other != final and (other.name.startswith(_STEP_PREFIX) or other.name.startswith(".tmp-")):
                shutil.rmtree(other, ignore_errors=True)
        return final

    def restore(
        self, parameters: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer, total_steps: int
    ) -> ResumeState | None:
        """Load the newest valid checkpoint into ``parameters`` and ``optimizer``; ``None`` if none is.

        A damaged or foreign checkpoint is skipped with a warning (the next older one is tried): losing a
        checkpoint costs only the time to redo its steps, never a wrong memory.
        """
        for folder in self._checkpoints():
            try:
                loaded = self._read(folder, parameters, optimizer, total_steps)
            except (CheckpointError, OSError) as error:
                warnings.warn(f"ignoring checkpoint {folder}: {error}", RuntimeWarning, stacklevel=3)
                continue
            params, optimizer_state, resume, rng_tensors = loaded
            with torch.no_grad():
                for param, value in zip(parameters, params, strict=True):
                    param.copy_(value.to(param.device))
            optimizer.load_state_dict(optimizer_state)
            torch.set_rng_state(rng_tensors["rng.torch"])
            if "rng.cuda" in rng_tensors and parameters[0].device.type == "cuda":  # pragma: no cover
                torch.cuda.set_rng_state(rng_tensors["rng.cuda"], parameters[0].device)
            return resume
        return None

    def _read(
        self,
        folder: Path,
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        total_steps: int,
    ) -> tuple[list[torch.Tensor], dict[str, Any], ResumeState, dict[str, torch.Tensor]]:
        """Everything a checkpoint holds, verified; nothing is applied until all of it has passed."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from lift_integrations._fs import sha256_file

        def require(condition: bool, message: str) -> None:
            if not condition:
                raise CheckpointError(message)

        paths = {name: folder / name for name in (_PARAMS_FILE, _OPTIMIZER_FILE, _STATE_FILE)}
        for name, path in paths.items():
            require(path.is_file() and not path.is_symlink(), f"{name} is missing")
        try:
            record = json.loads(paths[_STATE_FILE].read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{_STATE_FILE} is not valid JSON ({error})") from None
        require(
            isinstance(record, dict)
            and record.get("format") == CHECKPOINT_FORMAT
            and record.get("format_version") == CHECKPOINT_VERSION,
            "unknown checkpoint format",
        )
        require(record.get("key") == self.key, "made for another absorption")
        step = record.get("step")
        require(_is_count(step) and 0 < step < total_steps, f"step {step!r} is out of range")
        require(folder.name == f"{_STEP_PREFIX}{step:08d}", "folder name and step disagree")
        files = record.get("files")
        for name in (_PARAMS_FILE, _OPTIMIZER_FILE):
            require(
                isinstance(files, dict) and files.get(name) == sha256_file(paths[name]),
                f"{name} does not match its hash",
            )
        try:
            params_file = load_file(str(paths[_PARAMS_FILE]), device="cpu")
            tensors = load_file(str(paths[_OPTIMIZER_FILE]), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"tensors cannot be read ({error})") from None
        require(set(params_file) == {f"param.{i}" for i in range(len(parameters))}, "parameter names differ")
        params = []
        for index, param in enumerate(parameters):
            value = params_file[f"param.{index}"]
            require(value.shape == param.shape and value.dtype == param.dtype, f"parameter {index} differs")
            params.append(value)
        require(isinstance(tensors.get("rng.torch"), torch.Tensor), "the random state is missing")
        template = optimizer.state_dict()
        scalars = record.get("optimizer_scalars")
        groups = record.get("param_groups")
        require(
            isinstance(scalars, dict)
            and isinstance(groups, list)
            and len(groups) == len(template["param_groups"]),
            "optimizer state is malformed",
        )
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if not name.startswith("state."):
                continue
            index_text, _, key = name[len("state.") :].partition(".")
            require(
                index_text.isdigit() and int(index_text) < len(parameters) and key != "",
                f"unexpected tensor {name!r}",
            )
            state.setdefault(int(index_text), {})[key] = value
        for index_text, entry in scalars.items():
            require(
                index_text.isdigit()
                and int(index_text) < len(parameters)
                and isinstance(entry, dict)
                and all(_is_scalar(v) for v in entry.values()),
                "optimizer scalars are malformed",
            )
            state.setdefault(int(index_text), {}).update(entry)
        merged_groups = []
        for saved, current in zip(groups, template["param_groups"], strict=True):
            require(
                isinstance(saved, dict) and all(_is_scalar(v) for v in saved.values()),
                "optimizer groups are malformed",
            )
            merged_groups.append({**current, **{k: v for k, v in saved.items() if k in current}})
        losses = record.get("losses")
        require(
            isinstance(losses, list)
            and len(losses) == step
            and all(isinstance(x, (int, float)) for x in losses),
            "losses are malformed",
        )
        require(
            _is_count(record.get("tokens"))
            and _is_count(record.get("tokens_computed"))
            and _is_count(record.get("sum_sq"))
            and isinstance(record.get("elapsed_s"), (int, float))
            and isinstance(record.get("rng"), dict),
            "counters are malformed",
        )
        resume = ResumeState(
            step=step,
            tokens=record["tokens"],
            tokens_computed=record["tokens_computed"],
            sum_sq=record["sum_sq"],
            losses=losses,
            elapsed_s=float(record["elapsed_s"]),
            rng_state=record["rng"],
            params_sha256=files[_PARAMS_FILE],
        )
        rng_tensors = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        return params, {"state": state, "param_groups": merged_groups}, resume, rng_tensors

    def clear(self) -> None:
        """Delete this absorption's checkpoints (done once it has finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float, bool, str)))
