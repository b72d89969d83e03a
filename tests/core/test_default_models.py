"""Where the embedded default models are found, and the environment overrides for machines without them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lift_integrations.loading import (
    DEFAULT_EMBEDDING_ENV,
    DEFAULT_MODEL_ENV,
    default_embedding_path,
    default_gguf_path,
)


def test_the_embedding_override_names_a_sentence_transformers_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEFAULT_EMBEDDING_ENV, str(tmp_path))
    assert default_embedding_path() == str(tmp_path)
    monkeypatch.setenv(DEFAULT_EMBEDDING_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=DEFAULT_EMBEDDING_ENV):
        default_embedding_path()


def test_the_model_override_must_name_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(gguf))
    assert default_gguf_path() == gguf
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=DEFAULT_MODEL_ENV):
        default_gguf_path()


def test_without_overrides_the_embedded_packages_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_EMBEDDING_ENV, raising=False)
    monkeypatch.delenv(DEFAULT_MODEL_ENV, raising=False)
    assert (Path(default_embedding_path()) / "config.json").is_file()
    assert default_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
