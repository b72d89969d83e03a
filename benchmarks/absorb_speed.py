"""Absorption speed: trained tokens/s, wall time and peak memory for 2,000- and 8,000-token documents.

Each (preset, length) case runs in its own process so that peak memory is that case's alone.

    python benchmarks/absorb_speed.py                       # fast preset, 2k and 8k tokens, this machine
    python benchmarks/absorb_speed.py --presets fast paper --lengths 2000 8000 --json out.json

The document is the SQuAD "Normans" article shipped in examples/data (CC BY-SA 4.0), cut or repeated to
the requested number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "examples" / "data" / "normans.json"


def document_of(tokenizer, length: int) -> str:  # noqa: ANN001
    paragraphs = [p["context"] for p in json.loads(ARTICLE.read_text())]
    text = "\n\n".join(paragraphs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < length:
        ids = ids + ids
    return tokenizer.decode(ids[:length])


def run_case(preset: str, length: int, model: str | None, device: str | None) -> dict:
    import torch

    from lift_integrations import LIFTConfig, LIFTModel

    lift = LIFTModel.from_pretrained(model, device=device)
    config = getattr(LIFTConfig, preset)()
    text = document_of(lift.tokenizer, length)
    if lift.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    memory = lift.absorb(text, config=config)
    if lift.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    stats = memory.stats
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if lift.device.type == "cuda" else None
    return {
        "preset": preset,
        "document_tokens": length,
        "wall_s": round(wall, 2),
        "train_s": stats["seconds"],
        "tokens_trained": stats["tokens_trained"],
        "tokens_per_s": round(stats["tokens_trained"] / stats["seconds"], 1),
        "steps": stats["steps"],
        "segment_samples": stats["segment_samples"],
        "qa_samples": stats["qa_samples"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mib": None if peak_gpu is None else round(peak_gpu, 1),
        "device": str(lift.device),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["fast"], choices=["fast", "paper"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[2000, 8000])
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--case", nargs=2, metavar=("PRESET", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        result = run_case(args.case[0], int(args.case[1]), args.model, args.device)
        print("RESULT " + json.dumps(result), flush=True)
        return

    results = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| preset | doc tokens | wall s | tokens trained | tokens/s | steps | peak RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for length in args.lengths:
            command = [sys.executable, __file__, "--case", preset, str(length)]
            if args.model:
                command += ["--model", args.model]
            if args.device:
                command += ["--device", args.device]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
            results.append(result)
            print(f"| {preset} | {length} | {result['wall_s']} | {result['tokens_trained']} | {result['tokens_per_s']} "
                  f"| {result['steps']} | {result['peak_rss_mib']} | {result['peak_gpu_mib'] or '-'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
