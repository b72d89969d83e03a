"""Serving many memories at once: answers/s, tokens/s and latency of concurrent requests.

``--requests`` requests (default 64) are spread over each of ``--memories`` memory counts (0: the base
model alone), and served four ways in one process, side by side:

- ``mixed``: one ``generate_batch(prompts, memories=[...])`` call, each row with its own memory;
- ``concurrent``: every request on its own thread through the model's ``MicroBatcher`` (what LangChain's
  ``batch``/``abatch`` and concurrent ``ainvoke`` reach), each timed from its start;
- ``one_at_a_time``: one batch per memory, one memory after another (a server that activates one
  memory at a time);
- ``langchain_abatch`` (with ``--langchain``): ``LIFTChatModel.abatch`` over a memory bank, each question
  routed to its memory.

After a warm-up batch of every request, each path runs ``--repeat`` times (default 3, the paths taking
turns); the table shows each figure's median, the JSON keeps every run's figures too (``runs``).

Memories are absorbed with a one-step recipe: throughput does not depend on what a memory learned. Each
memory's document is a short invented text with its own name, so the router can tell them apart.

    python benchmarks/serve_throughput.py --requests 64 --memories 0 1 8 64 --json serve.json
    python benchmarks/serve_throughput.py --requests 8 --memories 1 2 --max-new-tokens 4 --repeat 2 \\
        --langchain   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PLACES = ["harbour", "orchard", "observatory", "library", "mill", "bridge", "tower", "garden"]


def documents(count: int) -> list[tuple[str, str]]:
    """``count`` short invented documents, each about its own named place."""
    docs = []
    for i in range(count):
        name = f"{PLACES[i % len(PLACES)].title()} {i + 1}"
        docs.append(
            (
                name,
                f"{name} was founded in {1800 + 7 * i} by Mara Vell{i}. Its keeper, Tomas Quill{i}, "
                f"rings a bell each dawn, and the visitors of {name} come for its blue lanterns.",
            )
        )
    return docs


def question(doc: tuple[str, str]) -> str:
    return f"Who founded {doc[0]}?"


def summary(latencies: list[float], wall: float, tokens: int) -> dict[str, float]:
    return {
        "answers_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "wall_s": round(wall, 3),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over ``runs``, every run's figures kept under ``runs``."""
    keys = [key for key in runs[0] if all(isinstance(run.get(key), (int, float)) for run in runs)]
    middle = {key: round(float(np.median([run[key] for run in runs])), 3) for key in keys}
    return {**middle, "runs": runs}


def run_count(
    lift: Any, count: int, requests: int, max_new_tokens: int, langchain: bool, repeat: int
) -> dict[str, Any]:
    from lift_integrations import LIFTConfig, MemoryBank
    from lift_integrations.microbatch import MicroBatcher

    docs = documents(max(count, 1))
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=0, qa_per_document=0, steps_per_epoch=1)
    memories = lift.absorb_many(docs, config=config) if count else []
    rows = [memories[i % count] if count else None for i in range(requests)]
    prompts = [question(docs[i % len(docs)]) for i in range(requests)]
    settings = dict(max_new_tokens=max_new_tokens)
    # Warm up kernels, adapters and allocator at the full batch's shapes, so no path pays for them.
    lift.generate_batch(prompts, memories=rows, batch_size=requests, **settings)

    def mixed() -> dict[str, Any]:
        start = time.perf_counter()
        answers = lift.generate_batch(prompts, memories=rows, batch_size=requests, **settings)
        wall = time.perf_counter() - start
        return summary([wall] * requests, wall, sum(a.output_tokens for a in answers))

    def concurrent() -> dict[str, Any]:
        batcher = MicroBatcher(lift, max_batch=requests)
        latencies = [0.0] * requests
        tokens = [0] * requests
        gate = threading.Barrier(requests)

        def serve(i: int) -> None:
            gate.wait()
            began = time.perf_counter()
            tokens[i] = batcher.generate(prompts[i], memory=rows[i], **settings).output_tokens
            latencies[i] = time.perf_counter() - began

        threads = [threading.Thread(target=serve, args=(i,)) for i in range(requests)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        return {**summary(latencies, wall, sum(tokens)), "batches": batcher.batches_run}

    def one_at_a_time() -> dict[str, Any]:
        start = time.perf_counter()
        finished, produced = [], 0
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(id(row), []).append(i)
        for members in groups.values():
            out = lift.generate_batch([prompts[i] for i in members], memory=rows[members[0]], **settings)
            produced += sum(a.output_tokens for a in out)
            finished += [time.perf_counter() - start] * len(members)
        return summary(finished, time.perf_counter() - start, produced)

    paths = {"mixed": mixed, "concurrent": concurrent, "one_at_a_time": one_at_a_time}
    if langchain and count:
        from lift_integrations.langchain import LIFTChatModel
        from lift_integrations.microbatch import shared_batcher

        bank = MemoryBank({f"m{i}": memory for i, memory in enumerate(memories)})
        chat = LIFTChatModel(lift_model=lift, memory_bank=bank, max_tokens=max_new_tokens)
        chat.invoke(prompts[0])  # calibrate the router before timing

        def langchain_abatch() -> dict[str, Any]:
            async def run() -> list[Any]:
                return await chat.abatch(prompts, config={"max_concurrency": requests})

            before = shared_batcher(lift).batches_run
            start = time.perf_counter()
            messages = asyncio.run(run())
            wall = time.perf_counter() - start
            routed = sum(
                m.response_metadata["lift_memory_id"] == (row.id if row is not None else None)
                for m, row in zip(messages, rows, strict=True)
            )
            output = sum(m.usage_metadata["output_tokens"] for m in messages if m.usage_metadata)
            batches = shared_batcher(lift).batches_run - before
            return {**summary([wall] * requests, wall, output), "batches": batches, "routed_right": routed}

        paths["langchain_abatch"] = langchain_abatch

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in range(repeat):  # the paths take turns, so a slow spell of the machine touches each
        for name, path in paths.items():
            runs[name].append(path())
    results: dict[str, Any] = {"memories": count, "requests": requests, "repeat": repeat}
    results.update({name: median_of(figures) for name, figures in runs.items()})
    for memory in memories:
        lift.release(memory)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--memories", type=int, nargs="+", default=[0, 1, 8, 64])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--langchain", action="store_true", help="also time LIFTChatModel.abatch over a bank")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the median is reported")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    from lift_integrations import LIFTModel

    lift = LIFTModel.from_pretrained(args.model, device=args.device)
    print(
        f"# {lift.name} on {lift.device}, {args.requests} requests, "
        f"{args.max_new_tokens} new tokens at most, median of {args.repeat} runs"
    )
    print("| memories | path | answers/s | tokens/s | p50 s | p95 s | wall s |")
    print("|---|---|---|---|---|---|---|")
    report = []
    for count in args.memories:
        result = run_count(lift, count, args.requests, args.max_new_tokens, args.langchain, args.repeat)
        report.append(result)
        for path in ("mixed", "concurrent", "one_at_a_time", "langchain_abatch"):
            if path in result:
                r = result[path]
                print(
                    f"| {count} | {path} | {r['answers_per_s']} | {r['tokens_per_s']} | {r['p50_s']} "
                    f"| {r['p95_s']} | {r['wall_s']} |",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
