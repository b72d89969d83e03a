"""What the CLI and torchrun tests share: a tiny model saved to a folder, documents, the config."""

from __future__ import annotations

from pathlib import Path

import torch

from lift_integrations import LIFTConfig, LIFTModel, Memory

# Small enough for a few seconds on 2 CPU cores, big enough to shard: 10 segments and 4 QA pairs in
# steps of 4 samples (7 steps), each sample alone in its forward pass (micro_batch_tokens), fp32 so that
# the two runs differ only in the order of floating-point sums.
OVERRIDES = {
    "stage1_epochs": 1,
    "stage2_epochs": 1,
    "qa_per_document": 4,
    "precision": "fp32",
    "micro_batch_tokens": 512,
}
CONFIG = LIFTConfig.fast(**OVERRIDES)

LONG_DOCUMENT = " ".join(
    f"Fact {i}: the Zorblat Institute item {i} was moved to Vellhaven in {1800 + i} by Mira Quenton."
    for i in range(40)
)
SHORT_DOCUMENTS = {
    "alpha": "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven.",
    "beta": "Its first director was Tobias Renwick, who studied glass harps and river tides.",
    "gamma": "The quick brown fox jumps over the lazy dog, 0123456789 times, when and where and why.",
}


def save_tiny_model(folder: Path) -> Path:
    """The tiny random Llama and its tokenizer as a folder that ``--model`` can load."""
    from tiny_models import build_tiny_model

    model, tokenizer = build_tiny_model("llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reference_memory(model_dir: Path, title: str, text: str, config: LIFTConfig = CONFIG) -> Memory:
    """A single-process absorption of ``(title, text)``: what the CLI makes of a file ``title.txt``."""
    lift = LIFTModel.from_pretrained(model_dir, device="cpu")
    return lift.absorb((title, text), config=config, distributed=False)


def assert_same_memory(saved: Memory, reference: Memory) -> None:
    assert saved.tensors.keys() == reference.tensors.keys()
    for name, tensor in reference.tensors.items():
        torch.testing.assert_close(saved.tensors[name], tensor.cpu(), rtol=1e-5, atol=1e-5, msg=name)
    assert [(d.title, d.text) for d in saved.documents] == [(d.title, d.text) for d in reference.documents]
    for key in ("steps", "tokens_trained", "sum_sq_lengths", "segment_samples", "qa_samples"):
        assert saved.stats[key] == reference.stats[key], key
    assert abs(saved.stats["final_loss"] - reference.stats["final_loss"]) < 1e-5
