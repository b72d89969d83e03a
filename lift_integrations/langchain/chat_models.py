"""``LIFTChatModel``: a LangChain chat model over a LIFT base model and the memory it has absorbed.

A thin adapter: prompting, stop strings, streaming and training live in :mod:`lift_integrations.model`;
this module maps LangChain messages, callbacks, metadata and events onto it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun, Callbacks
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from lift_integrations import registry
from lift_integrations.bank import bank_from
from lift_integrations.bank_router import BankRouting
from lift_integrations.langchain._absorb import (
    absorb_config,
    absorb_inputs,
    arun_absorb,
    check_absorb_args,
    run_absorb,
)
from lift_integrations.langchain._bank import (
    absorb_bank,
    absorbed_documents,
    bank_info,
    check_bank_routing,
    check_memory_per,
    is_bank_folder,
    route_in_bank,
)
from lift_integrations.langchain._messages import memory_info, to_core_messages, usage_of
from lift_integrations.langchain._tools import ToolCallingMixin, plan_call, whole_answer_chunks
from lift_integrations.microbatch import run_off_loop, shared_batcher
from lift_integrations.validation import (
    check_context,
    check_max_new_tokens,
    check_prompt,
    check_stop,
    check_temperature,
    check_top_p,
)

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.config import LIFTConfig
    from lift_integrations.generation import GenerationResult, TextStream
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel

DEFAULT_MAX_TOKENS = 256
__all__ = ["DEFAULT_MAX_TOKENS", "LIFTChatModel", "memory_info", "to_core_messages"]


class LIFTChatModel(ToolCallingMixin, BaseChatModel):
    """Chat model answering from documents absorbed into its parameters (LIFT with Gated Memory).

    Construction is cheap: the base weights load on first use and are shared by every instance, and
    every LlamaIndex ``LIFTLLM``, built with the same ``model``/``device``/``dtype``
    (:mod:`lift_integrations.registry`; or pass ``lift_model=`` to use a model you built).
    Each instance owns its ``memory``: :meth:`absorb` trains one, :meth:`save_memory`/:meth:`load_memory`
    persist it, :meth:`clear_memory` goes back to the base model. Every call uses the memory the instance
    holds at that moment, so instances that share weights never see each other's documents.

    ``mode`` is informational (reported as ``lift_mode``): in hybrid mode the retrieved passages are
    already in the prompt, placed there by the chain, and the model generates with its memory either way.

    ``temperature`` (a finite number >= 0), ``max_tokens`` (an integer >= 1), ``top_p`` (``None`` or in
    (0, 1]) and ``stop`` are fields and per-call keywords (``invoke(..., temperature=0.7)``); a call's
    keyword overrides the field, ``None`` keeps it. ``stop`` is a string or a list of strings; one string
    is one stop string, never split into characters. Per-call ``context`` is a list of text chunks put
    above the question. Every value is checked before any work (:mod:`lift_integrations.validation`):
    bools, NaN and infinities are refused with an error naming the argument.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    """Hub id, local folder, ``.gguf`` file or a name given to
    :func:`~lift_integrations.registry.register_model`; ``None``: the embedded SmolLM2-135M-Instruct."""
    lift_model: Any = Field(default=None, exclude=True, repr=False)
    """An already loaded :class:`~lift_integrations.LIFTModel`; takes precedence over ``model``."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None``: CUDA when available."""
    dtype: str | None = None
    """``"float32"``, ``"bfloat16"``…; ``None``: bf16 on a GPU, fp32 on the CPU."""
    temperature: float = 0.0
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    stop: list[str] | None = None
    streaming: bool = False
    mode: Literal["parametric", "hybrid"] = "parametric"
    memory: Any = Field(default=None, exclude=True, repr=False)
    """The :class:`~lift_integrations.Memory` used for generation (``None``: the base model alone)."""
    show_progress: bool | None = None
    """Draw a tqdm bar while absorbing (``None``: unless ``$LIFT_PROGRESS`` is ``0``)."""
    route_memory: bool = True
    """Attach the memory only when the conversation is about its documents
    (:class:`~lift_integrations.routing.MemoryRouter` on
    :func:`~lift_integrations.routing.conversation_query`: the last user message, with the earlier ones
    when it is a follow-up); other messages get the base model's answer. ``False``: the memory answers
    everything, unrelated questions too, in its documents' voice. Route on the question: in a RAG prompt
    put the retrieved passages in a system message or ``context=``, not in the user message. Each
    response's ``lift_memory_id`` says whether the memory answered."""
    router_embeddings: Any = Field(default=None, exclude=True, repr=False)
    """The LangChain ``Embeddings`` the router compares messages and passages with (``None``: the
    embedded all-MiniLM-L6-v2)."""
    micro_batch: bool = True
    """Run concurrent calls (``batch``, ``abatch``, concurrent ``ainvoke``) as shared batches, each row
    with its own memory (:class:`~lift_integrations.microbatch.MicroBatcher`); not streams."""
    memory_bank: Any = Field(default=None, exclude=True, repr=False)
    """A :class:`~lift_integrations.MemoryBank` (or its saved folder): each call's last user message is
    routed to the bank's memory it is about (:class:`~lift_integrations.BankRouter`), or to the base
    model; ``absorb(..., memory_per="document")`` builds one. Replaces ``memory`` while set."""
    bank_routing: BankRouting | None = None
    """How ``memory_bank`` routes (:class:`~lift_integrations.BankRouting`, or a dict of its options:
    ``{"margin": 0.1}``, ``{"calibration": "joint"}``): a larger ``margin`` or ``"joint"`` calibration
    sends fewer unrelated questions to a memory, and more of its own to the base model. ``None``
    (default): the bank's own ``routing``, which a saved bank keeps (docs/routing.md, "Choosing the
    rule"); ``save_memory`` writes the routing in effect into the bank."""

    _absorb_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _routes: Any = PrivateAttr(default=None)
    _routes_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _bank_routes: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_lift_objects(self) -> LIFTChatModel:
        if self.lift_model is not None:
            if not registry.is_lift_model(self.lift_model):
                raise TypeError(f"lift_model must be a LIFTModel, got {type(self.lift_model).__name__}")
            if self.memory is None and self.lift_model.attached_memory is not None:
                self.memory = self.lift_model.attached_memory
        if self.memory is not None:
            from lift_integrations.memory import memory_from

            self.memory = memory_from(self.memory)  # a folder path or a hub id names a saved memory
        if self.memory_bank is not None:
            self.memory_bank = bank_from(self.memory_bank)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "bank_routing":
            value = BankRouting.optional(value)  # checked on assignment too, as at construction
        super().__setattr__(name, value)

    @field_validator("bank_routing", mode="before")
    @classmethod
    def _check_bank_routing(cls, value: Any) -> BankRouting | None:
        return BankRouting.optional(value)

    @field_validator("temperature", mode="before")
    @classmethod
    def _check_temperature(cls, value: Any) -> float:
        return check_temperature(value)

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _check_max_tokens(cls, value: Any) -> int | None:
        return None if value is None else check_max_new_tokens(value, "max_tokens")

    @field_validator("top_p", mode="before")
    @classmethod
    def _check_top_p(cls, value: Any) -> float | None:
        return check_top_p(value)

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> list[str] | None:
        return None if value is None else check_stop(value)

    # Identity ------------------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "lift-chat"

    @property
    def model_name(self) -> str:
        """Display name of the base model; stable before and after the weights load."""
        if self.lift_model is not None:
            return str(self.lift_model.name)
        if self.model is None:
            from lift_integrations.loading import DEFAULT_MODEL_NAME

            return DEFAULT_MODEL_NAME
        return self.model

    @property
    def memory_id(self) -> str | None:
        """Content hash of the current memory, or of the memory bank (``None`` without either)."""
        if self.memory_bank is not None:
            return f"bank-{self.memory_bank.id}"
        memory = self.memory
        return memory.id if memory is not None else None

    def absorbed_documents(self) -> list[tuple[str, str]]:
        """``(title, text)`` of every document the current memory or bank holds."""
        return absorbed_documents(self.memory, self.memory_bank)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # The memory id is part of the LLM cache key: an answer cached before an absorb must not be served
        # after it.
        return {
            "model_name": self.model_name,
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "mode": self.mode,
            "route_memory": self.route_memory,
            "bank_routing": (self.bank_routing or self.memory_bank.routing).resolved().to_dict()
            if self.memory_bank is not None
            else None,
            "lift_memory_id": self.memory_id,
            # Two wrapped models may share a display name; their weights' fingerprint tells them apart.
            "lift_base_fingerprint": self.lift_model.fingerprint if self.lift_model is not None else None,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "lift"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) and model else self.model_name
        return params

    # The model -----------------------------------------------------------------------------------

    @property
    def lift(self) -> LIFTModel:
        """The core model (loads the shared weights on first access)."""
        if self.lift_model is not None:
            return self.lift_model
        return registry.shared_model(self.model, self.device, self.dtype)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the model's own tokenizer (the base class would download GPT-2's)."""
        from lift_integrations.prompting import encode_text

        return encode_text(self.lift.tokenizer, text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens of ``messages`` in the model's chat template, as generation would count them."""
        from lift_integrations.prompting import encode_chat

        return len(encode_chat(self.lift.tokenizer, to_core_messages(messages), add_generation_prompt=True))

    # Generation ----------------------------------------------------------------------------------

    def _call_args(self, stop: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The core's generation arguments for one call, checked (before routing, loading or locking): a
        keyword given to the call overrides the field, ``None`` keeps the field."""
        max_tokens = kwargs.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS
        temperature = kwargs.get("temperature")
        return {
            "max_new_tokens": check_max_new_tokens(max_tokens, "max_tokens"),
            "temperature": check_temperature(self.temperature if temperature is None else temperature),
            "top_p": check_top_p(kwargs.get("top_p", self.top_p)),
            "stop": check_stop(self.stop if stop is None else stop),
            "context": check_context(kwargs.get("context")),
        }

    def _call_turns(self, messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
        """The messages as core turns, their text checked before any work."""
        turns = to_core_messages(messages)
        check_prompt(turns)
        return turns

    def _metadata(self, memory: Memory | None, finish_reason: str) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "finish_reason": finish_reason,
            "model_provider": "lift",
            "lift_memory_id": memory.id if memory is not None else None,
            "lift_mode": self.mode,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        args = self._call_args(stop, kwargs)
        turns = self._call_turns(messages)
        memory = self._memory_for(turns)  # one snapshot per call: an absorb elsewhere cannot change it
        plan = plan_call(turns, kwargs)  # bound tools or response_format: prompt + grammar (_tools.py)
        generate = shared_batcher(self.lift).generate if self.micro_batch else self.lift.generate
        result = generate(plan.turns, memory=memory, grammar=plan.grammar, **args)
        metadata = self._metadata(memory, result.finish_reason)
        message = plan.message(result.text, usage_metadata=usage_of(result), response_metadata=metadata)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": self.model_name, "token_usage": dict(usage_of(result))},
        )

    def _final_chunk(self, memory: Memory | None, result: GenerationResult | None) -> ChatGenerationChunk:
        # Usage and string metadata go on this chunk only: chunk merging sums usage and concatenates strings.
        assert result is not None, "the stream ended without a result"
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage_of(result),
                response_metadata=self._metadata(memory, result.finish_reason),
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = plan_call(self._call_turns(messages), kwargs)
        if plan.calls_tools:  # a tool call arrives whole: its chunk holds tool_call_chunks (_tools.py)
            yield from whole_answer_chunks(self._generate(messages, stop, None, **kwargs))
            return
        args = self._call_args(stop, kwargs)
        turns = self._call_turns(messages)
        memory = self._memory_for(turns)
        stream = self.lift.stream(plan.turns, memory=memory, grammar=plan.grammar, **args)
        try:
            for piece in stream:  # the core never yields empty pieces
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            if stream.result is None:  # the consumer stopped early: free the model at the next token
                stream.close()
        yield self._final_chunk(memory, stream.result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Loading and generating both block for seconds: keep them off the event loop.
        return await run_off_loop(self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = plan_call(self._call_turns(messages), kwargs)
        if plan.calls_tools:
            for whole in whole_answer_chunks(await self._agenerate(messages, stop, None, **kwargs)):
                yield whole
            return
        args = self._call_args(stop, kwargs)
        lift_messages = self._call_turns(messages)
        memory = await run_off_loop(self._memory_for, lift_messages)

        def start() -> TextStream:
            return self.lift.stream(plan.turns, memory=memory, grammar=plan.grammar, **args)

        stream = await run_off_loop(start)
        try:
            while True:
                # Each wait for the next piece happens in a worker thread, so the loop stays free meanwhile.
                piece = await run_off_loop(next, stream, None)  # a piece is a str, never None
                if piece is None:
                    break
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            if stream.result is None:  # stopped early or cancelled: end generation without waiting for it
                threading.Thread(target=stream.close, daemon=True).start()
        yield self._final_chunk(memory, stream.result)

    # Memory --------------------------------------------------------------------------------------

    def _memory_for(self, turns: Sequence[dict[str, str]]) -> Memory | None:
        """The memory this call (its messages as core turns) answers with: the instance's, unless
        ``route_memory`` sends the conversation to the base model."""
        if self.memory_bank is not None:
            with self._routes_lock:
                routes = route_in_bank(
                    self.memory_bank, self.router_embeddings, self._bank_routes, self.bank_routing
                )
                self._bank_routes = routes
            return routes.memory_for(turns)
        memory = self.memory
        if memory is None or not self.route_memory:
            return memory
        embeddings = self.router_embeddings
        with self._routes_lock:  # concurrent calls share one slot; new embeddings get a new one
            slot = self._routes
            if slot is None or slot[0] is not embeddings:
                from lift_integrations.routing import RouterSlot, document_embedder

                embed = None if embeddings is None else document_embedder(embeddings)
                slot = self._routes = (embeddings, RouterSlot(embed))
        return slot[1].route_chat(memory, turns)

    def _absorb_blocking(
        self,
        documents: list[tuple[str, str]],
        lift_config: LIFTConfig | None,
        overrides: Mapping[str, Any],
        extend: bool,
        show_progress: bool | None,
        generator: Any,
        on_progress: Callable[[AbsorbProgress], None],
        memory_per: str | None = None,
        bank_routing: BankRouting | None = None,
    ) -> dict[str, Any]:
        lift = self.lift
        config = absorb_config(lift, lift_config, overrides)
        started = time.perf_counter()
        # Two absorbs on one instance must not both extend the same old memory. The model lock is not held
        # here: the core takes it per optimizer step so that requests are served while a memory trains.
        with self._absorb_lock:
            if memory_per == "document":
                progress = self.show_progress if show_progress is None else show_progress
                return absorb_bank(
                    self, documents, config, extend, progress, generator, on_progress, bank_routing
                )
            previous = self.memory if extend else None
            memory = lift.absorb(
                documents,
                config=config,
                generator=generator,
                show_progress=self.show_progress if show_progress is None else show_progress,
                callback=on_progress,
                into=previous,
            )
            self.memory, self.memory_bank = memory, None
        info = memory_info(memory)
        info["seconds"] = round(time.perf_counter() - started, 3)
        info["new_documents"] = len(documents)
        return info

    def absorb(
        self,
        documents: Any,
        *,
        lift_config: LIFTConfig | None = None,
        extend: bool = True,
        show_progress: bool | None = None,
        generator: Any = None,
        config: RunnableConfig | None = None,
        callbacks: Callbacks = None,
        memory_per: Literal["document"] | None = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
        **config_overrides: Any,
    ) -> dict[str, Any]:
        """Train the memory on ``documents`` and use it from the next call on; returns :func:`memory_info`.

        ``memory_per="document"`` absorbs each document into its own memory instead, side by side
        (:meth:`LIFTModel.absorb_many`), into :attr:`memory_bank` (``extend``: added to the current
        bank), and every call then routes its last user message to the memory it is about;
        ``bank_routing`` (with ``memory_per="document"`` only) sets :attr:`bank_routing`.

        ``documents``: a str, LangChain ``Document``s (title from metadata ``title`` or ``source``), strs
        or ``(title, text)`` pairs. ``config_overrides`` are :class:`~lift_integrations.LIFTConfig` fields
        applied to ``lift_config`` (default: ``LIFTConfig.for_device``, ``fast`` on CPU, ``dense_qa`` on
        GPU).
        ``extend=True`` continues from the current memory, so earlier documents stay; ``False`` starts
        a fresh one. Progress is reported as LangChain custom events ``lift_absorb_start``,
        ``lift_absorb_progress`` and ``lift_absorb_end`` inside a ``lift_absorb`` run, so handlers passed
        in ``callbacks``/``config`` (or inherited from an enclosing runnable) receive them.

        ``config`` is LangChain's ``RunnableConfig``; the :class:`~lift_integrations.LIFTConfig` goes in
        ``lift_config``. Every argument and setting is checked before any event or work.
        """
        check_absorb_args(lift_config, config_overrides, config, extend, show_progress)
        check_memory_per(memory_per)
        routing = check_bank_routing(memory_per, bank_routing)
        pairs, summary = absorb_inputs(documents, self.model_name)

        def work(on_progress: Callable[[AbsorbProgress], None]) -> dict[str, Any]:
            settings = (lift_config, config_overrides, extend, show_progress, generator, on_progress)
            return self._absorb_blocking(pairs, *settings, memory_per, routing)

        return run_absorb(summary, work, config, callbacks)

    async def aabsorb(
        self,
        documents: Any,
        *,
        lift_config: LIFTConfig | None = None,
        extend: bool = True,
        show_progress: bool | None = None,
        generator: Any = None,
        config: RunnableConfig | None = None,
        callbacks: Callbacks = None,
        memory_per: Literal["document"] | None = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
        **config_overrides: Any,
    ) -> dict[str, Any]:
        """:meth:`absorb` without blocking the event loop (training runs in a worker thread)."""
        check_absorb_args(lift_config, config_overrides, config, extend, show_progress)
        check_memory_per(memory_per)
        routing = check_bank_routing(memory_per, bank_routing)
        pairs, summary = absorb_inputs(documents, self.model_name)

        def work(on_progress: Callable[[AbsorbProgress], None]) -> dict[str, Any]:
            settings = (lift_config, config_overrides, extend, show_progress, generator, on_progress)
            return self._absorb_blocking(pairs, *settings, memory_per, routing)

        return await arun_absorb(summary, work, config, callbacks)

    def save_memory(self, path: Any) -> str:
        """Write the current memory (or memory bank, with the routing in effect) to the folder ``path``;
        returns the resolved folder."""
        if self.memory_bank is not None:
            return str(self.memory_bank.save(path, routing=self.bank_routing))
        if self.memory is None:
            raise ValueError("there is no memory to save: absorb documents or load a memory first")
        return str(self.memory.save(path))

    def load_memory(
        self, path: Any, *, bank_routing: BankRouting | Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Use the memory (or memory bank) saved at ``path`` (a folder, or a hub id) from the next call
        on; returns :func:`memory_info`. A memory made for another model raises ``MemoryMismatchError``
        now, not at the first question. ``bank_routing`` (a bank only): how it routes, set as
        :attr:`bank_routing` (default: left as it is, so ``None`` routes as the bank was saved)."""
        from lift_integrations.memory import Memory

        routing = BankRouting.optional(bank_routing)
        if is_bank_folder(path):
            bank = bank_from(path)
            if routing is not None:  # before the bank, so no call routes the new bank with the old options
                self.bank_routing = routing
            self.memory, self.memory_bank = None, bank
            return bank_info(bank)
        if routing is not None:
            raise ValueError(f"bank_routing applies to a memory bank; {path} holds one memory")
        memory = Memory.from_pretrained(path)
        with self.lift.using(memory):  # binds its weights to this model, checking they fit
            pass
        self.memory, self.memory_bank = memory, None
        return memory_info(memory)

    def attach_memory(self, memory: Memory | str | os.PathLike[str] | None) -> None:
        """Use ``memory`` (a :class:`~lift_integrations.Memory`, a folder, a hub id, or ``None`` for the
        base model)."""
        from lift_integrations.memory import memory_from

        memory = memory_from(memory)
        if memory is not None:
            with self.lift.using(memory):
                pass
        self.memory = memory

    def clear_memory(self) -> None:
        """Back to the base model (the memory or bank itself is untouched and can be attached again)."""
        self.memory = self.memory_bank = None


ChatLIFT = LIFTChatModel
"""LangChain partner-style alias (``Chat<Provider>``)."""
