"""Training with the small modules compiled (LIFTConfig.compile) computes what eager training computes,
and the compiled methods exist only while a step runs.

The tests compile with the ``aot_eager`` backend: it traces and differentiates exactly as inductor does but
runs the traced graph with PyTorch's own kernels, so it checks the wiring in seconds on a CPU without
generating code. The fused GPU kernels' numbers are checked on a GPU by ``benchmarks/absorb_speed.py``.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb import compilation, fused, many
from lift_integrations.absorb.batching import collate
from lift_integrations.absorb.compilation import compiled_method_names, compiled_modules
from lift_integrations.absorb.fused import maskless_causal_attention
from lift_integrations.absorb.losses import per_sample_loss
from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample

FACTS = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. "
)


def _batch(tokenizer, lengths: list[int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for n in lengths:
        ids = torch.randint(5, len(tokenizer), (n,), generator=generator).tolist()
        samples.append(TrainingSample(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2 :], "segment"))
    return collate(samples, tokenizer.pad_token_id, torch.device("cpu"))


@pytest.mark.parametrize(
    ("arch", "whole_layers"),
    [("llama", False), ("qwen3", False), ("gemma3", False), ("llama", True), ("qwen3", True)],
)
def test_compiled_modules_give_the_losses_and_gradients_of_eager_ones(arch: str, whole_layers: bool) -> None:
    model, tokenizer = build_tiny_model(arch, layers=3)
    model.float()
    lift = LIFTModel(model, tokenizer, name=f"tiny-{arch}")
    weights = lift.backend.create(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a trained-looking memory: nonzero output layers, so the mix matters
        for param in weights.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    lift.backend.activate(weights)
    params = list(weights.parameters())
    for param in params:
        param.requires_grad_(True)
    modules = [*model.modules(), *weights.modules()]

    results = []
    for lengths in ([30, 22, 17], [41, 12]):  # a second shape must not need another compiled function
        batch = _batch(tokenizer, lengths)
        eager = per_sample_loss(model, batch)
        eager_grads = torch.autograd.grad(eager.sum(), params)
        with compiled_modules(modules, backend="aot_eager", whole_layers=whole_layers) as count:
            compiled = per_sample_loss(model, batch)
            compiled_grads = torch.autograd.grad(compiled.sum(), params)
        results.append(count)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        for got, expected in zip(compiled_grads, eager_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    lift.backend.activate(None)

    if whole_layers:
        expected = sum(type(m).__name__.endswith("DecoderLayer") for m in model.modules())
    else:
        norms = sum(type(m).__name__.endswith("RMSNorm") for m in model.modules())
        mlps = sum(type(m).__name__.endswith("MLP") for m in model.modules())
        expected = norms + mlps + 2 * len(weights.layers)
    assert results[0] == results[1] == expected
    # Left: every module runs its own class's methods again.
    for mode in (False, True):
        assert not any(
            name in m.__dict__ for m in modules for name in compiled_method_names(m, whole_layers=mode)
        )


@pytest.mark.parametrize("whole_layers", [True, False])
def test_a_compiled_pass_on_another_device_computes_nothing_on_the_cpu(whole_layers: bool) -> None:
    """Every value of the compiled graphs lives on the model's device. A value on the CPU (a Python float
    such as a norm's epsilon, taken as a 0-d float64 input) would be a C++ kernel in a GPU graph, for
    which a fresh process probes and builds a C++ toolchain before its first step. The meta device stands
    in for the GPU: it is not the CPU, and tracing needs no data."""
    from torch._dynamo.backends.common import aot_autograd

    on_cpu: list[str] = []

    def record(graph_module: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        for node in graph_module.graph.nodes:
            values = node.meta.get("val")
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                    on_cpu.append(f"{node.name}: {node.target}")
        return graph_module

    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=2)
    model.float()
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    stack = lift.backend.create_stack(lift.backend.create(generator=torch.Generator().manual_seed(0)), 2)
    model.to("meta")
    stack.to("meta")
    stack.row_memory = torch.tensor([1, 0], device="meta")
    lift.backend.activate(stack)
    decoder = model.get_decoder()
    ids = torch.zeros(2, 24, dtype=torch.long, device="meta")
    positions = torch.arange(24, device="meta").unsqueeze(0)
    backend = aot_autograd(fw_compiler=record, bw_compiler=record)
    with (
        compiled_modules(model.modules(), backend=backend, whole_layers=whole_layers),
        maskless_causal_attention(model),
    ):
        stack.cast_for(torch.float32)
        hidden = decoder.embed_tokens(ids)
        rotary = decoder.rotary_emb(hidden, positions)
        for layer in decoder.layers:  # the model's own forward reads data to build masks; meta has none
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        (grad,) = torch.autograd.grad(hidden.sum(), [stack.flat])
        stack.cast_for(None)
    lift.backend.activate(None)
    assert grad.device.type == "meta"
    assert on_cpu == []


def test_a_model_without_decoder_layer_classes_is_compiled_module_by_module() -> None:
    model, _ = build_tiny_model("llama")
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    others = [m for m in model.modules() if not type(m).__name__.endswith("DecoderLayer")]
    with compiled_modules(others, backend="aot_eager", whole_layers=True) as count:
        assert count == sum(len(compiled_method_names(m)) for m in others) > 0
    with compiled_modules([*layers, *others], backend="aot_eager", whole_layers=True) as count:
        assert count == len(layers)


def test_one_compiled_decoder_layer_serves_every_layer() -> None:
    """Gated Memory's hooks keep each layer's state on an object of their own, so the compiled layer is
    not specialised to a layer index: a 6-layer model needs two graphs (the first layer, whose input
    needs no gradient, and every other), not six."""
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=6)
    model.float()
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    weights = lift.backend.create(generator=torch.Generator().manual_seed(0))
    lift.backend.activate(weights)
    for param in weights.parameters():
        param.requires_grad_(True)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with compiled_modules(model.modules(), backend="aot_eager", whole_layers=True) as count:
        per_sample_loss(model, _batch(tokenizer, [20, 13])).sum().backward()
    lift.backend.activate(None)
    assert count == 6
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 2


def test_one_compiled_decoder_layer_serves_every_layer_of_a_memory_stack() -> None:
    """The same for the stack that trains several memories side by side (the fused engine): each layer
    reads its own columns of the stack, handed to it before the pass, so no layer index reaches the
    compiled code."""
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=6)
    model.float()
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    template = lift.backend.create(generator=torch.Generator().manual_seed(0))
    stack = lift.backend.create_stack(template, 2)
    for row in range(2):
        stack.load_row(row, lift.backend.create(generator=torch.Generator().manual_seed(row)))
    batch = _batch(tokenizer, [20, 13])
    stack.row_memory = torch.tensor([1, 0])
    lift.backend.activate(stack)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with compiled_modules(model.modules(), backend="aot_eager", whole_layers=True) as count:
        stack.cast_for(torch.float32)
        per_sample_loss(model, batch).sum().backward()
    lift.backend.activate(None)
    assert count == 6
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 2
    assert stack.flat.grad is not None and bool(stack.flat.grad.abs().sum() > 0)


def test_one_compiled_decoder_layer_serves_batches_of_any_rows_and_length_through_a_memory_stack() -> None:
    """Passes of a stack of memories come in many shapes; the compiled layer stays dynamic in both:
    the rows' memories are read through a buffer of fixed size, and a length that equals a size of the
    model (64 tokens, the tiny model's width) is not tied to it."""
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=3)
    model.float()
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    stack = lift.backend.create_stack(lift.backend.create(generator=torch.Generator().manual_seed(0)), 2)
    lift.backend.activate(stack)
    counts = []
    for rows, length in [(3, 64), (2, 96), (5, 64), (4, 128), (2, 64)]:
        stack.row_memory = torch.arange(rows) % 2
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        with compiled_modules(model.modules(), backend="aot_eager", whole_layers=True):
            stack.cast_for(torch.float32)
            per_sample_loss(model, _batch(tokenizer, [length] * rows)).sum().backward()
            stack.cast_for(None)
        counts.append(torch._dynamo.utils.counters["stats"]["unique_graphs"] - before)
    lift.backend.activate(None)
    assert counts == [2, 0, 0, 0, 0]


@pytest.mark.parametrize("adapter", ["gated_memory", "lora"])
def test_an_absorption_with_compile_equals_one_without(adapter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compilation, "DEFAULT_BACKEND", "aot_eager")
    memories = []
    for compile_ in (False, True):
        model, tokenizer = build_tiny_model("llama")
        lift = LIFTModel(model, tokenizer, name="tiny-llama", adapter=adapter)
        config = LIFTConfig.fast(
            stage1_epochs=1, stage2_epochs=1, qa_per_document=4, precision="fp32", compile=compile_
        )
        memories.append(lift.absorb(FACTS * 3, config=config))
        assert not any("forward" in m.__dict__ for m in model.modules())  # nothing left compiled
    eager, compiled = memories
    assert eager.stats["steps"] == compiled.stats["steps"]
    for name, tensor in eager.tensors.items():
        torch.testing.assert_close(compiled.tensors[name], tensor, rtol=1e-4, atol=1e-5)


def test_bucketed_pass_shapes_share_one_compiled_decoder_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused engine's passes come in several bucketed shapes (CUDA graphs need them; forced here on
    the CPU); the compiled decoder layer is dynamic in them, so new shapes compile nothing new. The
    passes feed embeddings that need a gradient, so the first layer's input is like the others' and one
    graph serves every layer."""
    monkeypatch.setattr(compilation, "DEFAULT_BACKEND", "aot_eager")
    monkeypatch.setattr(many, "build_step", functools.partial(fused.build_step, static=True))
    shapes: set[tuple[int, int, int]] = set()
    run_pass = fused.FusedSteps._pass

    def recording(self, ints, floats, shape):  # type: ignore[no-untyped-def]
        shapes.add(shape)
        return run_pass(self, ints, floats, shape)

    monkeypatch.setattr(fused.FusedSteps, "_pass", recording)
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=3)
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    config = LIFTConfig.dense_qa(
        stage1_epochs=1, stage2_epochs=1, precision="fp32", engine="fused", compile=True
    )
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    lift.absorb(FACTS * 4, config=config)
    assert len(shapes) >= 3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 1


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_the_fused_engine_with_compile_trains_the_memory_it_trains_without(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused engine's compiled passes (bucketed shapes, as on CUDA; embeddings that need a gradient)
    train the same memory as its eager passes, for a model that runs maskless (Llama) and one that keeps
    its sliding-window masks (Gemma3)."""
    monkeypatch.setattr(compilation, "DEFAULT_BACKEND", "aot_eager")
    monkeypatch.setattr(many, "build_step", functools.partial(fused.build_step, static=True))
    memories = []
    for compile_ in (False, True):
        model, tokenizer = build_tiny_model(arch, layers=3)
        lift = LIFTModel(model, tokenizer, name=f"tiny-{arch}")
        config = LIFTConfig.dense_qa(
            stage1_epochs=1, stage2_epochs=1, precision="fp32", engine="fused", compile=compile_
        )
        memories.append(lift.absorb(FACTS * 4, config=config))
    eager, compiled = memories
    assert eager.stats["steps"] == compiled.stats["steps"] > 1
    for name, tensor in eager.tensors.items():
        torch.testing.assert_close(compiled.tensors[name], tensor, rtol=1e-4, atol=1e-5)


def test_compile_is_validated() -> None:
    with pytest.raises(ValueError, match="compile"):
        LIFTConfig(compile="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("adapter", ["gated_memory", "lora"])
def test_a_second_memory_reuses_the_compiled_code(adapter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling is paid once per process: absorbing a second memory (new Gated Memory weights, a new
    LoRA adapter name) compiles no new graph."""
    monkeypatch.setattr(compilation, "DEFAULT_BACKEND", "aot_eager")
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama", layers=3)
    lift = LIFTModel(model, tokenizer, name="tiny-llama", adapter=adapter)
    config = LIFTConfig.fast(
        stage1_epochs=1, stage2_epochs=1, qa_per_document=4, precision="fp32", compile=True
    )
    lift.absorb(FACTS, config=config)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert before > 0
    lift.absorb(FACTS, config=config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before


def test_compile_with_gradient_checkpointing_compiles_module_by_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compiled checkpointed layer would refuse the adapter's hooks (they record state) and run
    uncompiled; with HF's gradient checkpointing, training compiles the norms, MLPs and Gated Memory."""
    monkeypatch.setattr(compilation, "DEFAULT_BACKEND", "aot_eager")
    torch._dynamo.reset()
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    config = LIFTConfig.fast(
        stage1_epochs=1,
        stage2_epochs=1,
        qa_per_document=4,
        precision="fp32",
        compile=True,
        gradient_checkpointing=True,
    )
    assert compilation.compiles_whole_layers(
        lift.model, lift.backend, dataclasses.replace(config, gradient_checkpointing=False)
    )
    assert not compilation.compiles_whole_layers(lift.model, lift.backend, config)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    lift.absorb(FACTS, config=config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before
