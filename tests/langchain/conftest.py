"""Fixtures of the LangChain adapter tests: the tiny in-process model and chat models over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lc_tiny_model import FACTS, TINY_NAME, fast_config, learning_config, tiny_lift
from tiny_models import one_torch_thread

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
    """Torch on one intra-op thread in these tests (see ``tiny_models.one_torch_thread``)."""
    with one_torch_thread():
        yield
