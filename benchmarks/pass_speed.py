"""What one fused training pass costs on the GPU, by how many memories its rows train: the same
``--rows`` x ``--tokens`` pass, its rows dealt round-robin over 1, ..., ``--memories`` memories, each
count timed side by side in one process.

A corpus absorbed side by side (``absorb_many``) runs passes of about 8,000 padded tokens whose rows
belong to many memories; one document's passes belong to one. This isolates what training many
memories in one pass costs per token, apart from the run's planning, padding and schedule. Each step is
one pass and one update, replayed as CUDA graphs as the engine does (``--no-graphs``: eagerly).

    python benchmarks/pass_speed.py --memories 1 24 --rows 128 --tokens 64 --profile
    python benchmarks/pass_speed.py --shape smollm2 --memories 1 24   # a random SmolLM2-shaped model

``--profile`` prints the busiest kernels of the largest memory count's timed steps; ``--compile`` compiles
the decoder layers as ``LIFTConfig(compile=True)`` does (the first steps then include compiling).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time

from _absorb_progress import profiler
from absorb_speed import SHAPES


def load_model(shape: str | None, device: str):
    import torch

    if shape is None:
        from lift_integrations import LIFTModel

        lift = LIFTModel.from_pretrained(device=device)
        return lift.model, lift.backend
    from transformers import LlamaConfig, LlamaForCausalLM

    from lift_integrations.adapters import make_backend

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES["smollm2"], attn_implementation="sdpa")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.requires_grad_(False)
    return model, make_backend("gated_memory", model, None)


def time_pass(model, backend, memories: int, args: argparse.Namespace, profile: bool) -> dict:
    import torch

    from lift_integrations import LIFTConfig
    from lift_integrations.absorb.compilation import compiled_modules
    from lift_integrations.absorb.fused import BlockRows, FusedSteps, build_step
    from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample

    device = next(model.parameters()).device
    template = backend.create(generator=torch.Generator(device="cpu").manual_seed(0))
    stack = backend.create_stack(template, memories)
    for row in range(memories):
        stack.load_row(row, template)
    autocast = next(model.parameters()).dtype == torch.float32 and device.type == "cuda"
    steps = FusedSteps(model, stack, LIFTConfig.dense_qa(), autocast=autocast, use_graphs=not args.no_graphs)
    answer = int(args.tokens * args.supervised)
    ids = [100 + (i % 1000) for i in range(args.tokens)]
    sample = TrainingSample(ids, [IGNORE_INDEX] * (args.tokens - answer) + ids[-answer:], "qa")
    rows = [args.rows // memories + (m < args.rows % memories) for m in range(memories)]
    blocks = [BlockRows(m, [sample] * n, [1.0 / n] * n, 1e-4) for m, n in enumerate(rows) if n]
    step = build_step(blocks, memories, 0, static=True)
    shapes = [p.shape for p in step.passes]
    backend.activate(stack)
    stack.flat.requires_grad_(True)

    def compiled() -> contextlib.AbstractContextManager:
        if not args.compile:
            return contextlib.nullcontext()
        return compiled_modules([*model.modules(), *stack.modules()], whole_layers=True)

    try:
        start = time.perf_counter()
        with compiled():
            for _ in range(3):  # compiles, captures the graphs, then replays warm
                steps.run(step)
        float(steps.step_loss.sum())  # waits for the device
        first = time.perf_counter() - start
        with profiler(profile, device.type), compiled():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = steps.run(step)
            float(loss.sum())
            seconds = (time.perf_counter() - start) / args.steps
    finally:
        backend.activate(None)
    padded = sum(r * t for r, t, _ in shapes)
    return {
        "memories": memories,
        "passes": shapes,
        "first_3_steps_s": round(first, 2),
        "ms_per_step": round(seconds * 1e3, 2),
        "padded_tokens_per_s": round(padded / seconds),
        "last_loss": round(float(loss.sum()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, nargs="+", default=[1, 24])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per row")
    parser.add_argument("--supervised", type=float, default=0.25, help="share of a row's tokens supervised")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per memory count")
    parser.add_argument("--shape", choices=["smollm2"], default=None, help="a random model of this shape")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-graphs", action="store_true", help="run the steps eagerly")
    parser.add_argument("--compile", action="store_true", help="compile the decoder layers, as compile=True")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--busy-thread",
        action="store_true",
        help="run pure-Python work on a second thread meanwhile, as absorb_many plans later memories",
    )
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval, seconds")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.busy_thread:
        threading.Thread(target=_busy, daemon=True).start()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, backend = load_model(args.shape, device)
    results = []
    for count in args.memories:
        result = time_pass(model, backend, count, args, args.profile and count == max(args.memories))
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": _device_name(device), "results": results}, f, indent=1)


def _busy() -> None:
    """Holds the GIL as planning does (tokenising, extracting questions), but for the switch interval."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    while True:
        sum(len(word) for word in words * 100)


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


if __name__ == "__main__":
    main()
