"""Absorption: input checks, segmentation, samples, QA generators, determinism, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import build_tiny_model

from lift_integrations import Document, LIFTConfig, LIFTModel, QAPair
from lift_integrations.absorb.qa import (
    CallableQAGenerator,
    PromptedQAGenerator,
    parse_qa_reply,
    resolve_qa_generator,
)
from lift_integrations.absorb.samples import IGNORE_INDEX, qa_samples, segment_samples
from lift_integrations.absorb.segmentation import context_view, segment_document, segment_spans
from lift_integrations.prompting import head_tail

FACTS = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides."
)
TINY = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=2, qa_per_document=4)


# Input checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "error", "message"),
    [
        ("", ValueError, "empty"),
        ("   \n\t ", ValueError, "empty"),
        ([], ValueError, "no documents"),
        (b"bytes text", TypeError, "bytes"),
        (42, TypeError, "int"),
        (["fine", None], TypeError, "document 1"),
        ([("title", "text", "extra")], TypeError, "tuple of 3"),
        ("bad \ud800 surrogate", ValueError, "Unicode"),
    ],
)
def test_bad_documents_are_refused_before_any_work(
    documents: object, error: type, message: str, tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(tiny_lift.backend, "create", fail)
    with pytest.raises(error, match=message):
        tiny_lift.absorb(documents)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"segment_length": 64, "segment_stride": 128}, "segment_stride"),
        ({"stage1_epochs": 0, "stage2_epochs": 0}, "at least one epoch"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"precision": "fp8"}, "precision"),
        ({"qa_per_1k_tokens": -1.0}, "qa_per_1k_tokens"),
        ({"qa_per_1k_tokens": float("inf")}, "qa_per_1k_tokens"),
    ],
)
def test_out_of_range_configs_name_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LIFTConfig(**overrides)


def test_window_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        LIFTConfig().fit_to_window(32)


def test_paper_lengths_scale_down_to_a_small_window() -> None:
    fitted = LIFTConfig.paper().fit_to_window(1024)
    assert fitted.segment_length + fitted.context_view_length + 64 <= 1024
    assert fitted.segment_stride / fitted.segment_length == pytest.approx(768 / 2048, rel=0.05)
    unchanged = LIFTConfig.paper().fit_to_window(8192)
    assert (unchanged.segment_length, unchanged.segment_stride) == (2048, 768)


# Segmentation ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3000), length=st.integers(1, 600), data=st.data())
def test_segments_cover_every_token_in_order_within_bounds(n: int, length: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, length))
    spans = segment_spans(n, length, stride)
    covered = np.zeros(n, dtype=bool)
    for (start, end), following in zip(spans, [*spans[1:], None][: len(spans)], strict=True):
        assert 0 <= start < end <= n and end - start <= length
        covered[start:end] = True
        if following is not None:
            assert following[0] == start + stride
    assert covered.all()
    assert (spans == []) == (n == 0)
    tokens = list(range(n))
    assert [t for seg in segment_document(tokens, length, stride) for t in seg][:length] == tokens[:length]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 2000), length=st.integers(1, 400), seed=st.integers(0, 10**6))
def test_context_view_takes_head_and_tail_pieces(n: int, length: int, seed: int) -> None:
    tokens = list(range(10, 10 + n))
    view = context_view(tokens, length, [-1], np.random.default_rng(seed))
    if n <= length:
        assert view == tokens
        return
    assert len(view) == length + 1 and -1 in view
    cut = view.index(-1)
    front, back = view[:cut], view[cut + 1 :]
    assert all(t < 10 + length for t in front), "the front piece comes from the first `length` tokens"
    assert all(t >= 10 + n - length for t in back), "the back piece comes from the last `length` tokens"
    assert front == sorted(front) and back == sorted(back)


def test_head_tail_keeps_both_ends() -> None:
    assert head_tail(list(range(10)), 20, [-1]) == list(range(10))
    assert head_tail(list(range(100)), 11, [-1]) == [0, 1, 2, 3, 4, -1, 95, 96, 97, 98, 99]


# Samples -----------------------------------------------------------------------------------------


def test_segment_samples_supervise_only_the_segment(tiny_lift: LIFTModel) -> None:
    tokenizer = tiny_lift.tokenizer
    ids = tokenizer(FACTS * 6, add_special_tokens=False)["input_ids"]
    config = LIFTConfig(segment_length=64, segment_stride=32, context_view_length=40, max_seq_length=512)
    samples = segment_samples(tokenizer, ids, config, np.random.default_rng(0))
    assert len(samples) == len(segment_spans(len(ids), 64, 32))
    for sample, (start, end) in zip(samples, segment_spans(len(ids), 64, 32), strict=True):
        supervised = [t for t in sample.labels if t != IGNORE_INDEX]
        assert supervised == ids[start:end]
        assert sample.input_ids[-len(supervised) :] == supervised
        assert len(sample.input_ids) > len(supervised), "the context view and prompt precede the segment"


def test_qa_samples_supervise_only_the_answer(tiny_lift: LIFTModel) -> None:
    tokenizer = tiny_lift.tokenizer
    ids = tokenizer(FACTS, add_special_tokens=False)["input_ids"]
    samples = qa_samples(
        tokenizer, ids, [QAPair("Who founded it?", "Mira Quenton")], LIFTConfig(qa_context_length=0)
    )
    (sample,) = samples
    answer = tokenizer.decode([t for t in sample.labels if t != IGNORE_INDEX])
    assert answer.startswith("Mira Quenton") and "<|im_end|>" in answer
    assert "Who founded it?" in tokenizer.decode(sample.input_ids)


# QA generators -----------------------------------------------------------------------------------


def test_parse_qa_reply() -> None:
    reply = "Question: Who founded it? \nAnswer: Mira Quenton \nEvidence: founded in 1874 by Mira Quenton"
    assert parse_qa_reply(reply) == QAPair(
        "Who founded it?", "Mira Quenton", "founded in 1874 by Mira Quenton"
    )
    assert parse_qa_reply("Question: only a question") is None
    assert parse_qa_reply("") is None


def test_prompted_generator_keeps_only_verbatim_evidence_and_retries() -> None:
    calls: list[int] = []

    def complete(prompt: str, attempt: int) -> str:
        calls.append(attempt)
        evidence = "invented evidence" if attempt < 2 else "founded in 1874 by Mira Quenton"
        return f"Question: Who founded it?\nAnswer: Mira Quenton\nEvidence: {evidence}"

    pairs = PromptedQAGenerator(complete).generate(Document("Z", FACTS), 1, np.random.default_rng(0))
    assert [p.answer for p in pairs] == ["Mira Quenton"]
    assert calls == [0, 1, 2]


def test_prompted_generator_gives_up_after_five_attempts() -> None:
    generator = PromptedQAGenerator(lambda prompt, attempt: "no markers at all")
    assert generator.generate(Document("Z", FACTS), 2, np.random.default_rng(0)) == []


def test_generator_argument_accepts_callables_and_chat_models() -> None:
    class FakeChatModel:
        def invoke(self, prompt: str) -> object:
            return type("Message", (), {"content": "Question: Q?\nAnswer: A\nEvidence: Tobias Renwick"})()

    doc, rng = Document("Z", FACTS), np.random.default_rng(0)
    assert (
        resolve_qa_generator(FakeChatModel(), "extractive", lambda p, a: "").generate(doc, 1, rng)[0].answer
        == "A"
    )
    plain = resolve_qa_generator(
        lambda prompt: "Question: Q?\nAnswer: B\nEvidence: Mira Quenton", "none", print
    )
    assert plain.generate(doc, 1, rng)[0].answer == "B"
    direct = CallableQAGenerator(lambda d: [("Where?", "Vellhaven")])
    assert direct.generate(doc, 5, rng) == [QAPair("Where?", "Vellhaven")]
    assert resolve_qa_generator("none", "extractive", print) is None
    with pytest.raises(ValueError, match="unknown QA generator"):
        resolve_qa_generator("gpt-9", "extractive", print)


# Training ----------------------------------------------------------------------------------------


def test_absorb_is_deterministic_for_a_seed() -> None:
    # Bitwise equality holds on one thread; with several, a loaded CPU can split reductions differently.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    memories = []
    try:
        for _ in range(2):
            model, tokenizer = build_tiny_model("llama")
            memories.append(LIFTModel(model, tokenizer).absorb(FACTS, config=TINY))
    finally:
        torch.set_num_threads(threads)
    first, second = memories
    assert first.tensors.keys() == second.tensors.keys()
    for name in first.tensors:
        assert torch.equal(first.tensors[name], second.tensors[name]), name
    assert first.id == second.id


def test_absorb_raises_gold_answer_likelihood_and_reports_progress() -> None:
    # A random tiny model's queries are near zero, so its gate barely moves from a small start; a larger
    # initial gate lets a few steps show. The embedded-model tests cover the default preset's learning.
    model, tokenizer = build_tiny_model("llama")
    tiny_lift = LIFTModel(model, tokenizer, adapter_config={"initial_gate": 0.3})
    question, answer = "Who founded the Zorblat Institute?", "Mira Quenton"
    before = tiny_lift.answer_logprob(question, answer, memory=None)
    reports = []
    config = LIFTConfig.fast(
        stage1_epochs=2, stage2_epochs=15, qa_per_document=8, learning_rate=3e-2, batch_size=1
    )
    generator = CallableQAGenerator(
        lambda d: [(question, answer), ("Who was the first director?", "Tobias Renwick")]
    )
    memory = tiny_lift.absorb(FACTS, config=config, generator=generator, callback=reports.append)
    after = tiny_lift.answer_logprob(question, answer, memory=memory)
    assert after > before + 3.0, (before, after)
    assert [r.step for r in reports] == list(range(1, len(reports) + 1))
    assert reports[-1].step == reports[-1].total_steps
    assert min(r.loss for r in reports[-5:]) < reports[0].loss - 0.5
    assert reports[-1].tokens_seen > 0 and reports[0].to_dict()["num_documents"] == 1
    # The memory is returned, not attached: memory=None and the default still mean the base model.
    assert tiny_lift.attached_memory is None
    assert tiny_lift.answer_logprob(question, answer) == pytest.approx(before)


def test_several_documents_and_continuing_a_memory(tiny_lift: LIFTModel) -> None:
    memory = tiny_lift.absorb([("Zorblat", FACTS), "Vellhaven lies on the river Oskel."], config=TINY)
    assert memory.titles == ["Zorblat", ""]
    more = tiny_lift.absorb(
        Document("Oskel", "The river Oskel freezes every March."), config=TINY, into=memory
    )
    assert more.titles == ["Zorblat", "", "Oskel"]
    assert more.id != memory.id


def test_lora_adapter_behind_the_same_interface() -> None:
    model, tokenizer = build_tiny_model("qwen2")
    lift = LIFTModel(model, tokenizer, adapter="lora", adapter_config={"r": 4, "alpha": 8})
    ids = lift.prompt_ids("Who founded it?", memory=None)
    with lift.using(None), torch.no_grad():
        base = lift.logits(ids)
    memory = lift.absorb(FACTS, config=TINY)
    assert memory.adapter_kind == "lora"
    with lift.using(memory), torch.no_grad():
        adapted = lift.logits(ids)
    with lift.using(None), torch.no_grad():
        again = lift.logits(ids)
    assert not torch.allclose(base, adapted)
    assert torch.equal(base, again)


def test_qa_pairs_can_also_be_trained_with_retrieved_like_passages(tiny_lift: LIFTModel) -> None:
    tokenizer = tiny_lift.tokenizer
    text = (
        "First paragraph about harps.\n\nThe Zorblat Institute was founded by Mira Quenton.\n\nA third one."
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pair = QAPair("Who founded it?", "Mira Quenton", "The Zorblat Institute was founded by Mira Quenton.")
    config = LIFTConfig(qa_context_length=0, qa_passage_fraction=1.0, qa_passages=2)
    plain, with_passages = qa_samples(tokenizer, ids, [pair], config, text=text, rng=np.random.default_rng(0))
    assert "Context:" not in tokenizer.decode(plain.input_ids)
    prompt = tokenizer.decode(with_passages.input_ids)
    assert "Context:" in prompt and "founded by Mira Quenton." in prompt
    assert tokenizer.decode([t for t in with_passages.labels if t != IGNORE_INDEX]).startswith("Mira Quenton")


def test_qa_density_asks_longer_documents_for_more_pairs(tiny_lift: LIFTModel) -> None:
    """``qa_per_1k_tokens`` scales the pairs with the document; ``qa_per_document`` stays the floor."""
    asked: list[int] = []

    class Recording:
        def generate(self, document: Document, n: int, rng: object) -> list:
            asked.append(n)
            return []

    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2, qa_per_1k_tokens=500.0)
    tiny_lift.absorb(FACTS, config=config, generator=Recording())
    tokens = tiny_lift.count_tokens(FACTS)
    assert asked == [math.ceil(500.0 * tokens / 1000)] and asked[0] > 2
    assert config.qa_pairs_for(1) == 2  # the floor
    dense = LIFTConfig.dense_qa()
    assert (dense.qa_pairs_for(1000), dense.qa_pairs_for(10_000)) == (400, 600)
    assert dense.stage2_epochs == LIFTConfig.fast().stage2_epochs  # fast()'s schedule
    assert LIFTConfig.for_device("cpu") == LIFTConfig.fast()
    assert LIFTConfig.for_device("cuda", seed=3) == LIFTConfig.dense_qa(seed=3)
