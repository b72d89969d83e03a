"""Memories a team can trust: they reload on any model with the same base weights, carry their adapter
configuration, never cost an adapter per use, and save and load safely from many threads and processes.

Each test here failed before the fix it guards (issue "Memories a team can trust", items 1-5 and the
absurd-weights part of item 8).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel, Memory, MemoryFormatError, MemoryMismatchError
from lift_integrations.adapters.gated_memory import GatedMemoryConfig
from lift_integrations.adapters.lora import LoRAConfig
from lift_integrations.memory import MANIFEST_FILE, TENSORS_FILE

DOC = ("Zorblat", "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven.")
CONFIG = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2)
QUESTION = "Who founded the Zorblat Institute?"


def _lift(adapter: str = "gated_memory", adapter_config: Any = None, seed: int = 0) -> LIFTModel:
    model, tokenizer = build_tiny_model("llama", seed=seed)
    return LIFTModel(model, tokenizer, name="tiny-llama", adapter=adapter, adapter_config=adapter_config)


def _logits(lift: LIFTModel, memory: Memory | None) -> torch.Tensor:
    ids = lift.prompt_ids(QUESTION, memory=None)
    with lift.using(memory), torch.no_grad():
        return lift.logits(ids)


def _lora_adapters(lift: LIFTModel) -> int:
    """How many PEFT adapters the model holds (every LoRA layer holds the same ones)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in lift.model.modules() if isinstance(m, BaseTunerLayer)]
    return len(layers[0].lora_A) if layers else 0


def _live_modules(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


# 1. The fingerprint describes the base model alone ------------------------------------------------


def test_a_lora_memory_loads_on_a_fresh_model_with_the_same_base_weights(tmp_path: Path) -> None:
    first = _lift("lora")
    memory = first.absorb(DOC, config=CONFIG)  # the first use of the fingerprint, adapter injected
    assert first.fingerprint == _lift("lora").fingerprint, "an adapter is not part of the base model"
    path = memory.save(tmp_path / "lora")
    second = _lift("lora")  # identical base weights, no adapter yet
    loaded = Memory.load(path)
    second.attach(loaded)
    assert torch.equal(_logits(second, loaded), _logits(first, memory))


def test_the_fingerprint_ignores_adapters_already_in_the_model() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    plain = _lift().fingerprint
    model, tokenizer = build_tiny_model("llama")
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), model, adapter_name="user")
    assert LIFTModel(model, tokenizer).fingerprint == plain


# 2. A memory carries its adapter configuration -----------------------------------------------------


def test_a_lora_memory_uses_its_own_alpha_on_a_model_set_to_another() -> None:
    trained_on = _lift("lora", LoRAConfig(alpha=8))
    memory = trained_on.absorb(DOC, config=CONFIG)
    assert memory.adapter_config["alpha"] == 8
    other = _lift("lora", LoRAConfig(alpha=64))
    assert torch.equal(_logits(other, memory), _logits(trained_on, memory))
    assert other.absorb(DOC, config=CONFIG).adapter_config["alpha"] == 64  # the model's own for new ones


def test_a_gated_memory_uses_its_own_gate_scale_on_a_model_set_to_another(tmp_path: Path) -> None:
    trained_on = _lift(adapter_config=GatedMemoryConfig(gate_scale=3.0))
    memory = trained_on.absorb(DOC, config=CONFIG)
    loaded = Memory.load(memory.save(tmp_path / "m"))
    other = _lift(adapter_config=GatedMemoryConfig(gate_scale=30.0))
    assert torch.equal(_logits(other, loaded), _logits(trained_on, memory))


def test_continuing_a_memory_keeps_its_configuration() -> None:
    memory = _lift(adapter_config=GatedMemoryConfig(gate_scale=3.0)).absorb(DOC, config=CONFIG)
    other = _lift(adapter_config=GatedMemoryConfig(gate_scale=30.0))
    more = other.absorb(("Oskel", "The river Oskel freezes every March."), config=CONFIG, into=memory)
    assert more.adapter_config["gate_scale"] == 3.0


@pytest.mark.parametrize("field", ["num_layers", "num_heads", "head_dim"])
def test_a_memory_shaped_for_another_model_names_the_field(field: str) -> None:
    lift = _lift()
    memory = lift.absorb(DOC, config=CONFIG)
    changed = Memory(
        adapter_kind=memory.adapter_kind,
        adapter_config={**memory.adapter_config, field: memory.adapter_config[field] + 1},
        tensors=memory.tensors,
        documents=memory.documents,
        config=memory.config,
        base_model_name=memory.base_model_name,
        base_fingerprint=memory.base_fingerprint,
    )
    with pytest.raises(MemoryMismatchError, match=field):
        lift.attach(changed)


@pytest.mark.parametrize(
    ("adapter", "field", "value"),
    [
        ("gated_memory", "gate_scale", -1.0),
        ("gated_memory", "initial_gate", 1.5),
        ("gated_memory", "hidden_multiplier", True),
        ("lora", "alpha", float("inf")),
        ("lora", "r", 0),
        ("lora", "dropout", 1.0),
        ("lora", "target_modules", []),
    ],
)
def test_an_invalid_adapter_config_in_a_manifest_is_a_format_error(
    tmp_path: Path, adapter: str, field: str, value: Any
) -> None:
    folder = _lift(adapter).absorb(DOC, config=CONFIG).save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["adapter"]["config"][field] = value
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(MemoryFormatError, match=field):
        Memory.load(folder)


# 3. Saving never deletes what is not a memory ------------------------------------------------------


def test_a_folder_holding_only_the_users_manifest_is_not_replaced(tmp_path: Path) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / MANIFEST_FILE).write_text('{"name": "my project"}')
    with pytest.raises(FileExistsError, match="not a memory"):
        memory.save(folder)
    assert (folder / MANIFEST_FILE).read_text() == '{"name": "my project"}'


def test_a_subfolder_named_like_a_memory_file_is_not_deleted(tmp_path: Path) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    folder = memory.save(tmp_path / "m")
    (folder / TENSORS_FILE).unlink()
    (folder / TENSORS_FILE).mkdir()
    (folder / TENSORS_FILE / "thesis.docx").write_text("four years of work")
    with pytest.raises(FileExistsError, match=TENSORS_FILE):
        memory.save(folder)
    assert (folder / TENSORS_FILE / "thesis.docx").read_text() == "four years of work"


@pytest.mark.parametrize("path", ["", "."])
def test_saving_to_the_working_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(ValueError, match=r"working directory|empty"):
        memory.save(path)
    assert here.is_dir() and Path.cwd() == here and not any(here.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_folder_containing_the_working_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    (tmp_path / "outer" / "inner").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "outer" / "inner")
    with pytest.raises(ValueError, match="working directory"):
        memory.save(tmp_path / "outer")
    assert (tmp_path / "outer" / "inner").is_dir()


# 4. Adapters are bounded by the memories alive -----------------------------------------------------


def test_loading_a_memory_twenty_times_in_langchain_keeps_one_adapter(tmp_path: Path) -> None:
    from lift_integrations.langchain import LIFTChatModel, register_model, unregister_model

    lift = _lift("lora")
    path = lift.absorb(DOC, config=CONFIG).save(tmp_path / "m")
    gc.collect()
    register_model("tiny-lora-leak", lift)
    try:
        chat = LIFTChatModel(model="tiny-lora-leak", max_tokens=2)
        for _ in range(20):
            chat.load_memory(path)
            chat.invoke(QUESTION)
        gc.collect()
        chat.invoke(QUESTION)  # the next use of the model frees adapters of memories that are gone
        assert _lora_adapters(lift) == 1
    finally:
        unregister_model("tiny-lora-leak")


def test_eight_threads_first_using_one_memory_inject_one_adapter(tmp_path: Path) -> None:
    lift = _lift("lora")
    path = lift.absorb(DOC, config=CONFIG).save(tmp_path / "m")
    gc.collect()
    lift.generate(QUESTION, memory=None, max_new_tokens=1)
    loaded = Memory.load(path)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            start.wait()
            lift.generate(QUESTION, memory=loaded, max_new_tokens=2)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _lora_adapters(lift) == 1


def test_alternating_one_memory_between_two_models_keeps_one_adapter_each() -> None:
    first, second = _lift("lora"), _lift("lora")
    memory = first.absorb(DOC, config=CONFIG)
    for _ in range(10):
        first.generate(QUESTION, memory=memory, max_new_tokens=1)
        second.generate(QUESTION, memory=memory, max_new_tokens=1)
    assert _lora_adapters(first) == 1 and _lora_adapters(second) == 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
@pytest.mark.parametrize(
    ("adapter", "adapter_config"),
    [("lora", LoRAConfig(r=256)), ("gated_memory", GatedMemoryConfig(hidden_multiplier=64))],
)
def test_a_hundred_loaded_memories_leave_adapters_and_memory_flat(
    tmp_path: Path, adapter: str, adapter_config: Any
) -> None:
    """Adapters of about 1 MB each, so that 100 leaked ones (100 MB) stand far above allocator noise."""
    from lift_integrations.adapters.gated_memory.model import GatedMemoryWeights

    lift = _lift(adapter, adapter_config)
    path = lift.absorb(DOC, config=CONFIG).save(tmp_path / "m")
    assert path.joinpath(TENSORS_FILE).stat().st_size > 900_000

    def footprint() -> tuple[int, int, int]:
        gc.collect()
        lift.generate(QUESTION, memory=None, max_new_tokens=1)
        parameters = sum(p.numel() for p in lift.model.parameters())
        return _lora_adapters(lift), _live_modules(GatedMemoryWeights), parameters

    def load_and_use(times: int) -> None:
        for _ in range(times):
            memory = Memory.load(path)
            lift.generate(QUESTION, memory=memory, max_new_tokens=1)

    load_and_use(10)  # allocator and caches warm
    baseline, resident = footprint(), _rss_bytes()
    load_and_use(100)
    assert footprint() == baseline
    assert _rss_bytes() - resident < 40 * 1024**2
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert torch.cuda.memory_allocated() < 2 * 1024**2


def test_release_frees_the_adapter_now() -> None:
    lift = _lift("lora")
    memory = lift.absorb(DOC, config=CONFIG)
    assert _lora_adapters(lift) == 1
    lift.release(memory)
    assert _lora_adapters(lift) == 0
    lift.generate(QUESTION, memory=memory, max_new_tokens=1)  # rebuilt from its tensors
    assert _lora_adapters(lift) == 1


# 5. Saves to one path serialise; readers see one memory whole --------------------------------------


def test_eight_threads_saving_to_one_path_never_fail(tmp_path: Path) -> None:
    lift = _lift()
    memories = [lift.absorb(DOC, config=CONFIG)]
    memories.append(lift.absorb(("Oskel", "The river Oskel freezes every March."), config=CONFIG))
    target = tmp_path / "shared"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def save(index: int) -> None:
        start.wait()
        for _ in range(15):
            try:
                memories[index % 2].save(target)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Memory.load(target).id in {m.id for m in memories}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shared.lock", "shared"]


def test_readers_see_the_old_or_the_new_memory_whole(tmp_path: Path) -> None:
    lift = _lift()
    memories = [lift.absorb(DOC, config=CONFIG)]
    memories.append(lift.absorb(("Oskel", "The river Oskel freezes every March."), config=CONFIG))
    ids = {m.id for m in memories}
    target = memories[0].save(tmp_path / "shared")
    done = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for index in range(60):
                memories[index % 2].save(target)
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(Memory.load(target).id)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seen and set(seen) <= ids


def test_a_save_waits_for_another_process_holding_the_path(tmp_path: Path) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    target = tmp_path / "shared"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys, time\n"
            "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
            "print('held', flush=True); time.sleep(1.0)\n"
            "released = time.time(); lock.release(); print(released, flush=True)",
            str(tmp_path / ".shared.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        memory.save(target)
        saved = time.time()
        released = float(holder.stdout.readline())
        assert saved >= released, "the save finished while the other process held the lock"
    finally:
        holder.kill()
        holder.wait()
    assert Memory.load(target).id == memory.id


# 8 (part). Finite but absurd weights ---------------------------------------------------------------


def test_absurd_weights_are_refused_on_save_and_on_load(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    memory = _lift().absorb(DOC, config=CONFIG)
    name = sorted(memory.tensors)[0]
    huge = Memory(
        adapter_kind=memory.adapter_kind,
        adapter_config=memory.adapter_config,
        tensors={**memory.tensors, name: torch.full_like(memory.tensors[name], 3e38)},
        documents=memory.documents,
        config=memory.config,
        base_model_name=memory.base_model_name,
        base_fingerprint=memory.base_fingerprint,
    )
    with pytest.raises(ValueError, match=r"magnitude|65,?504"):
        huge.save(tmp_path / "huge")
    assert not (tmp_path / "huge").exists()
    # An attacker writes the file directly, with the manifest's hash updated.
    folder = memory.save(tmp_path / "m")
    tensors = load_file(str(folder / TENSORS_FILE))
    tensors[name] = torch.full_like(tensors[name], 3e38)
    save_file(tensors, str(folder / TENSORS_FILE), metadata={"format": "lift-memory"})
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    import hashlib

    manifest["files"][TENSORS_FILE] = hashlib.sha256((folder / TENSORS_FILE).read_bytes()).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(MemoryFormatError, match=rf"{name}.*(magnitude|65,?504)"):
        Memory.load(folder)


def test_the_lock_file_is_the_only_sibling_a_save_leaves(tmp_path: Path) -> None:
    memory = _lift().absorb(DOC, config=CONFIG)
    memory.save(tmp_path / "m")
    memory.save(tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == [".m.lock", "m"]


# Found in review ------------------------------------------------------------------------------------


def test_files_put_in_the_target_during_a_save_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lift_integrations.memory as memory_module

    memory = _lift().absorb(DOC, config=CONFIG)
    target = memory.save(tmp_path / "m")
    hash_file = memory_module.sha256_file

    def meanwhile(path: Path) -> str:  # while the new version is written, the user adds a file
        (target / "my_notes.txt").write_text("keep me")
        return hash_file(path)

    monkeypatch.setattr(memory_module, "sha256_file", meanwhile)
    with pytest.raises(FileExistsError, match=r"my_notes\.txt"):
        memory.save(target)
    assert (target / "my_notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-") or ".old-" in p.name]


def test_without_folder_handles_loads_and_concurrent_reads_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where folders cannot be opened (Windows), files are read by path and a manifest that changed
    mid-read means the read starts again."""
    import lift_integrations.memory_validation as validation

    monkeypatch.setattr(validation, "FOLDER_HANDLES", False)
    test_readers_see_the_old_or_the_new_memory_whole(tmp_path / "concurrent")
    folder = _lift().absorb(DOC, config=CONFIG).save(tmp_path / "m")
    assert Memory.load(folder).titles == ["Zorblat"]
    (tmp_path / "copy.json").write_bytes((folder / MANIFEST_FILE).read_bytes())
    (folder / MANIFEST_FILE).unlink()
    (folder / MANIFEST_FILE).symlink_to(tmp_path / "copy.json")
    with pytest.raises(MemoryFormatError, match="symbolic link"):
        Memory.load(folder)


def test_a_model_dropped_before_its_memories_frees_their_adapters() -> None:
    from lift_integrations.adapters.gated_memory.model import GatedMemoryWeights

    lift = _lift()
    memory = lift.absorb(DOC, config=CONFIG)
    before = _live_modules(GatedMemoryWeights)
    assert before >= 1
    del lift
    assert _live_modules(GatedMemoryWeights) == before - 1
    assert memory.num_parameters > 0
