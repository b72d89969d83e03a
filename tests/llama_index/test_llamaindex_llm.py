"""Parity suite for ``LIFTLLM``, mirroring what langchain-tests checks for a chat model.

LlamaIndex ships no conformance suite, so this covers what its own machinery relies on: all eight
endpoints (sync, async, streaming), metadata, instrumentation events, token counting, prompt paths, and
the memory lifecycle (absorb, save, load, clear).
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.prompts import PromptTemplate

from lift_integrations import registry
from lift_integrations.llama_index import LIFTLLM

PROMPT = "Tell me about the sea."


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def check_usage(raw: Any, max_new_tokens: int) -> dict[str, int]:
    json.dumps(raw)  # raw must stay serialisable (no tensors)
    usage = raw["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] >= 1 and usage["completion_tokens"] <= max_new_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def check_stream(responses: list[Any], final_text: str, content: Any = lambda r: r.text) -> None:
    """Cumulative text, non-empty deltas that add up to it, usage only on the last response."""
    assert responses, "the stream produced nothing"
    built = ""
    for response in responses:
        assert response.delta, "every streamed response carries a non-empty delta"
        built += response.delta
        assert content(response) == built
    assert built == final_text
    assert all(r.raw is None for r in responses[:-1])
    check_usage(responses[-1].raw, 8)


# Construction, metadata, laziness ------------------------------------------------------------------


def test_import_pulls_neither_torch_nor_langchain() -> None:
    code = (
        "import sys\n"
        "from lift_integrations.llama_index import LIFTLLM, LIFTIndex, LIFTRetriever, LIFTQueryEngine\n"
        "LIFTLLM(max_new_tokens=4)\n"
        "heavy = ('torch', 'transformers', 'langchain_core', 'sentence_transformers')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_llama_index_gives_an_install_hint() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index.core'] = None  # as if llama-index-core were not installed\n"
        "try:\n"
        "    import lift_integrations.llama_index\n"
        "except ImportError as error:\n"
        "    assert \"pip install 'lift-integrations[llamaindex]'\" in str(error), error\n"
        "else:\n"
        "    raise SystemExit('imported without llama-index-core')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_is_a_custom_llm_with_its_own_class_name(llm: LIFTLLM) -> None:
    assert isinstance(llm, CustomLLM)
    assert LIFTLLM.class_name() == "LIFTLLM"
    assert llm.to_dict()["class_name"] == "LIFTLLM"
    assert "LIFTLLM(" in repr(llm) and "max_new_tokens=8" in repr(llm)


def test_metadata_reports_the_real_window(llm: LIFTLLM, tiny_smollm: Any) -> None:
    meta = llm.metadata
    assert meta.context_window == tiny_smollm.context_window == 2048
    assert meta.num_output == 8
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is True  # tool calls by constrained decoding
    assert meta.model_name == "tiny"


def test_weights_load_lazily_and_are_shared(tiny_smollm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lift_integrations.model import LIFTModel

    loads: list[Any] = []

    def fake_from_pretrained(name: Any, **kwargs: Any) -> Any:
        loads.append(name)
        return tiny_smollm

    monkeypatch.setattr(LIFTModel, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setattr(registry, "_CACHE", {})
    first, second = LIFTLLM("some/model"), LIFTLLM("some/model")
    assert loads == []  # constructing never loads
    assert first.lift_model is second.lift_model is tiny_smollm
    assert loads == ["some/model"]  # loaded once, then shared
    monkeypatch.undo()

    monkeypatch.setitem(registry._CACHE, ("cached/model", None, None), tiny_smollm)
    assert LIFTLLM("cached/model").lift_model is LIFTLLM("cached/model").lift_model is tiny_smollm


def test_rejects_a_model_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="LIFTModel"):
        LIFTLLM(object())  # type: ignore[arg-type]


# The eight endpoints ------------------------------------------------------------------------------


def test_complete(llm: LIFTLLM) -> None:
    response = llm.complete(PROMPT)
    assert isinstance(response, CompletionResponse)
    assert response.text
    check_usage(response.raw, 8)
    assert response.raw["model"] == "tiny"


def test_chat_applies_the_chat_template_through_the_core(llm: LIFTLLM, tiny_smollm: Any) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You are terse."),
        ChatMessage(role=MessageRole.USER, content=PROMPT),
    ]
    response = llm.chat(messages)
    assert isinstance(response, ChatResponse)
    assert response.message.role == MessageRole.ASSISTANT
    expected = tiny_smollm.generate(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}],
        memory=None,
        max_new_tokens=8,
    )
    assert response.message.content == expected.text
    assert response.raw["usage"]["prompt_tokens"] == expected.input_tokens
    check_usage(response.raw, 8)


def test_complete_and_chat_agree_on_one_user_turn(llm: LIFTLLM) -> None:
    assert llm.complete(PROMPT).text == llm.chat(user(PROMPT)).message.content


def test_completion_to_prompt_set_to_none_is_the_default(llm: LIFTLLM) -> None:
    # The field is Optional and assignment is not validated: None must mean "unchanged", as at construction.
    llm.completion_to_prompt = None
    assert llm.complete(PROMPT).text == llm.chat(user(PROMPT)).message.content


def test_stream_complete(llm: LIFTLLM) -> None:
    responses = list(llm.stream_complete(PROMPT))
    check_stream(responses, llm.complete(PROMPT).text)


def test_stream_chat(llm: LIFTLLM) -> None:
    responses = list(llm.stream_chat(user(PROMPT)))
    check_stream(responses, llm.chat(user(PROMPT)).message.content, content=lambda r: r.message.content)


async def test_acomplete(llm: LIFTLLM) -> None:
    response = await llm.acomplete(PROMPT)
    assert response.text == llm.complete(PROMPT).text
    check_usage(response.raw, 8)


async def test_achat(llm: LIFTLLM) -> None:
    response = await llm.achat(user(PROMPT))
    assert response.message.content == llm.chat(user(PROMPT)).message.content
    check_usage(response.raw, 8)


async def test_astream_complete(llm: LIFTLLM) -> None:
    responses = [r async for r in await llm.astream_complete(PROMPT)]
    check_stream(responses, llm.complete(PROMPT).text)


async def test_astream_chat(llm: LIFTLLM) -> None:
    responses = [r async for r in await llm.astream_chat(user(PROMPT))]
    check_stream(responses, llm.chat(user(PROMPT)).message.content, content=lambda r: r.message.content)


async def _ticks_while(awaitable: Any) -> tuple[Any, int]:
    """Run ``awaitable`` as a task and count event-loop turns until it finishes. A blocking endpoint
    finishes within the first turn; one that runs in a worker thread leaves the loop turning."""
    task = asyncio.ensure_future(awaitable)
    ticks = 0
    while not task.done():
        await asyncio.sleep(0)
        ticks += 1
    return task.result(), ticks


async def test_async_endpoints_do_not_block_the_event_loop(llm: LIFTLLM) -> None:
    _, ticks = await _ticks_while(llm.acomplete(PROMPT, max_new_tokens=16))
    assert ticks > 10
    _, ticks = await _ticks_while(llm.achat(user(PROMPT), max_new_tokens=16))
    assert ticks > 10

    async def drain() -> str:
        return "".join([r.delta async for r in await llm.astream_chat(user(PROMPT), max_new_tokens=16)])

    text, ticks = await _ticks_while(drain())
    assert text and ticks > 10


# Options and prompt paths --------------------------------------------------------------------------


def test_per_call_options(llm: LIFTLLM) -> None:
    assert llm.complete(PROMPT, max_new_tokens=2).raw["usage"]["completion_tokens"] <= 2
    assert llm.chat(user(PROMPT), max_tokens=3).raw["usage"]["completion_tokens"] <= 3
    full = llm.complete(PROMPT, max_new_tokens=8).text
    assert len(full) > 2
    stop = full[len(full) // 2 :]
    assert llm.complete(PROMPT, stop=[stop]).text == full[: full.index(stop)]


def test_system_prompt_applies_to_complete(tiny_smollm: Any) -> None:
    with_system = LIFTLLM(tiny_smollm, max_new_tokens=8, system_prompt="You are terse.")
    messages = [ChatMessage(role=MessageRole.SYSTEM, content="You are terse."), *user(PROMPT)]
    assert with_system.complete(PROMPT).text == with_system.chat(messages).message.content


def test_messages_to_prompt_is_the_chat_template_and_round_trips(llm: LIFTLLM) -> None:
    messages = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), *user(PROMPT)]
    rendered = llm.messages_to_prompt(messages)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert rendered.endswith("<|im_start|>assistant\n")
    # CustomLLM's and LlamaIndex's completion path: the rendered prompt comes back with formatted=True
    # and must not be wrapped in the template a second time.
    assert llm.complete(rendered, formatted=True).text == llm.chat(messages).message.content


def test_predict_and_stream_use_the_chat_path(llm: LIFTLLM, events: Any) -> None:
    template = PromptTemplate("Tell me about {topic}.")
    answer = llm.predict(template, topic="the sea")
    assert answer == llm.chat(user("Tell me about the sea.")).message.content
    assert "".join(llm.stream(template, topic="the sea")) == answer
    assert "LLMChatStartEvent" in events.names()


def test_tool_messages_are_user_turns(llm: LIFTLLM) -> None:
    """A tool result (no tool role in small models' templates) reaches the model as a user turn."""
    result = ChatMessage(role=MessageRole.TOOL, content="42")
    from lift_integrations.structured import render_tool_result

    assert llm.chat([result]).message.content == llm.chat(user(render_tool_result("42"))).message.content


# Instrumentation and token counting ---------------------------------------------------------------


def test_completion_events(llm: LIFTLLM, events: Any) -> None:
    llm.complete(PROMPT)
    list(llm.stream_complete(PROMPT))
    assert len(events.of("LLMCompletionStartEvent")) == 2
    assert len(events.of("LLMCompletionEndEvent")) == 2
    assert events.of("LLMCompletionInProgressEvent")
    end = events.of("LLMCompletionEndEvent")[-1]
    assert end.response.raw["usage"]["completion_tokens"] > 0


def test_chat_events(llm: LIFTLLM, events: Any) -> None:
    llm.chat(user(PROMPT))
    list(llm.stream_chat(user(PROMPT)))
    assert len(events.of("LLMChatStartEvent")) == 2
    assert len(events.of("LLMChatEndEvent")) == 2
    assert events.of("LLMChatInProgressEvent")


async def test_async_events(llm: LIFTLLM, events: Any) -> None:
    await llm.acomplete(PROMPT)
    await llm.achat(user(PROMPT))
    [r async for r in await llm.astream_complete(PROMPT)]
    [r async for r in await llm.astream_chat(user(PROMPT))]
    assert len(events.of("LLMCompletionEndEvent")) == 2
    assert len(events.of("LLMChatEndEvent")) == 2


async def test_token_counting_handler_counts_every_endpoint(llm: LIFTLLM) -> None:
    counter = TokenCountingHandler()
    llm.callback_manager = CallbackManager([counter])
    usages = [
        llm.complete(PROMPT).raw["usage"],
        llm.chat(user(PROMPT)).raw["usage"],
        list(llm.stream_complete(PROMPT))[-1].raw["usage"],
        list(llm.stream_chat(user(PROMPT)))[-1].raw["usage"],
        (await llm.acomplete(PROMPT)).raw["usage"],
        (await llm.achat(user(PROMPT))).raw["usage"],
        [r async for r in await llm.astream_complete(PROMPT)][-1].raw["usage"],
        [r async for r in await llm.astream_chat(user(PROMPT))][-1].raw["usage"],
    ]
    assert len(counter.llm_token_counts) == 8
    assert counter.prompt_llm_token_count == sum(u["prompt_tokens"] for u in usages) > 0
    assert counter.completion_llm_token_count == sum(u["completion_tokens"] for u in usages) > 0


# Memory lifecycle ---------------------------------------------------------------------------------


def test_absorbing_made_up_facts_raises_the_gold_answers_probability(
    llm: LIFTLLM, tiny_smollm: Any, facts: Any, absorb_config: Any
) -> None:
    def gain(answer: str, memory: Any) -> float:
        return tiny_smollm.answer_logprob(facts.question, answer, memory=memory) - tiny_smollm.answer_logprob(
            facts.question, answer, memory=None
        )

    memory = llm.absorb(facts.zorbia, config=absorb_config)
    gold_gain = gain(facts.gold, memory)
    assert math.isfinite(gold_gain)
    assert gold_gain > 3.0
    # Learnt from the document, not a general drift: an answer the document never mentions gains less.
    assert gold_gain > gain("Berlin", memory) + 1.0


def test_memory_lifecycle(
    llm: LIFTLLM, tiny_smollm: Any, facts: Any, absorb_config: Any, tmp_path: Any
) -> None:
    base_answer = llm.complete(PROMPT).text
    assert llm.memory is None
    with pytest.raises(ValueError, match="no memory"):
        llm.save_memory(tmp_path / "none")

    first = llm.absorb([("Zorbia", facts.zorbia)], config=absorb_config)
    assert llm.memory is first and first.titles == ["Zorbia"]
    remembered = llm.complete(PROMPT)
    assert remembered.raw["memory_id"] == first.id

    second = llm.absorb([("Velmora", facts.velmora)], config=absorb_config)  # append=True continues
    assert second.titles == ["Zorbia", "Velmora"] and second.id != first.id
    fresh = llm.absorb(facts.velmora, config=absorb_config, append=False)
    assert fresh.titles == [""]

    llm.load_memory(first)
    folder = llm.save_memory(tmp_path / "memory")
    restored = LIFTLLM(tiny_smollm, max_new_tokens=8, memory=folder)
    assert restored.memory is not None and restored.memory.id == first.id
    assert restored.complete(PROMPT).text == remembered.text
    assert LIFTLLM(tiny_smollm).load_memory(folder).id == first.id

    llm.clear_memory()
    assert llm.memory is None
    assert llm.complete(PROMPT).text == base_answer


def test_instances_sharing_weights_keep_their_own_memory(
    llm: LIFTLLM, tiny_smollm: Any, facts: Any, absorb_config: Any
) -> None:
    base = LIFTLLM(tiny_smollm, max_new_tokens=8)
    llm.absorb(facts.zorbia, config=absorb_config)
    assert base.memory is None
    assert base.complete(PROMPT).text == tiny_smollm.generate(PROMPT, memory=None, max_new_tokens=8).text
    assert llm.complete(PROMPT).raw["memory_id"] == llm.memory.id


def test_absorb_emits_progress_events(llm: LIFTLLM, events: Any, facts: Any, absorb_config: Any) -> None:
    memory = llm.absorb([("Zorbia", facts.zorbia)], config=absorb_config)
    start = events.of("LIFTAbsorbStartEvent")
    progress = events.of("LIFTAbsorbProgressEvent")
    end = events.of("LIFTAbsorbEndEvent")
    assert len(start) == len(end) == 1
    assert start[0].titles == ["Zorbia"] and start[0].model_name == "tiny" and start[0].base_memory_id is None
    assert len(progress) == memory.stats["steps"] > 0
    assert [p.step for p in progress] == list(range(1, len(progress) + 1))
    assert progress[-1].total_steps == len(progress)
    assert end[0].memory_id == memory.id and end[0].steps == len(progress)
    # All delivered inside the absorb span, in order.
    assert {e.span_id for e in [*start, *progress, *end]} == {start[0].span_id}
    assert start[0].span_id.startswith("LIFTLLM.absorb_memory")
    names = events.names()
    assert names.index("LIFTAbsorbStartEvent") < names.index("LIFTAbsorbProgressEvent")
    assert names.index("LIFTAbsorbEndEvent") == len(names) - 1


def test_absorb_rejects_empty_documents_before_any_event(llm: LIFTLLM, events: Any) -> None:
    with pytest.raises(ValueError, match="empty"):
        llm.absorb(["  "])
    assert "LIFTAbsorbStartEvent" not in events.names()


def test_route_memory_answers_unrelated_prompts_with_the_base_model(
    tiny_smollm: Any, facts: Any, absorb_config: Any
) -> None:
    """``route_memory`` (on by default): a prompt about the absorbed text is answered with the memory, an
    unrelated one exactly as the base model answers it, in complete, chat and streaming; a follow-up stays
    with the memory; ``raw`` says which answered. ``route_memory=False`` always attaches the memory."""
    from llama_index.core.embeddings import BaseEmbedding
    from tiny_models import bag_of_words

    class BagOfWords(BaseEmbedding):
        def _get_text_embedding(self, text: str) -> list[float]:
            return bag_of_words([text])[0].tolist()

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

    always = LIFTLLM(tiny_smollm, max_new_tokens=8, route_memory=False)
    memory = always.absorb(facts.zorbia, config=absorb_config)
    routed = LIFTLLM(tiny_smollm, max_new_tokens=8, memory=memory, router_embed_model=BagOfWords())
    assert routed.route_memory is True
    base = LIFTLLM(tiny_smollm, max_new_tokens=8)
    unrelated = "How many legs does a spider have?"
    about = routed.complete(facts.question)
    assert about.raw["memory_id"] == memory.id and about.text == always.complete(facts.question).text
    away = routed.complete(unrelated)
    assert away.raw["memory_id"] is None and away.text == base.complete(unrelated).text
    chat = routed.chat([ChatMessage(role=MessageRole.USER, content=unrelated)])
    assert chat.raw["memory_id"] is None and chat.message.content == base.complete(unrelated).text
    streamed = list(routed.stream_complete(facts.question))
    assert streamed[-1].raw["memory_id"] == memory.id and streamed[-1].text == about.text
    # A follow-up goes where the question it leans on went; a question that stands alone, by itself.
    turns = [
        ChatMessage(role=MessageRole.USER, content=facts.question),
        ChatMessage(role="assistant", content="?"),
    ]
    follow_up = ChatMessage(role=MessageRole.USER, content="What is its population?")
    assert routed.chat([follow_up]).raw["memory_id"] is None
    assert routed.chat([*turns, follow_up]).raw["memory_id"] == memory.id
    away = routed.chat([*turns, ChatMessage(role=MessageRole.USER, content=unrelated)])
    assert away.raw["memory_id"] is None
    with pytest.raises(TypeError, match="router_embed_model"):
        LIFTLLM(tiny_smollm, route_memory=True, router_embed_model="MiniLM")
