"""``lift serve`` as users run it: a real server process on a free port, called over HTTP by the official
``openai`` client and by LangChain's ``ChatOpenAI``; its answers are the core's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI
from server_helpers import QUESTION, Saved, reference_model, running_server

from lift_integrations import LIFTModel, Memory

pytestmark = pytest.mark.slow  # starting the server process takes 10-20 s on two cores


@pytest.fixture(scope="module")
def base_url(saved: Saved) -> Iterator[str]:
    memories = [f"--memory={name}={path}" for name, path in saved.memories.items()]
    with running_server(
        ["--model", str(saved.model_dir), "--device", "cpu", "--max-tokens", "8", *memories]
    ) as url:
        yield url


@pytest.fixture(scope="module")
def reference(saved: Saved) -> dict[str, str]:
    """Each model id's greedy answer to QUESTION, from the core in this process."""
    lift: LIFTModel = reference_model(saved)
    memories = {name: Memory.load(path) for name, path in saved.memories.items()}
    return {
        model: lift.generate(QUESTION, memory=memories.get(model), max_new_tokens=8).text
        for model in ("model", "alpha", "beta")
    }


def test_openai_client(base_url: str, reference: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    assert [model.id for model in client.models.list()] == ["model", "alpha", "beta"]
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    for model in ("model", "alpha", "beta"):
        plain = [{"role": "user", "content": QUESTION}]
        response = client.chat.completions.create(model=model, messages=plain)  # type: ignore[arg-type]
        assert response.choices[0].message.content == reference[model]
        assert response.usage is not None and response.usage.completion_tokens <= 8  # the server's default
    stream = client.chat.completions.create(
        model="beta", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces) == reference["beta"] and len([p for p in pieces if p]) > 1
    with_system = client.chat.completions.create(model="alpha", messages=messages)  # type: ignore[arg-type]
    assert with_system.choices[0].message.content is not None
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gamma", messages=messages)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"


def test_async_client_concurrently(base_url: str, reference: dict[str, str]) -> None:
    async def ask_all() -> list[str | None]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
        responses = await asyncio.gather(
            *[
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
                for model in ("model", "alpha", "beta", "alpha")
            ]
        )
        return [response.choices[0].message.content for response in responses]

    answers = asyncio.run(ask_all())
    assert answers == [reference["model"], reference["alpha"], reference["beta"], reference["alpha"]]


def test_langchain_chat_openai(base_url: str, reference: dict[str, str]) -> None:
    chat = ChatOpenAI(base_url=base_url, api_key="unused", model="alpha", temperature=0)  # type: ignore[arg-type]
    message = chat.invoke(QUESTION)
    assert message.content == reference["alpha"]
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] <= 8
    assert "".join(str(chunk.content) for chunk in chat.stream(QUESTION)) == reference["alpha"]
    other = ChatOpenAI(base_url=base_url, api_key="unused", model="beta", temperature=0)  # type: ignore[arg-type]
    assert other.invoke(QUESTION).content == reference["beta"]


def test_tools_and_structured_output_through_langchain(base_url: str) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    chat = ChatOpenAI(base_url=base_url, api_key="unused", model="alpha", temperature=0, max_tokens=128)  # type: ignore[arg-type]
    message = chat.bind_tools([weather], tool_choice="get_weather").invoke("What is the weather in Oslo?")
    assert [call["name"] for call in message.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    assert isinstance(message.tool_calls[0]["args"]["city"], str)  # type: ignore[attr-defined]
    founder = {
        "title": "Founder",
        "type": "object",
        "properties": {"name": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["name", "year"],
    }
    value = chat.with_structured_output(founder, method="json_schema").invoke("Who founded the institute?")
    assert isinstance(value, dict) and set(value) == {"name", "year"} and isinstance(value["year"], int)
