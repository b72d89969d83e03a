"""Fused training steps: static shapes, one optimizer launch for every memory, CUDA graphs.

The default recipe takes hundreds of optimizer steps of a few short samples each, so a step's cost is
its overhead, not its arithmetic: a thousand-odd small kernels launched from Python, an optimizer
launch per parameter tensor, and a host synchronisation to read the loss. Here a step is a few forward
and backward passes, each of one of a few shapes (rows and lengths padded to :func:`bucket` sizes),
whose gradients add up in one buffer, then one update (gradient clipping and AdamW for every memory at
once). On CUDA each pass shape and the update are captured once as CUDA graphs and replayed; the losses
stay on the device until the caller reads them.

A step trains a stack of memories (``backend.create_stack``) side by side: each row of a pass names
its memory, and each memory's loss, gradient norm, clipping and AdamW update are its own, so each
memory follows exactly the steps it would alone. Samples are grouped into passes by length, so short
question-answer samples are not padded to the length of a long segment. A memory with nothing to train
in a step is left untouched, its optimizer state included.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.batching import (
    attention_implementation,
    full_causal_attention,
    text_config,
    to_device,
)
from lift_integrations.absorb.losses import token_losses
from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
from lift_integrations.config import LIFTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lift_integrations.adapters.base import MemoryStack

logger = logging.getLogger(__name__)

SYNC_EVERY = 32
"""Steps between reads of the losses on CUDA (the only host synchronisation while training)."""
PASS_OVERHEAD_TOKENS = 4096
"""What one more pass in a step costs, in padded tokens, when deciding how to group samples by length
(a pass launches every layer's kernels again)."""
SHAPE_REUSE_COST = 1.25
"""A pass may run in a larger shape already captured if that costs at most this many times its own
(:func:`pass_cost`): memories side by side meet many bucketed shapes, and each capture
costs far more than a few passes' padding."""
SUPERVISED_TOKEN_COST = 0.25
"""A supervised position's cost in padded tokens (it adds a row of the output layer, forward and back)."""
MIN_ROWS = 2
"""The fewest rows of a static pass: a compiled layer treats a batch of one row apart from the others (it
would compile again for it)."""


def bucket(n: int, minimum: int = 64) -> int:
    """The padded size for ``n``: the smallest of ``minimum`` times 1, 1.5, 2, 3, 4, 6, ... (powers of two
    and one and a half times them) that holds it, so a run meets only a few shapes."""
    size = minimum
    while True:
        if n <= size:
            return size
        if (size * 3) % 2 == 0 and n <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


def pass_cost(shape: tuple[int, int, int]) -> float:
    """A pass's cost in padded tokens, its launch overhead included."""
    rows, tokens, supervised = shape
    return rows * tokens + SUPERVISED_TOKEN_COST * supervised + PASS_OVERHEAD_TOKENS


def reusable_shape(
    shape: tuple[int, int, int], captured: Sequence[tuple[int, int, int]]
) -> tuple[int, int, int]:
    """The cheapest of the ``captured`` shapes that holds ``shape``, if it costs at most
    :data:`SHAPE_REUSE_COST` times as much; else ``shape`` itself (to be captured)."""
    limit = SHAPE_REUSE_COST * pass_cost(shape)
    holding = [
        key
        for key in captured
        if all(k >= s for k, s in zip(key, shape, strict=True)) and pass_cost(key) <= limit
    ]
    return min(holding, key=pass_cost, default=shape)


@dataclass(frozen=True)
class BlockRows:
    """One memory's samples in a step, and each sample's weight in that memory's loss."""

    memory: int
    samples: Sequence[TrainingSample]
    weights: Sequence[float]
    learning_rate: float


@dataclass(frozen=True)
class PassBatch:
    """One forward and backward pass, built on the host: ``ints`` holds the ids (``rows x tokens``),
    each row's memory, then the flat positions whose next token is supervised, their targets and their
    memories; ``floats`` holds each supervised position's weight."""

    rows: int
    tokens: int
    supervised: int
    ints: np.ndarray
    floats: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.rows, self.tokens, self.supervised


@dataclass(frozen=True)
class StepBatch:
    """A step's passes, and each memory's activity (1 or 0) then learning rate (``update``)."""

    passes: list[PassBatch]
    update: np.ndarray


def group_by_length(lengths: Sequence[int], *, static: bool) -> list[list[int]]:
    """Indices of ``lengths`` (sorted ascending) split into passes of similar length, choosing the split
    with the fewest padded tokens, each extra pass counted as :data:`PASS_OVERHEAD_TOKENS`. With
    ``static`` rows and lengths are padded to :func:`bucket` sizes; otherwise to the exact longest."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    width = [bucket(lengths[i]) if static else lengths[i] for i in order]
    # Candidate cuts only where the padded width changes: few of them, so an exact search is cheap.
    cuts = [0, *(k for k in range(1, len(order)) if width[k] != width[k - 1]), len(order)]
    best: list[tuple[float, list[int]]] = [(0.0, [])]
    for j in range(1, len(cuts)):
        options = []
        for i in range(j):
            rows = cuts[j] - cuts[i]
            cost = (bucket(rows, MIN_ROWS) if static else rows) * width[cuts[j] - 1] + PASS_OVERHEAD_TOKENS
            options.append((best[i][0] + cost, [*best[i][1], cuts[j]]))
        best.append(min(options, key=lambda option: option[0]))
    bounds = [0, *best[-1][1]]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def build_step(
    blocks: Sequence[BlockRows],
    memories: int,
    pad_id: int,
    *,
    static: bool,
    fit: Callable[[tuple[int, int, int]], tuple[int, int, int]] | None = None,
) -> StepBatch:
    """The inputs of one step in which memory ``b.memory`` trains on ``b.samples``.

    Each sample's loss is the mean over its supervised tokens, weighted by its weight: so a supervised
    position's weight is the sample's weight over its number of supervised tokens. With ``static``,
    ``fit`` may pad a pass's bucketed shape further (to one whose CUDA graph exists already).
    """
    items = [(b.memory, s, w) for b in blocks for s, w in zip(b.samples, b.weights, strict=True)]
    update = np.zeros((2, memories), dtype=np.float32)
    for block in blocks:
        update[:, block.memory] = (1.0, block.learning_rate)
    groups = group_by_length([len(s.input_ids) for _, s, _ in items], static=static) if items else []
    passes = [_build_pass([items[i] for i in group], pad_id, static, fit) for group in groups]
    return StepBatch(passes, update.reshape(-1))


def _build_pass(
    items: Sequence[tuple[int, TrainingSample, float]],
    pad_id: int,
    static: bool,
    fit: Callable[[tuple[int, int, int]], tuple[int, int, int]] | None,
) -> PassBatch:
    longest = max(len(s.input_ids) for _, s, _ in items)
    tokens = bucket(longest) if static else longest
    rows = bucket(len(items), MIN_ROWS) if static else len(items)
    labels = [np.asarray(s.labels[1:], dtype=np.int64) for _, s, _ in items]
    count = sum(int(np.count_nonzero(following != IGNORE_INDEX)) for following in labels)
    supervised = bucket(count, 32) if static else count
    if static and fit is not None:
        rows, tokens, supervised = fit((rows, tokens, supervised))
    ids = np.full((rows, tokens), pad_id, dtype=np.int64)
    row_memory = np.zeros(rows, dtype=np.int64)
    positions, targets, owners, weights = [], [], [], []
    for row, ((memory, sample, weight), following) in enumerate(zip(items, labels, strict=True)):
        ids[row, : len(sample.input_ids)] = sample.input_ids
        row_memory[row] = memory
        cols = np.flatnonzero(following != IGNORE_INDEX)
        positions.append(row * tokens + cols)
        targets.append(following[cols])
        owners.append(np.full(len(cols), memory, dtype=np.int64))
        weights.append(np.full(len(cols), weight / max(1, len(cols)), dtype=np.float32))
    pad = np.zeros(supervised - count, np.int64)
    parts = [ids.reshape(-1), row_memory, *positions, pad, *targets, pad, *owners, pad]
    floats = np.concatenate([*weights, pad.astype(np.float32)])
    return PassBatch(rows, tokens, supervised, np.concatenate(parts), floats)


class FusedSteps:
    """Optimizer steps over the ``flat`` parameter of a memory stack, with one AdamW state row per memory.

    :meth:`run` queues a step and returns each memory's loss on the device at once. On CUDA each pass
    shape and the update are captured as CUDA graphs on first use (``use_graphs``); elsewhere, or if
    capturing fails, the same functions run eagerly.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        stack: MemoryStack,
        config: LIFTConfig,
        *,
        autocast: bool,
        use_graphs: bool,
    ) -> None:
        self.model = model
        self.stack = stack
        self.flat = stack.flat
        self.config = config
        self.memories = self.flat.shape[0]
        self.device = self.flat.device
        graphs = use_graphs and self.device.type == "cuda"
        # Cached casts would outlive a graph's capture: the cache must be off inside CUDA graphs. Without
        # graphs it stays on, so each weight is cast once per pass, not once per use.
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=not graphs
        )

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device, dtype=torch.float32)

        self.grad, self.exp_avg, self.exp_avg_sq = (zeros(*self.flat.shape) for _ in range(3))
        self.step_count, self.pass_loss, self.step_loss = (zeros(self.memories) for _ in range(3))
        self.compute_dtype = torch.bfloat16 if autocast else next(model.parameters()).dtype
        self.use_graphs = graphs
        self._graphs: dict[Any, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._pool: Any = None

    def reset(self, memory: int) -> None:
        """Start memory ``memory``'s optimizer state afresh (a new memory took its place)."""
        with torch.no_grad():
            self.exp_avg[memory].zero_()
            self.exp_avg_sq[memory].zero_()
            self.step_count[memory] = 0.0

    def shape_for(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The shape to run a pass of ``shape`` in, given the graphs captured so far."""
        return reusable_shape(shape, [key for key in self._graphs if key != "update"])

    def run(self, step: StepBatch) -> torch.Tensor:
        """Queue one step; returns each memory's loss for it, on the device (0 for an idle memory)."""
        if self.use_graphs:
            try:
                self._replay(step)
                return self.step_loss.clone()
            except RuntimeError as error:  # e.g. a model whose forward cannot be captured
                # The update runs last, so the memories are as they were: run the step again eagerly.
                logger.warning("CUDA graphs failed (%s); training without them", error)
                self.use_graphs = False
                self.grad.zero_()
                self.pass_loss.zero_()
        for batch in step.passes:
            ints, floats = (to_device(torch.from_numpy(a), self.device) for a in (batch.ints, batch.floats))
            self._pass(ints, floats, batch.shape)
        self._update(to_device(torch.from_numpy(step.update), self.device))
        return self.step_loss.clone()

    def _replay(self, step: StepBatch) -> None:
        update = self._graph("update", 0, 2 * self.memories, lambda i, f: self._update(f))
        for batch in step.passes:
            graph, ints, floats = self._graph(
                batch.shape,
                len(batch.ints),
                len(batch.floats),
                lambda i, f, shape=batch.shape: self._pass(i, f, shape),
            )
            ints.copy_(torch.from_numpy(batch.ints).pin_memory(), non_blocking=True)
            floats.copy_(torch.from_numpy(batch.floats).pin_memory(), non_blocking=True)
            graph.replay()
        graph, _, floats = update
        floats.copy_(torch.from_numpy(step.update).pin_memory(), non_blocking=True)
        graph.replay()

    def _graph(
        self, key: Any, num_ints: int, num_floats: int, body: Any
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The CUDA graph of ``body(ints, floats)`` for ``key``, captured on first use.

        Its inputs are zeros while it is warmed up and captured: a pass of zero weights adds nothing,
        and an update with every memory idle changes nothing (the update graph is captured before any
        pass runs, since it clears the accumulated gradients).
        """
        found = self._graphs.get(key)
        if found is not None:
            return found
        ints = torch.zeros(num_ints, dtype=torch.long, device=self.device)
        floats = torch.zeros(num_floats, device=self.device)
        side = torch.cuda.Stream(device=self.device)  # warm up on a side stream, as torch.cuda.graphs asks
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                body(ints, floats)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            body(ints, floats)
        self._graphs[key] = (graph, ints, floats)
        return self._graphs[key]

    def _pass(self, ints: torch.Tensor, floats: torch.Tensor, shape: tuple[int, int, int]) -> None:
        rows, tokens, supervised = shape
        cells = rows * tokens
        ids = ints[:cells].view(rows, tokens)
        self.stack.row_memory = ints[cells : cells + rows]
        positions, targets, owners = ints[cells + rows :].view(3, supervised)
        self.stack.cast_for(self.compute_dtype)
        try:
            with self.autocast, maskless_causal_attention(self.model):
                inputs: dict[str, torch.Tensor] = {"input_ids": ids}
                if self.config.compile:
                    # Embeddings that need a gradient give the first layer an input like every other
                    # layer's, so one compiled layer serves all, where the first would compile again.
                    embeds = self.model.get_input_embeddings()(ids).requires_grad_(True)
                    inputs = {"inputs_embeds": embeds}
                hidden = self.model.get_decoder()(**inputs, use_cache=False).last_hidden_state
                losses = token_losses(self.model, hidden.flatten(0, 1)[positions], targets)
            per_memory = torch.zeros(self.memories, device=self.device).index_add(
                0, owners, losses.float() * floats
            )
            (grad,) = torch.autograd.grad(per_memory.sum(), [self.flat])
        finally:
            self.stack.cast_for(None)
        with torch.no_grad():
            self.grad.add_(grad)
            self.pass_loss.add_(per_memory)

    def _update(self, floats: torch.Tensor) -> None:
        with torch.no_grad():
            active, rates = floats.view(2, self.memories)
            adamw_rows(
                self.flat.detach(),
                self.grad,
                self.exp_avg,
                self.exp_avg_sq,
                self.step_count,
                active,
                rates,
                betas=self.config.adam_betas,
                eps=self.config.adam_eps,
                weight_decay=self.config.weight_decay,
                max_grad_norm=self.config.max_grad_norm,
            )
            self.step_loss.copy_(self.pass_loss)
            self.grad.zero_()
            self.pass_loss.zero_()


def adamw_rows(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step_count: torch.Tensor,
    active: torch.Tensor,
    rates: torch.Tensor,
    *,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    max_grad_norm: float,
) -> None:
    """Clip each row's gradient to ``max_grad_norm`` and take its AdamW step in place, as
    ``torch.optim.AdamW`` would, one row per memory; rows with ``active`` 0 keep their parameters and
    state. A plain function of tensors, so ``torch.compile`` can fuse it into a few kernels."""
    beta1, beta2 = betas
    norm = torch.linalg.vector_norm(grad, dim=1)
    grad = grad * (max_grad_norm / (norm + 1e-6)).clamp(max=1.0).unsqueeze(1)
    count = step_count + active
    step_count.copy_(count)
    keep = (active > 0).unsqueeze(1)
    new_avg = exp_avg.lerp(grad, 1 - beta1)
    new_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    # An idle row may have count 0 (division by zero below): torch.where discards its values.
    step_size = (rates / (1 - torch.pow(beta1, count))).unsqueeze(1)
    correction = torch.sqrt(1 - torch.pow(beta2, count)).unsqueeze(1)
    denom = new_avg_sq.sqrt() / correction + eps
    updated = param * (1 - rates * weight_decay).unsqueeze(1) - step_size * new_avg / denom
    param.copy_(torch.where(keep, updated, param))
    exp_avg.copy_(torch.where(keep, new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(keep, new_avg_sq, exp_avg_sq))


MASKLESS_SDPA = "lift_maskless_sdpa"
"""The name under which transformers finds sdpa attention with no mask (see
:func:`maskless_causal_attention`)."""


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


@functools.cache
def _register_maskless_sdpa() -> None:
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    AttentionInterface.register(MASKLESS_SDPA, ALL_ATTENTION_FUNCTIONS["sdpa"])
    AttentionMaskInterface.register(MASKLESS_SDPA, _no_mask)


@contextlib.contextmanager
def maskless_causal_attention(model: nn.Module) -> Iterator[None]:
    """Run the model's sdpa attention with no mask, causal by sdpa's ``is_causal``.

    The fused passes pad rows on the right, so under causal attention no real token sees a pad and no
    mask is needed. transformers skips the mask on its own only when it is not tracing, and some of its
    releases count a capturing CUDA stream as tracing: a graph's capture would then pass a mask that its
    warm-up did not, and a compiled layer would compile again mid-capture, which invalidates the capture.
    A name known to the attention functions but masked by a function returning ``None`` makes every pass
    the same. Models with a sliding window, bidirectional attention or another attention implementation
    keep their masks.
    """
    if attention_implementation(model) != "sdpa" or not full_causal_attention(model):
        yield
        return
    _register_maskless_sdpa()
    config = text_config(model)
    config._attn_implementation = MASKLESS_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


@contextlib.contextmanager
def training_mode(model: nn.Module, gradient_checkpointing: bool) -> Iterator[None]:
    """HF checkpoints only in train mode (dropout is 0 in LIFT); restored afterwards. A step enters
    this once: ``train()`` sets every module's flag, which costs more than checking them, so a model
    already in the mode is left as it is."""
    mode = gradient_checkpointing
    modules = list(model.modules())
    before = [module.training for module in modules]
    if any(flag != mode for flag in before):
        model.train(mode)
    try:
        yield
    finally:
        for module, flag in zip(modules, before, strict=True):
            if module.training != flag:
                module.training = flag
