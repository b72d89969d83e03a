"""What the server and ``lift`` command tests share: a tiny model and two memories saved as folders,
and a real ``lift serve`` process started on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lift_integrations import LIFTConfig, LIFTModel, Memory

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = {
    "alpha": "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. " * 2,
    "beta": "Its first director was Tobias Renwick, who studied glass harps and river tides. " * 2,
}
SMALL = LIFTConfig.fast(
    segment_length=32,
    segment_stride=24,
    context_view_length=16,
    qa_per_document=2,
    stage1_epochs=1,
    stage2_epochs=1,
    max_seq_length=128,
)
QUESTION = "Who founded the Zorblat Institute?"


@dataclass
class Saved:
    model_dir: Path
    memories: dict[str, Path]


def save_model_and_memories(folder: Path) -> Saved:
    """The tiny random Llama (with its tokenizer) and one memory per document, saved under ``folder``.
    Each memory's gate is opened and its output weights moved by its own random amount, so that each
    visibly changes the answers, differently (a tiny model learns little in a few steps)."""
    from tiny_models import build_tiny_model

    model, tokenizer = build_tiny_model("llama")
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    lift = LIFTModel(model, tokenizer, name="model")
    saved = {}
    absorbed = lift.absorb_many(list(DOCUMENTS.items()), config=SMALL)
    for index, (name, memory) in enumerate(zip(DOCUMENTS, absorbed, strict=True)):
        noise = torch.Generator().manual_seed(index)
        tensors = {
            key: tensor
            + (3.0 if key.endswith("gate_bias") else 0.0)
            + (torch.randn(tensor.shape, generator=noise) if "mem_out" in key else 0.0)
            for key, tensor in memory.tensors.items()
        }
        opened = Memory(
            adapter_kind=memory.adapter_kind,
            adapter_config=memory.adapter_config,
            tensors=tensors,
            documents=memory.documents,
            config=memory.config,
            base_model_name=memory.base_model_name,
            base_fingerprint=memory.base_fingerprint,
            stats=memory.stats,
        )
        saved[name] = opened.save(folder / name)
    return Saved(model_dir, saved)


def reference_model(saved: Saved) -> LIFTModel:
    """The saved model loaded in this process, as the server loads it."""
    return LIFTModel.from_pretrained(saved.model_dir, device="cpu")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@contextlib.contextmanager
def running_server(args: list[str], *, timeout_s: float = 180.0) -> Iterator[str]:
    """``lift serve ARGS`` in its own process on a free port, until the block ends; yields its
    ``/v1`` base URL once ``GET /v1/models`` answers."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "lift_integrations.commands", "serve", *args, "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise RuntimeError(f"lift serve exited with {process.returncode}:\n{output}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"lift serve did not answer within {timeout_s} s")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
