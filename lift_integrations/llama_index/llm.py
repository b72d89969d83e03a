"""``LIFTLLM``: a LIFT model (frozen base weights + an absorbed memory) as a LlamaIndex ``CustomLLM``.

A thin adapter: prompts, chat templates, stop strings, token counts and absorption all live in the core
:class:`~lift_integrations.model.LIFTModel`. This module maps LlamaIndex messages and responses onto it,
reports usage where ``TokenCountingHandler`` reads it (``raw["usage"]``), runs the async endpoints in
worker threads so the event loop keeps running, and turns absorb progress into dispatcher events.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from lift_integrations import registry
from lift_integrations.bank import MemoryBank, bank_from
from lift_integrations.bank_router import BankRouting
from lift_integrations.llama_index._absorb import (
    absorb_arguments,
    end_event,
    progress_event,
    start_event,
)
from lift_integrations.llama_index._bank import BankSlot, embedding_embedder
from lift_integrations.llama_index._streams import Pieces, aresponses, responses
from lift_integrations.llama_index._tools import (
    FunctionCalling,
    aone_chunk,
    assistant_message,
    constrain,
    one_chunk,
    to_core_messages,
)
from lift_integrations.memory import Memory, memory_from
from lift_integrations.microbatch import run_off_loop, shared_batcher
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
    from lift_integrations.config import LIFTConfig
    from lift_integrations.generation import GenerationResult
    from lift_integrations.model import LIFTModel

dispatcher = get_dispatcher(__name__)


class _ChatTemplate:
    """The default ``messages_to_prompt`` (see :meth:`LIFTLLM._render_messages`). A callable object rather
    than a bound method, whose repr would contain the LLM's repr, which contains this field."""

    def __init__(self, llm: LIFTLLM) -> None:
        self._llm = llm

    def __call__(self, messages: Sequence[ChatMessage]) -> str:
        return self._llm._render_messages(messages)

    def __repr__(self) -> str:
        return "<chat template>"


class LIFTLLM(CustomLLM, FunctionCalling):
    """A LIFT model as a LlamaIndex chat LLM, answering with its absorbed memory.

    ``model`` is a hub id, a local folder or ``.gguf`` file, a name given to
    :func:`~lift_integrations.registry.register_model`, ``None`` for the embedded SmolLM2-135M-Instruct, or
    an existing :class:`~lift_integrations.LIFTModel`. Weights load on first use and are shared by every
    ``LIFTLLM`` and LangChain ``LIFTChatModel`` of the same model (:mod:`lift_integrations.registry`); the
    memory (:meth:`absorb`, :meth:`load_memory`, ...) belongs to this instance.

    With a ``memory_bank`` (:class:`~lift_integrations.bank.MemoryBank`, or its folder; built by
    :meth:`absorb_memory_bank`) each call answers with the bank's memory that its last user message is
    about (:class:`~lift_integrations.bank.BankRouter`, embedding with ``router_embed_model`` or
    all-MiniLM-L6-v2, deciding by ``bank_routing``, else by the bank's own ``routing``), or with the
    base model when it is about none;
    ``raw["memory_name"]`` and ``raw["memory_id"]`` say which answered. An LLM answers with a memory or
    a bank, never both.

    Per-call keyword arguments: ``max_new_tokens`` (or ``max_tokens``), ``temperature``, ``stop`` and
    ``context`` (a list of text chunks placed above the question, as in hybrid mode); chat calls also take
    ``tools``/``tool_choice`` and ``output_schema``, decoded under a grammar that guarantees a valid tool
    call or JSON answer (``chat_with_tools``, ``structured_predict``: see ``_tools.py``); others are ignored,
    as LlamaIndex passes framework-level keywords through. A keyword given to a call overrides the field
    of the same name, ``None`` keeps the field.

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
    micro_batch: bool = Field(
        default=True,
        description="Serve concurrent calls (achat/acomplete/chat from threads) in shared batches, each row "
        "with its own memory (lift_integrations.microbatch.MicroBatcher); not streams.",
    )
    route_memory: bool = Field(
        default=True,
        description="Attach the memory only when the conversation is about its documents "
        "(lift_integrations.routing.MemoryRouter on conversation_query: the last user message, with the "
        "earlier ones when it is a follow-up); other messages get the base model's answer. False: the "
        "memory answers everything. LIFTQueryEngine routes the query, not the retrieved passages.",
    )

    bank_routing: BankRouting | None = Field(
        default=None,
        description="How the memory bank routes (lift_integrations.BankRouting, or a dict of its options: "
        "{'margin': 0.1}, {'calibration': 'joint'}): a larger margin or joint calibration sends fewer "
        "unrelated questions to a memory and more of its own to the base model. None: the bank's own "
        "routing, which a saved bank keeps; save_memory_bank writes the routing in effect into the bank.",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "bank_routing":
            value = BankRouting.optional(value)  # checked on assignment too, as at construction
        super().__setattr__(name, value)

    @field_validator("bank_routing", mode="before")
    @classmethod
    def _check_bank_routing(cls, value: Any) -> BankRouting | None:
        return BankRouting.optional(value)

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
    _bank: MemoryBank | None = PrivateAttr(default=None)
    _bank_routes: Any = PrivateAttr(default=None)
    _grammar: Any = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | os.PathLike[str] | LIFTModel | None = None,
        *,
        memory: Memory | str | os.PathLike[str] | None = None,
        memory_bank: MemoryBank | str | os.PathLike[str] | None = None,
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
        if memory_bank is not None and not isinstance(memory_bank, (MemoryBank, str, os.PathLike)):
            raise TypeError(
                f"memory_bank must be a MemoryBank, a bank folder or None, got {type(memory_bank).__name__}"
            )
        if memory is not None and memory_bank is not None:
            raise ValueError("pass memory or memory_bank, not both: a LIFTLLM answers with one of them")
        custom_rendering = kwargs.get("messages_to_prompt") is not None
        super().__init__(model=os.fspath(model) if model is not None else None, **kwargs)
        self._lift = lift
        if not custom_rendering:
            self.messages_to_prompt = _ChatTemplate(self)
        embed = embedding_embedder(router_embed_model, "router_embed_model")  # None: all-MiniLM-L6-v2
        from lift_integrations.routing import RouterSlot

        self._routes = RouterSlot(embed)
        self._bank_routes = BankSlot(embed)
        if memory is not None:
            # Not checked against the weights here (that would load them); the core checks at first use.
            self._memory = memory_from(memory)
        if memory_bank is not None:  # its memories are read, and checked, when first used
            self._bank = bank_from(memory_bank)

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
        """The memory every call answers with; ``None``: the base model alone, or the memory bank."""
        return self._memory

    @property
    def memory_bank(self) -> MemoryBank | None:
        """The bank whose memories answer the questions about them (one per call); ``None``: no bank."""
        return self._bank

    @property
    def metadata(self) -> LLMMetadata:
        lift = self.lift_model
        return LLMMetadata(
            context_window=lift.context_window,  # the real window: PromptHelper packs chunks with it
            num_output=self.max_new_tokens,
            is_chat_model=True,  # LLM.predict then calls chat(), which applies the chat template
            is_function_calling_model=True,  # tool calls and JSON by constrained decoding
            model_name=lift.name,
        )

    def absorb(
        self,
        documents: Any,
        *,
        config: LIFTConfig | None = None,
        show_progress: bool | None = None,
        append: bool = True,
        generator: Any = None,
    ) -> Memory:
        """Absorb ``documents`` (LlamaIndex documents/nodes, strings or ``(title, text)`` pairs) and answer
        with the result from now on. ``append=True`` continues from the current memory, so it keeps what
        was absorbed before; ``append=False`` starts a fresh one (and replaces a memory bank). Returns the
        new memory."""
        check_bool(append, "append")
        if append and self._bank is not None:
            raise ValueError(
                "this LIFTLLM answers with a memory bank: add a memory to it (memory_bank.add), absorb a new "
                "bank (absorb_memory_bank), or pass append=False to answer with one new memory instead"
            )
        memory = self.absorb_memory(
            documents,
            into=self._memory if append else None,
            config=config,
            show_progress=show_progress,
            generator=generator,
        )
        self._memory, self._bank = memory, None
        return memory

    @dispatcher.span
    def absorb_memory(
        self,
        documents: Any,
        *,
        into: Memory | str | os.PathLike[str] | None = None,
        config: LIFTConfig | None = None,
        show_progress: bool | None = None,
        generator: Any = None,
    ) -> Memory:
        """Absorb ``documents`` into a new memory and return it without making it this LLM's memory.

        Emits :class:`LIFTAbsorbStartEvent`, one :class:`LIFTAbsorbProgressEvent` per optimizer step and
        :class:`LIFTAbsorbEndEvent`; ``show_progress`` draws a tqdm bar (``None``: unless
        ``$LIFT_PROGRESS`` is ``0``). ``into``: continue from that memory (the result holds its
        documents too). See :meth:`LIFTModel.absorb` for ``config`` and ``generator``. Every argument
        is checked before the start event and any work.
        """
        into = memory_from(into)  # a Memory, a folder or a hub id
        docs = absorb_arguments(documents, config, show_progress)  # bad input fails before any event
        lift = self.lift_model
        start_event(lift.name, docs, into)
        with self.callback_manager.as_trace("lift_absorb"):
            memory = lift.absorb(
                docs,
                config=config,
                generator=generator,
                show_progress=show_progress,
                callback=progress_event,
                into=into,
            )
        end_event(memory, None)
        return memory

    @dispatcher.span
    def absorb_memory_bank(
        self,
        documents: Any,
        *,
        names: Sequence[str] | None = None,
        config: LIFTConfig | None = None,
        show_progress: bool | None = None,
        generator: Any = None,
        router_embed_model: Any = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> MemoryBank:
        """Absorb each document into its own memory, all in one run (:meth:`MemoryBank.from_documents
        <lift_integrations.bank.MemoryBank.from_documents>`), and answer with that bank from now on
        (replacing this LLM's memory or bank). Returns the bank.

        ``names``: one per document (default: the titles, folder-safe and unique). ``router_embed_model``:
        the LlamaIndex embedding that routes questions to this bank (default: the LLM's).
        ``bank_routing``: how it routes, set as :attr:`bank_routing` (default: left as it is). Emits one
        :class:`LIFTAbsorbStartEvent`, a :class:`LIFTAbsorbProgressEvent` per memory's optimizer step
        (``memory``: its position) and a :class:`LIFTAbsorbEndEvent` per memory (``memory_name``). Every
        argument is checked before the start event and any work.
        """
        from lift_integrations.bank import check_name

        docs = absorb_arguments(documents, config, show_progress)
        if names is not None:
            if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != len(docs):
                raise ValueError(
                    f"names must be a list of one name per document ({len(docs)}), got {names!r}"
                )
            if len({check_name(name).casefold() for name in names}) != len(names):
                raise ValueError("memory names must be unique (ignoring case: they are folder names)")
        embed = embedding_embedder(router_embed_model, "router_embed_model")
        routing = BankRouting.optional(bank_routing)
        lift = self.lift_model
        start_event(lift.name, docs, None)
        with self.callback_manager.as_trace("lift_absorb"):
            bank = MemoryBank.from_documents(
                lift,
                docs,
                names=names,
                config=config,
                generator=generator,
                show_progress=show_progress,
                callback=progress_event,
            )
        for name in bank.names:
            end_event(bank.get(name), name)
        self._use_bank(bank, embed, routing)
        return bank

    def load_memory_bank(
        self,
        bank: MemoryBank | str | os.PathLike[str],
        *,
        router_embed_model: Any = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> MemoryBank:
        """Answer with ``bank`` (a :class:`~lift_integrations.bank.MemoryBank` or a folder a bank was saved
        to, its memories read when first used) from now on, instead of this LLM's memory or bank.
        ``router_embed_model`` and ``bank_routing``: as in :meth:`absorb_memory_bank`."""
        embed = embedding_embedder(router_embed_model, "router_embed_model")
        routing = BankRouting.optional(bank_routing)
        loaded = bank_from(bank)
        self._use_bank(loaded, embed, routing)
        return loaded

    def save_memory_bank(self, path: str | os.PathLike[str]) -> Path:
        """Write the memory bank, with the routing in effect, to the folder ``path``
        (:meth:`MemoryBank.save`); returns the folder."""
        if self._bank is None:
            raise ValueError("this LIFTLLM has no memory bank to save; absorb_memory_bank or load one first")
        return self._bank.save(path, routing=self.bank_routing)

    def _use_bank(self, bank: MemoryBank, embed: Any, routing: BankRouting | None) -> None:
        """Answer with ``bank``; routes with ``embed``, else with the embedder the last bank used, and
        with ``routing`` when given."""
        self._bank_routes = BankSlot(embed or self._bank_routes.embed)
        if routing is not None:
            self.bank_routing = routing
        self._memory, self._bank = None, bank

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
        self._memory, self._bank = loaded, None
        return loaded

    def with_grammar(self, grammar: Any) -> LIFTLLM:
        """A copy of this LLM (same model, memory or bank) whose calls decode under ``grammar`` (a
        ``lift_integrations.structured.Grammar`` or a JSON schema dict; ``None``: free text), unless a
        call passes ``tools`` or ``output_schema``. For agents that parse plain text:
        ``ReActAgent(tools=tools, llm=llm.with_grammar(react_grammar(tools)))``."""
        from lift_integrations.structured import as_grammar

        copy = self.model_copy()
        copy._grammar = as_grammar(grammar)
        return copy

    def clear_memory(self) -> None:
        """Answer with the base model alone (no memory, no bank); the shared weights stay loaded."""
        self._memory, self._bank = None, None

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
        grammar = {"grammar": self._grammar} if self._grammar is not None else {}
        return {
            **grammar,
            "memory": self._memory,
            "context": check_context(kwargs.get("context")),
            "max_new_tokens": check_max_new_tokens(
                self.max_new_tokens if max_new_tokens is None else max_new_tokens, name
            ),
            "temperature": check_temperature(self.temperature if temperature is None else temperature),
            "stop": check_stop(self.stop if stop is None else stop),
        }

    def _raw(
        self, result: GenerationResult | None, memory: Memory | None, name: str | None
    ) -> dict[str, Any]:
        """JSON-serialisable ``raw``; ``usage`` is where ``TokenCountingHandler`` looks for counts;
        ``memory_name``: the name of the bank's memory that answered."""
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
            "memory_name": name,
        }

    def _routed(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """``options`` with the memory that answers the last user message: the bank's memory it is about
        (and that memory's name), or the memory if ``route_memory`` lets it answer."""
        bank, slot = self._bank, self._bank_routes
        if bank is not None:
            name, memory = slot.route_chat(bank, messages, self.bank_routing)
            return {**options, "memory": memory}, name
        if not self.route_memory or options["memory"] is None:
            return options, None
        return {**options, "memory": self._routes.route_chat(options["memory"], messages)}, None

    def _generate(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        options, name = self._routed(messages, options)
        generate = shared_batcher(self.lift_model).generate if self.micro_batch else self.lift_model.generate
        result = generate(messages, **options)
        return result.text, self._raw(result, options["memory"], name)

    def _stream(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Pieces:
        """Start generating now (bad input raises here, inside the callback) and return the pieces."""
        options, name = self._routed(messages, options)
        stream = self.lift_model.stream(messages, **options)
        return Pieces(stream, lambda result: self._raw(result, options["memory"], name))

    def _complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponse:
        text, raw = self._generate(self._completion_messages(prompt, formatted), self._options(kwargs))
        return CompletionResponse(text=text, raw=raw)

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        turns, options, tools = constrain(to_core_messages(messages), self._options(kwargs), kwargs)
        text, raw = self._generate(turns, options)
        return ChatResponse(message=assistant_message(text, tools), raw=raw)

    def _chat_stream(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Pieces:
        return self._stream(*constrain(to_core_messages(messages), self._options(kwargs), kwargs)[:2])

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
        return responses(pieces, self._completion_chunk)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        if kwargs.get("tools"):  # a call is only known once complete: one chunk
            return one_chunk(self._chat(messages, kwargs))
        return responses(self._chat_stream(messages, kwargs), self._chat_chunk)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await run_off_loop(self._complete, prompt, formatted, kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = self._options(kwargs)

        def start() -> Pieces:  # parsing a formatted prompt may load the model: off the loop too
            return self._stream(self._completion_messages(prompt, formatted), options)

        return aresponses(await run_off_loop(start), self._completion_chunk)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await run_off_loop(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        if kwargs.get("tools"):
            return aone_chunk(await run_off_loop(self._chat, messages, kwargs))
        return aresponses(await run_off_loop(self._chat_stream, messages, kwargs), self._chat_chunk)
