"""What the fused engine's optimizer update costs, as the engine runs it (eager kernels) and compiled by
``torch.compile`` (what fusing it would save), side by side in one process: gradient clipping and AdamW
for ``--memories`` memories of ``--params`` parameters each (a Gated Memory of the embedded SmolLM2 holds
about 4.56M), each way captured as a CUDA graph and replayed.

    python benchmarks/update_speed.py --memories 1 24
"""

from __future__ import annotations

import argparse
import json
import time


def time_update(update, memories: int, params: int, steps: int, device: str) -> float:
    """Milliseconds per replay of ``update`` over ``memories`` rows, captured as a CUDA graph."""
    import torch

    flat, grad, exp_avg, exp_avg_sq = (torch.randn(memories, params, device=device) for _ in range(4))
    exp_avg_sq.abs_()
    count = torch.ones(memories, device=device)
    active = torch.ones(memories, device=device)
    rates = torch.full((memories,), 1e-3, device=device)
    settings = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)

    def step() -> None:
        update(flat, grad, exp_avg, exp_avg_sq, count, active, rates, **settings)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, nargs="+", default=[1, 24])
    parser.add_argument("--params", type=int, default=4_560_000, help="parameters per memory")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    import torch

    from lift_integrations.absorb.fused import adamw_rows

    print(torch.__version__, torch.cuda.get_device_name())
    compiled = torch.compile(adamw_rows)
    for memories in args.memories:
        row = {"memories": memories, "params": args.params}
        for name, update in (("eager", adamw_rows), ("compiled", compiled)):
            row[f"{name}_ms"] = round(time_update(update, memories, args.params, args.steps, "cuda"), 3)
        row["speedup"] = round(row["eager_ms"] / row["compiled_ms"], 2)
        print("RESULT", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
