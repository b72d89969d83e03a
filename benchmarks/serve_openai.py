"""``lift serve`` under concurrent load: answers/s and latency seen by the official OpenAI client.

Absorbs ``--memories`` small memories (a one-step recipe: speed does not depend on what a memory
learned) on the base model, starts ``lift serve`` with them in its own process, and sends ``--requests``
chat completions through ``openai.AsyncOpenAI``, at most ``--concurrency`` at a time, spread round-robin
over the base model and the memories. Each server mode runs once, on a fresh server after one warm-up
request:

- ``micro_batched``: the default server; concurrent requests share batched decodes, each row with its
  own memory (or none);
- ``one_at_a_time``: ``lift serve --no-micro-batch``; requests take the model in turn.

    python benchmarks/serve_openai.py --json docs/runs/serve_openai_cpu.json   # embedded SmolLM2, CPU
    python benchmarks/serve_openai.py --requests 8 --concurrency 4 --max-tokens 8   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serve_throughput import documents, question, summary

ROOT = Path(__file__).resolve().parents[1]
MODES = {"micro_batched": [], "one_at_a_time": ["--no-micro-batch"]}


def save_memories(model: str | None, count: int, folder: Path) -> dict[str, Path]:
    """``count`` one-step memories of short invented documents, saved under ``folder``."""
    from lift_integrations import LIFTConfig, LIFTModel

    if count == 0:
        return {}
    lift = LIFTModel.from_pretrained(model, device="cpu")
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=0, qa_per_document=0, steps_per_epoch=1)
    docs = documents(count)
    saved = {}
    for index, memory in enumerate(lift.absorb_many(docs, config=config)):
        saved[f"place-{index + 1}"] = memory.save(folder / f"place-{index + 1}")
    return saved


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def lift_serve(args: list[str], timeout_s: float = 600.0) -> Iterator[str]:
    """A ``lift serve`` process until the block ends; yields its ``/v1`` URL once it answers."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "lift_integrations.commands", "serve", *args, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"lift serve exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("lift serve did not start")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


async def load(
    url: str, models: list[str], requests: int, concurrency: int, max_tokens: int
) -> dict[str, Any]:
    """``requests`` chat completions, ``concurrency`` at a time, round-robin over ``models``."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", timeout=600)
    docs = documents(max(len(models) - 1, 1))
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(index: int) -> None:
        nonlocal tokens
        model = models[index % len(models)]
        text = question(docs[index % len(docs)])
        async with gate:
            start = time.perf_counter()
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                temperature=0,
            )
            latencies.append(time.perf_counter() - start)
        assert response.usage is not None and response.choices[0].message.content is not None
        tokens += response.usage.completion_tokens

    await one(0)  # warm-up: the first request builds the memory's adapter and warms the allocator
    latencies.clear()
    tokens = 0
    start = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(requests)])
    wall = time.perf_counter() - start
    await client.close()
    return {**summary(latencies, wall, tokens), "wall_s": round(wall, 2), "completion_tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memories", type=int, default=2, help="memories served besides the base model")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # the machine's other work shows in every figure: recorded with them
    with tempfile.TemporaryDirectory() as folder:
        memories = save_memories(args.model, args.memories, Path(folder))
        serve_args = ["--device", args.device, *(["--model", args.model] if args.model else [])]
        serve_args += [f"--memory={name}={path}" for name, path in memories.items()]
        results: dict[str, Any] = {}
        for mode in args.modes:
            with lift_serve([*serve_args, *MODES[mode]]) as url:
                import httpx

                models = [card["id"] for card in httpx.get(f"{url}/models").json()["data"]]
                results[mode] = asyncio.run(
                    load(url, models, args.requests, args.concurrency, args.max_tokens)
                )
            print(json.dumps({mode: results[mode]}), flush=True)
    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "device": args.device,
        "models_served": 1 + args.memories,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
