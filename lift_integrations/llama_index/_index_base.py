"""What :class:`LIFTIndex` and :class:`LIFTRetriever` share: the modes and the index a retriever reads.

``index.py`` builds retrievers (it imports ``retriever.py``); a retriever only needs an index's mode,
LLM and vector index. Both depend on this module instead of on each other, so the dependency between
them runs one way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llama_index.core import VectorStoreIndex

    from lift_integrations.llama_index.llm import LIFTLLM

Mode = Literal["hybrid", "parametric"]
MODES: tuple[str, ...] = ("hybrid", "parametric")


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


class IndexBase(ABC):
    """The surface of a :class:`~lift_integrations.llama_index.LIFTIndex` that a retriever reads."""

    mode: Mode

    @property
    @abstractmethod
    def llm(self) -> LIFTLLM:
        """The LLM whose memory holds the absorbed documents."""

    @property
    @abstractmethod
    def vector_index(self) -> VectorStoreIndex | None:
        """The chunk index (hybrid mode), or ``None``."""
