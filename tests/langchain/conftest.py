"""Fixtures of the LangChain adapter tests: the tiny in-process model and chat models over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lc_tiny_model import FACTS, TINY_NAME, fast_config, learning_config, tiny_lift

from lift_integrations.langchain import LIFTChatModel


@pytest.fixture(scope="session")
def tiny() -> Any:
    """The shared tiny LIFTModel (session-scoped: building it reads the tokenizer, ~4 s)."""
    return tiny_lift()


@pytest.fixture
def chat(tiny: Any) -> LIFTChatModel:
    """A fresh chat model over the tiny model, without memory; short generations."""
    return LIFTChatModel(model=TINY_NAME, max_tokens=8)


@pytest.fixture
def absorb_config() -> Any:
    return fast_config()


@pytest.fixture(scope="session")
def trained_memory(tiny: Any) -> Any:
    """A memory of FACTS trained hard enough to change the tiny model's answers (shared, read-only)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # see _one_torch_thread
    try:
        return tiny.absorb(FACTS, config=learning_config())
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread in these tests.

    The tiny model's matrices are far too small to gain from threads, and the embedded 135M model gains
    little at batch size 1. On a 2-core machine where anything else runs, OpenMP threads waiting for a
    descheduled partner made a call 10-20x slower in measurements (8 tokens: 11 s instead of 1 s).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
