"""``LIFTLLM``: a LIFT model (frozen base weights + an absorbed memory) as a LlamaIndex ``CustomLLM``.

A thin adapter: prompts, chat templates, stop strings, token counts and absorption all live in the core
:class:`~lift_integrations.model.LIFTModel`. This module maps LlamaIndex messages and responses onto it,
reports usage where ``TokenCountingHandler`` reads it (``raw["usage"]``), runs the async endpoints in
worker threads so the event loop keeps running, and turns absorb progress into dispatcher events.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.llm import default_completion_to_prompt
from llama_index.core.schema import BaseNode, MetadataMode

from lift_integrations import registry
from lift_integrations.documents import normalize_documents
from lift_integrations.llama_index.events import (
    LIFTAbsorbEndEvent,
    LIFTAbsorbProgressEvent,
    LIFTAbsorbStartEvent,
)
from lift_integrations.memory import Memory, memory_from
from lift_integrations.prompting import parse_chat, render_chat
from lift_integrations.validation import (
    check_bool,
    check_context,
    check_max_new_tokens,
    check_stop,
    check_temperature,
    check_text,
)

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.config import LIFTConfig
    from lift_integrations.generation import GenerationResult, TextStream
    from lift_integrations.model import LIFTModel

dispatcher = get_dispatcher(__name__)

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
}
_R = TypeVar("_R")


def to_core_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages as the core's role/content dicts (same roles merged by the core)."""
    if isinstance(messages, (str, bytes, bytearray)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of ChatMessage, got {type(messages).__name__}")
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise TypeError(f"message {index} must be a ChatMessage, got {type(message).__name__}")
        role = _ROLES.get(MessageRole(message.role))
        if role is None:
            raise ValueError(
                f"message {index} has role {message.role!r}; LIFTLLM has no tool calling and accepts only "
                "system, user and assistant messages"
            )
        converted.append({"role": role, "content": message.content or ""})
    return converted


def node_title(node: BaseNode) -> str:
    """The title a memory records for a LlamaIndex document: its ``title`` or ``file_name`` metadata."""
    for key in ("title", "file_name"):
        value = node.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def to_core_documents(documents: Any) -> list[Any]:
    """LlamaIndex documents/nodes as ``(title, text)`` pairs; strings and pairs pass through to the core,
    which validates them (empty text, bytes, wrong types) with messages that name the document."""
    if isinstance(documents, (str, BaseNode)):
        documents = [documents]
    return [
        (node_title(d), d.get_content(metadata_mode=MetadataMode.NONE)) if isinstance(d, BaseNode) else d
        for d in documents
    ]


class _Pieces(Iterator[tuple[str, str, Any]]):
    """A core stream as ``(cumulative text, delta, raw)``, each piece held back until the next one arrives
    so that the last response carries the usage without an extra empty-delta response.

    :meth:`close` ends generation and frees the model when the consumer stops early. It works on the core
    stream, not on the generator, so it is safe while another thread waits in ``next`` (the async
    endpoints). Dropped unclosed, the stream is cancelled at the next token: its worker thread keeps the
    core stream alive, so only this object's finalizer can notice that nobody reads it any more.
    """

    def __init__(self, stream: TextStream, finish: Callable[[GenerationResult | None], Any]) -> None:
        self.stream = stream
        self._pieces = self._hold_back(stream, finish)  # references the stream, not self: no cycle

    @staticmethod
    def _hold_back(
        stream: TextStream, finish: Callable[[GenerationResult | None], Any]
    ) -> Iterator[tuple[str, str, Any]]:
        text, pending = "", None
        for piece in stream:
            if pending is not None:
                text += pending
                yield text, pending, None
            pending = piece
        raw = finish(stream.result)
        if pending is None:  # nothing but end-of-turn was generated: one empty response carries usage
            yield "", "", raw
        else:
            yield text + pending, pending, raw

    def __next__(self) -> tuple[str, str, Any]:
        return next(self._pieces)

    def cancel(self) -> None:
        """End generation at the next token, without waiting (never blocks)."""
        if self.stream.result is None:
            self.stream.cancel()

    def close(self) -> None:
        """End generation now unless it finished; returns once the model lock is free."""
        if self.stream.result is None:
            self.stream.close()

    def __del__(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None and stream.result is None:
            stream.cancel()


def _responses(pieces: _Pieces, make: Callable[[str, str, Any], _R]) -> Generator[_R, None, None]:
    """``make`` of each piece. Closing this generator, or dropping it (which is what closing LlamaIndex's
    wrapper around it does), ends generation before ``close()`` returns."""
    try:
        for text, delta, raw in pieces:
            yield make(text, delta, raw)
    finally:
        pieces.close()


async def _aresponses(pieces: _Pieces, make: Callable[[str, str, Any], _R]) -> AsyncGenerator[_R, None]:
    """``make`` of each piece, each awaited in a worker thread so the loop is never blocked.

    ``aclose()``, a cancelled task, or the loop finalizing this generator once it is dropped ends
    generation: cancelled at once, then closed in a worker thread (it waits for the token in progress).
    """
    try:
        while True:
            item = await asyncio.to_thread(next, pieces, None)  # a piece is a tuple, never None
            if item is None:
                return
            yield make(*item)
    finally:
        if pieces.stream.result is None:  # stopped early: end generation at once, then wait for it
            pieces.cancel()
            await asyncio.to_thread(pieces.close)


class _ChatTemplate:
    """The default ``messages_to_prompt`` (see :meth:`LIFTLLM._render_messages`). A callable object rather
    than a bound method, whose repr would contain the LLM's repr, which contains this field."""

    def __init__(self, llm: LIFTLLM) -> None:
        self._llm = llm

    def __call__(self, messages: Sequence[ChatMessage]) -> str:
        return self._llm._render_messages(messages)

    def __repr__(self) -> str:
        return "<chat template>"


class LIFTLLM(CustomLLM):
    """A LIFT model as a LlamaIndex chat LLM, answering with its absorbed memory.

    ``model`` is a hub id, a local folder or ``.gguf`` file, a name given to
    :func:`~lift_integrations.registry.register_model`, ``None`` for the embedded SmolLM2-135M-Instruct, or
    an existing :class:`~lift_integrations.LIFTModel`. Weights load on first use and are shared by every
    ``LIFTLLM`` and LangChain ``LIFTChatModel`` of the same model (:mod:`lift_integrations.registry`); the
    memory (:meth:`absorb`, :meth:`load_memory`, ...) belongs to this
    instance. Per-call keyword arguments: ``max_new_tokens`` (or ``max_tokens``), ``temperature``,
    ``stop`` and ``context`` (a list of text chunks placed above the question, as in hybrid mode); others
    are ignored, as LlamaIndex passes framework-level keywords through. A keyword given to a call
    overrides the field of the same name, ``None`` keeps the field.

    ``max_new_tokens`` is an integer >= 1, ``temperature`` a finite number >= 0 (0 decodes greedily),
    ``stop`` a string or a list of strings: one string is one stop string, never split into characters.
    Fields and keywords are checked before any work (:mod:`lift_integrations.validation`): bools, NaN
    and infinities are refused with an error naming the argument.
    """

    model: str | None = Field(
        default=None,
        description="Hub id, local path or registered name of the base model; None is the embedded "
        "SmolLM2-135M-Instruct.",
    )
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens generated per call.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 decodes greedily.")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation (not returned).")
    device: str | None = Field(default=None, description="Torch device; None picks CUDA when available.")
    dtype: str | None = Field(default=None, description="Torch dtype; None is bf16 on CUDA, fp32 on CPU.")
    route_memory: bool = Field(
        default=False,
        description="Attach the memory only when the last user message is about its documents "
        "(lift_integrations.routing.MemoryRouter); other messages get the base model's answer. Meant for "
        "questions asked directly: a RAG prompt holds retrieved passages about the documents.",
    )

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _check_max_new_tokens(cls, value: Any) -> int:
        return check_max_new_tokens(value)

    @field_validator("temperature", mode="before")
    @classmethod
    def _check_temperature(cls, value: Any) -> float:
        return check_temperature(value)

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> list[str]:
        return check_stop(value)

    _lift: Any = PrivateAttr(default=None)
    _memory: Memory | None = PrivateAttr(default=None)
    _routes: Any = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | os.PathLike[str] | LIFTModel | None = None,
        *,
        memory: Memory | str | os.PathLike[str] | None = None,
        router_embed_model: Any = None,
        **kwargs: Any,
    ) -> None:
        lift = None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            if not registry.is_lift_model(model):
                raise TypeError(f"model must be a name, a path or a LIFTModel, got {type(model).__name__}")
            lift, model = model, model.name
        if memory is not None and not isinstance(memory, (Memory, str, os.PathLike)):
            raise TypeError(
                f"memory must be a Memory, a folder path, a hub id or None, got {type(memory).__name__}"
            )
        custom_rendering = kwargs.get("messages_to_prompt") is not None
        super().__init__(model=os.fspath(model) if model is not None else None, **kwargs)
        self._lift = lift
        if not custom_rendering:
            self.messages_to_prompt = _ChatTemplate(self)
        embed = None
        if router_embed_model is not None:  # a LlamaIndex BaseEmbedding; None: all-MiniLM-L6-v2
            if not callable(getattr(router_embed_model, "get_text_embedding_batch", None)):
                raise TypeError(
                    "router_embed_model must be a LlamaIndex embedding (with get_text_embedding_batch), "
                    f"got {type(router_embed_model).__name__}"
                )
            embed = lambda texts: router_embed_model.get_text_embedding_batch(list(texts))  # noqa: E731
        from lift_integrations.routing import RouterSlot

        self._routes = RouterSlot(embed)
        if memory is not None:
            # Not checked against the weights here (that would load them); the core checks at first use.
            self._memory = memory_from(memory)

    @classmethod
    def class_name(cls) -> str:
        return "LIFTLLM"

    # Model and memory -------------------------------------------------------------------------------

    @property
    def lift_model(self) -> LIFTModel:
        """The underlying core model, loaded (and shared) on first access."""
        if self._lift is None:
            self._lift = registry.shared_model(self.model, self.device, self.dtype)
        return self._lift

    @property
    def memory(self) -> Memory | None:
        """The memory every call answers with; ``None`` is the base model alone."""
        return self._memory

    @property
    def metadata(self) -> LLMMetadata:
        lift = self.lift_model
        return LLMMetadata(
            context_window=lift.context_window,  # the real window: PromptHelper packs chunks with it
            num_output=self.max_new_tokens,
            is_chat_model=True,  # LLM.predict then calls chat(), which applies the chat template
            is_function_calling_model=False,
            model_name=lift.name,
        )

    def absorb(
        self,
        documents: Any,
        *,
        config: LIFTConfig | None = None,
        show_progress: bool = False,
        append: bool = True,
        generator: Any = None,
    ) -> Memory:
        """Absorb ``documents`` (LlamaIndex documents/nodes, strings or ``(title, text)`` pairs) and answer
        with the result from now on. ``append=True`` continues from the current memory, so it keeps what
        was absorbed before; ``append=False`` starts a fresh one. Returns the new memory."""
        check_bool(append, "append")
        memory = self.absorb_memory(
            documents,
            into=self._memory if append else None,
            config=config,
            show_progress=show_progress,
            generator=generator,
        )
        self._memory = memory
        return memory

    @dispatcher.span
    def absorb_memory(
        self,
        documents: Any,
        *,
        into: Memory | None = None,
        config: LIFTConfig | None = None,
        show_progress: bool = False,
        generator: Any = None,
    ) -> Memory:
        """Absorb ``documents`` into a new memory and return it without making it this LLM's memory.

        Emits :class:`LIFTAbsorbStartEvent`, one :class:`LIFTAbsorbProgressEvent` per optimizer step and
        :class:`LIFTAbsorbEndEvent`; ``show_progress`` draws a tqdm bar. ``into``: continue from that
        memory (the result holds its documents too). See :meth:`LIFTModel.absorb` for ``config`` and
        ``generator``. Every argument is checked before the start event and any work.
        """
        from lift_integrations.config import LIFTConfig

        if config is not None:
            if not isinstance(config, LIFTConfig):
                raise TypeError(f"config must be a LIFTConfig or None, got {type(config).__name__}")
            config.validate()  # a setting may have changed since construction
        if into is not None and not isinstance(into, Memory):
            raise TypeError(f"into must be a Memory or None, got {type(into).__name__}")
        check_bool(show_progress, "show_progress")
        docs = normalize_documents(to_core_documents(documents))  # bad input fails before any event
        lift = self.lift_model
        dispatcher.event(
            LIFTAbsorbStartEvent(
                model_name=lift.name,
                num_documents=len(docs),
                titles=[d.title for d in docs],
                base_memory_id=into.id if into is not None else None,
            )
        )

        def on_step(progress: AbsorbProgress) -> None:
            dispatcher.event(LIFTAbsorbProgressEvent(**progress.to_dict()))

        with self.callback_manager.as_trace("lift_absorb"):
            memory = lift.absorb(
                docs,
                config=config,
                generator=generator,
                show_progress=show_progress,
                callback=on_step,
                into=into,
            )
        stats = memory.stats
        dispatcher.event(
            LIFTAbsorbEndEvent(
                memory_id=memory.id,
                num_documents=len(memory.documents),
                steps=int(stats.get("steps", 0)),
                seconds=float(stats.get("seconds", 0.0)),
                final_loss=float(stats.get("final_loss", float("nan"))),
            )
        )
        return memory

    def save_memory(self, path: str | os.PathLike[str]) -> Path:
        """Write the current memory to the folder ``path`` (atomically); returns the folder."""
        if self._memory is None:
            raise ValueError("this LIFTLLM has no memory to save; absorb documents or load a memory first")
        return self._memory.save(path)

    def load_memory(self, memory: Memory | str | os.PathLike[str]) -> Memory:
        """Answer with ``memory`` (a :class:`Memory`, a saved folder or a hub id) from now on.

        The memory is checked against this model's weights now, so a memory made for another base model
        fails here (``MemoryMismatchError``) rather than at the first question.
        """
        loaded = memory_from(memory)
        if loaded is None:
            raise TypeError("load_memory() needs a Memory, a folder path or a hub id; got None")
        with self.lift_model.using(loaded):
            pass
        self._memory = loaded
        return loaded

    def clear_memory(self) -> None:
        """Answer with the base model alone; the shared weights stay loaded."""
        self._memory = None

    # Prompt plumbing --------------------------------------------------------------------------------

    def _render_messages(self, messages: Sequence[ChatMessage]) -> str:
        """Default ``messages_to_prompt``: the tokenizer's chat template, as the model will see it.

        A rendered prompt that comes back through ``complete(..., formatted=True)`` (CustomLLM's and
        LlamaIndex's own completion path) is parsed back into its messages instead of being wrapped in the
        template a second time: the core always applies the template itself and keeps control-token
        strings in content as plain text, so it cannot take a pre-rendered prompt. Such strings in content
        are escaped here (:func:`~lift_integrations.prompting.render_chat`), so parsing recovers exactly
        these messages and a message cannot open a fake turn.
        """
        tokenizer = self.lift_model.tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            return generic_messages_to_prompt(messages)
        return render_chat(tokenizer, to_core_messages(messages))

    def _completion_messages(self, prompt: str, formatted: bool) -> list[dict[str, str]]:
        """The core messages for a completion prompt. ``formatted``: the prompt is already formatted and
        is not templated again; a rendering of the chat template (by :meth:`_render_messages` or by
        hand) is parsed back into its messages, any other text is one user message. A pure function of
        the prompt, so the same prompt always gets the same answer."""
        check_text(prompt, "prompt")
        if formatted:
            parsed = parse_chat(self.lift_model.tokenizer, prompt)
            return parsed if parsed is not None else [{"role": "user", "content": prompt}]
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        # None (the field's type allows it) is the default, as at construction: the prompt unchanged.
        to_prompt = self.completion_to_prompt or default_completion_to_prompt
        return [*system, {"role": "user", "content": to_prompt(prompt)}]

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The core's arguments for one call, checked before any work: a keyword overrides the field,
        ``None`` keeps it."""
        name, max_new_tokens = "max_new_tokens", kwargs.get("max_new_tokens")
        if max_new_tokens is None and kwargs.get("max_tokens") is not None:
            name, max_new_tokens = "max_tokens", kwargs["max_tokens"]
        temperature, stop = kwargs.get("temperature"), kwargs.get("stop")
        return {
            "memory": self._memory,
            "context": check_context(kwargs.get("context")),
            "max_new_tokens": check_max_new_tokens(
                self.max_new_tokens if max_new_tokens is None else max_new_tokens, name
            ),
            "temperature": check_temperature(self.temperature if temperature is None else temperature),
            "stop": check_stop(self.stop if stop is None else stop),
        }

    def _raw(self, result: GenerationResult | None, memory: Memory | None) -> dict[str, Any]:
        """JSON-serialisable ``raw``; ``usage`` is where ``TokenCountingHandler`` looks for counts."""
        usage = None
        if result is not None:
            usage = {
                "prompt_tokens": result.input_tokens,
                "completion_tokens": result.output_tokens,
                "total_tokens": result.total_tokens,
            }
        return {
            "usage": usage,
            "model": self.lift_model.name,
            "finish_reason": result.finish_reason if result is not None else None,
            "memory_id": memory.id if memory is not None else None,
        }

    def _routed(self, messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the memory ``route_memory`` picks for the last user message."""
        if not self.route_memory or options["memory"] is None:
            return options
        return {**options, "memory": self._routes.route_chat(options["memory"], messages)}

    def _generate(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        options = self._routed(messages, options)
        result = self.lift_model.generate(messages, **options)
        return result.text, self._raw(result, options["memory"])

    def _stream(self, messages: list[dict[str, str]], options: dict[str, Any]) -> _Pieces:
        """Start generating now (bad input raises here, inside the callback) and return the pieces."""
        options = self._routed(messages, options)
        stream = self.lift_model.stream(messages, **options)
        return _Pieces(stream, lambda result: self._raw(result, options["memory"]))

    def _complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponse:
        text, raw = self._generate(self._completion_messages(prompt, formatted), self._options(kwargs))
        return CompletionResponse(text=text, raw=raw)

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        text, raw = self._generate(to_core_messages(messages), self._options(kwargs))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=raw)

    @staticmethod
    def _completion_chunk(text: str, delta: str, raw: Any) -> CompletionResponse:
        return CompletionResponse(text=text, delta=delta, raw=raw)

    @staticmethod
    def _chat_chunk(text: str, delta: str, raw: Any) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta, raw=raw
        )

    # Endpoints: each decorated so instrumentation, legacy callbacks and token counting see it ---------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        pieces = self._stream(self._completion_messages(prompt, formatted), self._options(kwargs))
        return _responses(pieces, self._completion_chunk)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        pieces = self._stream(to_core_messages(messages), self._options(kwargs))
        return _responses(pieces, self._chat_chunk)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = self._options(kwargs)

        def start() -> _Pieces:  # parsing a formatted prompt may load the model: off the loop too
            return self._stream(self._completion_messages(prompt, formatted), options)

        return _aresponses(await asyncio.to_thread(start), self._completion_chunk)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        pieces = await asyncio.to_thread(self._stream, to_core_messages(messages), self._options(kwargs))
        return _aresponses(pieces, self._chat_chunk)
