"""Fixtures for the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread: the tiny model's matrices gain nothing from threads, and on a shared
    2-core machine OpenMP threads waiting for a descheduled partner made each step 10-20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
