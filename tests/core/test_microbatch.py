"""Concurrent requests with different memories served in shared batches (issue 17, item 3)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.microbatch import MicroBatcher, shared_batcher

SMALL = dict(
    segment_length=32, segment_stride=24, context_view_length=16, qa_per_document=4, max_seq_length=128
)
TEXTS = [
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. " * 3,
    "Tobias Renwick studied glass harps and river tides in the old harbour of Kestrel. " * 3,
]


@pytest.fixture(scope="module")
def lift() -> LIFTModel:
    model, tokenizer = build_tiny_model("llama")
    return LIFTModel(model, tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def memories(lift: LIFTModel) -> list[Any]:
    return lift.absorb_many(TEXTS, config=LIFTConfig.fast(**SMALL, learning_rate=1e-2))


def _concurrently(calls: list[Any]) -> list[Any]:
    """Run every call on its own thread, all released at once; results (or errors) in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_share_batches_and_get_their_own_answers(lift: LIFTModel, memories: Any) -> None:
    batcher = MicroBatcher(lift, window_s=0.3)
    requests = [("Who founded the Zorblat Institute?", m) for m in [*memories, None]] * 2
    results = _concurrently(
        [lambda q=q, m=m: batcher.generate(q, memory=m, max_new_tokens=6) for q, m in requests]
    )
    expected = [lift.generate(q, memory=m, max_new_tokens=6).text for q, m in requests]
    assert [r.text for r in results] == expected
    assert len(set(expected[:3])) > 1  # the memories answer differently: rows really used their own
    assert batcher.batches_run < len(requests)


def test_one_bad_request_fails_alone(lift: LIFTModel, memories: Any) -> None:
    batcher = MicroBatcher(lift, window_s=0.3)
    results = _concurrently(
        [
            lambda: batcher.generate("Who founded it?", memory=memories[0], max_new_tokens=4),
            lambda: batcher.generate("Who founded it?", memory=None, context="truncated", max_new_tokens=4),
            lambda: batcher.generate("Where?", memory=memories[1], max_new_tokens=4),
        ]
    )
    assert isinstance(results[1], ValueError) and "truncated" in str(results[1])
    assert results[0].text == lift.generate("Who founded it?", memory=memories[0], max_new_tokens=4).text
    assert results[2].text == lift.generate("Where?", memory=memories[1], max_new_tokens=4).text


def test_requests_with_other_settings_are_batched_apart(lift: LIFTModel, memories: Any) -> None:
    batcher = MicroBatcher(lift, window_s=0.3)
    calls = [
        lambda: batcher.generate("Who?", memory=memories[0], max_new_tokens=3),
        lambda: batcher.generate("Who?", memory=memories[1], max_new_tokens=5),
    ]
    short, long = _concurrently(calls)
    assert short.output_tokens <= 3
    assert long.text == lift.generate("Who?", memory=memories[1], max_new_tokens=5).text
    assert batcher.batches_run == 2


def test_one_batcher_per_model_and_checked_settings(lift: LIFTModel) -> None:
    assert shared_batcher(lift) is shared_batcher(lift)
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lift, max_batch=0)
    with pytest.raises(ValueError, match="window_s"):
        MicroBatcher(lift, window_s=-1)


def test_run_off_loop_lets_more_calls_wait_at_once_than_the_default_executor() -> None:
    """40 calls that each wait for all the others finish only if 40 threads run them at once (the default
    executor, set to 4 threads here, would deadlock); context variables reach the thread."""
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from lift_integrations.microbatch import run_off_loop

    request_id: contextvars.ContextVar[int] = contextvars.ContextVar("request_id")
    everyone = threading.Barrier(40, timeout=10)

    def wait_for_all() -> tuple[int, str]:
        everyone.wait()
        return request_id.get(), threading.current_thread().name

    async def one(index: int) -> tuple[int, str]:
        request_id.set(index)
        return await run_off_loop(wait_for_all)

    async def all_at_once() -> list[tuple[int, str]]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        return await asyncio.gather(*(one(i) for i in range(40)))

    results = asyncio.run(all_at_once())
    assert [index for index, _ in results] == list(range(40))
    assert len({name for _, name in results}) == 40 and all(n.startswith("lift-async") for _, n in results)


def test_gathered_calls_run_together_and_a_bad_item_fails_alone() -> None:
    import time

    from lift_integrations.gathering import GatheredCalls

    sizes: list[int] = []

    def squares(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.05)  # the calls that arrive meanwhile wait for the next call, together
        if -1 in items:
            raise ValueError("negative item")
        return [i * i for i in items]

    gathered = GatheredCalls(squares)
    assert _concurrently([lambda i=i: gathered(i) for i in range(30)]) == [i * i for i in range(30)]
    assert gathered.calls_run == len(sizes) <= 3  # the first alone, the others together
    results = _concurrently([lambda i=i: gathered(i if i != 7 else -1) for i in range(30)])
    assert [r for i, r in enumerate(results) if i != 7] == [i * i for i in range(30) if i != 7]
    assert isinstance(results[7], ValueError) and "negative" in str(results[7])
    assert gathered(3) == 9
    with pytest.raises(ValueError, match="max_items"):
        GatheredCalls(squares, max_items=0)
