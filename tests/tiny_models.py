"""Tiny random models built in-process (no files, no network) for fast, architecture-general tests.

A plain module rather than conftest.py: several conftest.py files exist under tests/, and
``from tiny_models import ...`` would pick whichever was imported first.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAINING_TEXT = """The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven.
Its first director was Tobias Renwick, who studied glass harps and river tides.
Question: Who founded it? Answer: Mira Quenton. Based on the context above, what fills in the blank?
The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ
Given above context, please recite following segment of the context: ... Context: When, where, why, how many?
"""


def build_tokenizer():
    """A small byte-level BPE tokenizer with a ChatML template, trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


_TOKENIZER = None


def tiny_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = build_tokenizer()
    return _TOKENIZER


TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
"""The size of every tiny test model: 2 layers, 64 wide, grouped-query attention (4 heads, 2 KV heads)."""


def build_tiny_model(
    arch: str = "llama", *, seed: int = 0, attn: str = "sdpa", window: int = 1024, layers: int | None = None
):
    """A random 2-layer (or ``layers``-layer) model of the given architecture with grouped-query attention."""
    import torch
    import transformers

    tokenizer = tiny_tokenizer()
    common = dict(
        **(TINY_SHAPE if layers is None else {**TINY_SHAPE, "num_hidden_layers": layers}),
        vocab_size=len(tokenizer),
        max_position_embeddings=window,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    configs: dict[str, Callable[[], object]] = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "mistral": lambda: transformers.MistralConfig(**common, sliding_window=None),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen3": lambda: transformers.Qwen3Config(**common, head_dim=16),
        "gemma2": lambda: transformers.Gemma2Config(
            **common, head_dim=16, query_pre_attn_scalar=16, sliding_window=256
        ),
        "gemma3": lambda: transformers.Gemma3TextConfig(
            **common, head_dim=16, query_pre_attn_scalar=16, sliding_window=256
        ),
    }
    config = configs[arch]()
    if arch == "gemma2":
        attn = "eager"  # transformers runs Gemma2 (logit soft-capping) on eager attention only
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    model.eval()
    return model, tokenizer


@functools.cache
def smollm_tokenizer():
    """The embedded SmolLM2's tokenizer and chat template, read offline (from the load cache when a real
    load has written it: 0.4 s instead of several seconds from the GGUF file)."""
    from transformers import AutoTokenizer

    from lift_integrations.loading import _gguf_cache_dir, default_gguf_path

    path = default_gguf_path()
    cached = _gguf_cache_dir(path)
    if (cached / "done.json").is_file():
        return AutoTokenizer.from_pretrained(cached, local_files_only=True)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


def build_tiny_smollm(*, name: str = "tiny", tie_word_embeddings: bool = False, **lift_kwargs: Any):
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer, wrapped in a LIFTModel.

    ``initializer_range=0.2`` (instead of 0.02) makes its random output distribution peaked enough that a
    memory trained for a dozen steps measurably changes what it predicts.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lift_integrations import LIFTModel

    tokenizer = smollm_tokenizer()
    config = LlamaConfig(
        **TINY_SHAPE,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    return LIFTModel(LlamaForCausalLM(config), tokenizer, name=name, **lift_kwargs)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for the duration.

    Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads waiting for a
    descheduled partner made calls 10-20x slower in measurements (8 tokens: 11 s instead of 1 s).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Interrupt(Exception):
    """Raised by :func:`stop_at` to interrupt an absorption midway, as a crash would."""


def stop_at(step: int) -> Callable[[Any], None]:
    """A progress callback that raises :class:`Interrupt` after optimizer step ``step``."""

    def callback(report: Any) -> None:
        if report.step == step:
            raise Interrupt

    return callback


def bag_of_words(texts: list[str], dimensions: int = 512) -> Any:
    """A deterministic stand-in for a sentence embedder: each text as counts of its lower-cased words
    (of four letters or more, so "the", "what" and "who" do not make unrelated questions look alike),
    hashed into ``dimensions`` buckets. Texts sharing content words get a high cosine similarity."""
    import re
    import zlib

    import numpy as np

    rows = np.zeros((len(texts), dimensions), dtype=np.float32)
    for row, text in zip(rows, texts, strict=True):
        for word in re.findall(r"[a-z]{4,}", text.lower()):
            row[zlib.crc32(word.encode()) % dimensions] += 1.0
    return rows
