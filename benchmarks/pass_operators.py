"""How many kernel-launching operators one fused training pass runs: the number that bounds the default
recipe's steps on a GPU, where a step is a replay of thousands of small kernels.

Runs one step of the fused engine (``absorb/fused.py``, without CUDA graphs) on the CPU through
torch.profiler, ``--memories`` memories of the embedded model side by side, each with ``--rows`` samples
of ``--tokens`` tokens, and counts the profiled operators that would launch a kernel: leaf ``aten::``
operators other than views and allocations. Matrix products are counted apart (a CPU profile may show
them with children of their own). Prints the total and the most frequent operators with their callers.

    OMP_NUM_THREADS=1 python benchmarks/pass_operators.py --memories 1 --rows 4 --tokens 128
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from profile_absorb import MATRIX

NO_KERNEL = {
    "aten::view", "aten::as_strided", "aten::_reshape_alias", "aten::expand", "aten::permute",
    "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select",
    "aten::alias", "aten::empty", "aten::empty_strided", "aten::detach", "aten::_unsafe_view",
    "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh", "aten::result_type",
    "aten::split_with_sizes", "aten::unbind", "aten::split", "aten::to", "aten::_local_scalar_dense",
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1)
    parser.add_argument("--rows", type=int, default=4, help="samples per memory")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per sample (half of them supervised)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--json", default=None, help="also write the counts here")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from lift_integrations import LIFTConfig, LIFTModel
    from lift_integrations.absorb.fused import BlockRows, FusedSteps, build_step
    from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample

    dtype = getattr(torch, args.dtype)
    lift = LIFTModel.from_pretrained(device="cpu")
    model = lift.model.to(dtype)
    template = lift.backend.create(generator=torch.Generator().manual_seed(0))
    stack = lift.backend.create_stack(template, args.memories)
    steps = FusedSteps(model, stack, LIFTConfig.dense_qa(), autocast=False, use_graphs=False)
    steps.compute_dtype = dtype
    lift.backend.activate(stack)
    stack.flat.requires_grad_(True)
    ids = [100 + i for i in range(args.tokens)]
    half = args.tokens // 2
    sample = TrainingSample(ids, [IGNORE_INDEX] * half + ids[half:], "qa")
    blocks = [
        BlockRows(m, [sample] * args.rows, [1.0 / args.rows] * args.rows, 1e-3) for m in range(args.memories)
    ]
    step = build_step(blocks, args.memories, 0, static=True)
    steps.run(step)  # once unprofiled: first-call allocations
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps.run(step)
    lift.backend.activate(None)

    kernels: Counter[str] = Counter()
    callers: Counter[tuple[str, str]] = Counter()
    matrix = 0
    for event in prof.events():
        if event.name in MATRIX:
            matrix += 1
            continue
        if not event.name.startswith("aten::") or event.cpu_children or event.name in NO_KERNEL:
            continue
        if event.cpu_parent is not None and event.cpu_parent.name in MATRIX:
            continue
        kernels[event.name] += 1
        chain, parent = [], event.cpu_parent
        while parent is not None and len(chain) < 3:
            chain.append(parent.name)
            parent = parent.cpu_parent
        callers[(event.name, " < ".join(chain))] += 1
    total = sum(kernels.values())
    print(f"{len(step.passes)} pass(es); {total} kernel-launching operators besides {matrix} matrix products")
    for name, count in kernels.most_common(12):
        print(f"{count:6d} {name}")
    print("most frequent callers:")
    for (name, chain), count in callers.most_common(12):
        print(f"{count:6d} {name} < {chain}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {**vars(args), "operators": total, "matrix_products": matrix, "by_name": dict(kernels)}, f
            )


if __name__ == "__main__":
    main()
