"""The server's routes in-process (the FastAPI app over ASGI, no socket): the answers are the core's,
concurrent requests share batches, and refusals are OpenAI error bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from server_helpers import QUESTION, Saved, reference_model

from lift_integrations import LIFTModel, Memory
from lift_integrations.server.app import create_app
from lift_integrations.server.catalog import ServedModels
from lift_integrations.server.engine import ChatEngine

QUESTIONS = [QUESTION, "Who was the first director?", "Tell me about the fox."]


@pytest.fixture(scope="module")
def lift(saved: Saved) -> LIFTModel:
    return reference_model(saved)


@pytest.fixture(scope="module")
def memories(saved: Saved) -> dict[str, Memory]:
    return {name: Memory.load(path) for name, path in saved.memories.items()}


@pytest.fixture
async def engine(lift: LIFTModel, memories: dict[str, Memory]) -> AsyncIterator[ChatEngine]:
    engine = ChatEngine(lift, ServedModels("model", memories), default_max_tokens=8)
    yield engine
    engine.close()


@pytest.fixture
async def http(engine: ChatEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://lift.test/v1") as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://lift.test/v1", api_key="unused", http_client=http)


def expected(lift: LIFTModel, memories: dict[str, Memory], model: str, question: str) -> Any:
    return lift.generate(question, memory=memories.get(model), max_new_tokens=8)


async def test_each_model_answers_with_its_memory(
    client: openai.AsyncOpenAI, lift: LIFTModel, memories: dict[str, Memory]
) -> None:
    assert [model.id async for model in client.models.list()] == ["model", "alpha", "beta"]
    answers = {}
    for model in ("model", "alpha", "beta"):
        response = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
        )
        reference = expected(lift, memories, model, QUESTION)
        choice = response.choices[0]
        assert choice.message.content == reference.text and choice.message.role == "assistant"
        assert choice.finish_reason == reference.finish_reason
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
            reference.input_tokens,
            reference.output_tokens,
        )
        assert response.model == model and response.id.startswith("chatcmpl-")
        memory = memories.get(model)
        assert (response.model_extra or {})["lift"]["memory_id"] == (memory.id if memory else None)
        answers[model] = choice.message.content
    assert len(set(answers.values())) == 3  # the memories change the answers, each differently


async def test_concurrent_requests_share_batches_and_keep_their_memories(
    client: openai.AsyncOpenAI, engine: ChatEngine, lift: LIFTModel, memories: dict[str, Memory]
) -> None:
    assert engine.batcher is not None
    engine.batcher.window_s = 0.3  # long enough for all requests to join, on a loaded machine too
    before = engine.batcher.batches_run
    jobs = [(model, question) for model in ("model", "alpha", "beta") for question in QUESTIONS[:2]]
    responses = await asyncio.gather(
        *[
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], max_tokens=8
            )
            for model, question in jobs
        ]
    )
    engine.batcher.window_s = 0.005
    for (model, question), response in zip(jobs, responses, strict=True):
        assert response.choices[0].message.content == expected(lift, memories, model, question).text
    assert engine.batcher.batches_run - before < len(jobs)


async def test_streaming_events(
    http: httpx.AsyncClient, lift: LIFTModel, memories: dict[str, Memory]
) -> None:
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await http.post("/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reference = expected(lift, memories, "alpha", QUESTION)
    assert text == reference.text
    assert chunks[-2]["choices"][0]["finish_reason"] == reference.finish_reason
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == reference.output_tokens


async def test_errors_are_openai_error_bodies(http: httpx.AsyncClient, client: openai.AsyncOpenAI) -> None:
    user = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gamma", messages=user)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found" and "'gamma'" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gamma")
    assert (await client.models.retrieve("beta")).id == "beta"
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.chat.completions.create(model="alpha", messages=user, max_tokens=5000)  # type: ignore[arg-type]
    assert "max_tokens" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as two:
        await client.chat.completions.create(model="alpha", messages=user, n=2)  # type: ignore[arg-type]
    assert two.value.param == "n"
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError, match="tokens"):
        await client.chat.completions.create(model="alpha", messages=long_prompt, max_tokens=8)  # type: ignore[arg-type]
    response = await http.post("/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FOUNDER = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["name", "year"],
}


async def test_tool_calls(client: openai.AsyncOpenAI, lift: LIFTModel, memories: dict[str, Memory]) -> None:
    from lift_integrations.server.protocol import core_messages
    from lift_integrations.structured import prepare_tools

    user: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    response = await client.chat.completions.create(
        model="alpha", messages=user, tools=[WEATHER], tool_choice="required", max_tokens=128
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    # The core's constrained decoding, called directly, makes the same call.
    prepared = prepare_tools(user, [WEATHER], "required")
    reference = lift.generate(
        prepared.messages, grammar=prepared.grammar, memory=memories["alpha"], max_new_tokens=128
    )
    assert [(c.name, c.arguments) for c in prepared.parse(reference.text)[1]] == [("get_weather", arguments)]

    stream = await client.chat.completions.create(
        model="alpha", messages=user, tools=[WEATHER], tool_choice="get_weather", max_tokens=128, stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0][0].function is not None
    assert deltas[0][0].function.name == "get_weather"
    assert json.loads(deltas[0][0].function.arguments or "") == arguments  # the same greedy call
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # The call and its result go back into the history, rendered as the core renders them.
    history = [*user, choice.message.model_dump(exclude_none=True)]
    history.append({"role": "tool", "tool_call_id": call.id, "content": "12 C and rain"})
    follow = await client.chat.completions.create(model="alpha", messages=history, max_tokens=8)
    turns = core_messages(history)
    assert "12 C and rain" in turns[-1]["content"] and "get_weather" in turns[-1]["content"]
    expected_text = lift.generate(turns, memory=memories["alpha"], max_new_tokens=8).text
    assert follow.choices[0].message.content == expected_text


async def test_response_format(client: openai.AsyncOpenAI) -> None:
    user: list[Any] = [{"role": "user", "content": "Who founded the institute, and when?"}]
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "founder", "schema": FOUNDER}}
    response = await client.chat.completions.create(
        model="beta", messages=user, response_format=response_format, max_tokens=128
    )
    content = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop" and content is not None
    value = json.loads(content)
    assert (
        set(value) == {"name", "year"} and isinstance(value["name"], str) and isinstance(value["year"], int)
    )
    stream = await client.chat.completions.create(
        model="beta", messages=user, response_format=response_format, max_tokens=128, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == content
    anything = await client.chat.completions.create(
        model="model", messages=user, response_format={"type": "json_object"}, max_tokens=128
    )
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)


async def test_tool_and_format_refusals(client: openai.AsyncOpenAI) -> None:
    user: list[Any] = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.chat.completions.create(
            model="alpha",
            messages=user,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "x"}},
        )
    assert unknown.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as both:
        await client.chat.completions.create(
            model="alpha", messages=user, tools=[WEATHER], response_format={"type": "json_object"}
        )
    assert "not both" in both.value.message
    bad_schema: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}
    with pytest.raises(openai.BadRequestError) as schema:
        await client.chat.completions.create(model="alpha", messages=user, response_format=bad_schema)
    assert schema.value.param == "response_format"


async def test_lift_context_is_the_hybrid_mode(
    client: openai.AsyncOpenAI, lift: LIFTModel, memories: dict[str, Memory]
) -> None:
    chunk = "Mira Quenton founded the Zorblat Institute in Vellhaven."
    user: list[Any] = [{"role": "user", "content": QUESTION}]
    response = await client.chat.completions.create(
        model="beta", messages=user, max_tokens=8, extra_body={"lift_context": [chunk]}
    )
    hybrid = lift.generate(QUESTION, memory=memories["beta"], context=[chunk], max_new_tokens=8)
    assert response.choices[0].message.content == hybrid.text
    assert response.usage is not None and response.usage.prompt_tokens == hybrid.input_tokens
    truncated = await client.chat.completions.create(
        model="beta", messages=user, max_tokens=8, extra_body={"lift_context": "truncated"}
    )
    expected_text = lift.generate(
        QUESTION, memory=memories["beta"], context="truncated", max_new_tokens=8
    ).text
    assert truncated.choices[0].message.content == expected_text
    with pytest.raises(openai.BadRequestError, match="needs a memory"):
        await client.chat.completions.create(
            model="model", messages=user, max_tokens=8, extra_body={"lift_context": "truncated"}
        )


async def test_a_memory_bank_serves_each_memory_by_name(
    lift: LIFTModel, memories: dict[str, Memory], tmp_path: Any
) -> None:
    from lift_integrations import MemoryBank

    MemoryBank({"harbour": memories["alpha"], "orchard": memories["beta"]}).save(tmp_path / "kb")
    bank = MemoryBank.load(tmp_path / "kb", max_loaded_bytes=0)  # each memory read from disk when asked for
    engine = ChatEngine(lift, ServedModels("model", bank=bank), default_max_tokens=8)
    try:
        transport = httpx.ASGITransport(app=create_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://lift.test/v1") as http:
            client = openai.AsyncOpenAI(base_url="http://lift.test/v1", api_key="unused", http_client=http)
            assert [m.id async for m in client.models.list()] == ["model", "harbour", "orchard"]
            response = await client.chat.completions.create(
                model="orchard", messages=[{"role": "user", "content": QUESTION}]
            )
            assert response.choices[0].message.content == expected(lift, memories, "beta", QUESTION).text
            assert (response.model_extra or {})["lift"]["memory_id"] == memories["beta"].id
    finally:
        engine.close()
