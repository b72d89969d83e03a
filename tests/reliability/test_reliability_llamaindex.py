"""LIFTLLM (LlamaIndex) under early stops (issue #19, item 6).

A consumer that stops reading a stream must stop the generation behind it and free the model at once,
whichever endpoint it used and whether it closes the generator or drops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from tiny_models import build_tiny_model

from lift_integrations import LIFTModel
from lift_integrations.llama_index import LIFTLLM

PROMPT = "Tell me everything"
LONG = 900
"""New tokens a stream may generate: the tiny model never ends this prompt's answer early, so without a
stop it decodes all of them (about a second), far more than the few read before closing."""
FEW = 100
"""Forward passes allowed from opening a stream to the model being free again: 2-4 when closing works."""


class Served:
    """A tiny model behind a LIFTLLM, counting the forward passes (one per generated token)."""

    def __init__(self) -> None:
        model, tokenizer = build_tiny_model("llama")
        self.lift = LIFTModel(model, tokenizer, name="tiny-llama")
        self.llm = LIFTLLM(self.lift, max_new_tokens=LONG)
        self.forwards = 0
        model.register_forward_hook(self._count)

    def _count(self, *args: Any) -> None:
        self.forwards += 1

    def lock_is_free(self, timeout: float = 0.0) -> bool:
        """Whether the model lock can be taken (at once, or within ``timeout`` seconds)."""
        taken = self.lift.lock.acquire(timeout=timeout) if timeout else self.lift.lock.acquire(blocking=False)
        if not taken:
            return False
        self.lift.lock.release()
        return True


@pytest.fixture(scope="module")
def served() -> Served:
    return Served()


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def _open(llm: LIFTLLM, endpoint: str) -> Iterator[Any]:
    if endpoint == "stream_chat":
        return llm.stream_chat(_user(PROMPT))
    return llm.stream_complete(PROMPT)


async def _aopen(llm: LIFTLLM, endpoint: str) -> AsyncIterator[Any]:
    if endpoint == "astream_chat":
        return await llm.astream_chat(_user(PROMPT))
    return await llm.astream_complete(PROMPT)


# Item 6: an abandoned stream stops generating ------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "drop"])
@pytest.mark.parametrize("endpoint", ["stream_chat", "stream_complete"])
def test_closing_a_stream_stops_generation_and_frees_the_model(
    served: Served, endpoint: str, how: str
) -> None:
    served.forwards = 0
    responses = _open(served.llm, endpoint)
    assert next(responses).delta
    if how == "close":
        responses.close()
    del responses  # "drop": LlamaIndex's wrapper generator is finalized, as when a caller breaks out
    assert served.lock_is_free(), "the model must be free as soon as the stream is closed"
    assert served.forwards < FEW, f"{served.forwards} tokens generated after the consumer stopped"
    assert served.llm.complete(PROMPT, max_new_tokens=4).raw["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("endpoint", ["stream_chat", "stream_complete"])
def test_a_stream_dropped_unread_stops_generation(served: Served, endpoint: str) -> None:
    # Generation starts when the stream is opened, before anything is read: dropping it must stop it too.
    served.forwards = 0
    responses = _open(served.llm, endpoint)
    del responses
    assert served.lock_is_free(timeout=30)
    assert served.forwards < FEW, f"{served.forwards} tokens generated for a stream nobody read"


@pytest.mark.parametrize("how", ["aclose", "drop"])
@pytest.mark.parametrize("endpoint", ["astream_chat", "astream_complete"])
async def test_closing_an_async_stream_stops_generation(served: Served, endpoint: str, how: str) -> None:
    served.forwards = 0
    responses = await _aopen(served.llm, endpoint)
    assert (await anext(responses)).delta
    if how == "aclose":
        await responses.aclose()
    del responses
    # The loop finalizes the inner generator in its next iterations: wait for the lock off the loop.
    assert await asyncio.to_thread(served.lock_is_free, 30)
    assert served.forwards < FEW, f"{served.forwards} tokens generated after the consumer stopped"
