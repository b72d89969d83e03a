"""LangChain messages as the core's chat turns, and a memory's summary for callers and events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata

if TYPE_CHECKING:
    from lift_integrations.generation import GenerationResult
    from lift_integrations.memory import Memory

_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def to_core_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as core chat messages.

    Names are dropped (chat templates have no slot for them) and repeated roles are left for the core to
    merge. An assistant turn's tool calls are written after its text as the model writes them, and a
    tool result is shown as a user turn (small models' templates have no tool role), both rendered by
    :mod:`lift_integrations.structured.tools`.
    """
    from lift_integrations.structured.tools import render_tool_call, render_tool_result

    converted = []
    for message in messages:
        text: str = message.text
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
            text += "".join(render_tool_call(call["name"], call["args"]) for call in message.tool_calls)
        elif isinstance(message, ToolMessage):
            role, text = "user", render_tool_result(text, message.name)
        elif isinstance(message, ChatMessage):
            role = _ROLE_ALIASES.get(message.role.lower(), "user")
        else:
            role = _ROLE_ALIASES.get(getattr(message, "type", ""), "user")
        converted.append({"role": role, "content": text})
    return converted


def memory_info(memory: Memory) -> dict[str, Any]:
    """What a caller (and a ``lift_absorb_end`` event) needs to know about a memory, JSON-serialisable."""
    return {
        "memory_id": memory.id,
        "num_documents": len(memory.documents),
        "titles": list(memory.titles),
        "base_model": memory.base_model_name,
        "adapter": memory.adapter_kind,
        "num_parameters": memory.num_parameters,
        "size_bytes": memory.size_bytes,
        "stats": dict(memory.stats),
    }


def usage_of(result: GenerationResult) -> UsageMetadata:
    """A generation's token counts as LangChain reports them."""
    # langchain-core imports NotRequired from typing, which mypy's target (Python 3.10) lacks, so the
    # optional token-detail keys read as required.
    return UsageMetadata(  # type: ignore[typeddict-item]
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=result.total_tokens,
    )
