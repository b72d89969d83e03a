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
def smollm_tokenizer() -> Any:
    """The embedded model's tokenizer, read from its GGUF file (no network, no cache needed)."""
    from transformers import AutoTokenizer

    from lift_integrations.loading import default_gguf_path

    path = default_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


@functools.cache
def tiny_lift() -> LIFTModel:
    """A 2-layer, 64-wide Llama (3 M parameters, mostly the embedding) wrapped in a LIFTModel.

    ``initializer_range=0.2`` (instead of 0.02) makes its random output distribution peaked enough that
    a memory trained for a dozen steps measurably changes what it predicts.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lift_integrations import LIFTModel
    from lift_integrations.langchain import register_model

    tokenizer = smollm_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    lift = LIFTModel(model, tokenizer, name=TINY_NAME)
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
