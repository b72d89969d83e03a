"""``LIFTIndex.as_chat_engine``: LlamaIndex's own chat engines over a LIFT index and its LLM.

The engines are LlamaIndex's (``SimpleChatEngine``, ``ContextChatEngine``, ``CondenseQuestionChatEngine``,
``CondensePlusContextChatEngine``), so chat memory, streaming and events behave as users know them; what
differs from ``BaseIndex.as_chat_engine`` is the default: LlamaIndex's "best" is an agent or
condense-plus-context over retrieved chunks, while a parametric LIFT index retrieves nothing (its
documents are in the memory's weights), so there "best" is the simple engine: the memory answers each
turn with the whole conversation in its prompt. Nothing reads ``Settings.llm``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    CondenseQuestionChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.chat_engine.types import BaseChatEngine, ChatMode

from lift_integrations.llama_index._index_base import Mode, check_mode

if TYPE_CHECKING:
    from lift_integrations.llama_index.index import LIFTIndex
    from lift_integrations.llama_index.llm import LIFTLLM

CHAT_MODES: tuple[str, ...] = ("best", "simple", "context", "condense_question", "condense_plus_context")


def chat_engine(
    index: LIFTIndex,
    chat_mode: ChatMode | str,
    llm: LIFTLLM,
    similarity_top_k: int,
    mode: Mode | None,
    kwargs: dict[str, Any],
) -> BaseChatEngine:
    """The chat engine ``chat_mode`` names, answering with ``llm``; ``kwargs`` go to its ``from_defaults``
    (``memory``, ``system_prompt``, ``chat_history``, ...)."""
    value = chat_mode.value if isinstance(chat_mode, ChatMode) else chat_mode
    if value in ("react", "openai"):
        raise ValueError(
            f"chat_mode={value!r} was removed from LlamaIndex; build a FunctionAgent or ReActAgent with "
            "a QueryEngineTool over index.as_query_engine() instead"
        )
    if value not in CHAT_MODES:
        raise ValueError(f"chat_mode must be one of {CHAT_MODES}, got {chat_mode!r}")
    mode = check_mode(mode or index.mode)
    if value == "best":
        value = "simple" if mode == "parametric" else "condense_plus_context"
    if value == "simple":
        return SimpleChatEngine.from_defaults(llm=llm, **kwargs)
    if value == "condense_question":
        query_engine = index.as_query_engine(llm=llm, similarity_top_k=similarity_top_k, mode=mode)
        return CondenseQuestionChatEngine.from_defaults(query_engine=query_engine, llm=llm, **kwargs)
    retriever = index.as_retriever(similarity_top_k=similarity_top_k, mode=mode)
    if value == "context":
        return ContextChatEngine.from_defaults(retriever=retriever, llm=llm, **kwargs)
    return CondensePlusContextChatEngine.from_defaults(retriever=retriever, llm=llm, **kwargs)
