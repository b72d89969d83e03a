"""Scaling of absorption over several processes (``torchrun``): one document sharded, or many dealt out.

    python benchmarks/distributed_scaling.py --processes 1 2 --length 32000 --preset paper
    python benchmarks/distributed_scaling.py --mode each --processes 1 2 --documents 24 \\
        --squad ../shared/data/squad-dev.json --preset dense_qa

For each process count the script relaunches itself under ``torch.distributed.run`` (one GPU per process
under NCCL when CUDA is available, else gloo CPU processes) and every process loads the model.

``--mode shard`` (default): every process absorbs the same document twice (the first absorption warms up
kernels and caches; steps' samples split, gradients summed), and rank 0 reports the second one's training
seconds and trained tokens/s. Before each absorption the processes also build its training samples once
on their own (QA extraction and tokenization, split between them) and rank 0 reports each process's
seconds for that (``plan_s_by_rank``): the part of the wall time outside training. The document is the
SQuAD "Normans" article from examples/data, repeated to the requested length (see absorb_speed.py).

``--mode each``: the first ``--documents`` articles of ``--squad`` are absorbed into one memory each with
``lift_integrations.cli.absorb_each`` (articles dealt to the processes by length), ``--attempts`` times
(the last one is reported warm), and rank 0 reports the wall time until every process has saved its
memories and the documents per minute. ``--max-chars`` cuts each article short (a quick check on CPU).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absorb_speed import document_of, squad_documents


def worker(args: argparse.Namespace, overrides: dict) -> None:
    import torch

    from lift_integrations import LIFTConfig, LIFTModel
    from lift_integrations.distributed import init_from_env

    context = init_from_env()
    lift = LIFTModel.from_pretrained(args.model, device=context.device if context else None)
    config = getattr(LIFTConfig, args.preset)(**overrides)
    if args.mode == "each":
        each_worker(args, lift, config, context)
    else:
        shard_worker(args, lift, config, context)
    if context is not None:
        torch.distributed.destroy_process_group()


def shard_worker(args: argparse.Namespace, lift, config, context) -> None:
    import torch

    text = document_of(lift.tokenizer, args.length)
    for attempt in range(1, args.attempts + 1):
        plan_s = plan_seconds(lift, text, config, context)
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
                "plan_s_by_rank": plan_s,
                "tokens_trained": stats["tokens_trained"],
                "tokens_per_s": round(stats["tokens_trained"] / stats["seconds"], 1),
                "device": str(lift.device),
            }
            print("RESULT " + json.dumps(record), flush=True)


def plan_seconds(lift, text: str, config, context) -> list[float]:
    """Seconds each process spends building the samples ``absorb`` trains (the call ``absorb`` makes, on
    its own: QA extraction and tokenization, split between the processes), in rank order. A process's
    time includes waiting for the others' parts."""
    from lift_integrations.absorber import plan_memory
    from lift_integrations.distributed import barrier, gather_objects
    from lift_integrations.documents import normalize_documents

    documents = normalize_documents(text)
    fitted = config.fit_to_window(lift.context_window)
    if context is not None:
        barrier(context)  # every process starts together
    start = time.perf_counter()
    plan_memory(lift, documents, fitted, None, context)
    seconds = round(time.perf_counter() - start, 2)
    return gather_objects(seconds) if context is not None else [seconds]


def each_worker(args: argparse.Namespace, lift, config, context) -> None:
    """``--documents`` articles into as many memories with ``absorb_each``; wall time until all are saved."""
    from lift_integrations.cli import absorb_each, entry_characters
    from lift_integrations.distributed import barrier, deal_by_length

    articles = squad_documents(args.squad, args.documents)
    if args.max_chars:
        articles = [(title, text[: args.max_chars]) for title, text in articles]
    documents = {f"{index:04d}": article for index, article in enumerate(articles)}  # titles may hold "/"
    world_size = context.world_size if context is not None else 1
    sizes = [entry_characters(article) for article in articles]  # what absorb_each deals by
    dealt = deal_by_length(sizes, world_size)
    for attempt in range(1, args.attempts + 1):
        if context is not None:
            barrier(context)  # every process starts together
        start = time.perf_counter()
        absorb_each(
            lift,
            documents,
            Path(args.output) / f"attempt-{attempt}",
            config=config,
            show_progress=False,
            context=context,
        )  # returns once every process has saved its memories
        wall = time.perf_counter() - start
        if context is None or context.is_main:
            record = {
                "attempt": attempt,
                "processes": world_size,
                "documents": len(documents),
                "characters": sum(sizes),
                "characters_per_process": [sum(sizes[i] for i in rank) for rank in dealt],
                "wall_s": round(wall, 2),
                "documents_per_min": round(60 * len(documents) / wall, 2),
                "device": str(lift.device),
            }
            print("RESULT " + json.dumps(record), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: argparse.Namespace, count: int, output: Path) -> list[dict]:
    """One ``torch.distributed.run`` of ``count`` processes; the records rank 0 printed."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(count),
        "--master_port", str(free_port()), __file__, "--worker", "--mode", args.mode,
        "--preset", args.preset, "--length", str(args.length), "--config-json", args.config_json,
        "--attempts", str(args.attempts), "--documents", str(args.documents),
        "--max-chars", str(args.max_chars), "--output", str(output),
    ]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    if args.squad:
        command += ["--squad", str(args.squad)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{count} process(es) failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["shard", "each"], default="shard")
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--length", type=int, default=32000, help="document tokens (--mode shard)")
    parser.add_argument("--squad", type=Path, default=None, help="SQuAD JSON (--mode each)")
    parser.add_argument("--documents", type=int, default=0, help="articles, one memory each (--mode each)")
    parser.add_argument("--max-chars", type=int, default=0, help="cut each article to this many characters")
    parser.add_argument("--attempts", type=int, default=2, help="absorptions per run; the last is reported")
    parser.add_argument("--preset", choices=["fast", "dense_qa", "paper"], default="paper")
    parser.add_argument("--config-json", default="{}", help="LIFTConfig overrides as JSON")
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--json", action="store_true", help="print only the JSON of the warm attempts")
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = json.loads(args.config_json)
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    if args.mode == "each" and (args.squad is None or args.documents < 1):
        parser.error("--mode each needs --squad FILE and --documents N (N >= 1)")
    if args.worker:
        worker(args, overrides)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="distributed-scaling-") as scratch:
        for count in args.processes:
            results = launch(args, count, Path(scratch) / f"processes-{count}")
            warm = results[-1]
            rows.append(warm)
            if args.json:
                continue
            if args.mode == "each":
                print(
                    f"{count} process(es): {warm['documents']} documents in {warm['wall_s']} s (cold "
                    f"{results[0]['wall_s']} s), {warm['documents_per_min']} documents/min, characters "
                    f"per process {warm['characters_per_process']} ({warm['device']})",
                    flush=True,
                )
            else:
                print(
                    f"{count} process(es): cold {results[0]['train_s']} s, warm {warm['train_s']} s "
                    f"training, {warm['tokens_per_s']} tokens/s, samples built in {warm['plan_s_by_rank']} s "
                    f"by rank ({warm['device']})",
                    flush=True,
                )
    if not args.json:
        metric = "documents_per_min" if args.mode == "each" else "tokens_per_s"
        shard = args.mode == "shard"
        plan_column = (" plan s (max over ranks) | train s |", "---|---|") if shard else ("", "")
        print(
            f"\n| processes | wall s |{plan_column[0]} {metric.replace('_per_', '/')} | scaling |\n"
            f"|---|---|{plan_column[1]}---|---|"
        )
        for row in rows:
            scaling = row[metric] / rows[0][metric]
            times = f" {max(row['plan_s_by_rank'])} | {row['train_s']} |" if shard else ""
            print(f"| {row['processes']} | {row['wall_s']} |{times} {row[metric]} | {scaling:.2f}x |")
    print("JSON " + json.dumps(rows))


if __name__ == "__main__":
    main()
