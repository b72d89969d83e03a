"""What a step minimises: each sample's loss and its weight in the step.

The loss is computed only at supervised positions, so the vocabulary-sized logits are never materialised
for a whole sequence. Each sample's loss is the mean over its supervised tokens, so a short answer counts
as much as a long segment instead of being diluted by token counting.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lift_integrations.absorb.batching import bidirectional
from lift_integrations.absorb.samples import TrainingSample
from lift_integrations.config import LIFTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LOSS_CHUNK_ROWS = 4096
"""Supervised positions whose vocabulary-sized logits exist at once (see :func:`token_losses`)."""


def sample_weight(sample: TrainingSample, config: LIFTConfig) -> float:
    """A sample's weight in its step's loss: 1 for a segment, ``qa_weight`` for a QA pair and
    :func:`replay_weight` for a replay prompt."""
    if sample.kind == "segment":
        return 1.0
    if sample.kind == "replay":
        return replay_weight(config)
    return config.qa_weight


def replay_weight(config: LIFTConfig) -> float:
    """Weight of a replay sample's answer loss: ``replay_weight``, by default ``qa_weight``."""
    return config.qa_weight if config.replay_weight is None else config.replay_weight


def _chunk_loss(
    head: nn.Module, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def token_losses(model: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of ``hidden`` (supervised positions) against ``targets``.

    The output projection and the loss run in chunks of :data:`LOSS_CHUNK_ROWS` rows whose logits are
    recomputed in the backward pass instead of stored: a step's full logits (rows x vocabulary, in fp32)
    would otherwise take more memory than the rest of training together, capping the batch size.
    """
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
    model: PreTrainedModel, batch: dict[str, torch.Tensor], prefix: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over each sample's supervised tokens; shape ``(batch,)``.

    Samples are right-padded, so under causal attention no real token ever sees a pad: the attention
    mask is left out, which lets sdpa take its fused causal kernels (flash attention on GPUs) instead of
    the masked path. The pads' own outputs are never supervised. A model configured for bidirectional
    attention (``use_bidirectional_attention``) would let tokens see the pads after them: it gets the mask.

    With ``prefix`` (``(1, length)`` token ids, no loss), every sample of ``batch`` continues that prefix:
    it runs once, and its keys and values, gradients kept, serve every row of the batch. A batch from
    :func:`~lift_integrations.absorb.batching.collate_packed` holds the prefix and its continuations in
    one row with their own mask and positions: one pass, no cache.
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
    return mean_per_sample(token_loss, batch["rows"], batch["lengths"].shape[0])


def _cache_argument(decoder: nn.Module, cache: Any) -> dict[str, Any]:
    """The key/value cache as the decoder's ``forward`` names it (``cache`` in newer transformers,
    ``past_key_values`` before)."""
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


def mean_per_sample(values: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of ``values`` per sample (``rows`` names each value's sample); 0 for a sample without any."""
    sums = torch.zeros(size, device=values.device).index_add(0, rows, values.float())
    counts = torch.zeros(size, device=values.device).index_add(
        0, rows, torch.ones_like(values, dtype=torch.float)
    )
    return sums / counts.clamp(min=1)


def replay_losses(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    config: LIFTConfig,
    *,
    record_gates: Callable[[], AbstractContextManager[list[torch.Tensor]]],
    without_memory: Callable[[], AbstractContextManager[Any]],
) -> torch.Tensor:
    """Each replay sample's loss, shape ``(batch,)``: :func:`replay_weight` x the answer's cross-entropy,
    plus ``replay_gate_weight`` x the mean gate over its tokens (recorded by ``record_gates``), plus
    ``replay_kl_weight`` x the mean KL divergence of the model's next-token distribution with the memory
    from the base model's (``without_memory``), over every token of the prompt and answer. The KL term
    asks the memory to leave unrelated requests exactly as it found them, not only their greedy answer.

    Replay prompts are short, so the full vocabulary logits of a batch of them are affordable.
    """
    mask = batch["attention_mask"]
    ids = batch["input_ids"]
    size = ids.shape[0]
    total = torch.zeros(size, device=ids.device)
    teacher = None
    if config.replay_kl_weight > 0:
        with torch.no_grad(), without_memory():
            teacher = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)
    gated = config.replay_gate_weight > 0
    with record_gates() if gated else contextlib.nullcontext() as gates:
        logits = model(input_ids=ids, use_cache=False).logits
    answer_weight = replay_weight(config)
    if answer_weight > 0:
        supervised = logits.flatten(0, 1)[batch["positions"]].float()
        cross_entropy = nn.functional.cross_entropy(supervised, batch["targets"], reduction="none")
        total = total + answer_weight * mean_per_sample(cross_entropy, batch["rows"], size)
    if gated:
        assert gates is not None  # recorded by record_gates()
        total = total + config.replay_gate_weight * mean_gate_per_sample(gates, mask)
    if teacher is not None:
        student = logits.float().log_softmax(-1)
        divergence = (teacher.exp() * (teacher - student)).sum(-1)  # KL(base || with memory), per token
        real = mask.to(divergence.dtype)
        total = total + config.replay_kl_weight * (divergence * real).sum(1) / real.sum(1).clamp(min=1)
    return total


def mean_gate_per_sample(gates: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Each sample's gate averaged over layers, heads and its real tokens; shape ``(batch,)``.
    ``gates``: one ``(batch, tokens, heads, 1)`` tensor per layer; ``mask``: ``(batch, tokens)``."""
    per_token = torch.stack([gate.float().mean(dim=(2, 3)) for gate in gates]).mean(0)
    real = mask.to(per_token.dtype)
    return (per_token * real).sum(1) / real.sum(1).clamp(min=1)
