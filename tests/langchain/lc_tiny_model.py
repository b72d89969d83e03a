"""A tiny random Llama with the real SmolLM2 tokenizer (and its chat template), built in-process.

Everything the LangChain adapter does can be exercised on it in milliseconds per call, offline. It is
built once per test session and registered under :data:`TINY_NAME`, so ``LIFTChatModel(model=TINY_NAME)``
shares it the way real models are shared.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lift_integrations.model import LIFTModel

TINY_NAME = "lift-tiny-test"

# Made-up facts: nothing but an absorbed document can teach a model these.
FACTS = (
    "The Zorblax river flows through Quendria. Its source is Mount Velpar. "
    "The capital of Quendria is Trimbleton, founded in 1423 by Queen Osmara."
)
QUESTION, ANSWER = "What is the capital of Quendria?", "Trimbleton"


@functools.cache
def tiny_lift() -> LIFTModel:
    """The shared tiny SmolLM2-tokenizer Llama, registered under :data:`TINY_NAME`."""
    from tiny_models import build_tiny_smollm

    from lift_integrations.langchain import register_model

    lift = build_tiny_smollm(name=TINY_NAME, tie_word_embeddings=True)
    register_model(TINY_NAME, lift)
    return lift


def fast_config(**overrides: Any) -> Any:
    """A LIFTConfig that absorbs a short document into the tiny model in well under a second."""
    from lift_integrations import LIFTConfig

    settings: dict[str, Any] = dict(stage1_epochs=1, stage2_epochs=1, qa_per_document=4)
    settings.update(overrides)
    return LIFTConfig.fast(**settings)


def learning_config(**overrides: Any) -> Any:
    """Enough steps at a high learning rate that the tiny model's memory measurably learns FACTS (~1 s)."""
    settings: dict[str, Any] = dict(
        stage1_epochs=4, stage2_epochs=8, qa_per_document=4, learning_rate=0.05, batch_size=8
    )
    settings.update(overrides)
    return fast_config(**settings)
