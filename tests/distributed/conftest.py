"""Fixtures for the distributed-absorption tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread, as the torchrun subprocesses are (OMP_NUM_THREADS=1): on a 2-core
    machine two processes with several threads each would mostly wait for each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
