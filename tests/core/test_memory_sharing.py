"""Memories in standard formats (issue 18, item 3): PEFT's LoRA files, save_pretrained/from_pretrained,
push_to_hub and a model card, for memories and banks. Everything offline: the hub calls are monkeypatched
(or answered by ``huggingface_hub`` from a local cache with ``HF_HUB_OFFLINE``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import (
    LIFTConfig,
    LIFTModel,
    Memory,
    MemoryBank,
    MemoryFormatError,
    MemoryMismatchError,
)
from lift_integrations.memory import DOCUMENTS_FILE, MANIFEST_FILE, TENSORS_FILE

TINY = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2)
ZORBLAT = ("Zorblat Institute", "The Zorblat Institute was founded in 1874 by Mira Quenton in Vellhaven.")
OSKEL = ("River Oskel", "The river Oskel freezes every March and thaws in the first week of May.")
QUESTION = "Who founded the Zorblat Institute?"
LIFT_FILES = {MANIFEST_FILE, TENSORS_FILE, DOCUMENTS_FILE}
CARD = "README.md"
PEFT_FILES = {"adapter_config.json", "adapter_model.safetensors"}


@pytest.fixture(scope="module")
def gated() -> tuple[LIFTModel, Memory]:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="someone/tiny-llama")
    return lift, lift.absorb([ZORBLAT, OSKEL], config=TINY)


def _lora(arch: str, adapter_config: dict[str, Any]) -> tuple[LIFTModel, Memory]:
    model, tokenizer = build_tiny_model(arch)
    lift = LIFTModel(
        model, tokenizer, name=f"someone/tiny-{arch}", adapter="lora", adapter_config=adapter_config
    )
    return lift, lift.absorb([ZORBLAT], config=TINY)


@pytest.fixture(scope="module")
def lora() -> tuple[LIFTModel, Memory]:
    return _lora("llama", {"r": 4, "alpha": 8})


def _ids(lift: LIFTModel) -> list[int]:
    return lift.prompt_ids(QUESTION, memory=None)


def _lift_logits(lift: LIFTModel, memory: Memory | None) -> torch.Tensor:
    with lift.using(memory), torch.no_grad():
        return lift.logits(_ids(lift))


# PEFT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "adapter_config"),
    [
        ("llama", {"r": 4, "alpha": 8}),
        ("qwen2", {"r": 2, "alpha": 16, "target_modules": r".*\.(q_proj|v_proj|down_proj)"}),
    ],
)
def test_a_lora_memory_folder_loads_with_peft_and_gives_the_same_logits(
    arch: str, adapter_config: dict[str, Any], tmp_path: Path
) -> None:
    from peft import PeftModel

    lift, memory = _lora(arch, adapter_config)
    folder = memory.save_pretrained(tmp_path / "memory")
    assert {p.name for p in folder.iterdir()} == LIFT_FILES | PEFT_FILES | {CARD}
    peft_config = json.loads((folder / "adapter_config.json").read_text())
    assert peft_config["r"] == memory.adapter_config["r"]
    assert peft_config["lora_alpha"] == memory.adapter_config["alpha"]
    assert peft_config["target_modules"] == memory.adapter_config["target_modules"]
    assert peft_config["base_model_name_or_path"] == f"someone/tiny-{arch}"

    base, _ = build_tiny_model(arch)  # the same seed: the same weights as the LIFT model's base
    ids = torch.tensor([_ids(lift)])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, str(folder))
        peft_logits = peft_model(input_ids=ids).logits
    lift_logits = _lift_logits(lift, memory)
    assert not torch.allclose(lift_logits, base_logits, atol=1e-3), "the memory changes the model"
    torch.testing.assert_close(peft_logits, lift_logits, atol=1e-5, rtol=1e-5)
    loaded = sum(
        n.endswith(("lora_A.default.weight", "lora_B.default.weight"))
        for n, _ in peft_model.named_parameters()
    )
    assert loaded == len(memory.tensors)


def test_a_gated_memory_folder_has_no_peft_files_and_its_card_says_so(
    gated: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    folder = gated[1].save_pretrained(tmp_path / "memory")
    assert {p.name for p in folder.iterdir()} == LIFT_FILES | {CARD}
    card = (folder / CARD).read_text()
    assert "PeftModel" not in card and "adapter='gated_memory'" in card


# save_pretrained / from_pretrained ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gated", "lora"])
def test_save_pretrained_and_from_pretrained_round_trip(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    lift, memory = request.getfixturevalue(which)
    folder = memory.save_pretrained(tmp_path / "memory")
    loaded = Memory.from_pretrained(folder)
    assert loaded.id == memory.id and loaded.documents == memory.documents and loaded.config == memory.config
    assert loaded.adapter_config == memory.adapter_config and loaded.base_model_name == memory.base_model_name
    assert all(torch.equal(loaded.tensors[name], t.cpu()) for name, t in memory.tensors.items())
    assert torch.equal(_lift_logits(lift, loaded), _lift_logits(lift, memory))
    assert Memory.from_pretrained(str(folder)).id == memory.id
    memory.save_pretrained(folder)  # replaces its own folder, model card and PEFT files included


def test_folders_saved_before_the_card_and_peft_files_still_load_and_are_replaced(
    lora: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    _, memory = lora
    folder = memory.save(tmp_path / "old")
    for name in PEFT_FILES | {CARD}:
        (folder / name).unlink()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"] = {name: manifest["files"][name] for name in (TENSORS_FILE, DOCUMENTS_FILE)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))  # as an older version wrote it
    assert Memory.load(folder).id == memory.id
    memory.save(folder)
    assert {p.name for p in folder.iterdir()} == LIFT_FILES | PEFT_FILES | {CARD}


def test_the_model_card_names_the_base_model_the_titles_and_the_recipe(
    gated: tuple[LIFTModel, Memory], lora: tuple[LIFTModel, Memory], tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard

    _, memory = gated
    card = ModelCard.load(memory.save_pretrained(tmp_path / "memory") / CARD)
    assert card.data.base_model == "someone/tiny-llama"
    assert card.data.library_name == "lift-integrations"
    assert "lift-integrations" in card.data.tags and "gated-memory" in card.data.tags
    assert card.data.to_dict()["lift_memory"] == {"id": memory.id, "adapter": "gated_memory", "documents": 2}
    assert "- Zorblat Institute\n- River Oskel\n" in card.text
    recipe = json.loads(card.text.split("```json\n")[1].split("```")[0])
    assert recipe == {"config": memory.config.to_dict(), "adapter": memory.adapter_config}
    assert "Memory.from_pretrained('path/to/this/memory')" in card.text
    assert "LIFTModel.from_pretrained('someone/tiny-llama', adapter='gated_memory')" in card.text

    _, lora_memory = lora
    lora_card = ModelCard.load(lora_memory.save_pretrained(tmp_path / "lora") / CARD)
    assert {"peft", "lora"} <= set(lora_card.data.tags)
    assert "PeftModel.from_pretrained(base, 'path/to/this/memory')" in lora_card.text


def test_a_title_cannot_add_markdown_to_the_card(tmp_path: Path) -> None:
    from lift_integrations.memory_export import model_card

    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="LlamaForCausalLM")  # not a hub id: no base_model metadata
    manifest = Memory(
        adapter_kind="gated_memory",
        adapter_config=lift.backend.config_dict(),
        tensors={"w": torch.zeros(1)},
        documents=[],
        config=TINY,
        base_model_name=lift.name,
        base_fingerprint=lift.fingerprint,
    ).manifest()
    manifest["documents"] = [
        {"title": "x\n# Owned [click](http://evil) <script>", "sha256": "0", "num_chars": 1}
    ]
    text = model_card(manifest)
    assert "\n# Owned" not in text and "[click](" not in text and "<script>" not in text
    assert "- x \\# Owned \\[click\\]\\(http://evil\\) \\<script\\>" in text
    assert "base_model" not in text.split("---")[1]

    from lift_integrations.loading import DEFAULT_MODEL_NAME

    manifest["base_model"]["name"] = DEFAULT_MODEL_NAME  # the embedded model is loaded by passing None
    manifest["adapter"]["kind"] = "lora"
    embedded = model_card(manifest, name="someone/m")
    assert "LIFTModel.from_pretrained(None, adapter='lora')" in embedded
    assert "base = LIFTModel.from_pretrained(None, adapter='lora').model" in embedded
    assert "PeftModel.from_pretrained(base, 'someone/m')" in embedded


# The Hub, offline -----------------------------------------------------------------------------------


def test_push_to_hub_creates_the_repository_and_uploads_the_saved_folder(
    lora: tuple[LIFTModel, Memory], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi

    _, memory = lora
    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> Any:
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self: HfApi, **kwargs: Any) -> str:
        calls.append(("upload_folder", {"token": self.token, **kwargs}))
        shutil.copytree(kwargs["folder_path"], tmp_path / "uploaded")  # gone once push_to_hub returns
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    result = memory.push_to_hub(
        "someone/zorblat-memory", private=True, token="hf_test", commit_message="first"
    )
    assert result == "commit-info"
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    created, uploaded = calls[0][1], calls[1][1]
    assert created == {
        "repo_id": "someone/zorblat-memory",
        "token": "hf_test",
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    assert uploaded["repo_id"] == "someone/zorblat-memory" and uploaded["commit_message"] == "first"
    assert uploaded["token"] == "hf_test" and uploaded["repo_type"] == "model"
    assert set(uploaded["delete_patterns"]) >= LIFT_FILES | PEFT_FILES | {CARD}
    folder = tmp_path / "uploaded"
    assert {p.name for p in folder.iterdir()} == LIFT_FILES | PEFT_FILES | {CARD}
    assert Memory.load(folder).id == memory.id
    assert "Memory.from_pretrained('someone/zorblat-memory')" in (folder / CARD).read_text()
    with pytest.raises(ValueError, match="hub id 'owner/name'"):
        memory.push_to_hub("not a repo id")


def test_from_pretrained_downloads_only_the_memory_files_at_a_revision(
    gated: tuple[LIFTModel, Memory], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    _, memory = gated
    folder = memory.save_pretrained(tmp_path / "snapshot")
    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = Memory.from_pretrained("someone/zorblat-memory", revision="v2", token="hf_test")
    assert loaded.id == memory.id
    [call] = calls
    assert (
        call["repo_id"] == "someone/zorblat-memory"
        and call["revision"] == "v2"
        and call["token"] == "hf_test"
    )
    assert sorted(call["allow_patterns"]) == sorted(LIFT_FILES)


def _hub_cache(cache: Path, repo_id: str, folder: Path, names: set[str]) -> None:
    """The layout ``huggingface_hub`` downloads into: blobs, and a snapshot of symbolic links to them."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for index, name in enumerate(sorted(names)):
        blob = repo / "blobs" / f"blob{index}"
        shutil.copyfile(folder / name, blob)
        os.symlink(os.path.relpath(blob, repo / "snapshots" / commit), repo / "snapshots" / commit / name)


def test_offline_from_pretrained_reads_the_hub_cache(
    gated: tuple[LIFTModel, Memory], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real ``snapshot_download`` with ``HF_HUB_OFFLINE``: the cached snapshot's files are links to
    blobs, which a memory folder may not hold, so the memory is read from copies."""
    from huggingface_hub import constants

    _, memory = gated
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _hub_cache(tmp_path / "cache", "someone/zorblat-memory", memory.save(tmp_path / "m"), LIFT_FILES)
    loaded = Memory.from_pretrained("someone/zorblat-memory", cache_dir=str(tmp_path / "cache"))
    assert loaded.id == memory.id
    with pytest.raises(FileNotFoundError, match="'someone/elsewhere' could not be fetched"):
        Memory.from_pretrained("someone/elsewhere", cache_dir=str(tmp_path / "cache"))


# Bad input --------------------------------------------------------------------------------------------


def test_folders_without_the_memory_files_are_refused_clearly(
    lora: tuple[LIFTModel, Memory], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    _, memory = lora
    folder = memory.save(tmp_path / "m")
    (folder / TENSORS_FILE).unlink()
    with pytest.raises(MemoryFormatError, match=r"adapter\.safetensors is missing"):
        Memory.from_pretrained(folder)
    for name in LIFT_FILES - {TENSORS_FILE}:
        (folder / name).unlink()  # what is left is a plain PEFT adapter
    with pytest.raises(MemoryFormatError, match="holds a PEFT adapter but not a lift-integrations memory"):
        Memory.from_pretrained(folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(folder))
    with pytest.raises(MemoryFormatError, match="'someone/peft-adapter' does not hold a valid memory"):
        Memory.from_pretrained("someone/peft-adapter")


def test_a_memory_on_the_wrong_base_model_is_refused(lora: tuple[LIFTModel, Memory], tmp_path: Path) -> None:
    _, memory = lora
    loaded = Memory.from_pretrained(memory.save_pretrained(tmp_path / "m"))
    model, tokenizer = build_tiny_model("qwen2")
    with pytest.raises(MemoryMismatchError, match="made for base model"):
        LIFTModel(model, tokenizer, adapter="lora").attach(loaded)


# Banks ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank(gated: tuple[LIFTModel, Memory]) -> MemoryBank:
    lift, memory = gated
    return MemoryBank({"zorblat-and-oskel": memory, "oskel": lift.absorb([OSKEL], config=TINY)})


def test_a_bank_saves_with_a_card_and_loads_with_from_pretrained(bank: MemoryBank, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    folder = bank.save_pretrained(tmp_path / "bank")
    card = ModelCard.load(folder / CARD)
    assert card.data.base_model == "someone/tiny-llama" and card.data.library_name == "lift-integrations"
    assert "| `oskel` | River Oskel |" in card.text
    assert "| `zorblat-and-oskel` | Zorblat Institute; River Oskel |" in card.text
    assert (folder / "oskel" / CARD).is_file()
    loaded = MemoryBank.from_pretrained(folder)
    assert loaded.names == bank.names and loaded.id == bank.id
    assert loaded["oskel"].id == bank["oskel"].id


def test_a_bank_travels_through_the_hub(
    bank: MemoryBank, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub
    from huggingface_hub import HfApi

    uploads: list[dict[str, Any]] = []

    def upload_folder(self: HfApi, **kwargs: Any) -> str:
        uploads.append(kwargs)
        shutil.copytree(kwargs["folder_path"], tmp_path / "repo")
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert bank.push_to_hub("someone/bank") == "commit-info"
    [upload] = uploads
    assert upload["repo_id"] == "someone/bank" and "*/adapter.safetensors" in upload["delete_patterns"]
    assert "MemoryBank.from_pretrained('someone/bank')" in (tmp_path / "repo" / CARD).read_text()

    downloads: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        downloads.append({"repo_id": repo_id, **kwargs})
        shutil.copytree(tmp_path / "repo", kwargs["local_dir"], dirs_exist_ok=True)
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = MemoryBank.from_pretrained("someone/bank", revision="v1", local_dir=tmp_path / "local")
    assert loaded.names == bank.names and loaded["zorblat-and-oskel"].id == bank["zorblat-and-oskel"].id
    [download] = downloads
    assert download["revision"] == "v1" and "bank.json" in download["allow_patterns"]
    assert "*/manifest.json" in download["allow_patterns"] and "*/README.md" not in download["allow_patterns"]
