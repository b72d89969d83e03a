"""Mixed-memory batches (issue 17, item 3): ``generate_batch(memories=[...])`` gives each prompt its own
memory, or none, in one batched decode; each answer equals ``generate`` with that memory alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from tiny_models import build_tiny_model, one_torch_thread

from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.adapters.gated_memory import GatedMemoryConfig
from lift_integrations.errors import MemoryMismatchError

DOCS = [
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. " * 2,
    "Question: Who founded it? Answer: Mira Quenton. The quick brown fox jumps over the lazy dog. " * 3,
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
PROMPTS = [
    "Who founded it?",
    "In which city, and in which year, was the institute founded?",
    "Why?",
    "Who was the first director?",
    "Tell me about the fox.",
    "What did Tobias Renwick study?",
]
MAX_NEW = 10


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def _config(**overrides: Any) -> LIFTConfig:
    return LIFTConfig.fast(**{**SMALL, **overrides})


def _lift(arch: str = "llama", adapter: str = "gated_memory", **kwargs: Any) -> LIFTModel:
    model, tokenizer = build_tiny_model(arch)
    return LIFTModel(model.float(), tokenizer, name=f"tiny-{arch}", adapter=adapter, **kwargs)


def _visible(memories: list[Memory]) -> list[Memory]:
    """Memories that visibly change the answers, each differently (a tiny model learns little in a few
    steps): the gate opened, by a different amount for each."""
    with torch.no_grad():
        for index, memory in enumerate(memories):
            for name, tensor in memory.tensors.items():
                if name.endswith("gate_bias"):
                    tensor.add_(3.0 + 2.0 * index)
    return memories


_MODELS: dict[str, tuple[LIFTModel, list[Memory]]] = {}


def _model_with_memories(arch: str) -> tuple[LIFTModel, list[Memory]]:
    """A tiny model of ``arch`` and three memories absorbed on it, built once per module."""
    if arch not in _MODELS:
        with one_torch_thread():
            lift = _lift(arch)
            _MODELS[arch] = (lift, _visible(lift.absorb_many(DOCS, config=_config())))
    return _MODELS[arch]


def _singles(
    lift: LIFTModel,
    rows: list[Memory | None],
    contexts: list[Any] | None = None,
    prompts: list[str] = PROMPTS,
) -> list[Any]:
    contexts = contexts or [None] * len(prompts)
    return [
        lift.generate(p, memory=m, context=c, max_new_tokens=MAX_NEW)
        for p, m, c in zip(prompts, rows, contexts, strict=True)
    ]


def _padded(lift: LIFTModel, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(i) for i in ids)
    pad = lift._generator.pad_id
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    return input_ids, mask


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_each_row_gets_the_answer_of_its_memory_alone(arch: str) -> None:
    lift, (m0, m1, m2) = _model_with_memories(arch)
    rows: list[Memory | None] = [m0, None, m1, m2, None, m0]
    contexts: list[Any] = [None, None, "truncated", [DOCS[2]], ["A short passage."], None]
    single = _singles(lift, rows, contexts)
    assert single != _singles(lift, [None] * len(rows), [None, None, [DOCS[1]], [DOCS[2]], contexts[4], None])
    assert len({r.text for r in _singles(lift, [m0, m1, m2], prompts=[PROMPTS[0]] * 3)}) == 3
    for batch_size in (16, 4, 1):
        mixed = lift.generate_batch(
            PROMPTS, memories=rows, contexts=contexts, max_new_tokens=MAX_NEW, batch_size=batch_size
        )
        assert mixed == single, batch_size


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_first_step_logits_of_a_mixed_batch(arch: str) -> None:
    """In one padded batch: a row without a memory gets the base model's logits exactly; a row with one
    gets (up to rounding) what the same batch gives with that memory active for every row."""
    lift, (m0, m1, _) = _model_with_memories(arch)
    rows: list[Memory | None] = [m0, None, m1, None, m1]
    prompts = PROMPTS[: len(rows)]
    ids = [lift.prompt_ids(p, memory=m, max_new_tokens=MAX_NEW) for p, m in zip(prompts, rows, strict=True)]
    input_ids, mask = _padded(lift, ids)
    pools = lift._mixed.pools(rows)
    assert pools == [list(range(len(rows)))]
    [(batch, guard)] = list(lift._mixed.batches(rows, pools, lambda i: 0, 16))
    assert batch == list(range(len(rows)))
    with guard, torch.inference_mode():
        mixed = lift.model(input_ids=input_ids, attention_mask=mask).logits
    alone = {}
    for used in (None, m0, m1):
        with lift.using(used), torch.inference_mode():
            alone[id(used)] = lift.model(input_ids=input_ids, attention_mask=mask).logits
    for row, memory in enumerate(rows):
        real = mask[row].bool()
        expected = alone[id(memory)][row, real]
        if memory is None:
            assert torch.equal(mixed[row, real], expected), row
        else:
            torch.testing.assert_close(mixed[row, real], expected, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(expected, alone[id(None)][row, real], atol=1e-3)
    assert not lift.backend._handles  # hooks gone once the batch is done


def test_rows_without_a_memory_equal_the_base_model_and_one_memory_batches_take_the_plain_path() -> None:
    lift, (m0, _, _) = _model_with_memories("llama")
    assert lift.generate_batch(PROMPTS, memories=[None] * 6, max_new_tokens=MAX_NEW) == _singles(
        lift, [None] * 6
    )
    assert lift.generate_batch(PROMPTS, memories=[m0] * 6, max_new_tokens=MAX_NEW) == lift.generate_batch(
        PROMPTS, memory=m0, max_new_tokens=MAX_NEW
    )
    rows: list[Memory | None] = [None, m0, None, m0, None, None]
    assert lift.generate_batch(PROMPTS, memories=rows, max_new_tokens=MAX_NEW) == _singles(lift, rows)


def test_memories_of_different_settings_go_into_batches_of_their_own() -> None:
    lift, (m0, m1, _) = _model_with_memories("llama")
    default = lift.backend.config
    lift.backend.config = GatedMemoryConfig(gate_scale=2.0, gate_shift=0.5, hidden_multiplier=1)
    try:
        other = _visible([lift.absorb(DOCS[2], config=_config())])[0]
    finally:
        lift.backend.config = default
    rows: list[Memory | None] = [m0, other, None, m1, other, None]
    pools = lift._mixed.pools(rows)
    assert pools == [[0, 2, 3, 5], [1, 4]]
    calls: list[int] = []
    original = lift._generator.generate_batch

    def spy(prompts: Any, guard: Any, **kwargs: Any) -> Any:
        calls.append(len(prompts))
        return original(prompts, guard, **kwargs)

    lift._generator.generate_batch = spy  # type: ignore[method-assign]
    try:
        mixed = lift.generate_batch(PROMPTS, memories=rows, max_new_tokens=MAX_NEW)
    finally:
        del lift._generator.generate_batch
    assert sorted(calls) == [2, 4]
    assert mixed == _singles(lift, rows)


def test_the_stack_is_reused_and_follows_changes_of_its_memories(monkeypatch: pytest.MonkeyPatch) -> None:
    lift, (m0, m1, m2) = _model_with_memories("llama")
    lift._mixed.clear()
    built: list[int] = []
    create = lift.backend.create_stack

    def counting(template: Any, memories: int) -> Any:
        built.append(memories)
        return create(template, memories)

    monkeypatch.setattr(lift.backend, "create_stack", counting)
    rows: list[Memory | None] = [m0, None, m1, m2]
    first = lift.generate_batch(PROMPTS[:4], memories=rows, max_new_tokens=MAX_NEW, batch_size=2)
    again = lift.generate_batch(PROMPTS[:4], memories=rows, max_new_tokens=MAX_NEW)
    assert first == again == _singles(lift, rows, prompts=PROMPTS[:4])
    assert built == [3]  # one stack for the call's three memories, kept for the next call
    with torch.no_grad():
        m1.tensors["layers.1.gate_bias"].sub_(6.0)  # the memory's live weights change in place
    try:
        changed = lift.generate_batch(PROMPTS[:4], memories=rows, max_new_tokens=MAX_NEW)
        assert changed == _singles(lift, rows, prompts=PROMPTS[:4])
        assert built == [3]  # reloaded, not rebuilt
    finally:
        with torch.no_grad():
            m1.tensors["layers.1.gate_bias"].add_(6.0)
    lift.generate_batch(PROMPTS[:2], memories=[m2, m0], max_new_tokens=2)
    assert built == [3, 2]  # other memories (another order): another stack


def test_arguments_are_checked_before_any_work() -> None:
    lift, (m0, _, _) = _model_with_memories("llama")
    with pytest.raises(TypeError, match="not both"):
        lift.generate_batch(["a", "b"], memory=m0, memories=[m0, None])
    with pytest.raises(TypeError, match="not both"):
        lift.generate_batch(["a", "b"], memory=None, memories=[m0, None])
    with pytest.raises(ValueError, match="got 1 memories for 2 prompts"):
        lift.generate_batch(["a", "b"], memories=[m0])
    with pytest.raises(TypeError, match="memories must be a list"):
        lift.generate_batch(["a"], memories=m0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="memories must be a list"):
        lift.generate_batch(["a"], memories="m0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"memories\[1\] must be a Memory, .* or None, got int"):
        lift.generate_batch(["a", "b"], memories=[m0, 3])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="no memory at m0"):  # a str names a saved memory
        lift.generate_batch(["a", "b"], memories=[m0, "m0"])
    with pytest.raises(ValueError, match="context='truncated' needs a memory"):
        lift.generate_batch(["a", "b"], memories=[m0, None], contexts=["truncated", "truncated"])
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        lift.generate_batch(["a", " "], memories=[m0, None])
    assert lift.generate_batch([], memories=[]) == []
    _, (foreign, _, _) = _model_with_memories("qwen3")
    calls: list[Any] = []
    lift._generator.generate_batch = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    try:
        with pytest.raises(MemoryMismatchError, match="made for base model"):
            lift.generate_batch(["a", "b", "c"], memories=[m0, None, foreign])
    finally:
        del lift._generator.generate_batch
    assert not calls  # refused before the first batch was decoded


def test_lora_splits_the_batch_by_memory_with_the_same_answers() -> None:
    lift = _lift("llama", adapter="lora", adapter_config={"r": 4, "alpha": 8})
    config = _config(stage2_epochs=1, qa_per_document=2)
    m0, m1 = (lift.absorb(doc, config=config) for doc in DOCS[:2])
    with torch.no_grad():  # LoRA B starts at zero: make each memory's change visible
        for index, memory in enumerate((m0, m1)):
            for name, tensor in memory.tensors.items():
                if "lora_B" in name:
                    tensor.add_(0.05 * (index + 1))
    rows: list[Memory | None] = [m0, None, m1, m0, None, m1]
    assert lift._mixed.pools(rows) == [[0, 3], [2, 5], [1, 4]]
    single = _singles(lift, rows)
    assert single != _singles(lift, [None] * 6)
    for batch_size in (16, 1):
        assert lift.generate_batch(PROMPTS, memories=rows, max_new_tokens=MAX_NEW, batch_size=batch_size) == (
            single
        )
