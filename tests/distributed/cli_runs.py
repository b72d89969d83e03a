"""Run ``lift_integrations.cli.main`` once per argument list, in one process of a torchrun group.

An entry ``{"fail_rank": R, "argv": [...]}`` makes rank R's second forward pass raise: every rank must
then raise too (none may wait forever in the gradient all-reduce), each printing one JSON line. An
entry ``{"plan": {"model": ..., "documents": ..., "overrides": ...}}`` only builds a sample plan over the
group and prints its digest and this rank's share of the work.

``python -m torch.distributed.run --nproc_per_node 2 cli_runs.py '[["--mode", "shard", ...], [...]]'``:
several CLI runs share one launch (starting the processes costs more than the tiny absorptions). The
process group is initialised once, from torchrun's environment as ``lift-absorb`` does, and every run
uses it: destroying a group and initialising another in the same launch is unreliable in torch (the new
group may read the old one's addresses from torchrun's store).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from typing import Any

import torch.distributed as dist

from lift_integrations.absorb import trainer
from lift_integrations.cli import main
from lift_integrations.distributed import init_from_env


def run_failing(rank: int, fail_rank: int, argv: list[str]) -> None:
    original = trainer.per_sample_loss
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if rank == fail_rank and calls == 2:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    trainer.per_sample_loss = failing
    try:
        main(argv)
    except RuntimeError as error:
        sys.stdout.write(json.dumps({"failed_rank": rank, "error": str(error)}) + "\n")
        sys.stdout.flush()
    finally:
        trainer.per_sample_loss = original


def run_with_rank_dependent_qa(rank: int, argv: list[str]) -> None:
    """Rank 1's QA generator answers differently (as an LLM sampling on each GPU may): the memory must
    still be the one rank 0's pairs give, the same on every rank. The extractive generator builds its
    pairs with the other ranks (``generate_shared``, which ``generate`` calls too); rank 1 changes what
    it gets back."""
    from lift_integrations.absorb.qa import ExtractiveQAGenerator

    original = ExtractiveQAGenerator.generate_shared

    def generate_shared(self: Any, document: Any, n: int, rng: Any, share: Any) -> Any:
        pairs = original(self, document, n, rng, share)
        return [dataclasses.replace(p, answer=p.answer + " (rank 1)") for p in pairs] if rank else pairs

    ExtractiveQAGenerator.generate_shared = generate_shared  # type: ignore[method-assign]
    try:
        main(argv)
    finally:
        ExtractiveQAGenerator.generate_shared = original  # type: ignore[method-assign]


COUNTED = {  # what building a plan does most, by module: the work the ranks split
    "proposals": ("lift_integrations.absorb.extractive", "_sentence_proposals"),
    "chats": ("lift_integrations.absorb.samples", "encode_chat_with_answer"),
    "pieces": ("lift_integrations.absorb.segmentation", "encode_text"),
}


def build_plan(rank: int, model: str, documents: str, overrides: dict[str, Any]) -> None:
    """Build the plan of the ``(title, text)`` pairs in the JSON file ``documents`` over the group, without
    training, and print its digest and how many of each counted call this rank made."""
    from distributed_helpers import plan_digest, plan_of
    from transformers import AutoTokenizer

    from lift_integrations.distributed import current

    counts = dict.fromkeys(COUNTED, 0)
    targets = {key: (importlib.import_module(module), name) for key, (module, name) in COUNTED.items()}
    originals = {key: getattr(module, name) for key, (module, name) in targets.items()}
    for key, (module, name) in targets.items():
        setattr(module, name, counting(counts, key, originals[key]))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        with open(documents, encoding="utf-8") as file:
            plan = plan_of(tokenizer, json.load(file), overrides, distributed=current())
    finally:
        for key, (module, name) in targets.items():
            setattr(module, name, originals[key])
    sys.stdout.write(json.dumps({"plan_rank": rank, "digest": plan_digest(plan), "counts": counts}) + "\n")
    sys.stdout.flush()


def counting(counts: dict[str, int], key: str, original: Any) -> Any:
    """``original``, counting its calls in ``counts[key]``."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return original(*args, **kwargs)

    return counted


if __name__ == "__main__":
    context = init_from_env()
    assert context is not None and context.backend == "gloo" and context.world_size == 2, context
    try:
        for entry in json.loads(sys.argv[1]):
            if isinstance(entry, dict) and "plan" in entry:
                build_plan(context.rank, **entry["plan"])
            elif isinstance(entry, dict) and "rank_dependent_qa" in entry:
                run_with_rank_dependent_qa(context.rank, entry["rank_dependent_qa"])
            elif isinstance(entry, dict):
                run_failing(context.rank, entry["fail_rank"], entry["argv"])
            else:
                main(entry)
    finally:
        dist.destroy_process_group()
