"""Tool calling and structured output as prompts plus grammars, for any chat model the core runs.

The model sees its tools in a system turn and calls one by answering ``<tool_call>`` followed by a JSON
object ``{"name": ..., "arguments": {...}}``. A grammar (:mod:`.grammar`) makes that object valid for the
named tool's parameters schema (an ``anyOf`` over the tools), so even a 135M model's call parses:

* ``tool_choice="auto"``: plain text, or the marker and a valid call; text never starts with the marker.
* ``"required"`` (or ``"any"``): the marker and a call to some tool; a tool's name: a call to that tool.
* ``"none"``: no tools are shown and the answer is free text.

The same rendering is used for calls and results in the history (:func:`render_tool_call`,
:func:`render_tool_result`), so a conversation reads the same way it was generated.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lift_integrations.structured.grammar import JSON_OPTIONS, Grammar, close_objects

TOOL_CALL_MARKER = "<tool_call>"
"""What starts a tool call in the model's answer (and in rendered history)."""

Message = dict[str, str]
ToolChoice = str | Mapping[str, Any] | None

__all__ = [
    "TOOL_CALL_MARKER",
    "ToolCall",
    "ToolRequest",
    "ToolSpec",
    "call_schema",
    "normalize_tool_choice",
    "parse_tool_calls",
    "prepare_structured",
    "prepare_tools",
    "render_tool_call",
    "render_tool_result",
    "schema_instruction",
    "to_tool_specs",
    "tools_instruction",
    "with_system",
]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_PARAMETERS))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"a tool name must be 1-128 letters, digits, '_', '.', ':' or '-', got {self.name!r}"
            )
        if not isinstance(self.parameters, Mapping):
            raise TypeError(f"tool {self.name!r}: parameters must be a JSON schema dict")
        if self.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be an object schema")

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``{"type": "function", "function": {...}}`` form."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: the tool's name, its parsed arguments and a fresh id."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


def to_tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """``tools`` as :class:`ToolSpec`: each a ToolSpec, an OpenAI tool ``{"type": "function", "function":
    {"name", "description", "parameters"}}`` or a flat ``{"name", "description", "parameters"}``."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of tool schemas, got {type(tools).__name__}")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        if isinstance(tool, ToolSpec):
            specs.append(tool)
            continue
        if not isinstance(tool, Mapping):
            raise TypeError(f"tools[{index}] must be a ToolSpec or a dict, got {type(tool).__name__}")
        function = tool.get("function", tool) if tool.get("type", "function") == "function" else None
        if not isinstance(function, Mapping) or "name" not in function:
            raise ValueError(f"tools[{index}] is not a function tool schema (no 'name'): {dict(tool)!r}")
        parameters = function.get("parameters") or dict(_EMPTY_PARAMETERS)
        specs.append(ToolSpec(function["name"], function.get("description") or "", parameters))
    return specs


def normalize_tool_choice(choice: ToolChoice, specs: Sequence[ToolSpec]) -> str:
    """``"auto"``, ``"required"``, ``"none"`` or a tool's name, from what OpenAI and LangChain accept:
    ``None``/``"auto"``, ``"required"``/``"any"``/``True``, ``"none"``/``False``, a name, or
    ``{"type": "function", "function": {"name": ...}}`` (also ``{"name": ...}``)."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("required", "any"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, Mapping):
        inner = choice.get("function", choice)
        choice = inner.get("name") if isinstance(inner, Mapping) else None
    names = [spec.name for spec in specs]
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(
        f"tool_choice must be 'auto', 'required', 'none' or one of the tools {names}, got {choice!r}"
    )


def _arguments_schema(spec: ToolSpec) -> dict[str, Any]:
    return close_objects(dict(spec.parameters))


def call_schema(specs: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of one call: ``{"name": <a tool>, "arguments": <that tool's arguments>}``."""
    if not specs:
        raise ValueError("at least one tool is needed")
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": _arguments_schema(spec)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in specs
    ]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def tools_instruction(specs: Sequence[ToolSpec], choice: str) -> str:
    """The system text that shows the model its tools and how to call one."""
    lines = ["You can call these tools:"]
    for spec in specs:
        arguments = json.dumps(spec.parameters.get("properties", {}), separators=(",", ":"))
        description = f": {spec.description}" if spec.description else ""
        lines.append(f"- {spec.name}{description} Arguments: {arguments}")
    call = f'{TOOL_CALL_MARKER}{{"name": <tool name>, "arguments": {{...}}}}'
    if choice == "auto":
        lines.append(f"To call a tool, answer only {call}. If no tool is needed, answer in plain text.")
    elif choice == "required":
        lines.append(f"Call one of the tools now: answer only {call}.")
    else:
        lines.append(f"Call the tool {choice} now: answer only {call}.")
    lines.append("A tool's result comes back in the next message; once you have it, answer in plain text.")
    return "\n".join(lines)


def _tool_grammar(specs: Sequence[ToolSpec], choice: str) -> Grammar:
    chosen = [spec for spec in specs if spec.name == choice] or list(specs)
    schema = json.dumps({**call_schema(chosen), "x-guidance": JSON_OPTIONS})
    marker = json.dumps(TOOL_CALL_MARKER)
    lark = f"start: {marker} call\ncall: %json {schema}\n"
    if choice == "auto":  # text that does not begin (after blanks) with the marker, or a call
        escaped = re.escape(TOOL_CALL_MARKER).replace("/", "\\/")
        lark = (
            f"start: TEXT | {marker} call\ncall: %json {schema}\n"
            f"TEXT: /(.|\\n)+/ & ~/\\s*{escaped}(.|\\n)*/\n"
        )
    return Grammar.from_lark(lark)


def with_system(messages: Sequence[Message], text: str) -> list[Message]:
    """``messages`` with ``text`` added to the system turn (a new first turn if there is none)."""
    turns = [dict(m) for m in messages]
    if turns and turns[0].get("role") == "system":
        turns[0]["content"] = f"{turns[0]['content']}\n\n{text}" if turns[0]["content"] else text
        return turns
    return [{"role": "system", "content": text}, *turns]


@dataclass(frozen=True)
class ToolRequest:
    """A chat request with tools: the messages to generate from and the grammar to decode with
    (``None`` for ``tool_choice="none"``); :meth:`parse` reads the answer."""

    messages: list[Message]
    grammar: Grammar | None
    tools: tuple[ToolSpec, ...]
    tool_choice: str

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The answer's text and its tool calls (see :func:`parse_tool_calls`)."""
        if self.tool_choice == "none":
            return text, []
        return parse_tool_calls(text, self.tools)


def prepare_tools(
    messages: Sequence[Message], tools: Sequence[Any], tool_choice: ToolChoice = "auto"
) -> ToolRequest:
    """What to generate for a chat with ``tools`` (see :func:`to_tool_specs`) and ``tool_choice``
    (see :func:`normalize_tool_choice`): ``lift.generate(req.messages, grammar=req.grammar)``, then
    ``req.parse(result.text)``."""
    specs = to_tool_specs(tools)
    if not specs:
        raise ValueError("tools is empty; pass at least one tool (or generate without tools)")
    choice = normalize_tool_choice(tool_choice, specs)
    if choice == "none":
        return ToolRequest(list(messages), None, tuple(specs), choice)
    turns = with_system(messages, tools_instruction(specs, choice))
    return ToolRequest(turns, _tool_grammar(specs, choice), tuple(specs), choice)


def parse_tool_calls(text: str, tools: Sequence[ToolSpec] = ()) -> tuple[str, list[ToolCall]]:
    """``(content, calls)`` of an answer: a call is the marker and a JSON object naming a tool (one of
    ``tools`` if given) with object arguments; anything else is content. Calls come with fresh ids."""
    stripped = text.strip()
    if not stripped.startswith(TOOL_CALL_MARKER):
        return text, []
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    rest = stripped
    names = {spec.name for spec in tools}
    while rest.startswith(TOOL_CALL_MARKER):
        body = rest[len(TOOL_CALL_MARKER) :].lstrip()
        try:
            value, end = decoder.raw_decode(body)
        except json.JSONDecodeError:
            return text, calls
        name, arguments = (
            (value.get("name"), value.get("arguments", {})) if isinstance(value, dict) else (None, None)
        )
        if not isinstance(name, str) or not isinstance(arguments, dict) or (names and name not in names):
            return text, calls
        calls.append(ToolCall(name, arguments))
        rest = body[end:].strip()
        rest = rest.removeprefix("</tool_call>").strip()
    return rest, calls


def render_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A call as the model writes it (compact JSON), for assistant turns in the history."""
    call = {"name": name, "arguments": dict(arguments)}
    return TOOL_CALL_MARKER + json.dumps(call, ensure_ascii=False, separators=(",", ":"))


def render_tool_result(content: str, name: str | None = None) -> str:
    """A tool's result as a user turn's text (chat templates of small models have no tool role), with a
    nudge to use it: without one, SmolLM2-135M repeated the call it had just made."""
    text = f"The tool {name} returned: {content}" if name else f"Tool result: {content}"
    return f"{text}\nAnswer with this result."


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The system text that asks for a JSON answer valid under ``schema``."""
    shown = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return f"Answer only with a JSON value that follows this JSON schema: {shown}"


def prepare_structured(
    messages: Sequence[Message], schema: Mapping[str, Any] | None
) -> tuple[list[Message], Grammar]:
    """Messages that ask for JSON under ``schema`` (``None``: any JSON object) and the grammar that
    guarantees it: ``lift.generate(turns, grammar=grammar)``, then ``json.loads(result.text)``."""
    if schema is None:
        return with_system(messages, "Answer only with a JSON object."), Grammar.json_object()
    grammar = Grammar.from_json_schema(schema)
    return with_system(messages, schema_instruction(schema)), grammar
