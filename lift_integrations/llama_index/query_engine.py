"""``LIFTQueryEngine`` and ``LIFTSynthesizer``: answering queries from a memory (and retrieved chunks).

LlamaIndex's default synthesizers answer "Empty Response" without calling the LLM when the retriever
returns no nodes, which is every parametric query. ``LIFTSynthesizer`` always calls the LLM and passes
the chunks as the core's ``context``, the same prompt format the memory's QA samples were trained on.
``LIFTQueryEngine`` is a ``RetrieverQueryEngine``, so ``Query*``, ``Retrieval*``, ``Synthesize*`` and
``LLM*`` events all fire, and it never reads ``Settings.llm``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.callbacks import CallbackManager
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import BaseSynthesizer, ResponseMode, get_response_synthesizer
from llama_index.core.response_synthesizers.generation import Generation
from llama_index.core.types import RESPONSE_TEXT_TYPE

from lift_integrations.llama_index.llm import LIFTLLM


class LIFTSynthesizer(Generation):
    """Answers with a :class:`LIFTLLM`: the query as the user turn, the chunks (if any) as its context.

    Built on ``Generation`` for its synthesize path, which calls the LLM even when no node was retrieved.
    It has no prompt templates: the context format is the core's, which the memory was trained on.
    """

    def __init__(
        self,
        llm: LIFTLLM,
        *,
        streaming: bool = False,
        callback_manager: CallbackManager | None = None,
        output_cls: type[BaseModel] | None = None,
    ) -> None:
        if not isinstance(llm, LIFTLLM):
            raise TypeError(f"LIFTSynthesizer needs a LIFTLLM, got {type(llm).__name__}")
        if output_cls is not None and not (
            isinstance(output_cls, type) and issubclass(output_cls, BaseModel)
        ):
            raise TypeError(f"output_cls must be a pydantic model class, got {output_cls!r}")
        if output_cls is not None and streaming:
            raise ValueError("output_cls answers are whole objects: pass streaming=False")
        super().__init__(llm=llm, callback_manager=callback_manager, streaming=streaming)
        self._output_cls = output_cls  # answers decoded under its JSON schema (LIFTLLM.structured_chat)
        self._lift_llm = llm

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if prompts:
            raise ValueError(
                "LIFTSynthesizer has no prompt templates; use as_query_engine(response_mode=...) "
                "for LlamaIndex's templated synthesizers"
            )

    def _messages(self, query_str: str) -> list[ChatMessage]:
        system = self._llm.system_prompt
        messages = [ChatMessage(role=MessageRole.USER, content=query_str)]
        return [ChatMessage(role=MessageRole.SYSTEM, content=system), *messages] if system else messages

    def get_response(
        self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any
    ) -> RESPONSE_TEXT_TYPE:
        messages, context = self._messages(query_str), list(text_chunks)
        if self._output_cls is not None:
            return self._lift_llm.structured_chat(
                self._output_cls, messages, context=context, **response_kwargs
            )
        if not self._streaming:
            return self._llm.chat(messages, context=context, **response_kwargs).message.content or ""
        return _deltas(self._llm.stream_chat(messages, context=context, **response_kwargs))

    async def aget_response(
        self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any
    ) -> RESPONSE_TEXT_TYPE:
        messages, context = self._messages(query_str), list(text_chunks)
        if self._output_cls is not None:
            return await self._lift_llm.astructured_chat(
                self._output_cls, messages, context=context, **response_kwargs
            )
        if not self._streaming:
            response = await self._llm.achat(messages, context=context, **response_kwargs)
            return response.message.content or ""
        return _adeltas(await self._llm.astream_chat(messages, context=context, **response_kwargs))


def _deltas(responses: Any) -> Generator[str, None, None]:
    for response in responses:
        if response.delta:
            yield response.delta


async def _adeltas(responses: Any) -> AsyncGenerator[str, None]:
    async for response in responses:
        if response.delta:
            yield response.delta


class LIFTQueryEngine(RetrieverQueryEngine):
    """Retrieve (hybrid: chunks; parametric: nothing), then answer with the LIFT memory.

    ``llm`` defaults to the retriever's (a :class:`LIFTRetriever` knows its index's LLM); there is no
    fallback to ``Settings.llm``. Without ``response_synthesizer`` it uses :class:`LIFTSynthesizer`.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: LIFTLLM | None = None,
        *,
        streaming: bool = False,
        response_synthesizer: BaseSynthesizer | None = None,
        node_postprocessors: list[BaseNodePostprocessor] | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if response_synthesizer is None:
            response_synthesizer = LIFTSynthesizer(
                _resolve_llm(retriever, llm), streaming=streaming, callback_manager=callback_manager
            )
        super().__init__(
            retriever,
            response_synthesizer=response_synthesizer,
            node_postprocessors=node_postprocessors,
            callback_manager=callback_manager,
        )

    @classmethod
    def from_args(  # type: ignore[override]
        cls,
        retriever: BaseRetriever,
        llm: LIFTLLM | None = None,
        response_synthesizer: BaseSynthesizer | None = None,
        node_postprocessors: list[BaseNodePostprocessor] | None = None,
        callback_manager: CallbackManager | None = None,
        response_mode: ResponseMode | str | None = None,
        streaming: bool = False,
        **synthesizer_kwargs: Any,
    ) -> LIFTQueryEngine:
        """Like ``RetrieverQueryEngine.from_args``, without reading ``Settings.llm``.

        ``response_mode=None`` answers with :class:`LIFTSynthesizer` (``output_cls=``: a pydantic answer,
        decoded under its JSON schema, in a ``PydanticResponse``). Another mode builds LlamaIndex's
        synthesizer for it (``synthesizer_kwargs``: ``text_qa_template``, ...); in parametric mode only
        ``GENERATION`` is allowed, as the others answer "Empty Response" to an empty retrieval.
        """
        output_cls = synthesizer_kwargs.pop("output_cls", None)
        if response_synthesizer is None and response_mode is None and not synthesizer_kwargs:
            response_synthesizer = LIFTSynthesizer(
                _resolve_llm(retriever, llm),
                streaming=streaming,
                callback_manager=callback_manager,
                output_cls=output_cls,
            )
        elif output_cls is not None:
            synthesizer_kwargs["output_cls"] = output_cls  # LlamaIndex's synthesizer, via structured_predict
        if response_synthesizer is None and (response_mode is not None or synthesizer_kwargs):
            mode = ResponseMode(response_mode or ResponseMode.COMPACT)
            if getattr(retriever, "mode", None) == "parametric" and mode != ResponseMode.GENERATION:
                raise ValueError(
                    f"response_mode={mode.value!r} answers 'Empty Response' when nothing is retrieved, as in "
                    "parametric mode; use response_mode='generation' or leave it unset"
                )
            response_synthesizer = get_response_synthesizer(
                llm=_resolve_llm(retriever, llm),
                callback_manager=callback_manager,
                response_mode=mode,
                streaming=streaming,
                **synthesizer_kwargs,
            )
        return cls(
            retriever,
            llm,
            streaming=streaming,
            response_synthesizer=response_synthesizer,
            node_postprocessors=node_postprocessors,
            callback_manager=callback_manager,
        )


def _resolve_llm(retriever: BaseRetriever, llm: LIFTLLM | None) -> LIFTLLM:
    resolved = llm if llm is not None else getattr(retriever, "llm", None)
    if resolved is None:
        raise ValueError("pass llm= (a LIFTLLM): LIFTQueryEngine never falls back to Settings.llm")
    return resolved
