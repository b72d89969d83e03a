"""Chat-completion requests run on a :class:`~lift_integrations.model.LIFTModel`, off the event loop.

Generation blocks for seconds, so every call into the model runs on a worker thread of the engine's own
pool (sized for many waiting requests, unlike asyncio's default pool of a few threads). Complete answers
go through the model's :class:`~lift_integrations.microbatch.MicroBatcher`: requests that arrive together
share one batched decode, each row with its own memory (or none). A streamed answer runs on its own,
taking the model lock for its decode as :meth:`LIFTModel.stream` does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from lift_integrations.errors import MemoryFormatError, MemoryMismatchError
from lift_integrations.server import protocol
from lift_integrations.server.protocol import APIError, ChatRequest

if TYPE_CHECKING:
    from lift_integrations.generation import GenerationResult, TextStream
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel
    from lift_integrations.server.catalog import ServedModels

T = TypeVar("T")
DEFAULT_MAX_TOKENS = 512
WORKERS = 64
"""Threads for blocking calls: each waiting request (a queued batch row, a stream awaiting its next
piece) holds one."""


class ChatEngine:
    """Answers checked requests (:func:`protocol.parse_chat_request`) with the memory each names.

    ``micro_batch``: gather concurrent complete answers into shared batches (default); ``False`` runs
    each alone, one after another on the model lock.
    """

    def __init__(
        self,
        lift: LIFTModel,
        models: ServedModels,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        micro_batch: bool = True,
        workers: int = WORKERS,
    ) -> None:
        from lift_integrations.microbatch import shared_batcher

        self.lift = lift
        self.models = models
        self.default_max_tokens = default_max_tokens
        self.batcher = shared_batcher(lift) if micro_batch else None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lift-serve")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    # Requests ---------------------------------------------------------------------------------------

    def parse(self, body: Any) -> ChatRequest:
        """``body`` checked, its model id known (else a 404), its settings fitting the model's window."""
        from lift_integrations.validation import check_generation_args

        request = protocol.parse_chat_request(body, default_max_tokens=self.default_max_tokens)
        if request.model not in self.models:
            raise protocol.model_not_found(request.model, self.models.ids())
        try:
            check_generation_args(
                max_new_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=request.stop,
                context_window=self.lift.context_window,
            )
        except (TypeError, ValueError) as error:
            raise protocol.bad_request(str(error).replace("max_new_tokens", "max_tokens")) from None
        constrain(request)
        return request

    def _generate(self, request: ChatRequest, memory: Memory | None) -> GenerationResult:
        generate = self.batcher.generate if self.batcher is not None else self.lift.generate
        return generate(request.messages, memory=memory, grammar=request.grammar, **self._settings(request))

    async def memory_for(self, request: ChatRequest) -> Memory | None:
        try:
            return await self._call(self.models.memory, request.model)
        except KeyError:
            raise protocol.model_not_found(request.model, self.models.ids()) from None
        except (MemoryFormatError, MemoryMismatchError, OSError) as error:
            raise APIError(
                500, f"the memory of {request.model!r} cannot be used: {error}", kind="server_error"
            ) from None

    def _settings(self, request: ChatRequest) -> dict[str, Any]:
        return dict(
            context=request.context,
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=request.stop,
            top_p=request.top_p,
        )

    async def complete(self, request: ChatRequest) -> dict[str, Any]:
        """The ``chat.completion`` answer to ``request``."""
        memory = await self.memory_for(request)
        result = await self._guarded(self._generate, request, memory)
        content, calls, finish_reason = answer(request, result)
        return protocol.completion(
            request_id=protocol.completion_id(),
            model=request.model,
            content=content,
            finish_reason=finish_reason,
            token_usage=protocol.usage(result.input_tokens, result.output_tokens),
            tool_calls=calls,
            memory_id=memory.id if memory is not None else None,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        """Server-sent events of ``request``'s answer. Everything that can refuse the request (the memory,
        the prompt's length) happens before this returns, so a refusal is an HTTP error, not an event."""
        memory = await self.memory_for(request)
        if request.tool_request is not None:  # a call is known only once it is whole: sent as one delta
            result = await self._guarded(self._generate, request, memory)
            return self._answer_events(request, result)
        text_stream: TextStream = await self._guarded(
            self.lift.stream,
            request.messages,
            memory=memory,
            grammar=request.grammar,
            **self._settings(request),
        )
        return self._events(request, text_stream)

    async def _answer_events(self, request: ChatRequest, result: GenerationResult) -> AsyncIterator[str]:
        """A finished answer as the events of a stream: its text, or its tool calls, in one delta."""
        event = functools.partial(
            protocol.chunk, request_id=protocol.completion_id(), model=request.model, created=int(time.time())
        )
        content, calls, finish_reason = answer(request, result)
        yield protocol.sse(event(delta={"role": "assistant", "content": ""}))
        if calls:
            deltas = [{**call, "index": index} for index, call in enumerate(calls)]
            yield protocol.sse(event(delta={"tool_calls": deltas}))
        elif content:
            yield protocol.sse(event(delta={"content": content}))
        yield protocol.sse(event(delta={}, finish_reason=finish_reason))
        if request.include_usage:
            yield protocol.sse(event(token_usage=protocol.usage(result.input_tokens, result.output_tokens)))
        yield protocol.sse("[DONE]")

    async def _events(self, request: ChatRequest, text_stream: TextStream) -> AsyncIterator[str]:
        request_id, created = protocol.completion_id(), int(time.time())
        event = functools.partial(protocol.chunk, request_id=request_id, model=request.model, created=created)
        try:
            yield protocol.sse(event(delta={"role": "assistant", "content": ""}))
            while True:
                try:
                    piece = await self._call(next, text_stream, None)
                except Exception as error:  # the model failed mid-answer: the client's SDK raises this
                    yield protocol.sse(APIError(500, str(error), kind="server_error").body())
                    return
                if piece is None:
                    break
                yield protocol.sse(event(delta={"content": piece}))
            result = text_stream.result
            assert result is not None
            yield protocol.sse(event(delta={}, finish_reason=result.finish_reason))
            if request.include_usage:
                yield protocol.sse(
                    event(token_usage=protocol.usage(result.input_tokens, result.output_tokens))
                )
            yield protocol.sse("[DONE]")
        finally:
            if text_stream.result is None:  # the client went away: end generation at the next token
                threading.Thread(target=text_stream.close, daemon=True).start()

    async def _guarded(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function`` on a worker thread; the core's argument errors (a prompt longer than the window,
        say) become a 400 and a memory that does not fit the model a 500."""
        try:
            return await self._call(function, *args, **kwargs)
        except (MemoryFormatError, MemoryMismatchError) as error:
            raise APIError(500, f"the memory cannot be used: {error}", kind="server_error") from None
        except (TypeError, ValueError) as error:
            raise protocol.bad_request(str(error)) from None


def constrain(request: ChatRequest) -> None:
    """Set ``request``'s prompt and grammar for its ``tools`` (unless ``tool_choice`` is ``"none"``) or
    its ``response_format`` (JSON object, or JSON under a schema), through the core's constrained
    decoding (:mod:`lift_integrations.structured`): a tool call always names a tool with arguments valid
    under its schema, a JSON answer always parses (when it ends before ``max_tokens``)."""
    from lift_integrations.structured import prepare_structured, prepare_tools

    if request.tools and request.tool_choice != "none":
        if request.response_format is not None:
            raise protocol.bad_request("use tools or response_format, not both", "response_format")
        try:
            tool_request = prepare_tools(request.messages, request.tools, request.tool_choice)
        except (TypeError, ValueError) as error:
            param = "tool_choice" if "tool_choice" in str(error) else "tools"
            raise protocol.bad_request(str(error), param) from None
        request.messages, request.grammar, request.tool_request = (
            tool_request.messages,
            tool_request.grammar,
            tool_request,
        )
    elif request.response_format is not None:
        schema = None
        if request.response_format["type"] == "json_schema":
            schema = request.response_format["json_schema"].get("schema") or {"type": "object"}
        try:
            request.messages, request.grammar = prepare_structured(request.messages, schema)
        except (TypeError, ValueError) as error:
            raise protocol.bad_request(f"response_format: {error}", "response_format") from None


def answer(request: ChatRequest, result: GenerationResult) -> tuple[str | None, list[dict[str, Any]], str]:
    """The message content, the OpenAI ``tool_calls`` and the finish reason of ``result``: a call
    leaves no content and finishes with ``"tool_calls"``."""
    if request.tool_request is None:
        return result.text, [], result.finish_reason
    content, calls = request.tool_request.parse(result.text)
    if not calls:
        return content, [], result.finish_reason
    openai_calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for call in calls
    ]
    return None, openai_calls, "tool_calls"
