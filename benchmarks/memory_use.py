"""How much RAM (and GPU memory) loading a model and absorbing a document take.

    python benchmarks/memory_use.py --out docs/runs/memory_use_cpu.json                # embedded SmolLM2, CPU
    python benchmarks/memory_use.py --device cuda --out docs/runs/memory_use_cuda.json  # + peak GPU memory

Measures this process's resident set size (RSS, from ``/proc/self/statm``; the peak from
``resource.getrusage``) after importing, after loading the model, and at the peak of an absorption of the
first ``--paragraphs`` paragraphs of the SQuAD "Normans" article (``examples/data/normans.json``) with
the device's default recipe (``LIFTConfig.for_device``: ``fast()`` on a CPU, ``dense_qa()`` on a GPU),
then after answering one question. On CUDA it also reports ``torch.cuda.max_memory_allocated`` (what
tensors took) and ``max_memory_reserved`` (what the caching allocator held) for the absorption.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "normans.json"
MIB = 1024 * 1024


def rss_mib() -> float:
    """The resident set size now, in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / MIB, 1)


def peak_rss_mib() -> float:
    """The highest resident set size so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id or folder (default: the embedded SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    import torch

    from lift_integrations import LIFTConfig, LIFTModel

    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/memory_use.py", *sys.argv[1:]]),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "rss_mib_after_imports": rss_mib(),
    }
    lift = LIFTModel.from_pretrained(args.model, device=args.device)
    parameters = sum(p.numel() for p in lift.model.parameters())
    report.update(
        model=lift.name,
        dtype=str(lift.dtype),
        model_parameters=parameters,
        model_weight_mib=round(sum(p.numel() * p.element_size() for p in lift.model.parameters()) / MIB, 1),
        rss_mib_after_load=rss_mib(),
    )
    paragraphs = json.loads(DATA.read_text(encoding="utf-8"))[: args.paragraphs]
    text = "\n\n".join(p["context"] for p in paragraphs)
    config = LIFTConfig.for_device(lift.device.type)
    cuda = lift.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        report["cuda_allocated_mib_after_load"] = round(torch.cuda.memory_allocated() / MIB, 1)
    absorb_start = time.perf_counter()
    memory = lift.absorb(("Normans", text), config=config, show_progress=False)
    report.update(
        document_tokens=lift.count_tokens(text),
        recipe="LIFTConfig.fast()" if lift.device.type == "cpu" else "LIFTConfig.dense_qa()",
        absorb_seconds=round(time.perf_counter() - absorb_start, 1),
        memory_parameters=memory.num_parameters,
        peak_rss_mib_absorbing=peak_rss_mib(),
    )
    if cuda:
        torch.cuda.synchronize()
        report["cuda_max_allocated_mib_absorbing"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
        report["cuda_max_reserved_mib_absorbing"] = round(torch.cuda.max_memory_reserved() / MIB, 1)
    lift.generate("Who were the Normans?", memory=memory, max_new_tokens=32)
    report.update(rss_mib_after_answer=rss_mib(), peak_rss_mib=peak_rss_mib())
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    text_out = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text_out + "\n", encoding="utf-8")
    print(text_out)


if __name__ == "__main__":
    main()
