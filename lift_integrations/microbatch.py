"""Concurrent requests served in shared batches instead of one after another.

Frameworks call a model once per request, from many threads at once (LangChain's ``batch`` runs
``invoke`` in a thread pool; ``abatch`` and concurrent ``ainvoke`` run it in worker threads). Each call
would take the model lock in turn. A :class:`MicroBatcher` lets the first waiting caller gather the
requests that arrive within ``window_s``, and run them as one :meth:`LIFTModel.generate_batch
<lift_integrations.LIFTModel.generate_batch>` whose rows each carry their own memory (or none); every
caller gets its own result. A lone request runs as :meth:`LIFTModel.generate` does, unchanged.
Requests whose decoding settings differ are batched separately; requests with different grammars
(constrained decoding) share a batch, each row masked by its own grammar.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lift_integrations.gathering import GatheredCalls, check_window
from lift_integrations.structured.grammar import as_grammar
from lift_integrations.validation import check_int

if TYPE_CHECKING:
    from lift_integrations.generation import GenerationResult, PromptInput
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel

WINDOW_S = 0.005
"""How long the first request waits for others to join its batch."""

OFF_LOOP_THREADS = 256
"""Threads of :func:`run_off_loop`'s pool: every concurrent request of an event loop can wait in a
:class:`MicroBatcher` at once (a waiting thread only blocks on an event)."""

T = TypeVar("T")


@dataclass
class _Request:
    prompt: PromptInput
    memory: Memory | None
    context: Any
    settings: tuple[Any, ...]
    grammar: Any = None


class MicroBatcher:
    """Gathers concurrent :meth:`generate` calls on ``lift`` into batches of at most ``max_batch``."""

    def __init__(self, lift: LIFTModel, *, window_s: float = WINDOW_S, max_batch: int = 32) -> None:
        check_int(max_batch, "max_batch", minimum=1)
        self.lift = lift
        self.max_batch = max_batch
        self._calls: GatheredCalls[_Request, GenerationResult] = GatheredCalls(
            self._run, max_items=max_batch, window_s=window_s, key=lambda request: request.settings
        )

    @property
    def window_s(self) -> float:
        """How long the first waiting request waits for others to join its batch."""
        return self._calls.window_s

    @window_s.setter
    def window_s(self, seconds: float) -> None:
        self._calls.window_s = check_window(seconds)

    @property
    def batches_run(self) -> int:
        """Batches run so far (a lone request counts as one): how much the batcher merged."""
        return self._calls.calls_run

    def generate(
        self,
        prompt: PromptInput,
        *,
        memory: Memory | None,
        context: Any = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        top_p: float | None = None,
        grammar: Any = None,
    ) -> GenerationResult:
        """What ``lift.generate(prompt, memory=memory, ...)`` returns, up to padded-batch rounding when
        other requests share its batch."""
        settings = (max_new_tokens, temperature, tuple(stop or ()), top_p)
        return self._calls(_Request(prompt, memory, context, settings, as_grammar(grammar)))

    def _run(self, batch: list[_Request]) -> list[GenerationResult]:
        max_new_tokens, temperature, stop, top_p = batch[0].settings
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, stop=list(stop), top_p=top_p)
        if len(batch) == 1:
            one = batch[0]
            return [
                self.lift.generate(
                    one.prompt, memory=one.memory, context=one.context, grammar=one.grammar, **settings
                )
            ]
        return self.lift.generate_batch(
            [r.prompt for r in batch],
            memories=[r.memory for r in batch],
            contexts=[r.context for r in batch],
            grammars=[r.grammar for r in batch],
            batch_size=len(batch),
            **settings,
        )


_shared: weakref.WeakKeyDictionary[Any, MicroBatcher] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_batcher(lift: LIFTModel) -> MicroBatcher:
    """The one :class:`MicroBatcher` of ``lift``, so every framework object over the same model
    batches its requests with the others'."""
    with _shared_lock:
        batcher = _shared.get(lift)
        if batcher is None:
            batcher = _shared[lift] = MicroBatcher(lift)
        return batcher


_off_loop_pool: ThreadPoolExecutor | None = None
_off_loop_lock = threading.Lock()


def off_loop_pool() -> ThreadPoolExecutor:
    """The pool of :func:`run_off_loop`, created on first use; it starts threads only as calls need them."""
    global _off_loop_pool
    with _off_loop_lock:
        if _off_loop_pool is None:
            _off_loop_pool = ThreadPoolExecutor(max_workers=OFF_LOOP_THREADS, thread_name_prefix="lift-async")
        return _off_loop_pool


async def run_off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on a thread of a dedicated pool, awaited; context variables carried over
    as :func:`asyncio.to_thread` does.

    Not ``to_thread``: the loop's default executor has ``min(32, cpus + 4)`` threads, so at most that many
    async requests would wait in the :class:`MicroBatcher` together and the rest would run as later, smaller
    batches (6 on a 2-core machine: 64 concurrent ``ainvoke`` ran as a dozen batches instead of two).
    """
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(off_loop_pool(), call)
