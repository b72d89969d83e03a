"""Run ``lift_integrations.cli.main`` once per argument list, in one process of a torchrun group.

An entry ``{"fail_rank": R, "argv": [...]}`` makes rank R's second forward pass raise: every rank must
then raise too (none may wait forever in the gradient all-reduce), each printing one JSON line.

``python -m torch.distributed.run --nproc_per_node 2 cli_runs.py '[["--mode", "shard", ...], [...]]'``:
several CLI runs share one launch (starting the processes costs more than the tiny absorptions). The
process group is initialised once, from torchrun's environment as ``lift-absorb`` does, and every run
uses it: destroying a group and initialising another in the same launch is unreliable in torch (the new
group may read the old one's addresses from torchrun's store).
"""

from __future__ import annotations

import dataclasses
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
    still be the one rank 0's pairs give, the same on every rank."""
    from lift_integrations.absorb.qa import ExtractiveQAGenerator

    original = ExtractiveQAGenerator.generate

    def generate(self: Any, document: Any, n: int, rng: Any) -> Any:
        pairs = original(self, document, n, rng)
        return [dataclasses.replace(p, answer=p.answer + " (rank 1)") for p in pairs] if rank else pairs

    ExtractiveQAGenerator.generate = generate  # type: ignore[method-assign]
    try:
        main(argv)
    finally:
        ExtractiveQAGenerator.generate = original  # type: ignore[method-assign]


if __name__ == "__main__":
    context = init_from_env()
    assert context is not None and context.backend == "gloo" and context.world_size == 2, context
    try:
        for entry in json.loads(sys.argv[1]):
            if isinstance(entry, dict) and "rank_dependent_qa" in entry:
                run_with_rank_dependent_qa(context.rank, entry["rank_dependent_qa"])
            elif isinstance(entry, dict):
                run_failing(context.rank, entry["fail_rank"], entry["argv"])
            else:
                main(entry)
    finally:
        dist.destroy_process_group()
