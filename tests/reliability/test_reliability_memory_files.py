"""Memory files are untrusted, and saving must never lose or overwrite what is not a memory.

tests/core/test_memory_files.py covers round trips, hash checks, schema errors and the atomic swap;
these cover where saving and loading may touch the file system, symbolic links, hostile JSON, tensors
that could not be loaded back, and leftovers of interrupted saves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel, Memory, MemoryFormatError
from lift_integrations.memory import DOCUMENTS_FILE, MANIFEST_FILE, TENSORS_FILE

FILES = (MANIFEST_FILE, TENSORS_FILE, DOCUMENTS_FILE)
_EVENTS: list[tuple[str, tuple[Any, ...]]] | None = None
_HOOKED = False


@pytest.fixture(scope="module")
def memory() -> Memory:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2)
    return lift.absorb(
        [
            ("Zorblat", "The Zorblat Institute was founded in 1874 by Mira Quenton."),
            ("Oskel", "The river Oskel freezes every March."),
        ],
        config=config,
    )


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _EVENTS is not None and (event == "open" or event.startswith(("os.", "shutil.", "tempfile."))):
        _EVENTS.append((event, args))


@pytest.fixture
def audit() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """File-system audit events (open, rename, mkdir, rmtree, ...) raised while the fixture is active."""
    global _EVENTS, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # audit hooks cannot be removed; this one is idle outside the fixture
        _HOOKED = True
    events: list[tuple[str, tuple[Any, ...]]] = []
    _EVENTS = events
    try:
        yield events
    finally:
        _EVENTS = None


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# Saving --------------------------------------------------------------------------------------------


def test_save_touches_only_the_target_and_its_temporary_siblings(
    memory: Memory, tmp_path: Path, audit: list
) -> None:
    (tmp_path / "neighbour.txt").write_text("keep me")
    target = tmp_path / "m"
    audit.clear()
    memory.save(target)
    memory.save(target)  # over an existing memory: rename old away, rename new in, delete old
    writes = [
        (event, args)
        for event, args in audit
        if event != "open" or (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
    ]
    assert writes, "the audit hook saw the save"
    for event, args in writes:
        if event != "open" and isinstance(args[-1], int) and not Path(str(args[0])).is_absolute():
            continue  # relative to a directory descriptor: inside a folder that shutil.rmtree named
        named = args[:2] if event in ("os.rename", "os.replace", "os.link", "os.symlink") else args[:1]
        for path in [a for a in named if isinstance(a, (str, bytes, Path))]:
            resolved = Path(path.decode() if isinstance(path, bytes) else path).resolve()
            assert resolved == tmp_path or tmp_path in resolved.parents, (event, path)
            top = resolved.relative_to(tmp_path).parts[:1]
            assert top in ((), ("m",)) or top[0].startswith(".m."), (event, path)
    assert _tree(tmp_path) == {
        "neighbour.txt",
        ".m.lock",
        "m",
        *(f"m/{name}" for name in (*FILES, "README.md")),
    }
    assert (tmp_path / "neighbour.txt").read_text() == "keep me"


def test_load_opens_only_the_three_memory_files(memory: Memory, tmp_path: Path, audit: list) -> None:
    folder = memory.save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    # A hostile manifest naming other files: they are never opened (only fixed names are read).
    manifest["files"]["../../outside.json"] = manifest["files"][DOCUMENTS_FILE]
    manifest["path"] = str(tmp_path / "outside.json")
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "outside.json").write_text("[]")
    Memory.load(folder)  # warm-up: lazy imports open module files
    audit.clear()
    loaded = Memory.load(folder)
    assert loaded.id == memory.id
    opened = [args[0] for event, args in audit if event == "open" and not isinstance(args[0], int)]
    # The folder is opened once, and its files by name relative to it (so all come from one version).
    absolute = {Path(path).resolve() for path in opened if Path(path).is_absolute()}
    relative = {path for path in opened if not Path(path).is_absolute()}
    assert absolute <= {folder.resolve()}, absolute
    assert relative <= set(FILES), relative


@pytest.mark.parametrize("name", FILES)
def test_symlinked_memory_files_are_refused(memory: Memory, tmp_path: Path, name: str) -> None:
    """Even a link to an identical file is refused: a memory folder must hold its own files."""
    folder = memory.save(tmp_path / "m")
    elsewhere = tmp_path / f"copy-of-{name}"
    shutil.copy(folder / name, elsewhere)
    (folder / name).unlink()
    (folder / name).symlink_to(elsewhere)
    with pytest.raises(MemoryFormatError, match=name):
        Memory.load(folder)


def test_save_refuses_a_symlink_path_and_folders_with_foreign_files(memory: Memory, tmp_path: Path) -> None:
    real = memory.save(tmp_path / "real")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with pytest.raises(FileExistsError, match="symbolic link"):
        memory.save(tmp_path / "link")
    (real / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        memory.save(real)
    assert (real / "notes.txt").read_text() == "mine"
    assert Memory.load(real).id == memory.id


def test_tensors_that_could_not_be_loaded_back_are_refused_before_anything_is_written(
    memory: Memory, tmp_path: Path
) -> None:
    name = sorted(memory.tensors)[0]
    for bad, message in ((float("nan"), "NaN"), (float("inf"), "infinite")):
        broken = Memory(
            adapter_kind=memory.adapter_kind,
            adapter_config=memory.adapter_config,
            tensors={**memory.tensors, name: torch.full_like(memory.tensors[name], bad)},
            documents=memory.documents,
            config=memory.config,
            base_model_name="m",
            base_fingerprint=memory.base_fingerprint,
        )
        with pytest.raises(ValueError, match=message):
            broken.save(tmp_path / "m")
    as_int = Memory(
        adapter_kind=memory.adapter_kind,
        adapter_config=memory.adapter_config,
        tensors={name: torch.zeros(3, dtype=torch.int64)},
        documents=memory.documents,
        config=memory.config,
        base_model_name="m",
        base_fingerprint=memory.base_fingerprint,
    )
    with pytest.raises(ValueError, match="dtype"):
        as_int.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == [], "nothing half-written"


def test_a_save_after_an_interrupted_one_removes_the_old_version(memory: Memory, tmp_path: Path) -> None:
    target = memory.save(tmp_path / "m")
    shutil.move(target, tmp_path / ".m.old-99999")  # killed between the two renames
    assert Memory.load(tmp_path / "m").id == memory.id  # the old version is still what loads
    memory.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_checkpoint_folders_are_never_part_of_a_memory(memory: Memory, tmp_path: Path) -> None:
    config = LIFTConfig.fast(checkpoint_dir=str(tmp_path / "private" / "checkpoints"))
    tagged = Memory(
        adapter_kind=memory.adapter_kind,
        adapter_config=memory.adapter_config,
        tensors=memory.tensors,
        documents=memory.documents,
        config=config,
        base_model_name="m",
        base_fingerprint=memory.base_fingerprint,
    )
    assert tagged.config.checkpoint_dir is None
    folder = tagged.save(tmp_path / "m")
    assert "private" not in (folder / MANIFEST_FILE).read_text()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["config"]["checkpoint_dir"] = "/somewhere/an/attacker/chose"
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert Memory.load(folder).config.checkpoint_dir is None, "a loaded memory never directs writes"


# Hostile JSON ---------------------------------------------------------------------------------------


def _rewrite(folder: Path, name: str, data: bytes, *, rehash: bool) -> None:
    (folder / name).write_bytes(data)
    if rehash:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("name", "data", "rehash", "message"),
    [
        (MANIFEST_FILE, b"[" * 100_000 + b"]" * 100_000, False, "not valid UTF-8 JSON"),
        (MANIFEST_FILE, b'{"format": "lift-memory", "format_version": ' + b"9" * 5000 + b"}", False, "JSON"),
        (MANIFEST_FILE, b'{"format": "lift-memory"}', False, "format_version"),
        (MANIFEST_FILE, b'"a string"', False, "not a JSON object"),
        (
            DOCUMENTS_FILE,
            b'[{"title": "t", "text": "\\ud800"}, {"title": "", "text": ""}]',
            True,
            "valid Unicode",
        ),
        (DOCUMENTS_FILE, b'{"title": "t"}', True, "does not list"),
        (TENSORS_FILE, b"\xff" * 8 + b"{}", True, "cannot be read"),
    ],
)
def test_hostile_files_are_refused_with_a_format_error(
    memory: Memory, tmp_path: Path, name: str, data: bytes, rehash: bool, message: str
) -> None:
    folder = memory.save(tmp_path / "m")
    _rewrite(folder, name, data, rehash=rehash)
    with pytest.raises(MemoryFormatError, match=message):
        Memory.load(folder)


@pytest.mark.parametrize("value", [10**400, "1e-3", -1, None, [0.9], {"x": 1}])
def test_an_invalid_absorption_config_in_a_manifest_is_a_format_error(
    memory: Memory, tmp_path: Path, value: Any
) -> None:
    """Found by the fuzzer: 10**400 made ``LIFTConfig`` raise OverflowError, not a format error."""
    folder = memory.save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["config"]["learning_rate"] = value
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(MemoryFormatError, match="absorption config is invalid"):
        Memory.load(folder)


def test_deeply_nested_adapter_config_is_refused(memory: Memory, tmp_path: Path) -> None:
    folder = memory.save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    nested: Any = 0
    for _ in range(200):
        nested = {"x": nested}
    manifest["adapter"]["config"]["extra"] = nested
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(MemoryFormatError, match="nested deeper"):
        Memory.load(folder)
