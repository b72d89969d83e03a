"""Shared fixtures: tiny random models built in-process (no files, no network) and the embedded model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tiny_models import build_tiny_model


@pytest.fixture
def tiny_lift():
    """A fresh LIFTModel around a tiny random Llama."""
    from lift_integrations import LIFTModel

    model, tokenizer = build_tiny_model("llama")
    return LIFTModel(model, tokenizer, name="tiny-llama")


_EMBEDDED = None


@pytest.fixture(scope="session")
def embedded_lift():
    """The embedded SmolLM2-135M-Instruct, loaded once per session (slow tests only)."""
    global _EMBEDDED
    if _EMBEDDED is None:
        from lift_integrations import LIFTModel

        _EMBEDDED = LIFTModel.from_pretrained(device="cpu")
    return _EMBEDDED
