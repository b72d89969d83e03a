"""``LIFTLLM`` as a LlamaIndex ``FunctionCallingLLM``: tool calls and structured output, both guaranteed by
the core's constrained decoding (:mod:`lift_integrations.structured`).

A chat call with ``tools=`` decodes under a grammar that only allows plain text or a call naming one of
the tools with arguments valid under its schema (``tool_choice``: ``"auto"``, ``"required"``, a tool's
name, ``"none"``); the call comes back in ``message.additional_kwargs["tool_calls"]`` (OpenAI's dict
form), where :meth:`get_tool_calls_from_response` reads it. A chat call with ``output_schema=`` (what
``structured_predict`` sends) decodes under the schema's grammar, so the answer always parses unless it
is cut off at ``max_new_tokens``. Tool calls and results in the history are rendered as the core renders
them (a result is a user turn: small models' chat templates have no tool role).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ToolCallBlock
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from lift_integrations.structured import (
    Grammar,
    close_objects,
    prepare_structured,
    prepare_tools,
    render_tool_call,
    render_tool_result,
)

if TYPE_CHECKING:
    from llama_index.core.prompts import BasePromptTemplate
    from llama_index.core.tools.types import BaseTool

    from lift_integrations.structured import ToolRequest

Model = TypeVar("Model", bound=BaseModel)
dispatcher = get_dispatcher(__name__)

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
}


def to_core_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages as the core's role/content dicts (same roles merged by the core). An assistant
    turn's tool calls are written after its text as the model writes them; a tool result (role ``tool``)
    becomes a user turn naming its tool."""
    if isinstance(messages, (str, bytes, bytearray)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of ChatMessage, got {type(messages).__name__}")
    converted: list[dict[str, str]] = []
    names: dict[str, str] = {}  # the tool each earlier call id called
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise TypeError(f"message {index} must be a ChatMessage, got {type(message).__name__}")
        content = message.content or ""
        if MessageRole(message.role) in (MessageRole.TOOL, MessageRole.FUNCTION):
            call_id = str(message.additional_kwargs.get("tool_call_id"))
            name = message.additional_kwargs.get("name") or names.get(call_id)
            converted.append({"role": "user", "content": render_tool_result(content, name)})
            continue
        role = _ROLES.get(MessageRole(message.role))
        if role is None:
            raise ValueError(
                f"message {index} has role {message.role!r}; LIFTLLM accepts system, user, assistant and "
                "tool messages"
            )
        if role == "assistant":
            for call_id, name, arguments in message_tool_calls(message):
                names[call_id] = name
                content += render_tool_call(name, arguments)
        converted.append({"role": role, "content": content})
    return converted


def message_tool_calls(message: ChatMessage) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, name, arguments)`` of each tool call a message records: in ``additional_kwargs["tool_calls"]``
    (OpenAI's form, as dicts or objects) or as ``ToolCallBlock`` blocks."""
    calls = []
    for call in message.additional_kwargs.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, Mapping) else getattr(call, "function", None)
        get = function.get if isinstance(function, Mapping) else lambda key, f=function: getattr(f, key, None)
        call_id = call.get("id") if isinstance(call, Mapping) else getattr(call, "id", None)
        calls.append((str(call_id), str(get("name")), _arguments(get("arguments"))))
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append((str(block.tool_call_id), block.tool_name, _arguments(block.tool_kwargs)))
    return calls


def _arguments(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def openai_tools(tools: Any) -> list[Any]:
    """``tools`` as the core takes them: a LlamaIndex tool becomes its OpenAI schema
    (``metadata.to_openai_tool()``); dicts pass through (the core checks them)."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of LlamaIndex tools or tool dicts, got {type(tools).__name__}")
    return [tool.metadata.to_openai_tool() if hasattr(tool, "metadata") else tool for tool in tools]


def constrain(
    turns: list[dict[str, str]], options: dict[str, Any], kwargs: Mapping[str, Any]
) -> tuple[list[dict[str, str]], dict[str, Any], ToolRequest | None]:
    """The turns and options of one generation with the call's ``tools``/``tool_choice`` or
    ``output_schema`` applied (the prompt that shows them and the grammar that enforces them), and the
    tool request that parses the answer (``None`` without tools). An empty ``tools`` is no tools."""
    tools, schema = kwargs.get("tools"), kwargs.get("output_schema")
    if tools and schema is not None:
        raise ValueError("pass tools or output_schema, not both: one grammar constrains an answer")
    if tools:
        request = prepare_tools(turns, openai_tools(tools), kwargs.get("tool_choice") or "auto")
        return request.messages, {**options, "grammar": request.grammar}, request
    if schema is not None:
        structured, grammar = prepare_structured(turns, schema)
        return structured, {**options, "grammar": grammar}, None
    return turns, options, None


def react_grammar(
    tools: Sequence[BaseTool], *, allow_answer: bool = True, max_line_chars: int = 120
) -> Grammar:
    """A grammar for ``ReActAgent``'s answer format: a ``Thought:`` line, then ``Answer:`` and a line, or
    ``Action:`` naming one of ``tools`` and ``Action Input:`` with JSON arguments valid under that tool's
    schema. ReActAgent calls plain ``chat``, so give it ``llm.with_grammar(react_grammar(tools))``: every
    step it takes then parses, and every call it makes is valid. Lines are at most ``max_line_chars``.
    ``allow_answer=False`` makes every step a tool call (for tools with ``return_direct=True``, which end
    the run with their output)."""
    tools = list(tools)
    if not tools:
        raise ValueError("react_grammar needs at least one tool")
    if not isinstance(allow_answer, bool):
        raise TypeError(f"allow_answer must be a bool, got {type(allow_answer).__name__}")
    if isinstance(max_line_chars, bool) or not isinstance(max_line_chars, int) or max_line_chars < 1:
        raise ValueError(f"max_line_chars must be an int >= 1, got {max_line_chars!r}")
    calls = []
    for number, tool in enumerate(tools):
        schema = tool.metadata.to_openai_tool()["function"]["parameters"]
        schema = json.dumps({**close_objects(schema), "x-guidance": {"whitespace_flexible": False}})
        calls.append(f'call{number}: {json.dumps(tool.metadata.name)} "\\nAction Input: " args{number}')
        calls.append(f"args{number}: %json {schema}")
    names = " | ".join(f"call{number}" for number in range(len(tools)))
    lark = "\n".join(
        [
            'start: "Thought: " LINE "\\n" ' + ("(action | answer)" if allow_answer else "action"),
            f'action: "Action: " ({names})',
            'answer: "Answer: " LINE',
            *calls,
            f"LINE: /[^\\n]{{1,{max_line_chars}}}/",
        ]
    )
    return Grammar.from_lark(lark)


def assistant_message(text: str, request: ToolRequest | None) -> ChatMessage:
    """The answer as an assistant message; with tools, its call (if any) in ``tool_calls``."""
    if request is None:
        return ChatMessage(role=MessageRole.ASSISTANT, content=text)
    content, calls = request.parse(text)
    records = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for call in calls
    ]
    return ChatMessage(
        role=MessageRole.ASSISTANT,
        content=content,
        additional_kwargs={"tool_calls": records} if calls else {},
    )


def one_chunk(response: ChatResponse) -> Generator[ChatResponse, None, None]:
    """A tool-calling answer as a stream: one chunk, since a call is only known once it is complete."""
    yield ChatResponse(message=response.message, delta=response.message.content or "", raw=response.raw)


async def aone_chunk(response: ChatResponse) -> AsyncGenerator[ChatResponse, None]:
    for chunk in one_chunk(response):
        yield chunk


def _structured(output_cls: type[Model], response: ChatResponse) -> Model:
    raw = response.raw if isinstance(response.raw, Mapping) else {}
    if raw.get("finish_reason") == "length":
        raise ValueError(
            f"the {output_cls.__name__} answer was cut off at max_new_tokens before its JSON was complete; "
            "raise max_new_tokens (on the LLM, or llm_kwargs={'max_new_tokens': ...})"
        )
    return output_cls.model_validate_json(response.message.content or "")


def _prompt_messages(llm: Any, prompt: BasePromptTemplate, prompt_args: dict[str, Any]) -> list[ChatMessage]:
    return prompt.format_messages(llm=llm, **prompt_args)


class FunctionCalling(FunctionCallingLLM):
    """The ``FunctionCallingLLM`` half of :class:`LIFTLLM`: its chat endpoints take ``tools``,
    ``tool_choice`` and ``output_schema`` keywords (see the module docstring); this class maps
    LlamaIndex's tool and structured-output methods onto them."""

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat arguments: the history plus ``user_msg``, the tools, and ``tool_choice`` (default:
        ``"required"`` when ``tool_required``, else ``"auto"``). One call per answer: the core's grammar
        allows one, so ``allow_parallel_tool_calls`` changes nothing."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg)
                if isinstance(user_msg, str)
                else user_msg
            )
        choice = tool_choice if tool_choice is not None else ("required" if tool_required else "auto")
        return {"messages": messages, "tools": list(tools), "tool_choice": choice, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of a :meth:`chat_with_tools` answer."""
        calls = [
            ToolSelection(tool_id=call_id, tool_name=name, tool_kwargs=arguments)
            for call_id, name, arguments in message_tool_calls(response.message)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"the answer called no tool; it said: {response.message.content!r}")
        return calls

    def structured_chat(
        self, output_cls: type[Model], messages: Sequence[ChatMessage], **kwargs: Any
    ) -> Model:
        """An ``output_cls`` answer to ``messages``, decoded under its JSON schema so it always parses
        (``ValueError`` if it was cut off at ``max_new_tokens``); ``kwargs`` go to :meth:`chat`."""
        response = self.chat(messages, **kwargs, output_schema=output_cls.model_json_schema())
        return _structured(output_cls, response)

    async def astructured_chat(
        self, output_cls: type[Model], messages: Sequence[ChatMessage], **kwargs: Any
    ) -> Model:
        response = await self.achat(messages, **kwargs, output_schema=output_cls.model_json_schema())
        return _structured(output_cls, response)

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """An ``output_cls`` answer to ``prompt``, decoded under its JSON schema so it always parses
        (``ValueError`` if it was cut off at ``max_new_tokens``). ``llm_kwargs`` go to :meth:`chat`
        (``max_new_tokens``, ``context``, ...)."""
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        result = self.structured_chat(
            output_cls, _prompt_messages(self, prompt, prompt_args), **(llm_kwargs or {})
        )
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        messages = _prompt_messages(self, prompt, prompt_args)
        result = await self.astructured_chat(output_cls, messages, **(llm_kwargs or {}))
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model, None, None]:
        """One item, the complete answer: a partial JSON answer is not a valid ``output_cls``."""
        yield self.structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model, None]:
        result = await self.astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

        async def one() -> AsyncGenerator[Model, None]:
            yield result

        return one()
