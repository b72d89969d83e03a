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
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

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
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Gathers concurrent :meth:`generate` calls on ``lift`` into batches of at most ``max_batch``."""

    def __init__(self, lift: LIFTModel, *, window_s: float = WINDOW_S, max_batch: int = 32) -> None:
        check_int(max_batch, "max_batch", minimum=1)
        if not (isinstance(window_s, (int, float)) and 0 <= window_s < 10):
            raise ValueError(f"window_s must be a number of seconds in [0, 10), got {window_s!r}")
        self.lift = lift
        self.window_s = float(window_s)
        self.max_batch = max_batch
        self.batches_run = 0
        """Batches run so far (a lone request counts as one): how much the batcher merged."""
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leading = False

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
        request = _Request(prompt, memory, context, settings, as_grammar(grammar))
        with self._lock:
            self._queue.append(request)
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            self._lead()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        """Run batches until the queue is empty, then let the next request lead."""
        time.sleep(self.window_s)
        while True:
            with self._lock:
                if not self._queue:
                    self._leading = False
                    return
                first = self._queue[0].settings
                batch = [r for r in self._queue if r.settings == first][: self.max_batch]
                self._queue = [r for r in self._queue if r not in batch]
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        max_new_tokens, temperature, stop, top_p = batch[0].settings
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, stop=list(stop), top_p=top_p)
        try:
            if len(batch) == 1:
                one = batch[0]
                results = [
                    self.lift.generate(
                        one.prompt, memory=one.memory, context=one.context, grammar=one.grammar, **settings
                    )
                ]
            else:
                results = self.lift.generate_batch(
                    [r.prompt for r in batch],
                    memories=[r.memory for r in batch],
                    contexts=[r.context for r in batch],
                    grammars=[r.grammar for r in batch],
                    batch_size=len(batch),
                    **settings,
                )
        except Exception as error:
            if len(batch) > 1:  # one request's problem must not fail the others: each on its own
                for request in batch:
                    self._run([request])
                return
            batch[0].error = error
            batch[0].done.set()
            return
        except BaseException as error:  # KeyboardInterrupt and the like: every caller sees it
            for request in batch:
                request.error = error
                request.done.set()
            raise
        finally:
            self.batches_run += 1
        for request, result in zip(batch, results, strict=True):
            request.result = result
            request.done.set()


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
