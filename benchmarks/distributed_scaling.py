"""Scaling of one absorption over several processes (``torchrun``, segments sharded, gradients summed).

    python benchmarks/distributed_scaling.py --processes 1 2 --length 32000 --preset paper

For each process count the script relaunches itself under ``torch.distributed.run``; every process loads
the model, absorbs the same document twice (the first absorption warms up kernels and caches), and rank 0
reports the second one's training seconds and trained tokens/s. One GPU per process under NCCL when
CUDA is available, else gloo CPU processes. The document is the SQuAD "Normans" article from
examples/data, repeated to the requested length (see absorb_speed.py).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

from absorb_speed import document_of


def worker(preset: str, length: int, model: str | None, overrides: dict) -> None:
    import torch

    from lift_integrations import LIFTConfig, LIFTModel
    from lift_integrations.distributed import init_from_env

    context = init_from_env()
    lift = LIFTModel.from_pretrained(model, device=context.device if context else None)
    config = getattr(LIFTConfig, preset)(**overrides)
    text = document_of(lift.tokenizer, length)
    for attempt in (1, 2):
        start = time.perf_counter()
        memory = lift.absorb(text, config=config)
        if lift.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        if context is None or context.is_main:
            stats = memory.stats
            record = {
                "attempt": attempt,
                "processes": stats.get("processes", 1),
                "wall_s": round(wall, 2),
                "train_s": round(stats["seconds"], 2),
                "tokens_trained": stats["tokens_trained"],
                "tokens_per_s": round(stats["tokens_trained"] / stats["seconds"], 1),
                "device": str(lift.device),
            }
            print("RESULT " + json.dumps(record), flush=True)
    if context is not None:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--length", type=int, default=32000, help="document tokens")
    parser.add_argument("--preset", choices=["fast", "paper"], default="paper")
    parser.add_argument("--config-json", default="{}", help="LIFTConfig overrides as JSON")
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = json.loads(args.config_json)
    if args.worker:
        worker(args.preset, args.length, args.model, overrides)
        return

    rows = []
    for count in args.processes:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(count),
            "--master_port", str(free_port()), __file__, "--worker", "--preset", args.preset,
            "--length", str(args.length), "--config-json", args.config_json,
        ]  # fmt: skip
        if args.model:
            command += ["--model", args.model]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results = [json.loads(line[7:]) for line in output.splitlines() if line.startswith("RESULT ")]
        warm = results[-1]
        rows.append(warm)
        print(
            f"{count} process(es): cold {results[0]['train_s']} s, warm {warm['train_s']} s training, "
            f"{warm['tokens_per_s']} tokens/s ({warm['device']})",
            flush=True,
        )
    base = rows[0]["tokens_per_s"]
    for row in rows[1:]:
        ratio = row["tokens_per_s"] / base
        print(f"{row['processes']} processes: {ratio:.2f}x the tokens/s of {args.processes[0]}")
    print("JSON " + json.dumps(rows))


if __name__ == "__main__":
    main()
