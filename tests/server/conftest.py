"""Fixtures of the server tests: the tiny model and its two memories saved once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_helpers import Saved, save_model_and_memories
from tiny_models import one_torch_thread


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    with one_torch_thread():
        return save_model_and_memories(tmp_path_factory.mktemp("served"))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
