"""Every public entry point checks its arguments before any work (issue #19, item 8).

Each case here was silently accepted, or refused with an error that did not name the argument, before
:mod:`lift_integrations.validation` existed. A refused call must raise ``ValueError``/``TypeError`` naming
the argument and the accepted range, before it tokenizes, takes the model lock, runs the model, loads an
embedding model, dispatches an event or writes a file: the "guarded" fixtures below make each of those
fail the test if it is reached. One string given as ``stop`` is one stop string, everywhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.cli import main

NAN, INF = float("nan"), float("inf")
SURROGATE = "A lone surrogate \udfff here."
PROMPT = "Tell me a story."
UNICODE = "is not valid Unicode"


def _work_started(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the arguments were checked")


class _Tripwire:
    """Stands in for the model lock: entering it fails the test."""

    def __enter__(self) -> None:
        raise AssertionError("the model lock was taken before the arguments were checked")

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, *args: object, **kwargs: object) -> bool:
        raise AssertionError("the model lock was taken before the arguments were checked")


@pytest.fixture
def guarded(tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch) -> LIFTModel:
    """``tiny_lift`` whose tokenizer, lock, forward pass, adapter creation and document tokenizer fail the
    test when reached."""
    monkeypatch.setattr("lift_integrations.prompting.tokenizer_lock", _work_started)
    monkeypatch.setattr("lift_integrations.absorb.plan.tokenize_document", _work_started)
    monkeypatch.setattr(tiny_lift, "lock", _Tripwire())
    monkeypatch.setattr(tiny_lift.model, "forward", _work_started)
    monkeypatch.setattr(tiny_lift.model, "generate", _work_started)
    monkeypatch.setattr(tiny_lift.backend, "create", _work_started)
    return tiny_lift


def _stop_string_after_its_characters(text: str) -> str:
    """A piece of ``text`` whose characters also occur earlier: split into characters, it would cut the
    text sooner than the piece itself does."""
    for start in range(1, len(text) - 3):
        piece = text[start : start + 3]
        if text.index(piece) == start and any(char in text[:start] for char in piece):
            return piece
    pytest.skip("the tiny model's answer has no suitable stop string")


# Generation arguments, shared by every entry point ------------------------------------------------

GENERATION_CASES = [
    pytest.param(
        {"temperature": NAN}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-nan"
    ),
    pytest.param(
        {"temperature": INF}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-inf"
    ),
    pytest.param(
        {"temperature": True},
        TypeError,
        r"temperature must be a finite number >= 0 and <= 65504",
        id="t-bool",
    ),
    pytest.param(
        {"temperature": "0.5"},
        TypeError,
        r"temperature must be a finite number >= 0 and <= 65504",
        id="t-str",
    ),
    pytest.param({"top_p": 2.0}, ValueError, r"top_p must be a number in \(0, 1\] or None", id="p-2"),
    pytest.param({"top_p": NAN}, ValueError, r"top_p must be a number in \(0, 1\] or None", id="p-nan"),
    pytest.param({"top_p": 0.0}, ValueError, r"top_p must be a number in \(0, 1\]", id="p-0"),
    pytest.param({"top_p": True}, TypeError, r"top_p must be a number in \(0, 1\]", id="p-bool"),
    pytest.param({"max_new_tokens": 2.5}, TypeError, r"max_new_tokens must be an integer >= 1", id="n-float"),
    pytest.param({"max_new_tokens": True}, TypeError, r"max_new_tokens must be an integer >= 1", id="n-bool"),
    pytest.param({"max_new_tokens": 5000}, ValueError, r"max_new_tokens .*context window", id="n-window"),
    pytest.param({"stop": [1]}, TypeError, r"stop\[0\] must be a str", id="stop-int"),
    pytest.param({"stop": 7}, TypeError, r"stop must be a string or a list of strings", id="stop-scalar"),
    pytest.param({"stop": ["ok", SURROGATE]}, ValueError, r"stop\[1\] is not valid Unicode", id="stop-utf"),
    pytest.param({"context": 123}, TypeError, r"context must be None, 'truncated' or a list", id="ctx-int"),
    pytest.param({"context": ["ok", SURROGATE]}, ValueError, r"context\[1\] is not valid Unicode", id="ctx"),
]
PROMPT_CASES = [
    pytest.param(None, TypeError, r"prompt must be a str or a list of chat messages", id="none"),
    pytest.param(123, TypeError, r"prompt must be a str or a list of chat messages", id="int"),
    pytest.param(SURROGATE, ValueError, r"prompt is not valid Unicode", id="surrogate"),
    pytest.param([{"role": "user", "content": SURROGATE}], ValueError, "prompt message 0 " + UNICODE, id="m"),
]
CORE_ENTRIES = ("generate", "stream", "generate_batch", "prompt_ids", "answer_logprob")
_PROMPT_ONLY = {"prompt_ids": {"max_new_tokens", "context"}, "answer_logprob": {"context"}}


def _core_call(lift: LIFTModel, entry: str, prompt: Any = PROMPT, **kwargs: Any) -> Any:
    if entry == "generate":
        return lift.generate(prompt, memory=None, **kwargs)
    if entry == "stream":
        return lift.stream(prompt, memory=None, **kwargs).text()
    if entry == "generate_batch":
        context = kwargs.pop("context", None)
        return lift.generate_batch([prompt], memory=None, contexts=[context], **kwargs)
    if entry == "prompt_ids":
        return lift.prompt_ids(prompt, memory=None, **kwargs)
    return lift.answer_logprob(prompt, "An answer.", memory=None, **kwargs)


def _core_generation_cases() -> list[Any]:
    cases = []
    for entry in CORE_ENTRIES:
        for case in GENERATION_CASES:
            kwargs = case.values[0]
            if entry in _PROMPT_ONLY and not set(kwargs) <= _PROMPT_ONLY[entry]:
                continue
            cases.append(pytest.param(entry, *case.values, id=f"{entry}-{case.id}"))
    return cases


@pytest.mark.parametrize(("entry", "kwargs", "error", "message"), _core_generation_cases())
def test_core_generation_arguments_are_checked_before_any_work(
    entry: str, kwargs: dict, error: type, message: str, guarded: LIFTModel
) -> None:
    if entry == "generate_batch" and "context" in kwargs:
        message = message.replace("context", r"contexts\[0\]", 1)
    with pytest.raises(error, match=message):
        _core_call(guarded, entry, **kwargs)


@pytest.mark.parametrize("entry", CORE_ENTRIES)
@pytest.mark.parametrize(("prompt", "error", "message"), PROMPT_CASES)
def test_core_prompts_are_checked_before_any_work(
    entry: str, prompt: Any, error: type, message: str, guarded: LIFTModel
) -> None:
    if entry == "answer_logprob":
        message = message.replace("prompt", "question")
    if entry == "generate_batch":
        message = message.replace("prompt", r"prompts\[0\]", 1)
    with pytest.raises(error, match=message):
        _core_call(guarded, entry, prompt)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompts": "one prompt"}, TypeError, r"prompts must be a list of prompts"),
        ({"prompts": 5}, TypeError, r"prompts must be a list of prompts"),
        ({"batch_size": True}, TypeError, r"batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be an integer >= 1"),
        ({"contexts": "truncated"}, TypeError, r"contexts must be None or a list"),
        ({"contexts": [123]}, TypeError, r"contexts\[0\] must be None, 'truncated' or a list"),
    ],
)
def test_generate_batch_arguments_are_checked_before_any_work(
    kwargs: dict, error: type, message: str, guarded: LIFTModel
) -> None:
    arguments: dict[str, Any] = {"prompts": [PROMPT], "memory": None, **kwargs}
    with pytest.raises(error, match=message):
        guarded.generate_batch(**arguments)


def test_answer_logprob_checks_the_answer(guarded: LIFTModel) -> None:
    with pytest.raises(TypeError, match=r"answer must be a str, got int"):
        guarded.answer_logprob("Who?", 42, memory=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"answer is not valid Unicode"):
        guarded.answer_logprob("Who?", SURROGATE, memory=None)


def test_core_stop_string_is_one_stop_string_not_its_characters(tiny_lift: LIFTModel) -> None:
    full = tiny_lift.generate(PROMPT, memory=None, max_new_tokens=24).text
    stop = _stop_string_after_its_characters(full)
    expected = full[: full.index(stop)]
    assert tiny_lift.generate(PROMPT, memory=None, max_new_tokens=24, stop=stop).text == expected
    assert tiny_lift.stream(PROMPT, memory=None, max_new_tokens=24, stop=stop).text() == expected
    (batched,) = tiny_lift.generate_batch([PROMPT], memory=None, max_new_tokens=24, stop=stop)
    assert batched.text == expected


# Absorption ---------------------------------------------------------------------------------------


def _mutated_config() -> LIFTConfig:
    config = LIFTConfig.fast()
    config.learning_rate = True  # type: ignore[assignment]  # changed after construction
    return config


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"config": "mutated"}, ValueError, r"LIFTConfig.learning_rate must be a positive finite number"),
        ({"callback": 5}, TypeError, r"callback must be callable or None"),
        ({"show_progress": "yes"}, TypeError, r"show_progress must be True, False or None"),
        ({"resume": "no"}, TypeError, r"resume must be True or False"),
    ],
)
def test_core_absorb_arguments_are_checked_before_anything_is_written(
    kwargs: dict, error: type, message: str, guarded: LIFTModel, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    if kwargs.get("config") == "mutated":
        config = _mutated_config()
        config.checkpoint_dir = str(checkpoints)
        kwargs = {**kwargs, "config": config}
    else:
        kwargs = {"config": LIFTConfig.fast(checkpoint_dir=str(checkpoints)), **kwargs}
    with pytest.raises(error, match=message):
        guarded.absorb("Some text to absorb.", **kwargs)
    assert not checkpoints.exists(), "nothing may be written for refused arguments"


# LIFTConfig ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": True}, r"LIFTConfig.learning_rate must be a positive finite number"),
        ({"learning_rate": 10**400}, r"LIFTConfig.learning_rate must be a positive finite number"),
        ({"adam_eps": True}, r"LIFTConfig.adam_eps"),
        ({"max_grad_norm": True}, r"LIFTConfig.max_grad_norm"),
        ({"weight_decay": True}, r"LIFTConfig.weight_decay must be a non-negative finite number"),
        ({"weight_decay": 10**400}, r"LIFTConfig.weight_decay"),
        ({"qa_weight": True}, r"LIFTConfig.qa_weight"),
        ({"replay_weight": True}, r"LIFTConfig.replay_weight"),
        ({"qa_per_1k_tokens": True}, r"LIFTConfig.qa_per_1k_tokens"),
        ({"steps_per_epoch": True}, r"LIFTConfig.steps_per_epoch must be a positive integer or None"),
        ({"micro_batch_tokens": True}, r"LIFTConfig.micro_batch_tokens must be a positive integer or None"),
        ({"qa_passages": True}, r"LIFTConfig.qa_passages must be a positive integer"),
        ({"qa_passage_fraction": True}, r"LIFTConfig.qa_passage_fraction must be a number in \[0, 1\]"),
        ({"adam_betas": 5}, r"LIFTConfig.adam_betas must be two numbers in \[0, 1\)"),
        ({"adam_betas": (False, 0.9)}, r"LIFTConfig.adam_betas must be two numbers in \[0, 1\)"),
        ({"adam_betas": (0.9, "0.98")}, r"LIFTConfig.adam_betas must be two numbers in \[0, 1\)"),
        ({"seed": -1}, r"LIFTConfig.seed must be a non-negative integer"),
        ({"seed": True}, r"LIFTConfig.seed must be a non-negative integer"),
        ({"seed": 1.5}, r"LIFTConfig.seed must be a non-negative integer"),
        ({"recite_prompt": 5}, r"LIFTConfig.recite_prompt must be a str"),
        ({"recite_prompt": SURROGATE}, r"LIFTConfig.recite_prompt is not valid Unicode"),
        ({"extra": [1]}, r"LIFTConfig.extra must be a dict"),
        ({"max_seq_length": 8}, r"LIFTConfig.max_seq_length must be at least 64 tokens"),
        ({"max_seq_length": 63}, r"LIFTConfig.max_seq_length must be at least 64 tokens"),
    ],
)
def test_config_refuses_bools_non_finite_values_and_wrong_types(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LIFTConfig(**overrides)


def test_smallest_max_seq_length_still_absorbs(tiny_lift: LIFTModel) -> None:
    config = LIFTConfig.fast(max_seq_length=64, stage1_epochs=1, stage2_epochs=0)
    memory = tiny_lift.absorb("A short text about the Zorblat Institute.", config=config)
    assert memory.config.max_seq_length == 64


@pytest.mark.parametrize("window", [64, 70, 79])
def test_window_between_64_and_79_is_refused_as_too_small(window: int) -> None:
    message = r"context window \(\d+ tokens\) is too small for LIFT \(needs >= 80\)"
    with pytest.raises(ValueError, match=message):
        LIFTConfig().fit_to_window(window)


# LangChain ----------------------------------------------------------------------------------------

LANGCHAIN_CASES = [
    pytest.param(
        {"temperature": NAN}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-nan"
    ),
    pytest.param(
        {"temperature": INF}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-inf"
    ),
    pytest.param(
        {"temperature": True},
        TypeError,
        r"temperature must be a finite number >= 0 and <= 65504",
        id="t-bool",
    ),
    pytest.param({"top_p": 2.0}, ValueError, r"top_p must be a number in \(0, 1\] or None", id="p-2"),
    pytest.param({"top_p": NAN}, ValueError, r"top_p must be a number in \(0, 1\] or None", id="p-nan"),
    pytest.param({"max_tokens": 2.5}, TypeError, r"max_tokens must be an integer >= 1", id="n-float"),
    pytest.param({"max_tokens": True}, TypeError, r"max_tokens must be an integer >= 1", id="n-bool"),
    pytest.param({"max_tokens": 0}, ValueError, r"max_tokens must be an integer >= 1", id="n-zero"),
    pytest.param({"stop": [1]}, TypeError, r"stop\[0\] must be a str", id="stop-int"),
    pytest.param({"context": 123}, TypeError, r"context must be None, 'truncated' or a list", id="ctx-int"),
]


def _chat(lift: LIFTModel, **fields: Any) -> Any:
    from lift_integrations.langchain import LIFTChatModel

    return LIFTChatModel(lift_model=lift, **{"max_tokens": 8, **fields})


def _lc_call(chat: Any, entry: str, prompt: Any = PROMPT, **kwargs: Any) -> Any:
    if entry == "invoke":
        return chat.invoke(prompt, **kwargs)
    if entry == "stream":
        return list(chat.stream(prompt, **kwargs))
    if entry == "batch":
        return chat.batch([prompt, prompt], **kwargs)
    return asyncio.run(chat.ainvoke(prompt, **kwargs))


@pytest.mark.parametrize("entry", ["invoke", "stream", "batch", "ainvoke"])
@pytest.mark.parametrize(("kwargs", "error", "message"), LANGCHAIN_CASES)
def test_langchain_call_arguments_are_checked_before_any_work(
    entry: str, kwargs: dict, error: type, message: str, guarded: LIFTModel
) -> None:
    with pytest.raises(error, match=message):
        _lc_call(_chat(guarded), entry, **kwargs)


@pytest.mark.parametrize("entry", ["invoke", "stream", "batch"])
def test_langchain_prompt_text_is_checked_before_any_work(entry: str, guarded: LIFTModel) -> None:
    with pytest.raises(ValueError, match=r"prompt message 0 is not valid Unicode"):
        _lc_call(_chat(guarded), entry, SURROGATE)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"temperature": NAN}, ValueError, r"temperature must be a finite number >= 0 and <= 65504"),
        ({"temperature": INF}, ValueError, r"temperature must be a finite number >= 0 and <= 65504"),
        ({"temperature": True}, TypeError, r"temperature must be a finite number >= 0 and <= 65504"),
        ({"top_p": 2.0}, ValueError, r"top_p must be a number in \(0, 1\] or None"),
        ({"top_p": NAN}, ValueError, r"top_p must be a number in \(0, 1\] or None"),
        ({"max_tokens": True}, TypeError, r"max_tokens must be an integer >= 1"),
        ({"stop": [SURROGATE]}, ValueError, r"stop\[0\] is not valid Unicode"),
    ],
)
def test_langchain_constructor_fields_are_checked(
    fields: dict, error: type, message: str, tiny_lift: LIFTModel
) -> None:
    with pytest.raises(error, match=message):
        _chat(tiny_lift, **fields)


def test_langchain_stop_string_is_one_stop_string(tiny_lift: LIFTModel) -> None:
    chat = _chat(tiny_lift, max_tokens=24)
    full = str(chat.invoke(PROMPT).content)
    stop = _stop_string_after_its_characters(full)
    expected = full[: full.index(stop)]
    assert chat.invoke(PROMPT, stop=stop).content == expected
    assert "".join(str(chunk.content) for chunk in chat.stream(PROMPT, stop=stop)) == expected
    field = _chat(tiny_lift, max_tokens=24, stop=stop)
    assert field.stop == [stop]
    assert field.invoke(PROMPT).content == expected


class _CustomEvents:
    """A LangChain callback handler recording custom event names."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        names: list[str] = []

        class Recorder(BaseCallbackHandler):
            def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
                names.append(name)

        self.handler = Recorder()
        self.names = names


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"config": "LIFTConfig"}, TypeError, r"config= is LangChain's RunnableConfig.*lift_config="),
        ({"config": 5}, TypeError, r"config must be a RunnableConfig \(a dict\) or None"),
        ({"lift_config": {"learning_rate": 1e-3}}, TypeError, r"lift_config must be a LIFTConfig or None"),
        ({"learning_rate": True}, ValueError, r"LIFTConfig.learning_rate must be a positive finite number"),
        ({"max_seq_length": 8}, ValueError, r"LIFTConfig.max_seq_length must be at least 64"),
        ({"no_such_field": 1}, TypeError, r"unknown LIFTConfig fields: \['no_such_field'\]"),
        ({"extend": "yes"}, TypeError, r"extend must be True or False"),
        ({"show_progress": "yes"}, TypeError, r"show_progress must be True, False or None"),
    ],
)
@pytest.mark.parametrize("entry", ["absorb", "aabsorb"])
def test_langchain_absorb_arguments_are_checked_before_any_work(
    entry: str, kwargs: dict, error: type, message: str, guarded: LIFTModel, tmp_path: Path
) -> None:
    if kwargs.get("config") == "LIFTConfig":
        kwargs = {"config": LIFTConfig.fast()}
    events = _CustomEvents()
    chat = _chat(guarded)
    checkpoints = tmp_path / "checkpoints"
    if "lift_config" not in kwargs and not isinstance(kwargs.get("config"), LIFTConfig):
        kwargs = {"checkpoint_dir": str(checkpoints), **kwargs}
    with pytest.raises(error, match=message):
        if entry == "absorb":
            chat.absorb("Some text to absorb.", callbacks=[events.handler], **kwargs)
        else:
            asyncio.run(chat.aabsorb("Some text to absorb.", callbacks=[events.handler], **kwargs))
    assert events.names == [], "no absorb event for refused arguments"
    assert chat.memory is None
    assert not checkpoints.exists()


def _retriever(**fields: Any) -> Any:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from lift_integrations.langchain import LIFTMemoryRetriever

    return LIFTMemoryRetriever(embeddings=DeterministicFakeEmbedding(size=8), **fields)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"k": True}, TypeError, r"k must be an integer >= 0"),
        ({"chunk_size": True, "chunk_overlap": 0}, TypeError, r"chunk_size must be an integer >= 1"),
        ({"chunk_overlap": True}, TypeError, r"chunk_overlap must be an integer >= 0"),
    ],
)
def test_langchain_retriever_fields_are_checked(fields: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _retriever(**fields)


@pytest.mark.parametrize(
    ("k", "error", "message"),
    [
        (-1, ValueError, r"k must be an integer >= 0"),
        (2.5, TypeError, r"k must be an integer >= 0"),
        (True, TypeError, r"k must be an integer >= 0"),
    ],
)
@pytest.mark.parametrize("entry", ["invoke", "ainvoke"])
def test_langchain_retriever_k_is_checked(entry: str, k: Any, error: type, message: str) -> None:
    retriever = _retriever(documents=["A fact about Quendria."])
    with pytest.raises(error, match=message):
        if entry == "invoke":
            retriever.invoke("Quendria", k=k)
        else:
            asyncio.run(retriever.ainvoke("Quendria", k=k))


# LlamaIndex ---------------------------------------------------------------------------------------

LLAMA_CASES = [
    pytest.param(
        {"temperature": NAN}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-nan"
    ),
    pytest.param(
        {"temperature": INF}, ValueError, r"temperature must be a finite number >= 0 and <= 65504", id="t-inf"
    ),
    pytest.param(
        {"temperature": True},
        TypeError,
        r"temperature must be a finite number >= 0 and <= 65504",
        id="t-bool",
    ),
    pytest.param({"max_tokens": 2.5}, TypeError, r"max_tokens must be an integer >= 1", id="n-float"),
    pytest.param({"max_new_tokens": 2.5}, TypeError, r"max_new_tokens must be an integer >= 1", id="n-fl2"),
    pytest.param({"max_new_tokens": 0}, ValueError, r"max_new_tokens must be an integer >= 1", id="n-zero"),
    pytest.param({"max_new_tokens": True}, TypeError, r"max_new_tokens must be an integer >= 1", id="n-bool"),
    pytest.param({"stop": [1]}, TypeError, r"stop\[0\] must be a str", id="stop-int"),
    pytest.param({"context": 123}, TypeError, r"context must be None, 'truncated' or a list", id="ctx-int"),
]
LLAMA_ENTRIES = ("complete", "chat", "stream_complete", "stream_chat", "acomplete", "astream_chat")


def _llm(lift: LIFTModel, **fields: Any) -> Any:
    from lift_integrations.llama_index import LIFTLLM

    return LIFTLLM(lift, **{"max_new_tokens": 8, **fields})


def _li_call(llm: Any, entry: str, prompt: str = PROMPT, **kwargs: Any) -> Any:
    from llama_index.core.base.llms.types import ChatMessage

    messages = [ChatMessage(role="user", content=prompt)]
    if entry == "complete":
        return llm.complete(prompt, **kwargs).text
    if entry == "chat":
        return llm.chat(messages, **kwargs).message.content
    if entry == "stream_complete":
        return [r.delta for r in llm.stream_complete(prompt, **kwargs)]
    if entry == "stream_chat":
        return [r.delta for r in llm.stream_chat(messages, **kwargs)]

    async def run() -> Any:
        if entry == "acomplete":
            return (await llm.acomplete(prompt, **kwargs)).text
        return [r.delta async for r in await llm.astream_chat(messages, **kwargs)]

    return asyncio.run(run())


@pytest.mark.parametrize("entry", LLAMA_ENTRIES)
@pytest.mark.parametrize(("kwargs", "error", "message"), LLAMA_CASES)
def test_llamaindex_call_arguments_are_checked_before_any_work(
    entry: str, kwargs: dict, error: type, message: str, guarded: LIFTModel
) -> None:
    with pytest.raises(error, match=message):
        _li_call(_llm(guarded), entry, **kwargs)


@pytest.mark.parametrize("entry", LLAMA_ENTRIES)
def test_llamaindex_prompt_text_is_checked_before_any_work(entry: str, guarded: LIFTModel) -> None:
    with pytest.raises(ValueError, match=r"not valid Unicode"):
        _li_call(_llm(guarded), entry, SURROGATE)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"temperature": INF}, ValueError, r"temperature must be a finite number >= 0 and <= 65504"),
        ({"temperature": True}, TypeError, r"temperature must be a finite number >= 0 and <= 65504"),
        ({"max_new_tokens": True}, TypeError, r"max_new_tokens must be an integer >= 1"),
        ({"stop": [SURROGATE]}, ValueError, r"stop\[0\] is not valid Unicode"),
        ({"memory": 42}, TypeError, r"memory must be a Memory, a folder path, a hub id or None"),
    ],
)
def test_llamaindex_constructor_fields_are_checked(
    fields: dict, error: type, message: str, tiny_lift: LIFTModel
) -> None:
    with pytest.raises(error, match=message):
        _llm(tiny_lift, **fields)


def test_llamaindex_stop_string_is_one_stop_string(tiny_lift: LIFTModel) -> None:
    llm = _llm(tiny_lift, max_new_tokens=24)
    full = llm.complete(PROMPT).text
    stop = _stop_string_after_its_characters(full)
    expected = full[: full.index(stop)]
    assert llm.complete(PROMPT, stop=stop).text == expected
    assert "".join(r.delta or "" for r in llm.stream_complete(PROMPT, stop=stop)) == expected
    field = _llm(tiny_lift, max_new_tokens=24, stop=stop)
    assert field.stop == [stop]
    assert field.complete(PROMPT).text == expected


class _LlamaEvents:
    """Records the names of LlamaIndex instrumentation events while registered."""

    def __init__(self) -> None:
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.instrumentation.event_handlers import BaseEventHandler

        names: list[str] = []

        class Recorder(BaseEventHandler):
            @classmethod
            def class_name(cls) -> str:
                return "ArgumentTestRecorder"

            def handle(self, event: Any, **kwargs: Any) -> None:
                names.append(event.class_name())

        self.names = names
        self._handler = Recorder()
        self._root = get_dispatcher()

    def __enter__(self) -> _LlamaEvents:
        self._root.add_event_handler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self._root.event_handlers.remove(self._handler)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"config": {"learning_rate": 1e-3}}, TypeError, r"config must be a LIFTConfig or None"),
        ({"config": "mutated"}, ValueError, r"LIFTConfig.learning_rate must be a positive finite number"),
        ({"show_progress": "yes"}, TypeError, r"show_progress must be True, False or None"),
        ({"append": "no"}, TypeError, r"append must be True or False"),
    ],
)
def test_llamaindex_absorb_arguments_are_checked_before_any_event(
    kwargs: dict, error: type, message: str, guarded: LIFTModel
) -> None:
    if kwargs.get("config") == "mutated":
        kwargs = {"config": _mutated_config()}
    llm = _llm(guarded)
    with _LlamaEvents() as events, pytest.raises(error, match=message):
        llm.absorb(["Some text to absorb."], **kwargs)
    assert "LIFTAbsorbStartEvent" not in events.names
    assert llm.memory is None


def test_llamaindex_absorb_memory_checks_into(guarded: LIFTModel) -> None:
    with (
        _LlamaEvents() as events,
        pytest.raises(TypeError, match=r"a Memory, a folder path, a hub id or None"),
    ):
        _llm(guarded).absorb_memory(["Some text."], into=42)
    with _LlamaEvents() as events, pytest.raises(FileNotFoundError, match="no memory at"):
        _llm(guarded).absorb_memory(["Some text."], into="no-such-memory-folder")
    assert "LIFTAbsorbStartEvent" not in events.names


@pytest.fixture
def no_index_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a vector index, an embedding model or a memory fails the test."""
    from lift_integrations.llama_index import index as index_module
    from lift_integrations.llama_index.llm import LIFTLLM

    monkeypatch.setattr(index_module, "LIFTSentenceTransformerEmbedding", _work_started)
    monkeypatch.setattr(index_module.VectorStoreIndex, "from_documents", _work_started)
    monkeypatch.setattr(LIFTLLM, "absorb", _work_started)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("Some text.",), {}, TypeError, r"documents must be a list of LlamaIndex Documents"),
        ((["Some text."],), {}, TypeError, r"documents\[0\] must be a LlamaIndex Document"),
        ((), {"chunk_size": True}, TypeError, r"chunk_size must be an integer >= 1"),
        ((), {"chunk_overlap": -1}, ValueError, r"chunk_overlap must be an integer >= 0"),
        ((), {"config": {"learning_rate": 1e-3}}, TypeError, r"config must be a LIFTConfig or None"),
        ((), {"show_progress": "yes"}, TypeError, r"show_progress must be True, False or None"),
        ((), {"embed_model": "minilm"}, TypeError, r"embed_model must be a LlamaIndex BaseEmbedding or None"),
    ],
)
def test_llamaindex_index_from_documents_checks_before_any_work(
    args: tuple, kwargs: dict, error: type, message: str, tiny_lift: LIFTModel, no_index_work: None
) -> None:
    from llama_index.core import Document

    from lift_integrations.llama_index import LIFTIndex

    documents = args[0] if args else [Document(text="Some text.")]
    with pytest.raises(error, match=message):
        LIFTIndex.from_documents(documents, _llm(tiny_lift), **kwargs)


def test_llamaindex_index_constructor_insert_and_retriever_check_their_arguments(
    tiny_lift: LIFTModel, no_index_work: None
) -> None:
    from lift_integrations.llama_index import LIFTIndex, LIFTRetriever

    llm = _llm(tiny_lift)
    with pytest.raises(TypeError, match=r"config must be a LIFTConfig or None"):
        LIFTIndex(llm, mode="parametric", config={"learning_rate": 1e-3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"vector_index must be a VectorStoreIndex or None"):
        LIFTIndex(llm, mode="hybrid", vector_index="index")  # type: ignore[arg-type]
    index = LIFTIndex(llm, mode="parametric")
    with pytest.raises(TypeError, match=r"document must be a LlamaIndex Document"):
        index.insert("Some text.")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"similarity_top_k must be an integer >= 1"):
        LIFTRetriever(index, similarity_top_k=True)
    with pytest.raises(TypeError, match=r"similarity_top_k must be an integer >= 1"):
        index.as_retriever(similarity_top_k=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"index must be a LIFTIndex"):
        LIFTRetriever("index")  # type: ignore[arg-type]


# CLI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config-json", '{"learning_rate": true}'], "LIFTConfig.learning_rate must be a positive finite"),
        (["--config-json", '{"steps_per_epoch": true}'], "LIFTConfig.steps_per_epoch must be a positive"),
        (["--config-json", '{"max_seq_length": 8}'], "LIFTConfig.max_seq_length must be at least 64"),
        (["--config-json", '{"adam_betas": 5}'], "LIFTConfig.adam_betas must be two numbers"),
        (["--config-json", '{"seed": -1}'], "LIFTConfig.seed must be a non-negative integer"),
        (["--dtype", "float33"], "--dtype: unknown dtype 'float33'"),
    ],
)
def test_cli_arguments_are_checked_before_the_model_loads(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "doc.txt"
    text.write_text("Some text to absorb.", encoding="utf-8")
    output = tmp_path / "out"
    argv = ["--model", str(tmp_path / "no-such-model"), "--output", str(output), *extra, str(text)]
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()
