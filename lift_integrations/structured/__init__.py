"""Structured output and tool calling, guaranteed by constrained decoding (llguidance).

``lift.generate(prompt, grammar=schema_or_grammar)`` masks every decoding step to the tokens a grammar
allows (:mod:`.grammar`); :mod:`.tools` builds the prompts and grammars for tool calls and JSON answers.
Framework-free: the LangChain, LlamaIndex and OpenAI-server bindings build on these functions.
"""

from __future__ import annotations

from lift_integrations.structured.grammar import Grammar, as_grammar, close_objects
from lift_integrations.structured.tools import (
    TOOL_CALL_MARKER,
    ToolCall,
    ToolRequest,
    ToolSpec,
    call_schema,
    normalize_tool_choice,
    parse_tool_calls,
    prepare_structured,
    prepare_tools,
    render_tool_call,
    render_tool_result,
    schema_instruction,
    to_tool_specs,
    tools_instruction,
    with_system,
)

__all__ = [
    "TOOL_CALL_MARKER",
    "Grammar",
    "ToolCall",
    "ToolRequest",
    "ToolSpec",
    "as_grammar",
    "call_schema",
    "close_objects",
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
