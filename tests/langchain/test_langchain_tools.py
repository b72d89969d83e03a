"""Tool calling and structured output of LIFTChatModel (issue #18, item 1), on the tiny random model:
the answers are meaningless, but their format is guaranteed by constrained decoding and checked here."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from lc_tiny_model import TINY_NAME
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from lift_integrations.langchain import LIFTChatModel
from lift_integrations.langchain.chat_models import to_core_messages
from lift_integrations.structured import TOOL_CALL_MARKER


@tool
def get_weather(city: str, unit: str = "C") -> str:
    """Get the weather in a city."""
    return f"Sunny in {city}, 21 {unit}."


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Person(BaseModel):
    """A person."""

    name: str = Field(description="Full name", max_length=20)
    age: int = Field(ge=0, le=120)
    role: str = Field(json_schema_extra={"enum": ["admin", "user"]})


class Movie(TypedDict):
    """A movie."""

    title: str
    year: int


MOVIE_SCHEMA = {
    "title": "Book",
    "description": "A book.",
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "tags": {"type": "array", "items": {"enum": ["fiction", "history", "science"]}, "maxItems": 3},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["title", "tags", "rating"],
}
OPENAI_DICT = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}


@pytest.fixture
def llm(tiny: Any) -> LIFTChatModel:
    return LIFTChatModel(model=TINY_NAME, max_tokens=96)


@pytest.mark.parametrize("name", ["get_weather", "multiply", "Person", "lookup"])
def test_forcing_a_tool_by_name_always_calls_it(llm: LIFTChatModel, name: str) -> None:
    bound = llm.bind_tools([get_weather, multiply, Person, OPENAI_DICT], tool_choice=name)
    for question in ("What is the weather in Oslo?", "What is 6 times 7?", "Hi"):
        message = bound.invoke(question)
        assert isinstance(message, AIMessage)
        assert [call["name"] for call in message.tool_calls] == [name]
        call = message.tool_calls[0]
        assert call["id"] and call["id"].startswith("call_") and call["type"] == "tool_call"
        assert message.content == ""
    schema = {
        "get_weather": get_weather.tool_call_schema.model_json_schema(),
        "multiply": {
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "Person": Person.model_json_schema(),
        "lookup": OPENAI_DICT["function"]["parameters"],  # type: ignore[index]
    }[name]
    jsonschema.validate(call["args"], schema)


def test_any_calls_some_tool_and_none_calls_none(llm: LIFTChatModel) -> None:
    message = llm.bind_tools([get_weather, multiply], tool_choice="any").invoke("Hello")
    assert len(message.tool_calls) == 1 and message.tool_calls[0]["name"] in {"get_weather", "multiply"}
    plain = llm.bind_tools([get_weather], tool_choice="none").invoke("Hello")
    assert plain.tool_calls == [] and isinstance(plain.content, str)
    auto = llm.bind_tools([get_weather]).invoke("Hello")  # "auto": text or a call, never a broken call
    if auto.tool_calls:
        assert auto.tool_calls[0]["name"] == "get_weather" and auto.content == ""
    else:
        assert not str(auto.content).lstrip().startswith(TOOL_CALL_MARKER)


def test_a_tool_call_round_trip(llm: LIFTChatModel) -> None:
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    question = HumanMessage("What is the weather in Oslo?")
    call_message = bound.invoke([question])
    tool_message = get_weather.invoke(call_message.tool_calls[0])
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.tool_call_id == call_message.tool_calls[0]["id"]
    turns = to_core_messages([question, call_message, tool_message])
    call = call_message.tool_calls[0]
    assert turns[1] == {
        "role": "assistant",
        "content": TOOL_CALL_MARKER
        + json.dumps(
            {"name": "get_weather", "arguments": call["args"]}, ensure_ascii=False, separators=(",", ":")
        ),
    }
    assert turns[2]["role"] == "user" and tool_message.text in turns[2]["content"]
    assert "get_weather" in turns[2]["content"]
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke([question, call_message, tool_message])
    assert isinstance(answer, AIMessage) and answer.tool_calls == [] and answer.content


def test_streaming_with_tools_yields_the_call(llm: LIFTChatModel) -> None:
    bound = llm.bind_tools([multiply], tool_choice="multiply")
    chunks = list(bound.stream("What is 6 times 7?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert isinstance(merged, AIMessageChunk)
    assert [c["name"] for c in merged.tool_calls] == ["multiply"]
    assert set(merged.tool_calls[0]["args"]) == {"a", "b"}
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] > 0

    async def collect() -> list[Any]:
        return [chunk async for chunk in bound.astream("What is 6 times 7?")]

    async_chunks = asyncio.run(collect())
    assert sum(async_chunks[1:], async_chunks[0]).tool_calls[0]["name"] == "multiply"


def test_structured_output_pydantic_typeddict_and_json_schema(llm: LIFTChatModel) -> None:
    person = llm.with_structured_output(Person).invoke("Describe an administrator.")
    assert isinstance(person, Person) and person.role in {"admin", "user"} and 0 <= person.age <= 120
    movie = llm.with_structured_output(Movie).invoke("Name a movie.")
    assert isinstance(movie, dict) and set(movie) == {"title", "year"}
    assert isinstance(movie["title"], str) and isinstance(movie["year"], int)
    book = llm.with_structured_output(MOVIE_SCHEMA).invoke("Name a book.")
    jsonschema.validate(book, MOVIE_SCHEMA)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_methods_and_include_raw(llm: LIFTChatModel, method: str) -> None:
    runnable = llm.with_structured_output(Person, method=method, include_raw=True)  # type: ignore[arg-type]
    result = runnable.invoke([SystemMessage("Be brief."), HumanMessage("Describe a user.")])
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert isinstance(result["raw"], AIMessage) and result["parsing_error"] is None
    assert isinstance(result["parsed"], Person)
    if method == "function_calling":
        assert result["raw"].tool_calls[0]["name"] == "Person"
    else:
        assert Person.model_validate_json(str(result["raw"].content)) == result["parsed"]


def test_json_mode_gives_a_json_object(llm: LIFTChatModel) -> None:
    value = llm.with_structured_output(None, method="json_mode").invoke("Reply in JSON.")
    assert isinstance(value, dict)
    streamed = "".join(
        str(c.content) for c in llm.bind(response_format={"type": "json_object"}).stream("JSON")
    )
    assert isinstance(json.loads(streamed), dict)


def test_bad_arguments_fail_at_bind_time_with_clear_errors(llm: LIFTChatModel) -> None:
    with pytest.raises(ValueError, match="one of the tools"):
        llm.bind_tools([get_weather], tool_choice="no_such_tool")
    with pytest.raises(TypeError, match="list of tools"):
        llm.bind_tools(get_weather)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be one of"):
        llm.with_structured_output(Person, method="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported arguments"):
        llm.with_structured_output(Person, temperature=0.5)
    with pytest.raises(ValueError, match="response_format type"):
        llm.bind(response_format={"type": "yaml"}).invoke("Hi")
