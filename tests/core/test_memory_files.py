"""Saving and loading memories: round trips, verification, mismatches, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import Document, LIFTConfig, LIFTModel, Memory, MemoryFormatError, MemoryMismatchError
from lift_integrations.memory import DOCUMENTS_FILE, MANIFEST_FILE, TENSORS_FILE, AbsorbedDocument

FACTS = "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven."
TINY = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2)


@pytest.fixture
def absorbed(tiny_lift: LIFTModel) -> tuple[LIFTModel, Memory]:
    return tiny_lift, tiny_lift.absorb(("Zorblat", FACTS), config=TINY)


def _logits(lift: LIFTModel, memory: Memory | None) -> torch.Tensor:
    ids = lift.prompt_ids("Who founded the Zorblat Institute?", memory=None)
    with lift.using(memory), torch.no_grad():
        return lift.logits(ids)


def test_round_trip_gives_identical_outputs(absorbed: tuple[LIFTModel, Memory], tmp_path: Path) -> None:
    lift, memory = absorbed
    folder = memory.save(tmp_path / "zorblat")
    # The memory's own files, and its model card (a Gated Memory has no PEFT files).
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST_FILE, TENSORS_FILE, DOCUMENTS_FILE, "README.md"]
    )
    loaded = Memory.load(folder)
    assert loaded.id == memory.id and loaded.titles == ["Zorblat"] and loaded.documents[0].text == FACTS
    assert loaded.config == memory.config
    assert torch.equal(_logits(lift, loaded), _logits(lift, memory))
    first = lift.generate("Who founded it?", memory=memory, max_new_tokens=8).text
    assert lift.generate("Who founded it?", memory=loaded, max_new_tokens=8).text == first


def test_manifest_describes_the_memory(absorbed: tuple[LIFTModel, Memory], tmp_path: Path) -> None:
    lift, memory = absorbed
    manifest = json.loads((memory.save(tmp_path / "m") / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1
    assert manifest["base_model"]["fingerprint"] == lift.fingerprint
    assert manifest["adapter"]["kind"] == "gated_memory"
    shapes = manifest["adapter"]["tensors"]
    assert shapes["layers.0.mem_in.weight"]["shape"] == [4, 16, 32]  # heads, head_dim, 2 * head_dim
    assert manifest["documents"][0]["title"] == "Zorblat" and len(manifest["documents"][0]["sha256"]) == 64
    assert manifest["num_parameters"] == memory.num_parameters > 0
    assert manifest["config"]["segment_length"] == memory.config.segment_length


def test_memory_ids_and_document_files_are_stable(tmp_path: Path) -> None:
    """Pinned bytes: a memory's id, ``documents.json`` and the manifest's document entries are what this
    library wrote before ``Document`` and ``AbsorbedDocument`` became one type, so memories saved by
    earlier versions keep their ids."""
    assert AbsorbedDocument is Document
    tensors = {
        "layers.0.mem_in.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8,
        "layers.0.gate_bias": torch.tensor([0.5, -1.25]),
    }
    documents = [
        Document("Zorblat", "Founded in 1874 — by Mira Quenton."),
        Document("", "naïve <|im_start|>system\ntext"),
    ]
    memory = Memory(
        adapter_kind="gated_memory",
        adapter_config={"num_heads": 2},
        tensors=tensors,
        documents=documents,
        config=LIFTConfig(),
        base_model_name="tiny",
        base_fingerprint="0" * 32,
        created_at="2026-01-01T00:00:00+00:00",
    )
    assert memory.id == "20c7a5832b9caa1e"
    folder = memory.save(tmp_path / "m")
    documents_bytes = (folder / DOCUMENTS_FILE).read_bytes()
    assert hashlib.sha256(documents_bytes).hexdigest() == (
        "dc94a318653bec305c6717a7710487d22c9c32b780d42f1265df9f2bdb7a83c6"
    )
    assert json.loads((folder / MANIFEST_FILE).read_text())["documents"] == [
        {
            "title": "Zorblat",
            "sha256": "3c1eaed0420948984b62ef29d93351fe1caa8e2b05f4cdcff6756fce5e75902d",
            "num_chars": 34,
        },
        {
            "title": "",
            "sha256": "c876f9dc39bad3ab8457c793599298a052cffdeff47777f3b3e7163553d1b587",
            "num_chars": 29,
        },
    ]


def test_loading_onto_a_different_base_model_fails_clearly(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    _, memory = absorbed
    loaded = Memory.load(memory.save(tmp_path / "m"))
    other_model, tokenizer = build_tiny_model("llama", seed=99)
    other = LIFTModel(other_model, tokenizer, name="other")
    with pytest.raises(MemoryMismatchError, match="made for base model"):
        other.attach(loaded)
    with pytest.raises(MemoryMismatchError):
        other.generate("hi", memory=loaded)
    lora_model, _ = build_tiny_model("llama")
    with pytest.raises(MemoryMismatchError, match="adapter"):
        LIFTModel(lora_model, tokenizer, adapter="lora").attach(loaded)


@pytest.mark.parametrize("target", [TENSORS_FILE, DOCUMENTS_FILE])
def test_tampered_or_truncated_files_are_refused(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path, target: str
) -> None:
    folder = absorbed[1].save(tmp_path / "m")
    data = bytearray((folder / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / target).write_bytes(bytes(data))
    with pytest.raises(MemoryFormatError, match="does not match its hash"):
        Memory.load(folder)
    (folder / target).write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(MemoryFormatError):
        Memory.load(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "newer than this library"),
        (lambda m: m.update(format="pickle"), "not a lift-memory"),
        (lambda m: m["adapter"].update(kind="mystery"), "unknown adapter kind"),
        (lambda m: m["adapter"]["tensors"]["layers.0.mem_in.weight"].update(shape=[1, 2, 3]), "shape"),
        (lambda m: m["adapter"]["tensors"]["layers.0.mem_in.weight"].update(dtype="int64"), "dtype"),
        (lambda m: m.pop("files"), "file hashes"),
        (lambda m: m["base_model"].pop("fingerprint"), "fingerprint"),
    ],
)
def test_invalid_manifests_are_refused(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path, edit, message: str
) -> None:
    folder = absorbed[1].save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    edit(manifest)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(MemoryFormatError, match=message):
        Memory.load(folder)


def test_not_json_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST_FILE).write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(MemoryFormatError, match="not valid UTF-8 JSON"):
        Memory.load(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        Memory.load(tmp_path / "nothing-here")


def test_saving_over_a_memory_replaces_it_atomically(tiny_lift: LIFTModel, tmp_path: Path) -> None:
    first = tiny_lift.absorb(FACTS, config=TINY)
    second = tiny_lift.absorb("Vellhaven lies on the river Oskel.", config=TINY)
    target = tmp_path / "m"
    first.save(target)
    second.save(target)
    assert Memory.load(target).id == second.id
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".m.lock", "m"], "no temporary or old folders are left behind, only the lock file"


def test_a_save_cut_off_between_its_renames_leaves_the_old_memory_readable(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    memory = absorbed[1]
    target = memory.save(tmp_path / "m")
    shutil.move(target, tmp_path / ".m.old-12345")  # the state right after the first rename
    assert Memory.load(tmp_path / "m").id == memory.id


def test_refuses_to_overwrite_a_folder_that_is_not_a_memory(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"...")
    with pytest.raises(FileExistsError, match="does not hold a memory"):
        absorbed[1].save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"..."


def test_lora_memory_round_trip(tmp_path: Path) -> None:
    model, tokenizer = build_tiny_model("qwen3")
    lift = LIFTModel(model, tokenizer, adapter="lora", adapter_config={"r": 4, "alpha": 8})
    memory = lift.absorb(FACTS, config=TINY)
    loaded = Memory.load(memory.save(tmp_path / "lora"))
    loaded_logits = _logits(lift, loaded)
    assert torch.equal(loaded_logits, _logits(lift, memory))


def test_a_refused_save_is_rescued_next_to_its_target(
    absorbed: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    from lift_integrations.memory import check_save_target, save_or_rescue

    _, memory = absorbed
    target = tmp_path / "notes"
    target.mkdir()
    (target / "mine.txt").write_text("not a memory")
    with pytest.raises(FileExistsError, match="does not hold a memory"):
        check_save_target(target)
    with pytest.raises(OSError, match="it was saved to") as caught:
        save_or_rescue(memory, target)
    (rescued,) = [p for p in tmp_path.iterdir() if p.name.startswith("notes.unsaved-")]
    assert str(rescued) in str(caught.value)
    assert (target / "mine.txt").read_text() == "not a memory"  # the user's folder is untouched
    assert torch.equal(
        Memory.load(rescued).tensors["layers.0.gate_bias"], memory.tensors["layers.0.gate_bias"]
    )
    assert check_save_target(tmp_path / "fresh") == (tmp_path / "fresh").resolve()


@pytest.mark.parametrize("name", ["~0", "~no-such-user/memory"])
def test_a_name_starting_with_an_unknown_users_home_is_a_memory_not_found(name: str) -> None:
    """``~name`` of no known user stays as written, as ``os.path.expanduser`` leaves it: the memory is not
    found (``pathlib.Path.expanduser`` would raise a bare ``RuntimeError`` instead)."""
    from lift_integrations.memory import NamedMemories

    with pytest.raises(FileNotFoundError, match="no memory at"):
        Memory.load(name)
    with pytest.raises(FileNotFoundError, match="no memory at"):
        NamedMemories().get(name)
