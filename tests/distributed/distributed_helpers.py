"""What the distributed tests share: a tiny model saved to a folder, documents, the config, a plan's
digest, and ranks run as threads."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.absorb.plan import SamplePlan, plan_samples
from lift_integrations.absorb.qa import ExtractiveQAGenerator
from lift_integrations.documents import normalize_documents
from lift_integrations.sharing import WorkShare

T = TypeVar("T")

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
NORMANS = "\n\n".join(
    paragraph["context"]
    for paragraph in json.loads(
        (Path(__file__).resolve().parents[2] / "examples/data/normans.json").read_text()
    )
)
"""The SQuAD "Normans" article of examples/data: real sentences, for the extractive generator."""
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


def plan_of(
    tokenizer: Any, documents: list[list[str]], overrides: dict[str, Any], distributed: Any = None
) -> SamplePlan:
    """The samples an absorption of ``documents`` (``[title, text]`` pairs) plans with the fast preset and
    ``overrides``: extractive QA pairs, no replay."""
    return plan_samples(
        tokenizer,
        normalize_documents([(title, text) for title, text in documents]),
        LIFTConfig.fast(**overrides),
        qa_generator=ExtractiveQAGenerator(),
        base_answers=lambda prompts: [None] * len(prompts),
        distributed=distributed,
    )


def plan_digest(plan: SamplePlan) -> str:
    """Every sample of a plan (ids, labels, kind, stage by stage) and its epochs, as one hash."""
    content = [[(s.input_ids, s.labels, s.kind) for s in stage] for stage in plan.stages]
    return hashlib.sha256(json.dumps([content, plan.epochs]).encode()).hexdigest()


def run_ranks(world_size: int, work: Callable[[WorkShare], T], timeout: float = 60.0) -> list[T]:
    """``work(share)`` for every rank of a group of ``world_size`` threads, each result in rank order.

    The ranks swap their parts through shared slots between two barrier waits, as ``all_gather_object``
    would between processes: the building code under test is the same, without starting processes. An
    error on one rank breaks the barrier, so the others fail instead of waiting.
    """
    barrier = threading.Barrier(world_size, timeout=timeout)
    slots: list[Any] = [None] * world_size
    results: list[Any] = [None] * world_size
    errors: list[BaseException] = []

    def share_of(rank: int) -> WorkShare:
        def gather(value: Any) -> list[Any]:
            slots[rank] = value
            barrier.wait()
            gathered = list(slots)
            barrier.wait()  # no rank writes its next value before every rank has read this round
            return gathered

        return WorkShare(rank=rank, world_size=world_size, gather=gather)

    def run(rank: int) -> None:
        try:
            results[rank] = work(share_of(rank))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,), name=f"rank-{rank}") for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
