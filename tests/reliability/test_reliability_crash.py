"""Crash safety: processes killed with SIGKILL during absorb and during save lose nothing.

A killed absorption leaves previously saved memories untouched and, with checkpointing on, continues
from its last checkpoint to the same memory an uninterrupted run gives. A killed save leaves the old
memory loadable. The kills are real: a Python subprocess is stopped with SIGKILL at a known point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_models import Interrupt, build_tiny_model, stop_at

from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.absorb.checkpoint import CheckpointStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TESTS = Path(__file__).resolve().parents[1]


DOCUMENT = (
    "Zorblat",
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides.",
)


def _config(checkpoints: Path | None, every: int = 3) -> LIFTConfig:
    """17 optimizer steps on the tiny model (1 segment, 4 QA pairs, one sample per step). Checkpoints
    need the eager engine, so the runs without them use it too: the memories compared are then equal,
    not just equal up to rounding."""
    return LIFTConfig.fast(
        engine="eager",
        stage1_epochs=2,
        stage2_epochs=3,
        qa_per_document=4,
        batch_size=1,
        checkpoint_dir=str(checkpoints) if checkpoints else None,
        checkpoint_every=every,
    )


def _lift() -> LIFTModel:
    model, tokenizer = build_tiny_model("llama")
    return LIFTModel(model, tokenizer, name="tiny-llama")


def _assert_same_tensors(first: Memory, second: Memory) -> None:
    assert first.tensors.keys() == second.tensors.keys()
    for name, tensor in first.tensors.items():
        torch.testing.assert_close(tensor, second.tensors[name], rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def uninterrupted() -> Memory:
    return _lift().absorb(DOCUMENT, config=_config(None))


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    # No progress bar: its carriage returns would put the "step N" lines this test waits for mid-line.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "LIFT_PROGRESS": "0",
    }
    code = f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n" + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> list[str]:
    """Lines the subprocess printed up to and including the first one starting with ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"the subprocess ended before {marker!r}:\n" + "".join(lines))
        lines.append(line)
        if line.startswith(marker):
            return lines
    process.kill()
    pytest.fail(f"timed out waiting for {marker!r}:\n" + "".join(lines))


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    if process.stdout is not None:
        process.stdout.close()


# Checkpoint and resume, in process ------------------------------------------------------------------


def test_an_interrupted_absorption_resumes_to_the_same_memory(uninterrupted: Memory, tmp_path: Path) -> None:
    config = _config(tmp_path / "checkpoints", every=3)

    with pytest.raises(Interrupt):
        _lift().absorb(DOCUMENT, config=config, callback=stop_at(8))
    (key_folder,) = (tmp_path / "checkpoints").iterdir()
    assert [p.name for p in key_folder.iterdir()] == ["step-00000006"], "only the newest checkpoint is kept"
    steps: list[int] = []
    resumed = _lift().absorb(DOCUMENT, config=config, callback=lambda r: steps.append(r.step))
    assert steps == list(range(7, 18)) and resumed.stats["resumed_from_step"] == 6
    _assert_same_tensors(resumed, uninterrupted)
    assert resumed.id == uninterrupted.id
    assert resumed.config.checkpoint_dir is None
    assert list((tmp_path / "checkpoints").iterdir()) == [], "a finished absorption deletes its checkpoints"


def test_a_damaged_checkpoint_is_skipped_and_a_foreign_one_never_used(
    uninterrupted: Memory, tmp_path: Path
) -> None:
    config = _config(tmp_path / "checkpoints", every=3)
    with pytest.raises(Interrupt):
        _lift().absorb(DOCUMENT, config=config, callback=stop_at(5))
    (key_folder,) = (tmp_path / "checkpoints").iterdir()
    params = key_folder / "step-00000003" / "params.safetensors"
    data = bytearray(params.read_bytes())
    data[-1] ^= 0xFF
    params.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="does not match its hash"):
        restarted = _lift().absorb(DOCUMENT, config=config)
    assert "resumed_from_step" not in restarted.stats, "started over instead of using a damaged checkpoint"
    _assert_same_tensors(restarted, uninterrupted)

    with pytest.raises(Interrupt):
        _lift().absorb(DOCUMENT, config=config, callback=stop_at(5))
    other = _lift().absorb(("Other", "A different document about the river Oskel."), config=config)
    assert "resumed_from_step" not in other.stats, "another document's checkpoint must not be resumed"
    fresh = _lift().absorb(DOCUMENT, config=config, resume=False)
    assert "resumed_from_step" not in fresh.stats
    _assert_same_tensors(fresh, uninterrupted)


def test_lora_absorption_resumes_too(tmp_path: Path) -> None:
    """The checkpoint holds parameters by position, so any adapter resumes; LoRA also re-freezes every
    parameter when a memory is activated, which the per-step lock must undo for the trained one."""

    def lora_lift() -> LIFTModel:
        model, tokenizer = build_tiny_model("qwen2")
        return LIFTModel(model, tokenizer, adapter="lora", adapter_config={"r": 4, "alpha": 8})

    config = _config(tmp_path, every=4)
    reference = lora_lift().absorb(DOCUMENT, config=_config(None))
    with pytest.raises(Interrupt):
        lora_lift().absorb(DOCUMENT, config=config, callback=stop_at(10))
    resumed = lora_lift().absorb(DOCUMENT, config=config)
    assert resumed.stats["resumed_from_step"] == 8
    _assert_same_tensors(resumed, reference)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        _lift().absorb(DOCUMENT, config=_config(tmp_path, every=2), callback=stop_at(3))
    (checkpoint,) = (p for p in tmp_path.rglob("step-*"))
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "optimizer.safetensors",
        "params.safetensors",
        "state.json",
    ]
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 2 and len(state["losses"]) == 2 and state["rng"]["bit_generator"] == "PCG64"
    assert CheckpointStore(tmp_path, checkpoint.parent.name, 2).latest_step == 2


# Real kills ---------------------------------------------------------------------------------------------

ABSORB_SCRIPT = """
import json, time
from pathlib import Path
import torch
from tiny_models import build_tiny_model
from lift_integrations import LIFTConfig, LIFTModel

torch.set_num_threads(1)  # as in the parent: the same arithmetic, so the same memory
config = LIFTConfig.from_dict(json.loads(sys.argv[1]))
title, text = json.loads(sys.argv[3])
model, tokenizer = build_tiny_model("llama")
lift = LIFTModel(model, tokenizer, name="tiny-llama")

def report(progress):
    print(f"step {progress.step}", flush=True)
    time.sleep(0.2)  # slow enough to be killed midway; does not change what is computed

memory = lift.absorb((title, text), config=config, callback=report)
memory.save(sys.argv[2])  # never reached: the parent kills this process first
print("finished", flush=True)
"""


def test_sigkill_during_absorb_keeps_saved_memories_and_resumes(
    uninterrupted: Memory, tmp_path: Path
) -> None:
    target = uninterrupted.save(tmp_path / "memory")  # a memory saved before: must survive the kill
    before = (target / "adapter.safetensors").read_bytes()
    checkpoints = tmp_path / "checkpoints"
    config = _config(checkpoints, every=3)
    process = _spawn(ABSORB_SCRIPT, json.dumps(config.to_dict()), str(target), json.dumps(DOCUMENT))
    try:
        _wait_for_line(process, "step 7")  # checkpoints at steps 3 and 6 are on disk by now
    finally:
        _kill(process)
    assert (target / "adapter.safetensors").read_bytes() == before
    assert Memory.load(target).id == uninterrupted.id

    resumed = _lift().absorb(DOCUMENT, config=config)
    assert resumed.stats["resumed_from_step"] >= 6, "continued from the killed process's checkpoint"
    _assert_same_tensors(resumed, uninterrupted)


SAVE_SCRIPT = """
import os, time
from pathlib import Path
import torch
import lift_integrations.memory as memory_module
from lift_integrations import LIFTConfig
from lift_integrations.documents import Document
from lift_integrations.memory import Memory

point, target = sys.argv[1], Path(sys.argv[2]).resolve()

def pause(where):
    print(f"paused {where}", flush=True)
    time.sleep(600)

if point == "writing":  # the staging folder holds the tensors but not the documents yet
    def write_text(self, *args, **kwargs):
        pause("writing")
    Path.write_text = write_text
elif point == "before-swap":  # the staging folder is complete, nothing renamed yet
    memory_module._swap_into_place = lambda staging, final: pause("before-swap")
elif point == "between-renames":  # the old memory has been renamed away, the new one not yet in place
    original_rename = Path.rename
    def rename(self, destination):
        result = original_rename(self, destination)
        if self == target:
            pause("between-renames")
        return result
    Path.rename = rename

tensors = {"layers.0.mem_in.weight": torch.full((4, 16, 32), 0.5)}
new = Memory(adapter_kind="gated_memory", adapter_config={}, tensors=tensors,
             documents=[Document("new", "the new memory")], config=LIFTConfig(),
             base_model_name="tiny", base_fingerprint="0")
new.save(target)
print("saved", flush=True)
"""


@pytest.mark.parametrize("point", ["writing", "before-swap", "between-renames"])
def test_sigkill_during_save_leaves_the_old_memory_loadable(
    uninterrupted: Memory, tmp_path: Path, point: str
) -> None:
    target = uninterrupted.save(tmp_path / "memory")
    process = _spawn(SAVE_SCRIPT, point, str(target))
    try:
        _wait_for_line(process, f"paused {point}")
    finally:
        _kill(process)
    assert Memory.load(target).id == uninterrupted.id, "the old memory is still what loads"
    uninterrupted.save(target)  # and the next save cleans up after the killed one
    assert Memory.load(target).id == uninterrupted.id
    assert not any(p.name.startswith(".memory.old-") for p in tmp_path.iterdir())
