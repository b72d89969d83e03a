"""Streaming plumbing of :class:`~lift_integrations.llama_index.LIFTLLM`: a core ``TextStream`` as
LlamaIndex response generators (sync and async) that end generation when the consumer stops early."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from lift_integrations.microbatch import run_off_loop

if TYPE_CHECKING:
    from lift_integrations.generation import GenerationResult, TextStream

_R = TypeVar("_R")


class Pieces(Iterator[tuple[str, str, Any]]):
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


def responses(pieces: Pieces, make: Callable[[str, str, Any], _R]) -> Generator[_R, None, None]:
    """``make`` of each piece. Closing this generator, or dropping it (which is what closing LlamaIndex's
    wrapper around it does), ends generation before ``close()`` returns."""
    try:
        for text, delta, raw in pieces:
            yield make(text, delta, raw)
    finally:
        pieces.close()


async def aresponses(pieces: Pieces, make: Callable[[str, str, Any], _R]) -> AsyncGenerator[_R, None]:
    """``make`` of each piece, each awaited in a worker thread so the loop is never blocked.

    ``aclose()``, a cancelled task, or the loop finalizing this generator once it is dropped ends
    generation: cancelled at once, then closed in a worker thread (it waits for the token in progress).
    """
    try:
        while True:
            item = await run_off_loop(next, pieces, None)  # a piece is a tuple, never None
            if item is None:
                return
            yield make(*item)
    finally:
        if pieces.stream.result is None:  # stopped early: end generation at once, then wait for it
            pieces.cancel()
            await run_off_loop(pieces.close)
