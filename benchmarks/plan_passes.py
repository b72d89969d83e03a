"""How the fused engine groups a corpus's training into passes, without training: the real samples of
``--documents`` SQuAD articles, planned as ``absorb_many`` plans them, grouped into fused steps and
passes as the engine groups them on CUDA (static, bucketed shapes).

Reports fused steps, passes, padded and real tokens, distinct pass shapes (each one a CUDA graph to
capture) and the passes' cost (:func:`~lift_integrations.absorb.fused.pass_cost`), in phases by how many
memories train side by side, for each ``--pass-overhead`` (the cost of one more pass, in padded tokens,
that :func:`~lift_integrations.absorb.fused.group_by_length` weighs against padding), each pass in its
bucketed shape and, as the engine runs it, in a larger shape already captured where that costs little
more (:func:`~lift_integrations.absorb.fused.reusable_shape`). All memories start together, longest
first; in a real run the later ones start as their planning finishes, which this leaves out. It also
prints how long planning the articles took (one thread: tokenisation, QA extraction, samples) and a
digest of every sample, for two versions to compare.

    OMP_NUM_THREADS=1 python benchmarks/plan_passes.py --squad ../shared/data/squad-dev.json --documents 24
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from absorb_speed import squad_documents

if TYPE_CHECKING:
    from lift_integrations.absorb.samples import TrainingSample

PAD = -1
"""The padding id the steps are built with: no real token has it, so a pass's real tokens can be counted."""

PHASES = ((0.75, 1.0), (0.5, 0.75), (0.0, 0.5))
"""Phases of a run, by the share of the slots training: full, three quarters, fewer."""


def plan_schedules(squad: Path, count: int, preset: str) -> list[list[list[TrainingSample]]]:
    """Each article's optimizer steps, each step its samples, as the fused engine would train them."""
    import numpy as np

    from lift_integrations import LIFTConfig, LIFTModel
    from lift_integrations.absorb.trainer import schedule_steps
    from lift_integrations.absorber import normalize_groups, plan_memory

    lift = LIFTModel.from_pretrained(device="cpu")
    config = getattr(LIFTConfig, preset)().fit_to_window(lift.context_window)
    groups = normalize_groups(squad_documents(squad, count))
    start = time.perf_counter()
    plans = [plan_memory(lift, group, config, None, None) for group in groups]
    planned = time.perf_counter() - start
    schedules = []
    for plan in plans:
        steps = schedule_steps(plan, config, np.random.default_rng(config.seed + 1))
        schedules.append([samples for _, _, samples in steps])
    digest = hashlib.sha256(
        json.dumps([[[s.input_ids, s.labels] for s in step] for sch in schedules for step in sch]).encode()
    ).hexdigest()[:16]
    print(
        f"planned {len(groups)} articles (tokenisation, QA extraction, samples) in {planned:.2f} s; "
        f"samples digest {digest}",
        flush=True,
    )
    return schedules


def group_passes(
    schedules: Sequence[Sequence[Sequence[TrainingSample]]], slots: int, *, reuse: bool
) -> list[dict]:
    """Every fused step of a run with ``slots`` memories side by side, built by the engine's own
    :func:`~lift_integrations.absorb.fused.build_step`: how many memories train, and its passes' shapes
    (rows, tokens, supervised) with their real tokens. With ``reuse`` and more than one slot a pass may take
    a larger shape met before, as the engine's CUDA graphs do (one memory alone keeps its bucketed shapes)."""
    from lift_integrations.absorb.fused import BlockRows, build_step, reusable_shape

    captured: list[tuple[int, int, int]] = []

    def fit(shape: tuple[int, int, int]) -> tuple[int, int, int]:
        chosen = reusable_shape(shape, captured)
        if chosen not in captured:
            captured.append(chosen)
        return chosen

    padded = fit if reuse and slots > 1 else None

    queue = sorted(range(len(schedules)), key=lambda i: len(schedules[i]))  # longest popped first
    running: list[list[int]] = []  # [memory, next step]
    steps = []
    while queue or running:
        while queue and len(running) < slots:
            running.append([queue.pop(), 0])
        blocks = []
        for slot, (memory, step) in enumerate(running):
            samples = schedules[memory][step]
            blocks.append(BlockRows(slot, samples, [1.0 / len(samples)] * len(samples), 1.0))
        step_batch = build_step(blocks, slots, pad_id=PAD, static=True, fit=padded)
        passes = [
            {
                "shape": batch.shape,
                "real": int(np.count_nonzero(batch.ints[: batch.rows * batch.tokens] != PAD)),
            }
            for batch in step_batch.passes
        ]
        steps.append({"training": len(running), "passes": passes})
        for entry in running:
            entry[1] += 1
        running = [entry for entry in running if entry[1] < len(schedules[entry[0]])]
    return steps


def totals(phase: str, steps: Sequence[dict]) -> dict:
    from lift_integrations.absorb.fused import pass_cost

    passes = [p for s in steps for p in s["passes"]]
    return {
        "phase": phase,
        "fused_steps": len(steps),
        "memory_steps": sum(s["training"] for s in steps),
        "passes": len(passes),
        "padded_tokens": sum(p["shape"][0] * p["shape"][1] for p in passes),
        "real_tokens": sum(p["real"] for p in passes),
        "shapes": len({p["shape"] for p in passes}),
        "cost": round(sum(pass_cost(p["shape"]) for p in passes)),
    }


def summarise(steps: Sequence[dict], slots: int) -> list[dict]:
    phases = [
        totals(
            f"{int(low * slots) + 1}-{int(high * slots)} memories",
            [s for s in steps if low * slots < s["training"] <= high * slots],
        )
        for low, high in PHASES
    ]
    return [*phases, totals("all", steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, required=True, help="a SQuAD-format JSON file of articles")
    parser.add_argument("--documents", type=int, default=24)
    parser.add_argument("--preset", default="dense_qa")
    parser.add_argument("--slots", type=int, default=None, help="memories side by side (default: all)")
    parser.add_argument("--pass-overhead", type=int, nargs="+", default=None, help="padded tokens per pass")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from lift_integrations.absorb import fused

    torch.set_num_threads(1)
    schedules = plan_schedules(args.squad, args.documents, args.preset)
    slots = args.slots or len(schedules)
    results = {}
    for overhead in args.pass_overhead or [fused.PASS_OVERHEAD_TOKENS]:
        fused.PASS_OVERHEAD_TOKENS = overhead
        for reuse in (False, True):
            rows = summarise(group_passes(schedules, slots, reuse=reuse), slots)
            results[f"{overhead}{' reuse' if reuse else ''}"] = rows
            shapes = "larger captured shapes reused" if reuse else "bucketed shapes"
            print(f"\npass overhead {overhead} padded tokens, {slots} slots, {shapes}")
            print("| phase | fused steps | memory steps | passes | padded tokens | real tokens ", end="")
            print("| shapes | cost |")
            print("|---|---|---|---|---|---|---|---|")
            for row in rows:
                print(
                    f"| {row['phase']} | {row['fused_steps']} | {row['memory_steps']} | {row['passes']} "
                    f"| {row['padded_tokens']:,} | {row['real_tokens']:,} | {row['shapes']} "
                    f"| {row['cost']:,} |"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
