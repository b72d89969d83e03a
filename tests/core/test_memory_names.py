"""One way to name a memory everywhere: a Memory, a folder path or a hub id (issue 18, item 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel, Memory

TEXT = "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. " * 3
SMALL = dict(
    segment_length=32, segment_stride=24, context_view_length=16, qa_per_document=4, max_seq_length=128
)


@pytest.fixture(scope="module")
def lift() -> LIFTModel:
    model, tokenizer = build_tiny_model("llama")
    return LIFTModel(model, tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def saved(lift: LIFTModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Memory, Path]:
    memory = lift.absorb(TEXT, config=LIFTConfig.fast(**SMALL, stage1_epochs=1, stage2_epochs=2))
    return memory, memory.save(tmp_path_factory.mktemp("memories") / "zorblat")


def test_a_folder_path_names_a_saved_memory_in_every_call(lift: LIFTModel, saved: Any) -> None:
    memory, folder = saved
    question = "Who founded the Zorblat Institute?"
    expected = lift.generate(question, memory=memory, max_new_tokens=6).text
    assert lift.generate(question, memory=str(folder), max_new_tokens=6).text == expected
    assert lift.generate(question, memory=folder, max_new_tokens=6).text == expected
    [named, base] = lift.generate_batch([question, question], memories=[str(folder), None], max_new_tokens=6)
    assert named.text == expected
    assert base.text == lift.generate(question, memory=None, max_new_tokens=6).text
    assert lift._resolve(str(folder)) is lift._resolve(folder)  # read once, not at every call


def test_a_path_follows_a_new_save_to_its_folder(lift: LIFTModel, saved: Any, tmp_path: Path) -> None:
    memory, _ = saved
    target = tmp_path / "moving"
    memory.save(target)
    first = lift._resolve(str(target))
    other = lift.absorb("Tobias Renwick studied glass harps. " * 3, config=LIFTConfig.fast(**SMALL))
    other.save(target)
    second = lift._resolve(str(target))
    assert first.id == memory.id and second.id == other.id


def test_a_hub_id_downloads_only_the_memory_files(saved: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    memory, folder = saved
    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = Memory.from_pretrained("someone/zorblat-memory", revision="v1")
    assert loaded.id == memory.id
    assert calls[0]["repo_id"] == "someone/zorblat-memory" and calls[0]["revision"] == "v1"
    assert sorted(calls[0]["allow_patterns"]) == ["adapter.safetensors", "documents.json", "manifest.json"]


def test_a_name_that_is_neither_says_so(
    lift: LIFTModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    def offline(repo_id: str, **kwargs: Any) -> str:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"no memory folder .* could not be fetched: no network"):
        lift.generate("hi", memory="someone/missing", max_new_tokens=2)
    with pytest.raises(FileNotFoundError, match="no memory at"):
        lift.generate("hi", memory=str(tmp_path / "nowhere" / "deeper"), max_new_tokens=2)
    with pytest.raises(TypeError, match="a folder path, a hub id or None"):
        lift.generate("hi", memory=42, max_new_tokens=2)


def test_the_bindings_take_a_path_too(saved: Any) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from lift_integrations.langchain import LIFTChatModel
    from lift_integrations.llama_index import LIFTLLM
    from lift_integrations.registry import register_model

    memory, folder = saved
    model, tokenizer = build_tiny_model("llama")
    register_model("tiny-names", LIFTModel(model, tokenizer, name="tiny-llama"))
    assert LIFTChatModel(model="tiny-names", memory=str(folder)).memory.id == memory.id
    assert LIFTLLM(model="tiny-names", memory=folder).memory.id == memory.id


def test_every_place_that_takes_a_memory_takes_its_name(lift: LIFTModel, saved: Any, tmp_path: Path) -> None:
    """attach, absorb(into=), MemoryRouter, MemoryBank.add and a bank named by its folder."""
    from lift_integrations import MemoryBank, MemoryRouter
    from lift_integrations.bank import bank_from

    memory, folder = saved
    question = "Who founded the Zorblat Institute?"
    try:
        lift.attach(str(folder))
        assert lift.attached_memory is not None and lift.attached_memory.id == memory.id
    finally:
        lift.detach()
    config = LIFTConfig.fast(**SMALL, stage1_epochs=1, stage2_epochs=1)
    more = "Mira Quenton also built a glass observatory in Vellhaven. " * 3
    assert lift.absorb(more, config=config, into=folder, show_progress=False).id == (
        lift.absorb(more, config=config, into=memory, show_progress=False).id
    )
    assert (
        MemoryRouter(folder, embed=lambda texts: [[1.0, float(len(t))] for t in texts]).memory.id == memory.id
    )
    with pytest.raises(TypeError, match="needs a memory"):
        MemoryRouter(None)  # type: ignore[arg-type]
    bank = MemoryBank()
    bank.add("zorblat", str(folder))
    assert bank.get("zorblat").id == memory.id
    bank.save(tmp_path / "kb")
    assert bank_from(tmp_path / "kb").names == ["zorblat"]
    assert bank_from(bank) is bank
    with pytest.raises(TypeError, match="the folder of one or a hub id"):
        bank_from(42)
    assert lift.generate(question, memory=str(folder), max_new_tokens=4).text
