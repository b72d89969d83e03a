"""The errors a user catches around memories: files that cannot be trusted, memories that do not fit."""

from __future__ import annotations


class MemoryFormatError(ValueError):
    """A memory folder is missing, tampered with, truncated or of an unknown format."""


class MemoryMismatchError(ValueError):
    """A memory was made for a different base model or adapter than the one it is used with."""
