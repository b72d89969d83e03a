"""The fused engine and many memories per run: each memory is the one absorbed alone, and the fused steps
compute what the eager loop does (issue 16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb.fused import (
    BlockRows,
    FusedSteps,
    adamw_rows,
    bucket,
    build_step,
    group_by_length,
    reusable_shape,
)
from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample

DOCS = [
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. " * 3,
    "Question: Who founded it? Answer: Mira Quenton. The quick brown fox jumps over the lazy dog. " * 5,
    "Tobias Renwick studied glass harps. " * 2,
]
SMALL = dict(
    segment_length=32,
    segment_stride=24,
    context_view_length=16,
    qa_per_document=6,
    stage1_epochs=1,
    stage2_epochs=3,
    max_seq_length=128,
)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _lift(arch: str = "llama", device: str = "cpu", adapter: str = "gated_memory") -> LIFTModel:
    model, tokenizer = build_tiny_model(arch)
    return LIFTModel(model.to(device), tokenizer, name=f"tiny-{arch}", adapter=adapter)


def _config(**overrides: Any) -> LIFTConfig:
    """The tiny recipe on the fused engine (``auto`` picks it on CUDA only)."""
    return LIFTConfig.fast(**{**SMALL, "engine": "fused", **overrides})


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tolerance: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tolerance, msg=lambda m, n=name: f"{n}: {m}")


def _assert_close_in_norm(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Within 5% in norm: AdamW's first steps turn a tiny gradient of either sign into a full step, so
    rounding moves a few weights by a step; the memory as a whole stays where it was."""
    for name, tensor in b.items():
        assert torch.linalg.norm(a[name] - tensor) <= 0.05 * torch.linalg.norm(tensor) + 1e-6, name


def test_buckets_are_few_and_hold_their_size() -> None:
    sizes = {bucket(n) for n in range(1, 5000)}
    assert sizes == {64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144}
    assert all(bucket(n) >= n for n in range(1, 5000))
    assert [bucket(n, 1) for n in range(1, 10)] == [1, 2, 3, 4, 6, 6, 8, 8, 12]


def test_samples_are_grouped_into_passes_by_length() -> None:
    """Short samples get a pass of their own rather than padding to the longest segment; a step of
    similar lengths stays one pass (each pass costs a launch of every layer's kernels)."""
    groups = group_by_length([40, 500, 50, 45] + [60] * 60 + [480] * 4, static=True)
    assert len(groups) == 2
    assert sorted(len(g) for g in groups) == [5, 63]
    assert group_by_length([40, 500, 50, 45], static=True) == [[0, 3, 2, 1]]
    assert group_by_length([7], static=False) == [[0]]


def _sample(ids: list[int], supervised_from: int) -> TrainingSample:
    labels = [IGNORE_INDEX] * supervised_from + ids[supervised_from:]
    return TrainingSample(input_ids=ids, labels=labels, kind="qa")


def test_a_static_pass_has_at_least_two_rows() -> None:
    """A compiled layer would compile a batch of one row apart from the others: a lone sample gets a
    padding row, which no loss reads."""
    [batch] = build_step(
        [BlockRows(1, [_sample([5, 6, 7], 1)], [1.0], 1e-3)], 2, pad_id=0, static=True
    ).passes
    assert batch.shape[0] == 2
    assert (batch.ints[64:128] == 0).all()  # the padding row: pad ids only
    assert int((batch.floats > 0).sum()) == 2


@pytest.mark.parametrize("static", [True, False])
def test_a_step_names_each_rows_memory_and_weighs_each_sample_by_its_mean(static: bool) -> None:
    a, b, c = _sample([5, 6, 7, 8], 1), _sample([9, 10, 11], 2), _sample([12, 13, 14, 15, 16], 4)
    blocks = [BlockRows(0, [a, b], [0.25, 0.75], 1e-3), BlockRows(2, [c], [1.0], 2e-3)]
    step = build_step(blocks, memories=3, pad_id=0, static=static)
    [batch] = step.passes
    rows, tokens, supervised = batch.shape
    assert (rows, tokens, supervised) == ((3, 64, 32) if static else (3, 5, 5))
    ids = batch.ints[: rows * tokens].reshape(rows, tokens)
    row_memory = batch.ints[rows * tokens : rows * tokens + rows]
    # Rows sorted by length: b (3 tokens), a (4), c (5).
    assert ids[0, :3].tolist() == [9, 10, 11] and ids[1, :4].tolist() == [5, 6, 7, 8]
    assert ids[2, :5].tolist() == [12, 13, 14, 15, 16] and row_memory.tolist() == [0, 0, 2]
    positions, targets, owners = batch.ints[rows * tokens + rows :].reshape(3, supervised)
    weights = batch.floats
    real = weights > 0
    # Position p predicts the token after it: b's label 11 from position 1, a's 6, 7, 8 from 0-2.
    assert positions[real].tolist() == [1, tokens, tokens + 1, tokens + 2, 2 * tokens + 3]
    assert targets[real].tolist() == [11, 6, 7, 8, 16]
    assert owners[real].tolist() == [0, 0, 0, 0, 2]
    np.testing.assert_allclose(weights[real], [0.75] + [0.25 / 3] * 3 + [1.0], rtol=1e-6)
    active, rates = step.update.reshape(2, 3)
    assert active.tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(rates, [1e-3, 0.0, 2e-3], rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_fused_steps_compute_the_eager_loops_gradients(arch: str, device: str) -> None:
    """With eps = 1 AdamW moves each weight by about ``lr * gradient``, so equal memories mean equal
    gradients (with the usual eps, AdamW's first steps turn tiny gradients into full steps of either sign)."""
    lift = _lift(arch, device)
    settings = dict(adam_eps=1.0, learning_rate=1.0, max_grad_norm=1e9, precision="fp32")
    eager = lift.absorb(DOCS[0], config=_config(engine="eager", **settings))
    fused = lift.absorb(DOCS[0], config=_config(engine="fused", **settings))
    assert eager.stats["steps"] == fused.stats["steps"] > 10
    assert fused.stats["final_loss"] == pytest.approx(eager.stats["final_loss"], rel=1e-4)
    _assert_same_tensors(fused.tensors, eager.tensors, rtol=1e-3, atol=2e-5)


def test_fused_and_eager_memories_agree_with_the_default_optimizer() -> None:
    lift = _lift()
    eager = lift.absorb(DOCS[0], config=_config(engine="eager"))
    fused = lift.absorb(DOCS[0], config=_config(engine="fused"))
    assert fused.stats["final_loss"] == pytest.approx(eager.stats["final_loss"], rel=1e-3)
    _assert_close_in_norm(fused.tensors, eager.tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slots", [None, 2, 1])
def test_each_memory_of_absorb_many_is_the_memory_absorbed_alone(slots: int | None, device: str) -> None:
    """Slots fewer than documents make a finished memory hand its slot to the next one. With eps = 1
    equal memories mean equal gradients at every step (see above)."""
    lift = _lift(device=device)
    config = _config(adam_eps=1.0, learning_rate=1.0, max_grad_norm=1e9, precision="fp32")
    many = lift.absorb_many(DOCS, config=config, slots=slots)
    assert len(many) == len(DOCS)
    steps = []
    for text, memory in zip(DOCS, many, strict=True):
        alone = lift.absorb(text, config=config)
        assert [d.text for d in memory.documents] == [text]
        assert memory.stats["steps"] == alone.stats["steps"]
        assert memory.stats["final_loss"] == pytest.approx(alone.stats["final_loss"], rel=1e-5)
        _assert_same_tensors(memory.tensors, alone.tensors, rtol=1e-4, atol=2e-6)
        steps.append(alone.stats["steps"])
    assert len(set(steps)) == len(steps)  # documents of different lengths: memories finish apart


def test_absorb_many_with_the_default_optimizer_gives_the_memories_absorbed_alone() -> None:
    lift = _lift()
    config = _config()
    many = lift.absorb_many(DOCS, config=config)
    for text, memory in zip(DOCS, many, strict=True):
        alone = lift.absorb(text, config=config)
        assert memory.stats["final_loss"] == pytest.approx(alone.stats["final_loss"], rel=1e-3)
        _assert_close_in_norm(memory.tensors, alone.tensors)


def test_absorb_many_groups_documents_into_one_memory_each() -> None:
    lift = _lift()
    config = _config(adam_eps=1.0, learning_rate=1.0, max_grad_norm=1e9, precision="fp32")
    many = lift.absorb_many([[DOCS[0], ("Second", DOCS[1])], DOCS[2]], config=config)
    assert [len(m.documents) for m in many] == [2, 1]
    assert many[0].documents[1].title == "Second"
    together = lift.absorb([DOCS[0], ("Second", DOCS[1])], config=config)
    _assert_same_tensors(many[0].tensors, together.tensors, rtol=1e-4, atol=2e-6)
    assert lift.generate("Who founded it?", memory=many[1], max_new_tokens=4).text is not None


def test_absorb_many_reports_every_step_of_every_memory_in_order() -> None:
    lift = _lift()
    reports: list[Any] = []
    many = lift.absorb_many(DOCS, config=_config(), callback=reports.append)
    for index, memory in enumerate(many):
        mine = [r for r in reports if r.memory == index]
        assert [r.step for r in mine] == list(range(1, memory.stats["steps"] + 1))
        assert {r.total_steps for r in mine} == {memory.stats["steps"]}
        assert mine[-1].loss == pytest.approx(memory.stats["final_loss"])


def _two_equal_memories(lift: LIFTModel) -> tuple[Any, FusedSteps]:
    """A stack of two copies of one new memory, and eager fused steps over it."""
    template = lift.backend.create(generator=torch.Generator().manual_seed(0))
    stack = lift.backend.create_stack(template, 2)
    stack.load_row(0, template)
    stack.load_row(1, template)
    stack.flat.requires_grad_(True)
    return stack, FusedSteps(lift.model, stack, _config(), autocast=False, use_graphs=False)


def test_a_pass_reuses_a_captured_shape_that_holds_it_when_that_costs_little_more() -> None:
    captured = [(96, 128, 512), (64, 128, 384), (12, 384, 3072)]
    assert reusable_shape((64, 96, 384), captured) == (64, 128, 384)  # padding 64 x 32 tokens: cheap
    assert reusable_shape((48, 128, 256), captured) == (64, 128, 384)
    assert reusable_shape((32, 128, 192), captured) == (32, 128, 192)  # twice the rows: capture anew
    assert reusable_shape((12, 384, 4096), captured) == (12, 384, 4096)  # nothing holds it
    assert reusable_shape((64, 128, 384), captured) == (64, 128, 384)
    assert reusable_shape((4, 96, 32), []) == (4, 96, 32)


def test_a_step_padded_to_a_larger_shape_trains_the_same() -> None:
    """Extra rows, tokens and supervised slots are padding that no loss reads."""
    lift = _lift()
    ids = lift.tokenizer("glass harps and river tides, studied by Tobias Renwick")["input_ids"]
    blocks = [
        BlockRows(0, [_sample(ids, 2), _sample(ids[:6], 1)], [0.5, 0.5], 1e-2),
        BlockRows(1, [_sample(ids[3:], 4)], [1.0], 1e-2),
    ]
    flats, losses = [], []
    for fit in (None, lambda shape: (shape[0] + 3, shape[1] * 2, shape[2] + 64)):
        stack, steps = _two_equal_memories(lift)
        step = build_step(blocks, 2, 0, static=True, fit=fit)
        if fit is not None:
            assert [p.shape for p in step.passes] == [(6, 128, 128)]
        lift.backend.activate(stack)
        try:
            losses.append(steps.run(step))
            flats.append(stack.flat.detach().clone())
        finally:
            lift.backend.activate(None)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flats[1], flats[0], rtol=1e-5, atol=1e-7)
    assert not torch.equal(flats[0][0], flats[0][1])


def test_an_idle_memory_keeps_its_weights_and_optimizer_state() -> None:
    lift = _lift()
    stack, steps = _two_equal_memories(lift)
    sample = _sample(lift.tokenizer("glass harps and river tides")["input_ids"], 1)
    lift.backend.activate(stack)
    try:
        before = stack.flat.detach().clone()
        steps.run(build_step([BlockRows(0, [sample], [1.0], 1e-2)], 2, 0, static=False))
        after = stack.flat.detach()
        assert not torch.equal(after[0], before[0])
        assert torch.equal(after[1], before[1])
        assert steps.exp_avg[1].abs().max() == 0 and steps.exp_avg[0].abs().max() > 0
        assert steps.step_count.tolist() == [1.0, 0.0]
    finally:
        lift.backend.activate(None)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_update_is_torchs_adamw_with_clipping_for_each_active_row(compiled: bool) -> None:
    """Row by row, the fused update is ``clip_grad_norm_`` then ``torch.optim.AdamW`` at that row's
    learning rate; an idle row moves nowhere. Compiled (``aot_eager`` here: the traced graph, without a
    C++ toolchain), it computes the same: ``benchmarks/update_speed.py`` times the two on a GPU."""
    generator = torch.Generator().manual_seed(0)
    rows, width, steps = 3, 50, 4
    start = torch.randn(rows, width, generator=generator)
    grads = [torch.randn(rows, width, generator=generator) * (3.0 if k % 2 else 0.01) for k in range(steps)]
    active = torch.tensor([1.0, 0.0, 1.0])
    rates = torch.tensor([1e-2, 5e-2, 3e-3])
    settings = dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)
    update = torch.compile(adamw_rows, backend="aot_eager") if compiled else adamw_rows
    param = start.clone()
    exp_avg, exp_avg_sq, count = torch.zeros_like(start), torch.zeros_like(start), torch.zeros(rows)
    for grad in grads:
        update(param, grad.clone(), exp_avg, exp_avg_sq, count, active, rates, **settings)
    for row in (0, 2):
        weight = torch.nn.Parameter(start[row].clone())
        optimizer = torch.optim.AdamW(
            [weight], lr=float(rates[row]), betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1
        )
        for grad in grads:
            weight.grad = grad[row].clone()
            torch.nn.utils.clip_grad_norm_([weight], 1.0)
            optimizer.step()
        torch.testing.assert_close(param[row], weight.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(param[1], start[1]) and exp_avg[1].abs().max() == 0
    assert count.tolist() == [steps, 0, steps]


def test_a_diverging_fused_absorption_raises_and_names_the_step() -> None:
    lift = _lift()
    with pytest.raises(FloatingPointError, match=r"diverged.*step"):
        lift.absorb(DOCS[0], config=_config(engine="fused", learning_rate=1e38, max_grad_norm=1e38))


def test_auto_picks_the_fused_engine_on_cuda_only() -> None:
    from lift_integrations.absorber import uses_fused

    lift = _lift()
    assert not uses_fused(lift, _config(engine="auto"), None, [])
    assert uses_fused(lift, _config(engine="fused"), None, [])
    assert not uses_fused(lift, _config(engine="eager"), None, [])


def test_the_fused_engine_refuses_what_it_cannot_train() -> None:
    lift = _lift(adapter="lora")
    with pytest.raises(ValueError, match=r"engine='fused'.*lora adapter"):
        lift.absorb(DOCS[2], config=_config(engine="fused"))
    gated = _lift()
    with pytest.raises(ValueError, match=r"engine='fused'.*checkpoints"):
        gated.absorb(DOCS[2], config=_config(engine="fused", checkpoint_dir="/nonexistent/x"))
    with pytest.raises(ValueError, match=r"engine='fused'.*batch_size"):
        gated.absorb(DOCS[0], config=LIFTConfig.paper(**SMALL, engine="fused", batch_size=2))


def test_absorb_many_absorbs_one_after_the_other_where_the_fused_engine_does_not_apply() -> None:
    lift = _lift(adapter="lora")
    config = _config(engine="auto")
    many = lift.absorb_many(DOCS[1:], config=config)  # one after the other: the same computation
    for text, memory in zip(DOCS[1:], many, strict=True):
        _assert_same_tensors(memory.tensors, lift.absorb(text, config=config).tensors, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("items", "error", "match"),
    [
        ("one text", TypeError, "one item per memory"),
        ([], ValueError, "no documents"),
        (["fine", "  "], ValueError, "memory 1: document 0 is empty"),
        (["fine", 3], TypeError, "memory 1"),
    ],
)
def test_absorb_many_checks_its_documents_before_any_work(items: Any, error: type, match: str) -> None:
    lift = _lift()
    with pytest.raises(error, match=match):
        lift.absorb_many(items, config=_config())
    with pytest.raises(ValueError, match="slots"):
        lift.absorb_many(["fine"], config=_config(), slots=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_steps_equal_eager_fused_steps() -> None:
    from lift_integrations.absorb import many

    lift = _lift(device="cuda")
    config = _config(engine="fused", adam_eps=1.0, learning_rate=1.0, max_grad_norm=1e9, precision="fp32")
    graphed = lift.absorb_many(DOCS, config=config)
    original = many.FusedSteps.__init__

    def no_graphs(self: FusedSteps, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "use_graphs": False})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(many.FusedSteps, "__init__", no_graphs)
        eager = lift.absorb_many(DOCS, config=config)
    for a, b in zip(graphed, eager, strict=True):
        _assert_same_tensors(a.tensors, b.tensors, rtol=1e-3, atol=2e-5)


def _jobs(lift: LIFTModel, config: LIFTConfig) -> list[Any]:
    from lift_integrations.absorb.many import MemoryJob
    from lift_integrations.absorber import new_weights, plan_memory
    from lift_integrations.documents import normalize_documents

    fitted = config.fit_to_window(lift.context_window)
    return [
        MemoryJob(
            plan_memory(lift, normalize_documents(text), fitted, None, None),
            new_weights(lift, None, lift.backend.config, fitted.seed),
        )
        for text in DOCS
    ]


@pytest.mark.parametrize("slots", [None, 1])
def test_memories_planned_while_others_train_are_the_same(slots: int | None) -> None:
    """absorb_many on CUDA plans later memories on a thread while the first ones train; the memories
    must not depend on when each plan arrives."""
    from lift_integrations.absorb.many import JobFeed, train_side_by_side

    lift = _lift()
    config = _config().fit_to_window(lift.context_window)
    args = (lift.model, lift.backend, lift.lock, lift._generator.pad_id)
    listed = train_side_by_side(*args, _jobs(lift, config), config, slots=slots)
    jobs = _jobs(lift, config)
    started: list[int] = []
    planned = train_side_by_side(
        *args,
        JobFeed.planned([2, 0, 1], lambda i: jobs[i]),
        config,
        slots=slots,
        on_start=lambda index, job, steps: started.append(index),
    )
    assert sorted(started) == [0, 1, 2]
    for a, b in zip(listed, planned, strict=True):
        assert a.stats.steps == b.stats.steps
        _assert_close_in_norm(b.tensors, a.tensors)


@pytest.mark.parametrize("planned", [False, True])
def test_memories_train_side_by_side_unless_told_otherwise(planned: bool, monkeypatch: Any) -> None:
    """With no ``slots``, as many memories share a step as fit its token budget: every one of three tiny
    ones, whether the jobs are listed or planned on a thread (the slot count must not be read off the
    memories planned so far)."""
    from lift_integrations.absorb import many
    from lift_integrations.absorb.many import JobFeed, train_side_by_side

    lift = _lift()
    config = _config().fit_to_window(lift.context_window)
    jobs = _jobs(lift, config)
    memories_per_step: list[int] = []
    build = many.build_step

    def counting_build(blocks: Any, *args: Any, **kwargs: Any) -> Any:
        memories_per_step.append(len(blocks))
        return build(blocks, *args, **kwargs)

    monkeypatch.setattr(many, "build_step", counting_build)
    feed = JobFeed.planned([0, 1, 2], lambda i: jobs[i]) if planned else jobs
    args = (lift.model, lift.backend, lift.lock, lift._generator.pad_id)
    trained = train_side_by_side(*args, feed, config)
    assert len(trained) == 3
    assert max(memories_per_step) == 3
    assert len(memories_per_step) < sum(t.stats.steps for t in trained)


def test_a_planning_error_reaches_the_caller() -> None:
    from lift_integrations.absorb.many import JobFeed, train_side_by_side

    lift = _lift()
    config = _config().fit_to_window(lift.context_window)
    jobs = _jobs(lift, config)

    def make(index: int) -> Any:
        if index == 1:
            raise RuntimeError("the QA generator failed")
        return jobs[index]

    with pytest.raises(RuntimeError, match="QA generator failed"):
        train_side_by_side(
            lift.model,
            lift.backend,
            lift.lock,
            lift._generator.pad_id,
            JobFeed.planned([0, 1, 2], make),
            config,
        )


def test_a_stack_hands_its_layers_tensors_for_one_pass_only() -> None:
    """The tensors a stack hands its layers carry the pass's autograd history back to ``flat``: they live
    from ``cast_for(dtype)`` to ``cast_for(None)``, so an update of ``flat`` in place between two passes
    (the optimizer's, ``load_row``) meets no stale view, and nothing from one pass outlives it (a CUDA
    graph captured on a side stream starts its own history). A pass without ``cast_for`` says so."""
    lift = _lift()
    template = lift.backend.create(generator=torch.Generator().manual_seed(0))
    stack = lift.backend.create_stack(template, 2)
    stack.load_row(0, template)
    stack.flat.requires_grad_(True)
    ids = torch.tensor([lift.tokenizer("glass harps and river tides")["input_ids"]] * 2)
    stack.row_memory = torch.tensor([0, 1])
    lift.backend.activate(stack)
    try:
        with pytest.raises(RuntimeError, match="cast_for"):
            lift.model(input_ids=ids)
        for row in range(2):
            stack.cast_for(torch.float32)
            lift.model(input_ids=ids).logits.sum().backward()
            stack.cast_for(None)
            assert all(not layer.tensors for layer in stack.layers)
            stack.load_row(1, lift.backend.create(generator=torch.Generator().manual_seed(row + 1)))
        assert stack.flat.grad is not None and bool(stack.flat.grad.abs().sum() > 0)
    finally:
        lift.backend.activate(None)


def test_a_stack_checks_that_each_batch_row_has_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows' memories live in a buffer of fixed size, which grows when a batch has more rows: each row
    runs its own memory before and after the buffer grows (as it would in a stack of its own), and a
    batch whose rows ``row_memory`` does not name, or after it was cleared, is refused."""
    from lift_integrations.adapters.gated_memory import stacked

    monkeypatch.setattr(stacked, "ROW_CAPACITY", 2)
    lift = _lift()
    memories = [lift.backend.create(generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    stack = lift.backend.create_stack(memories[0], 2)
    for row, memory in enumerate(memories):
        stack.load_row(row, memory)
    ids = torch.tensor([lift.tokenizer("glass harps and river tides")["input_ids"]] * 5)

    def logits(active: Any, rows: int, row_memory: list[int] | None = None) -> torch.Tensor:
        if row_memory is not None:
            stack.row_memory = torch.tensor(row_memory)
        lift.backend.activate(active)
        try:
            stack.cast_for(torch.float32)
            with torch.no_grad():
                return lift.model(input_ids=ids[:rows]).logits
        finally:
            stack.cast_for(None)
            lift.backend.activate(None)

    alone = [logits(memory, 1)[0] for memory in memories]
    for row_memory in ([1, 0], [0, 1, 1, 0, 1], [1, 0]):
        together = logits(stack, len(row_memory), row_memory)
        for row, memory in enumerate(row_memory):
            torch.testing.assert_close(together[row], alone[memory], rtol=1e-4, atol=1e-5)
    assert stack.row_buffer.shape[0] >= 5
    with pytest.raises(RuntimeError, match="3 rows"):
        logits(stack, 3, [0, 1])
    stack.row_memory = stack.row_memory[:0]
    with pytest.raises(RuntimeError, match="names 0"):
        logits(stack, 2)


@pytest.mark.parametrize(("arch", "maskless"), [("llama", True), ("qwen3", True), ("gemma3", False)])
def test_fused_passes_attend_causally_without_a_mask_where_transformers_would_build_one(
    arch: str, maskless: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some transformers releases build the causal mask while a CUDA stream captures (counted as tracing)
    and skip it otherwise, so a graph's capture differed from its warm-up and a compiled layer compiled
    again mid-capture. With transformers made to build the mask, the fused passes of full-attention
    models still run sdpa maskless and causal, and train the same memory; sliding-window models keep
    their masks. The model's attention implementation is restored afterwards."""
    from transformers import masking_utils

    from lift_integrations.absorb import fused
    from lift_integrations.absorb.batching import attention_implementation

    lift = _lift(arch)
    config = _config(engine="fused")
    expected = lift.absorb(DOCS[2], config=config)
    calls: list[tuple[bool, bool]] = []
    in_pass = [False]
    sdpa, run_pass = torch.nn.functional.scaled_dot_product_attention, fused.FusedSteps._pass

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        if in_pass[0]:
            calls.append((kwargs["attn_mask"] is None, bool(kwargs["is_causal"])))
        return sdpa(*args, **kwargs)

    def recorded_pass(self: FusedSteps, *args: Any) -> None:
        in_pass[0] = True
        try:
            run_pass(self, *args)
        finally:
            in_pass[0] = False

    monkeypatch.setattr(masking_utils, "_ignore_causal_mask_sdpa", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(fused.FusedSteps, "_pass", recorded_pass)
    forced = lift.absorb(DOCS[2], config=config)
    assert calls
    assert all(call == (True, True) for call in calls) is maskless
    assert any(call == (True, True) for call in calls) is maskless
    if maskless:
        _assert_same_tensors(forced.tensors, expected.tensors, rtol=1e-3, atol=1e-4)
    else:
        # A pass with a mask runs another sdpa kernel than one without; Adam turns a rounding difference
        # in a near-zero gradient into a step of the full learning rate, so single entries may differ
        # by that much while the memory as a whole, and its loss, stay the same.
        difference = sum(float((forced.tensors[n] - t).square().sum()) for n, t in expected.tensors.items())
        norm = sum(float(t.square().sum()) for t in expected.tensors.values())
        assert (difference / norm) ** 0.5 < 1e-2
        assert forced.stats["final_loss"] == pytest.approx(expected.stats["final_loss"], rel=1e-4)
    assert attention_implementation(lift.model) == "sdpa"
