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
