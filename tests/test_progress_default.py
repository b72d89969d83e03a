"""Every entry point that absorbs shows progress by default (a tqdm bar on stderr), so a long absorption
on a CPU is never minutes of silence; ``show_progress=False`` or ``LIFT_PROGRESS=0`` turns it off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lift_integrations import LIFTConfig
from lift_integrations.validation import show_progress_setting

TEXT = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in Vellhaven. Its first director was "
    "Tobias Renwick, who studied glass harps and river tides."
)
BAR = "absorbing"  # the bar's description


def quick() -> LIFTConfig:
    return LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2)


def core_absorb(lift: Any, tmp: Path, **options: Any) -> None:
    lift.absorb(TEXT, config=quick(), **options)


def core_absorb_many(lift: Any, tmp: Path, **options: Any) -> None:
    lift.absorb_many([TEXT, ("Other", "Vellhaven harbour freezes in March.")], config=quick(), **options)


def langchain_absorb(lift: Any, tmp: Path, **options: Any) -> None:
    from lift_integrations.langchain import LIFTChatModel

    LIFTChatModel(lift_model=lift).absorb(TEXT, lift_config=quick(), **options)


def langchain_retriever(lift: Any, tmp: Path, **options: Any) -> None:
    from langchain_core.documents import Document

    from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever

    chat = LIFTChatModel(lift_model=lift, **options)  # the retriever absorbs through its chat model
    LIFTMemoryRetriever.from_documents([Document(page_content=TEXT)], llm=chat, lift_config=quick())


def llama_index_llm(lift: Any, tmp: Path, **options: Any) -> None:
    from lift_integrations.llama_index import LIFTLLM

    LIFTLLM(lift).absorb(TEXT, config=quick(), **options)


def llama_index_index(lift: Any, tmp: Path, **options: Any) -> None:
    from llama_index.core import Document

    from lift_integrations.llama_index import LIFTLLM, LIFTIndex

    LIFTIndex.from_documents(
        [Document(text=TEXT)], llm=LIFTLLM(lift), mode="parametric", config=quick(), **options
    )


def cli_absorb_each(lift: Any, tmp: Path, **options: Any) -> None:
    from lift_integrations.cli import absorb_each

    absorb_each(lift, {"zorblat": TEXT}, tmp / "memories", config=quick(), **options)


ENTRY_POINTS: list[Callable[..., None]] = [
    core_absorb,
    core_absorb_many,
    langchain_absorb,
    langchain_retriever,
    llama_index_llm,
    llama_index_index,
    cli_absorb_each,
]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_progress_is_shown_by_default_and_can_be_turned_off(
    entry_point: Callable[..., None],
    tiny_lift: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LIFT_PROGRESS", raising=False)
    entry_point(tiny_lift, tmp_path / "default")
    assert BAR in capfd.readouterr().err
    entry_point(tiny_lift, tmp_path / "off", show_progress=False)
    assert BAR not in capfd.readouterr().err
    monkeypatch.setenv("LIFT_PROGRESS", "0")
    entry_point(tiny_lift, tmp_path / "env")
    assert BAR not in capfd.readouterr().err


def test_the_setting_is_checked_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFT_PROGRESS", raising=False)
    assert show_progress_setting(None) is True
    assert show_progress_setting(False) is False
    for off in ("0", "false", "OFF", " no "):
        monkeypatch.setenv("LIFT_PROGRESS", off)
        assert show_progress_setting(None) is False
    assert show_progress_setting(True) is True  # an explicit value wins over the environment
    with pytest.raises(TypeError, match="show_progress must be True, False or None"):
        show_progress_setting("yes")
