"""The OpenAI request format read into the core's terms, and every refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from lift_integrations.server.protocol import APIError, core_messages, parse_chat_request
from lift_integrations.structured import TOOL_CALL_MARKER, render_tool_call, render_tool_result

USER = [{"role": "user", "content": "Hi"}]


def parse(**body: Any) -> Any:
    return parse_chat_request({"model": "m", "messages": USER, **body}, default_max_tokens=64)


def test_defaults_and_aliases() -> None:
    request = parse()
    assert (request.max_tokens, request.temperature, request.top_p, request.stop) == (64, 0.0, None, [])
    assert not request.stream and not request.include_usage
    assert parse(max_tokens=5).max_tokens == 5
    assert parse(max_completion_tokens=7, max_tokens=5).max_tokens == 7  # the newer name wins
    assert parse(stop="END").stop == ["END"]
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage
    # Fields a drop-in server must accept even though they change nothing here.
    assert parse(user="u", seed=3, presence_penalty=0.5, metadata={"a": "b"}, n=1).model == "m"


def test_roles_become_core_turns() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"},
    ]
    assert core_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": render_tool_call("weather", {"city": "Oslo"})},
        {"role": "user", "content": render_tool_result("12 C, rain", "weather")},
    ]
    assert render_tool_call("weather", {"city": "Oslo"}).startswith(TOOL_CALL_MARKER)
    assert "weather" in render_tool_result("12 C, rain", "weather")


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": ""}, "model", "model is required"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]", "role 'robot'"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "at least one user"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content", "has no text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
            "text parts only",
        ),
        ({"temperature": 2.5}, "temperature", "in [0.0, 2.0]"),
        ({"temperature": True}, "temperature", "must be a number"),
        ({"top_p": 0}, "top_p", "in (0.0, 1.0]"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"max_tokens": 2.5}, "max_tokens", "an integer"),
        ({"n": 2}, "n", "n must be 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stop": [""]}, "stop", "non-empty string"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"tools": [{"type": "function"}]}, "tools[0]", "tools[0] must be"),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
                ]
            },
            "messages[1].tool_calls[0]",
            "must be a JSON object",
        ),
        ({"tool_choice": "auto"}, "tool_choice", "needs tools"),
        ({"response_format": {"type": "xml"}}, "response_format", "response_format must be"),
        ({"lift_context": 3}, "lift_context", "'truncated' or a list"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(APIError) as raised:
        parse_chat_request({"model": "m", "messages": USER, **body}, default_max_tokens=64)
    error = raised.value
    assert error.status == 400 and error.param == param and message in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_a_body_that_is_not_an_object() -> None:
    with pytest.raises(APIError, match="JSON object"):
        parse_chat_request(["model"], default_max_tokens=64)
