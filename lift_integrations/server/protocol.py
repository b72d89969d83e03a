"""The OpenAI chat-completions format: requests read and checked, responses and stream chunks built.

Plain Python (no web framework), so every rule is testable on its own. A request that breaks one raises
:class:`APIError` with the HTTP status and the OpenAI-style error body the server sends back.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT_PART_TYPES = ("text", "input_text")
ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP_STRINGS = 4
UNSUPPORTED_TRUE = ("logprobs",)
"""Fields the server refuses when set to a true value (it would have to report what it cannot)."""


class APIError(Exception):
    """A request the server answers with ``status`` and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def model_not_found(model: str, known: list[str]) -> APIError:
    return APIError(
        404,
        f"The model {model!r} does not exist on this server; it serves {known}",
        param="model",
        code="model_not_found",
    )


@dataclass
class ChatRequest:
    """A checked chat-completions request, in the core's terms."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float | None
    stop: list[str]
    stream: bool = False
    include_usage: bool = False
    context: Any = None
    """The memory's context mode (``lift_context`` in the body): ``None``, ``"truncated"`` or chunks."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    grammar: Any = None
    """What decoding is constrained to (a :class:`~lift_integrations.structured.Grammar`), set by the
    engine from ``tools`` or ``response_format``."""
    tool_request: Any = None
    """The :class:`~lift_integrations.structured.ToolRequest` that reads tool calls from the answer."""


def _number(body: Mapping[str, Any], name: str, low: float, high: float, *, low_open: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number, got {value!r}", name)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad_request(f"{name} must be in {bracket}{low}, {high}], got {value!r}", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, got {value!r}", name)
    if value < minimum:
        raise bad_request(f"{name} must be at least {minimum}, got {value}", name)
    return value


def content_text(content: Any, param: str) -> str:
    """A message's content as text: a string, or a list of text parts (other parts are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in TEXT_PART_TYPES or not isinstance(part.get("text"), str):
                raise bad_request(
                    f"{param}[{index}] is a {kind or type(part).__name__!s} part; this server reads text "
                    "parts only ({'type': 'text', 'text': ...})",
                    f"{param}[{index}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(
        f"{param} must be a string or a list of text parts, got {type(content).__name__}", param
    )


def _calls(calls: Any, param: str) -> list[tuple[str, str, dict[str, Any]]]:
    """An assistant turn's ``tool_calls`` as ``(id, name, arguments)``."""
    if not isinstance(calls, list):
        raise bad_request(f"{param} must be a list", param)
    read = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{param}[{index}] needs a function with a name", f"{param}[{index}]")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise bad_request(
                f"{param}[{index}].function.arguments must be a JSON object", f"{param}[{index}]"
            )
        read.append((str(call.get("id") or ""), function["name"], parsed))
    return read


def core_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI messages as the core's ``{"role", "content"}`` turns.

    ``developer`` is a system turn. An assistant's tool calls and a ``tool`` result are written as the
    core's tool calling writes and reads them (:func:`~lift_integrations.structured.render_tool_call`;
    a result is a user turn naming the tool its call id belongs to, since chat templates of small models
    have no tool role). Consecutive turns of one role are merged by the core.
    """
    from lift_integrations.structured.tools import render_tool_call, render_tool_result

    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    turns: list[dict[str, str]] = []
    tool_names: dict[str, str] = {}  # call id -> the tool it called
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"{param} must be an object with a 'role'", param)
        role = message["role"]
        text = content_text(message.get("content"), f"{param}.content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            name = tool_names.get(call_id) if isinstance(call_id, str) else None
            turns.append({"role": "user", "content": render_tool_result(text, name or message.get("name"))})
            continue
        if role not in ROLE_ALIASES:
            raise bad_request(
                f"{param} has role {role!r}; expected system, developer, user, assistant or tool", param
            )
        if role == "assistant" and message.get("tool_calls"):
            calls = _calls(message["tool_calls"], f"{param}.tool_calls")
            tool_names.update((call_id, name) for call_id, name, _ in calls if call_id)
            rendered = [render_tool_call(name, arguments) for _, name, arguments in calls]
            text = "\n".join(part for part in (text, *rendered) if part)
        if role != "assistant" and not text.strip():
            raise bad_request(f"{param} has no text", f"{param}.content")
        turns.append({"role": ROLE_ALIASES[role], "content": text})
    if not any(turn["role"] == "user" for turn in turns):
        raise bad_request("messages need at least one user (or tool) message", "messages")
    return turns


def _stop(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise bad_request("stop must be a non-empty string or a list of them", "stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}", "stop")
    return list(stop)


def _context(body: Mapping[str, Any]) -> Any:
    context = body.get("lift_context")
    if context is None or context == "truncated":
        return context
    if isinstance(context, list) and all(isinstance(chunk, str) for chunk in context):
        return context
    raise bad_request("lift_context must be 'truncated' or a list of text chunks", "lift_context")


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools must be a list", "tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise bad_request(
                f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': "
                "...}}}",
                f"tools[{index}]",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad_request(f"tools[{index}].function.parameters must be a JSON schema object", "tools")
    return tools


def _response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request(
            "response_format must be {'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', "
            "'json_schema': {'name': ..., 'schema': {...}}}",
            "response_format",
        )
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request("response_format.json_schema must hold a 'schema' object", "response_format")
    return response_format


def parse_chat_request(body: Any, *, default_max_tokens: int) -> ChatRequest:
    """Check a chat-completions body and read it into a :class:`ChatRequest`. Fields this server has no
    use for (``user``, ``seed``, ``metadata``, penalties, ...) are accepted and ignored, as a drop-in
    server must; those it cannot honour (``n`` > 1, ``logprobs``) are refused."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (a model id from GET /v1/models)", "model")
    n = _integer(body, "n", 1)
    if n not in (None, 1):
        raise bad_request(f"n must be 1 (one answer per request), got {n}", "n")
    for name in UNSUPPORTED_TRUE:
        if body.get(name):
            raise bad_request(f"{name} is not supported by this server", name)
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    temperature = _number(body, "temperature", 0.0, 2.0)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise bad_request(f"stream must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    tools = _tools(body)
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not tools and tool_choice != "none":
        raise bad_request("tool_choice needs tools", "tool_choice")
    return ChatRequest(
        model=model,
        messages=core_messages(body.get("messages")),
        max_tokens=max_tokens if max_tokens is not None else default_max_tokens,
        temperature=temperature if temperature is not None else 0.0,
        top_p=_number(body, "top_p", 0.0, 1.0, low_open=True),
        stop=_stop(body),
        stream=bool(stream),
        include_usage=bool(options and options.get("include_usage")),
        context=_context(body),
        tools=tools,
        tool_choice=tool_choice,
        response_format=_response_format(body),
    )


# Responses ------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    *,
    request_id: str,
    model: str,
    content: str | None,
    finish_reason: str,
    token_usage: dict[str, int],
    tool_calls: list[dict[str, Any]] | None = None,
    memory_id: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``lift`` names the memory that answered (``None``: the base model)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": token_usage,
        "system_fingerprint": None,
        "lift": {"memory_id": memory_id},
    }


def chunk(
    *,
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    token_usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: a delta, or (no delta) the usage-only chunk after the last one."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    )
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if token_usage is not None:
        body["usage"] = token_usage
    return body


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...`` and a blank line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


def model_list(ids: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model_id, created) for model_id in ids]}


def model_card(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "lift"}
