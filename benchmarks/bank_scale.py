"""A thousand memories in one process: register, save, load lazily, route and serve under a budget.

``--memories`` Gated Memories (default 1,000) of the embedded model are registered in one
:class:`~lift_integrations.MemoryBank`: one memory is absorbed with a one-step recipe, and the others are
copies of it with their own random perturbation and their own short invented document (what a memory
learned does not change its size or what serving it costs). The bank is saved to ``--folder``, loaded
back lazily with ``max_loaded_bytes`` (``--budget-mib``), and ``--requests`` questions, each about a
memory drawn at random, are routed by the bank's router and answered in mixed batches
(``generate_batch(memories=[...])``) of ``--batch`` rows.

It reports what the budget bounds: the memories' tensors held on the host (``loaded_bytes``), the GPU
memory allocated beyond the base model after every batch and at its peak, the process's peak RSS,
and the time of each phase. The GPU working set is, by construction, the adapter copies of the memories
alive (at most the bank's budget, plus the batch's own memories while they are in use) and
``MAX_CACHED_STACKS`` stacks of one batch's memories (see docs/benchmarks.md).

    python benchmarks/bank_scale.py --memories 1000 --budget-mib 2048 --json bank.json
    python benchmarks/bank_scale.py --memories 20 --requests 8 --batch 4 --budget-mib 64   # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_throughput import documents, question

MIB = 1 << 20


def rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def register(lift: Any, count: int, seed: int, folder: Path, chunk: int = 50) -> dict[str, str]:
    """Save a bank of ``count`` memories with distinct documents and weights, made from one absorbed
    memory, ``chunk`` at a time (the bank is reloaded lazily after each chunk, so the memories never
    all sit in host memory at once). Returns each memory's name -> its document's title."""
    import torch

    from lift_integrations import Document, LIFTConfig, Memory, MemoryBank

    docs = documents(count)
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=0, qa_per_document=0, steps_per_epoch=1)
    seed_memory = lift.absorb(docs[0], config=config)
    lift.release(seed_memory)
    generator = torch.Generator().manual_seed(seed)
    bank = MemoryBank()
    titles = {}
    for index, (title, text) in enumerate(docs):
        tensors = {
            name: tensor + 1e-3 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            for name, tensor in seed_memory.tensors.items()
        }
        name = f"m{index:04d}"
        titles[name] = title
        bank.add(
            name,
            Memory(
                adapter_kind=seed_memory.adapter_kind,
                adapter_config=seed_memory.adapter_config,
                tensors=tensors,
                documents=[Document(title=title, text=text)],
                config=seed_memory.config,
                base_model_name=seed_memory.base_model_name,
                base_fingerprint=seed_memory.base_fingerprint,
            ),
        )
        if (index + 1) % chunk == 0 or index + 1 == count:
            bank.save(folder)
            bank = MemoryBank.load(folder)
    return titles


def gpu_allocated(device: Any) -> int:
    import torch

    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="rows per generate_batch call")
    parser.add_argument("--budget-mib", type=int, default=2048, help="the bank's max_loaded_bytes, in MiB")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--folder", type=Path, default=None, help="where the bank is saved (default: a temp)")
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from lift_integrations import LIFTModel, MemoryBank

    report: dict[str, Any] = {"memories": args.memories, "requests": args.requests, "batch": args.batch}
    lift = LIFTModel.from_pretrained(args.model, device=args.device)
    device = torch.device(lift.device)
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    base_gpu = gpu_allocated(device)

    folder = args.folder or Path(tempfile.mkdtemp(prefix="lift-bank-")) / "bank"
    start = time.perf_counter()
    titles = register(lift, args.memories, args.seed, folder)
    report["register_and_save_s"] = round(time.perf_counter() - start, 2)
    report["disk_mib"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MIB, 1)
    gc.collect()

    budget = args.budget_mib * MIB
    start = time.perf_counter()
    bank = MemoryBank.load(folder, max_loaded_bytes=budget)
    report["load_s"] = round(time.perf_counter() - start, 2)
    report["memory_mib"] = round(bank.get(bank.names[0]).size_bytes / MIB, 2)
    start = time.perf_counter()
    router = bank.router()
    asked_names = list(np.random.default_rng(args.seed).choice(bank.names, size=args.requests))
    prompts = [question((titles[name], "")) for name in asked_names]
    routed = router.route_many(prompts)
    report["route_s"] = round(time.perf_counter() - start, 2)
    report["routed_right"] = round(
        float(np.mean([r == n for r, n in zip(routed, asked_names, strict=True)])), 3
    )

    peak_gpu, peak_loaded, answered = 0, 0, 0
    start = time.perf_counter()
    for first in range(0, args.requests, args.batch):
        names = routed[first : first + args.batch]
        rows = [bank.get(name) if name is not None else None for name in names]
        lift.generate_batch(
            prompts[first : first + args.batch],
            memories=rows,
            batch_size=args.batch,
            max_new_tokens=args.max_new_tokens,
        )
        answered += len(rows)
        del rows
        gc.collect()
        peak_loaded = max(peak_loaded, bank.loaded_bytes)
        peak_gpu = max(peak_gpu, gpu_allocated(device) - base_gpu)
    wall = time.perf_counter() - start
    report["answers_per_s"] = round(answered / wall, 2)
    report["budget_mib"] = args.budget_mib
    report["peak_loaded_mib"] = round(peak_loaded / MIB, 1)
    report["gpu_after_batches_mib"] = round(peak_gpu / MIB, 1)
    if device.type == "cuda":
        report["gpu_peak_beyond_model_mib"] = round(
            (torch.cuda.max_memory_allocated(device) - base_gpu) / MIB, 1
        )
    report["peak_rss_mib"] = rss_mib()
    if args.folder is None:
        shutil.rmtree(folder.parent, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
