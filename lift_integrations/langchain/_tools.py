"""Tool calling and structured output for ``LIFTChatModel``: LangChain's side of
:mod:`lift_integrations.structured`.

``bind_tools`` binds OpenAI-style tool schemas (``tools=``, ``tool_choice=``); ``with_structured_output``
binds a JSON schema (``response_format=``) or a forced tool call, and parses the answer. At call time
:func:`plan_call` turns those keywords into the core's prompt and grammar, and :meth:`CallPlan.message`
turns the constrained answer into an ``AIMessage`` with ``tool_calls``. Decoding is constrained, so the
JSON always parses when the answer ends within ``max_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, cast

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from lift_integrations.structured import (
    Grammar,
    ToolRequest,
    normalize_tool_choice,
    prepare_structured,
    prepare_tools,
    to_tool_specs,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel, LanguageModelInput

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
METHODS = ("json_schema", "function_calling", "json_mode")


def _is_pydantic_class(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def format_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools as OpenAI schemas: ``BaseTool``s, functions, pydantic classes, TypedDicts or dicts."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of tools, got {type(tools).__name__}")
    formatted = [convert_to_openai_tool(tool) for tool in tools]
    to_tool_specs(formatted)  # names and schemas checked now, not at the first call
    return formatted


def check_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> Any:
    """``tool_choice`` of ``bind_tools``, refused now if it names no bound tool."""
    if tool_choice is not None:
        normalize_tool_choice(tool_choice, to_tool_specs(tools))
    return tool_choice


def _response_schema(response_format: Any) -> tuple[Mapping[str, Any] | None, bool]:
    """The schema of an OpenAI-style ``response_format`` (``None`` with ``True``: any JSON object)."""
    if not isinstance(response_format, Mapping):
        raise TypeError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        inner = response_format.get("json_schema", {})
        schema = inner.get("schema") if isinstance(inner, Mapping) else None
        if not isinstance(schema, Mapping):
            raise ValueError("response_format of type 'json_schema' needs json_schema.schema (a dict)")
        return schema, True
    raise ValueError(f"response_format type must be 'json_schema' or 'json_object', got {kind!r}")


@dataclass(frozen=True)
class CallPlan:
    """One call's prompt and grammar, from the keywords ``bind_tools``/``with_structured_output`` bound."""

    turns: list[dict[str, str]]
    grammar: Grammar | None = None
    tools: ToolRequest | None = None

    @property
    def calls_tools(self) -> bool:
        """Whether the answer may hold tool calls (then it is not streamed piece by piece)."""
        return self.tools is not None and self.tools.tool_choice != "none"

    def message(self, text: str, **fields: Any) -> AIMessage:
        """The answer as an ``AIMessage``: its text, and its tool calls when tools were bound."""
        if self.tools is None:
            return AIMessage(content=text, **fields)
        content, calls = self.tools.parse(text)
        return AIMessage(
            content=content,
            tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in calls],
            **fields,
        )


def plan_call(turns: list[dict[str, str]], kwargs: Mapping[str, Any]) -> CallPlan:
    """The prompt and grammar for ``kwargs``' ``tools``/``tool_choice`` and ``response_format``."""
    tools, response_format = kwargs.get("tools"), kwargs.get("response_format")
    if tools and response_format is not None:
        raise ValueError("pass tools or response_format, not both")
    if tools:
        request = prepare_tools(turns, tools, kwargs.get("tool_choice"))
        return CallPlan(request.messages, request.grammar, request)
    if response_format is not None:
        schema, _ = _response_schema(response_format)
        structured, grammar = prepare_structured(turns, schema)
        return CallPlan(structured, grammar)
    return CallPlan(turns)


def whole_answer_chunks(result: ChatResult) -> list[ChatGenerationChunk]:
    """A finished answer as stream chunks: its text and tool calls (``tool_call_chunks``), then the
    usage and metadata alone on the last chunk (merging chunks sums usage and joins strings). A tool
    call is only known once its JSON is complete, so answers that may hold one are not streamed piece
    by piece."""
    message = result.generations[0].message
    assert isinstance(message, AIMessage)
    calls = [
        tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
        for i, c in enumerate(message.tool_calls)
    ]
    return [
        ChatGenerationChunk(message=AIMessageChunk(content=message.content, tool_call_chunks=calls)),
        ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            )
        ),
    ]


def _schema_name(schema: Any) -> str:
    return str(convert_to_openai_tool(schema)["function"]["name"])


def structured_runnable(
    model: BaseChatModel,
    schema: Mapping[str, Any] | type,
    *,
    method: StructuredMethod = "json_schema",
    include_raw: bool = False,
    **kwargs: Any,
) -> Runnable[LanguageModelInput, Any]:
    """``with_structured_output``: ``model`` bound to ``schema`` by ``method``, then a parser.

    ``json_schema`` (default) constrains the answer to the schema itself; ``function_calling`` forces a
    call of a tool named after the schema; ``json_mode`` any JSON object (the prompt must ask for the
    fields). A pydantic class gives instances, anything else (TypedDict, JSON schema) dicts."""
    kwargs.pop("strict", None)  # decoding is always strict
    if kwargs:
        raise ValueError(f"with_structured_output got unsupported arguments {sorted(kwargs)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema (a pydantic class, TypedDict or JSON schema)")
    pydantic = _is_pydantic_class(schema)
    traced = {"kwargs": {"method": method}, "schema": schema}
    llm: Runnable[LanguageModelInput, Any]
    parser: Runnable[Any, Any]
    if method == "function_calling":
        name = _schema_name(schema)
        llm = model.bind_tools([schema], tool_choice=name, ls_structured_output_format=traced)  # type: ignore[list-item]
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        if method == "json_schema":
            json_schema = convert_to_json_schema(schema)  # type: ignore[arg-type]
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": json_schema.get("title", "answer"), "schema": json_schema},
            }
        else:
            response_format = {"type": "json_object"}
        llm = model.bind(response_format=response_format, ls_structured_output_format=traced)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()  # type: ignore[arg-type]
    if not include_raw:
        return llm | parser
    with_parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    without = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | with_parsed.with_fallbacks([without], exception_key="parsing_error")


class ToolCallingMixin:
    """``bind_tools`` and ``with_structured_output`` for a ``BaseChatModel`` whose generation reads
    ``tools``, ``tool_choice`` and ``response_format`` through :func:`plan_call`."""

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (``BaseTool``, functions, pydantic classes, TypedDicts or OpenAI dicts) the model may
        call. ``tool_choice``: ``None``/``"auto"`` (text or a call), ``"any"``/``"required"``/``True``
        (some tool), a tool's name (that tool) or ``"none"``. Calls come back as ``AIMessage.tool_calls``,
        their arguments valid under the tool's schema (constrained decoding)."""
        formatted = format_tools(tools)
        model = cast("BaseChatModel", self)
        return model.bind(tools=formatted, tool_choice=check_tool_choice(tool_choice, formatted), **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "json_schema",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (a pydantic class: instances; a TypedDict or JSON schema: dicts),
        guaranteed valid by constrained decoding when the answer ends within ``max_tokens``.
        ``method``: ``"json_schema"`` (default), ``"function_calling"`` or ``"json_mode"``;
        ``include_raw=True`` returns ``{"raw", "parsed", "parsing_error"}``."""
        return structured_runnable(
            self,  # type: ignore[arg-type]
            schema,  # type: ignore[arg-type]
            method=method,
            include_raw=include_raw,
            **kwargs,
        )
