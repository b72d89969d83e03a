"""``lift-absorb`` on one process: argument errors (exit status 2, before any model loads) and a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed_helpers import (
    CONFIG,
    OVERRIDES,
    SHORT_DOCUMENTS,
    assert_same_memory,
    reference_memory,
    save_tiny_model,
)

from lift_integrations import Memory
from lift_integrations.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "alpha.txt"
    path.write_text(SHORT_DOCUMENTS["alpha"], encoding="utf-8")
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys) -> None:
    _fails(["--output", str(tmp_path / "out"), str(tmp_path / "nope.txt")], capsys, "file not found")


def test_folder_instead_of_file(tmp_path: Path, capsys) -> None:
    _fails(["--output", str(tmp_path / "out"), str(tmp_path)], capsys, "not a file")


def test_empty_and_binary_files(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    _fails(["--output", str(tmp_path / "out"), str(empty)], capsys, "is empty")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    _fails(["--output", str(tmp_path / "out"), str(binary)], capsys, "not UTF-8")


@pytest.mark.parametrize(
    ("config_json", "message"),
    [
        ("{stage2_epochs: 2}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"no_such_field": 1}', "unknown LIFTConfig fields: ['no_such_field']"),
        ('{"learning_rate": -1}', "LIFTConfig.learning_rate"),
    ],
)
def test_bad_config_json(config_json: str, message: str, text_file: Path, tmp_path: Path, capsys) -> None:
    argv = ["--output", str(tmp_path / "out"), "--config-json", config_json, str(text_file)]
    _fails(argv, capsys, message)


def test_missing_output_and_bad_choices(text_file: Path, capsys) -> None:
    _fails([str(text_file)], capsys, "--output")
    _fails(["--output", "x", "--mode", "all", str(text_file)], capsys, "invalid choice")
    _fails(["--output", "x", "--preset", "slow", str(text_file)], capsys, "invalid choice")


def test_output_that_is_not_a_memory_folder(text_file: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine", encoding="utf-8")
    _fails(["--output", str(tmp_path / "busy"), str(text_file)], capsys, "does not hold a memory")


def test_each_mode_needs_distinct_stems(text_file: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "sub"
    other.mkdir()
    (other / "alpha.txt").write_text("Another alpha.", encoding="utf-8")
    argv = ["--output", str(tmp_path / "out"), "--mode", "each", str(text_file), str(other / "alpha.txt")]
    _fails(argv, capsys, "repeat (ignoring case): ['alpha']")
    # One folder on case-insensitive file systems (macOS, Windows): refused everywhere.
    (other / "Alpha.txt").write_text("A third alpha.", encoding="utf-8")
    argv = ["--output", str(tmp_path / "out"), "--mode", "each", str(text_file), str(other / "Alpha.txt")]
    _fails(argv, capsys, "['Alpha', 'alpha']")


def test_bad_device(text_file: Path, tmp_path: Path, capsys) -> None:
    _fails(["--output", str(tmp_path / "out"), "--device", "abacus", str(text_file)], capsys, "--device")


def test_device_under_torchrun_must_be_cpu_or_cuda(
    text_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["--output", str(tmp_path / "out"), "--device", "cuda:1", str(text_file)]
    _fails(argv, capsys, "LOCAL_RANK")


def test_one_process_run_equals_absorb(model_dir: Path, text_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "memory"
    argv = ["--model", str(model_dir), "--output", str(out), "--preset", "fast"]
    assert main([*argv, "--config-json", json.dumps(OVERRIDES), str(text_file)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["memory"] == str(out.resolve()) and summary["processes"] == 1
    saved = Memory.load(out)
    assert saved.config.micro_batch_tokens == CONFIG.micro_batch_tokens
    assert_same_memory(saved, reference_memory(model_dir, "alpha", SHORT_DOCUMENTS["alpha"]))


def test_warmup_takes_no_files_and_no_output(tmp_path: Path, text_file: Path, capsys) -> None:
    _fails(["--warmup", str(text_file)], capsys, "--warmup takes no FILE")
    _fails(["--warmup", "--output", str(tmp_path / "out")], capsys, "--warmup takes no FILE")
    _fails(["--output", str(tmp_path / "out")], capsys, "at least one FILE")
    _fails([str(text_file)], capsys, "--output is required")


def test_warmup_absorbs_and_saves_nothing(model_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status = main(["--warmup", "--model", str(model_dir), "--config-json", json.dumps(OVERRIDES)])
    assert status == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["steps"] > 0 and line["warmup_seconds"] > 0
    assert list(tmp_path.iterdir()) == []


def test_the_compile_cache_is_the_users_cache_folder(monkeypatch, tmp_path: Path) -> None:
    from lift_integrations.absorb.compilation import compile_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("LIFT_CACHE_DIR", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "torch-compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_the_compile_cache_leaves_the_temporary_folder_torch_writes_as_its_default(
    monkeypatch, tmp_path: Path
) -> None:
    """Importing ``torch._dynamo`` writes inductor's default (under /tmp) into TORCHINDUCTOR_CACHE_DIR;
    compiled kernels still go to the user's cache folder, which a reboot keeps."""
    import torch._dynamo  # noqa: F401
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    from lift_integrations.absorb import compilation

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    monkeypatch.setenv("LIFT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compilation.logger, "warning", lambda *args: None)
    compilation._use_persistent_cache()
    assert cache_dir() == str(tmp_path / "torch-compile")


def test_an_existing_memory_is_replaced_only_with_force(
    model_dir: Path, text_file: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "memory"
    argv = ["--model", str(model_dir), "--output", str(out), "--config-json", json.dumps(OVERRIDES)]
    assert main([*argv, str(text_file)]) == 0
    first = Memory.load(out).id
    other = tmp_path / "beta.txt"
    other.write_text(SHORT_DOCUMENTS["beta"], encoding="utf-8")
    _fails([*argv, str(other)], capsys, "holds a memory already; pass --force")
    assert Memory.load(out).id == first  # refused before any work: the saved memory is untouched
    assert main([*argv, "--force", str(other)]) == 0
    assert Memory.load(out).id != first
    each = ["--model", str(model_dir), "--output", str(tmp_path / "each"), "--mode", "each"]
    each += ["--config-json", json.dumps(OVERRIDES), str(text_file)]
    assert main(each) == 0
    _fails(each, capsys, "holds a memory already; pass --force")
    assert main([*each, "--force"]) == 0
