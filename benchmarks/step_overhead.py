"""Host work of one optimizer step outside its passes: entering and leaving a step (the model lock, the
memory activated, compiled modules installed, the training mode) and building its inputs on the host.

A fused step on a GPU replays its passes as CUDA graphs, so what the host does around them is paid on
every step, beside steps that take only milliseconds (docs/benchmarks.md). This times that work alone,
on any machine, with nothing trained.

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py
    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --steps 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from lift_integrations import LIFTConfig, LIFTModel
    from lift_integrations.absorb.fused import BlockRows, build_step, training_mode
    from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
    from lift_integrations.absorb.target import AdapterTarget

    torch.set_num_threads(1)
    lift = LIFTModel.from_pretrained(args.model, device="cpu")
    stack = lift.backend.create_stack(lift.backend.create(generator=torch.Generator().manual_seed(0)), 2)
    results = {}
    for compile_ in (False, True):
        config = LIFTConfig.dense_qa(compile=compile_)
        step_target = AdapterTarget(lift.model, lift.backend, stack, lift.lock, config, 0)
        for _attempt in ("first", "timed"):  # the first installs the compiled functions once
            start = time.perf_counter()
            for _ in range(args.steps):
                with step_target.step(), training_mode(lift.model, config.gradient_checkpointing):
                    pass
            seconds = (time.perf_counter() - start) / args.steps
        results[f"enter_and_leave_ms{'_compile' if compile_ else ''}"] = round(seconds * 1e3, 3)
    ids = list(range(100, 212))
    sample = TrainingSample(ids, [IGNORE_INDEX] * 84 + ids[84:], "qa")
    blocks = [BlockRows(0, [sample] * 4, [0.25] * 4, 1e-4)]
    start = time.perf_counter()
    for _ in range(args.steps):
        build_step(blocks, 1, 0, static=True)
    results["build_step_ms"] = round((time.perf_counter() - start) / args.steps * 1e3, 3)
    print(json.dumps(results), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
