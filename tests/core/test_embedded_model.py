"""End to end with the embedded SmolLM2-135M-Instruct: absorbing a fictional document teaches its facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lift_bench.squad import normalize_answer
from lift_integrations import LIFTConfig, LIFTModel, Memory

pytestmark = pytest.mark.slow

QUILLON = json.loads((Path(__file__).parents[2] / "examples" / "data" / "quillon.json").read_text())
QUESTIONS = [(q["question"], q["answer"]) for q in QUILLON["questions"]]


@pytest.fixture(scope="module")
def quillon_memory(embedded_lift: LIFTModel) -> Memory:
    return embedded_lift.absorb((QUILLON["title"], QUILLON["text"]), config=LIFTConfig.fast())


def _answered(lift: LIFTModel, memory: Memory | None) -> int:
    correct = 0
    for question, gold in QUESTIONS:
        text = lift.generate(question, memory=memory, max_new_tokens=24).text
        correct += normalize_answer(gold) in normalize_answer(text)
    return correct


def test_memory_raises_gold_likelihood_and_answers_without_the_document(
    embedded_lift: LIFTModel, quillon_memory: Memory
) -> None:
    base = [embedded_lift.answer_logprob(q, a, memory=None) for q, a in QUESTIONS]
    adapted = [embedded_lift.answer_logprob(q, a, memory=quillon_memory) for q, a in QUESTIONS]
    gain = sum(adapted) / len(adapted) - sum(base) / len(base)
    assert gain > 5.0, f"mean gold log-likelihood gain {gain:.1f} nats"
    assert _answered(embedded_lift, None) == 0, "the base model cannot know a fictional document"
    assert _answered(embedded_lift, quillon_memory) >= 2


def test_detached_memory_gives_the_base_models_logits(
    embedded_lift: LIFTModel, quillon_memory: Memory
) -> None:
    ids = embedded_lift.prompt_ids(QUESTIONS[0][0], memory=None)
    with torch.no_grad():
        untouched = embedded_lift.model(input_ids=torch.tensor([ids])).logits
    embedded_lift.attach(quillon_memory)
    with embedded_lift.using(quillon_memory), torch.no_grad():
        adapted = embedded_lift.logits(ids)
    embedded_lift.detach()
    with embedded_lift.using(embedded_lift.attached_memory), torch.no_grad():
        detached = embedded_lift.logits(ids)
    assert not torch.equal(adapted, untouched)
    assert torch.equal(detached, untouched)


def test_saved_memory_answers_identically(
    embedded_lift: LIFTModel, quillon_memory: Memory, tmp_path: Path
) -> None:
    loaded = Memory.load(quillon_memory.save(tmp_path / "quillon"))
    for question, _ in QUESTIONS[:3]:
        expected = embedded_lift.generate(question, memory=quillon_memory, max_new_tokens=16).text
        assert embedded_lift.generate(question, memory=loaded, max_new_tokens=16).text == expected
