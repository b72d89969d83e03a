"""Fixtures for the distributed-absorption tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tiny_models import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread in these tests (see ``tiny_models.one_torch_thread``)."""
    with one_torch_thread():
        yield
