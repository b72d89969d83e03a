"""The memory folder format: its file names, and reading a folder as untrusted input, every field
checked before anything is used."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from lift_integrations.adapters import ADAPTER_KINDS, adapter_config_class
from lift_integrations.config import LIFTConfig
from lift_integrations.documents import document_sha256
from lift_integrations.errors import MemoryFormatError
from lift_integrations.validation import FLOAT16_MAX

if TYPE_CHECKING:
    import torch

FORMAT_NAME = "lift-memory"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TENSORS_FILE = "adapter.safetensors"
DOCUMENTS_FILE = "documents.json"
MEMORY_FILES = (MANIFEST_FILE, TENSORS_FILE, DOCUMENTS_FILE)
"""The files lift-integrations reads: every memory has these three (older saves hold only them)."""
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_TENSORS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
EXPORT_FILES = (PEFT_CONFIG_FILE, PEFT_TENSORS_FILE, CARD_FILE)
"""Files a save writes for other tools, never read by :func:`read_memory`: the model card, and for a LoRA
memory the same adapter in PEFT's layout (``PeftModel.from_pretrained`` loads the folder)."""
FOLDER_FILES = MEMORY_FILES + EXPORT_FILES
"""Every file a memory folder may hold."""
OLD_MARKER = ".old-"
ALLOWED_DTYPES = {"float32", "float16", "bfloat16"}
MAX_ABS_WEIGHT = FLOAT16_MAX
"""Weights beyond it become infinite in a model run in float16: refused on load and on save."""
READ_ATTEMPTS = 20
"""How often :func:`read_memory` starts again when saves replace the folder while it is being read."""

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
"""Nesting deeper than this in a manifest is refused: hashing or re-serialising it could exhaust the stack."""


def _require(condition: bool, folder: Path, message: str) -> None:
    if not condition:
        raise MemoryFormatError(f"{folder}: {message}")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    """A ``str`` that is valid Unicode (JSON's ``\\ud800`` escapes can produce unpaired surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, measured without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            pending.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, level + 1) for v in item)
    return deepest


def _parse_json(folder: Path, name: str, data: bytes) -> Any:
    """A memory file's JSON, any decoding problem a format error."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: also huge integers
        raise MemoryFormatError(f"{folder}: {name} is not valid UTF-8 JSON ({error})") from None


def validate_manifest(folder: Path, manifest: Any) -> None:
    """Check the manifest's schema; raise :class:`MemoryFormatError` naming the first problem."""
    _require(isinstance(manifest, dict), folder, "manifest is not a JSON object")
    _require(_depth(manifest) <= MAX_JSON_DEPTH, folder, f"manifest is nested deeper than {MAX_JSON_DEPTH}")
    _require(manifest.get("format") == FORMAT_NAME, folder, f"not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    _require(_is_int(version), folder, "format_version is missing or not an integer")
    _require(
        version <= FORMAT_VERSION,
        folder,
        f"format_version {version} is newer than this library reads ({FORMAT_VERSION}); upgrade it",
    )
    _require(version >= 1, folder, f"format_version {version} is not valid")
    _require(isinstance(manifest.get("id"), str), folder, "id is missing")
    base = manifest.get("base_model")
    _require(
        isinstance(base, dict)
        and isinstance(base.get("name"), str)
        and isinstance(base.get("fingerprint"), str),
        folder,
        "base_model needs a name and a fingerprint",
    )
    adapter = manifest.get("adapter")
    _require(isinstance(adapter, dict), folder, "adapter section is missing")
    _require(adapter.get("kind") in ADAPTER_KINDS, folder, f"unknown adapter kind {adapter.get('kind')!r}")
    _require(isinstance(adapter.get("config"), dict), folder, "adapter config is missing")
    _check_adapter_config(folder, adapter["kind"], adapter["config"])
    tensors = adapter.get("tensors")
    _require(isinstance(tensors, dict) and bool(tensors), folder, "adapter tensor list is missing or empty")
    for name, spec in tensors.items():
        _require(isinstance(spec, dict), folder, f"tensor {name!r} has no shape/dtype entry")
        shape = spec.get("shape")
        _require(
            isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape),
            folder,
            f"tensor {name!r} has an invalid shape",
        )
        dtype = spec.get("dtype")
        _require(
            isinstance(dtype, str) and dtype in ALLOWED_DTYPES,
            folder,
            f"tensor {name!r} has dtype {dtype!r}",
        )
    _require(isinstance(manifest.get("config"), dict), folder, "absorption config is missing")
    try:
        LIFTConfig.from_dict(manifest["config"])
    except (TypeError, ValueError, ArithmeticError) as error:  # ArithmeticError: 10**400 as a float
        raise MemoryFormatError(f"{folder}: absorption config is invalid ({error})") from None
    _require(isinstance(manifest.get("stats", {}), dict), folder, "stats is not a JSON object")
    _require(
        manifest.get("created_at") is None or isinstance(manifest["created_at"], str),
        folder,
        "created_at is not a string",
    )
    documents = manifest.get("documents")
    _require(isinstance(documents, list), folder, "documents list is missing")
    for index, doc in enumerate(documents):
        _require(
            isinstance(doc, dict) and _is_text(doc.get("title")) and isinstance(doc.get("sha256"), str),
            folder,
            f"document {index} needs a title and a sha256",
        )
    files = manifest.get("files")
    _require(
        isinstance(files, dict)
        and all(isinstance(files.get(n), str) for n in (TENSORS_FILE, DOCUMENTS_FILE)),
        folder,
        "file hashes are missing",
    )


def _check_adapter_config(folder: Path, kind: str, config: dict[str, Any]) -> None:
    """The adapter configuration must build its config class (every value in range); Gated Memory's
    model-shape fields must be positive integers (whether they fit a model is checked when it is used)."""
    try:
        adapter_config_class(kind).from_dict(config)
    except (TypeError, ValueError) as error:
        raise MemoryFormatError(f"{folder}: adapter config is invalid ({error})") from None
    if kind == "gated_memory":
        for field in ("num_layers", "num_heads", "head_dim"):
            value = config.get(field)
            _require(_is_int(value) and value >= 1, folder, f"adapter config {field} is {value!r}")


def is_memory_folder(folder: Path) -> str | None:
    """``None`` if ``folder`` verifiably holds a memory and nothing else (only its files, each a regular
    file, and a manifest that parses as a memory's); otherwise the reason it does not."""
    for entry in folder.iterdir():
        if entry.name not in FOLDER_FILES:
            return f"it holds files that are not part of a memory ({entry.name})"
        if entry.is_symlink() or not entry.is_file():
            return f"its {entry.name} is not a file"
    try:
        manifest = _parse_json(
            folder, MANIFEST_FILE, _read_file(folder, None, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        )
        validate_manifest(folder, manifest)
    except (MemoryFormatError, OSError) as error:
        return f"it is not a memory ({error})"
    return None


class _Superseded(Exception):
    """The folder being read was replaced by a save meanwhile."""


def old_versions(target: Path) -> list[Path]:
    """Previous versions of ``target`` that a save cut off between its two renames left beside it,
    newest first."""
    if not target.parent.is_dir():
        return []
    prefix = f".{target.name}{OLD_MARKER}"
    found = [
        p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()
    ]
    return sorted(found, key=_mtime, reverse=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted meanwhile
        return 0.0


def _current_version(folder: Path) -> Path:
    """The folder to read: ``folder`` itself, or the previous version left by a save that was cut off
    between its two renames."""
    for _ in range(2):  # twice: a save may finish its swap between the two looks
        if folder.exists():
            return folder
        for candidate in old_versions(folder):
            if (candidate / MANIFEST_FILE).is_file():
                return candidate
    raise FileNotFoundError(f"no memory at {folder}")


def read_memory(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, str]]]:
    """Manifest, tensors and documents of the memory saved at ``path``, each verified.

    A save never changes a folder it has swapped in; it puts a new folder in its place. All three files
    are therefore read through one open handle of the folder, so they come from one version, and a
    read that loses its folder to a concurrent save (its files deleted before they were opened) starts
    again on the new one: readers see the old memory or the new one whole, never an error.
    """
    for _ in range(READ_ATTEMPTS):
        folder = _current_version(path)
        try:
            return _read_version(folder, transient=folder != path)
        except _Superseded:
            continue
    raise MemoryFormatError(f"{path}: replaced by other saves {READ_ATTEMPTS} times while it was read")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
FOLDER_HANDLES = hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
"""Whether a folder can be opened and its files opened relative to it (POSIX). Elsewhere (Windows) the
files are read by path, and a read that a save interleaved with is recognised by its manifest changing."""


def _read_file(folder: Path, folder_fd: int | None, name: str, limit: int | None) -> bytes:
    """A regular file of the folder (never through a symbolic link), read whole."""
    path = folder / name
    if folder_fd is None and path.is_symlink():  # O_NOFOLLOW does this where it exists
        raise MemoryFormatError(f"{folder}: {name} is missing (or a symbolic link)")
    try:
        if folder_fd is None:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        else:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=folder_fd)
    except OSError as error:
        if error.errno == errno.ENOENT:
            raise
        raise MemoryFormatError(f"{folder}: {name} cannot be opened (a symbolic link?): {error}") from None
    try:
        info = os.fstat(fd)
        _require(stat.S_ISREG(info.st_mode), folder, f"{name} is missing (not a file)")
        if limit is not None:
            _require(info.st_size <= limit, folder, f"{name} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _superseded(folder: Path, folder_fd: int) -> bool:
    """Whether the folder opened as ``folder_fd`` is no longer the one at ``folder``."""
    opened = os.fstat(folder_fd)
    try:
        current = os.stat(folder)
    except FileNotFoundError:
        return True
    return opened.st_nlink == 0 or (opened.st_dev, opened.st_ino) != (current.st_dev, current.st_ino)


def _read_version(
    folder: Path, *, transient: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, str]]]:
    """Read one version of a memory; ``transient``: it is an old version that the save that left it
    may be deleting, so a missing file means that save is done."""
    if not FOLDER_HANDLES:
        return _read_version_by_path(folder, transient=transient)
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise _Superseded from None
    except OSError:
        raise MemoryFormatError(f"{folder}: not a folder") from None
    try:
        manifest = _parse_json(
            folder, MANIFEST_FILE, _read_member(folder, folder_fd, MANIFEST_FILE, transient)
        )
        validate_manifest(folder, manifest)
        files = {
            name: _read_member(folder, folder_fd, name, transient) for name in (TENSORS_FILE, DOCUMENTS_FILE)
        }
    finally:
        os.close(folder_fd)
    return _verify(folder, manifest, files)


def _read_member(folder: Path, folder_fd: int, name: str, transient: bool) -> bytes:
    """One of the memory's files, through the folder's descriptor; :class:`_Superseded` if a save
    deleted it meanwhile."""
    try:
        return _read_file(folder, folder_fd, name, MAX_MANIFEST_BYTES if name == MANIFEST_FILE else None)
    except FileNotFoundError:
        if transient or _superseded(folder, folder_fd):
            raise _Superseded from None
        raise MemoryFormatError(f"{folder}: {name} is missing") from None


def _read_version_by_path(
    folder: Path, *, transient: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, str]]]:
    """:func:`_read_version` without folder handles: every save writes a new manifest, so a manifest that
    changed while the other files were read means they may come from another version: read again. A
    file missing from a folder that a save replaced meanwhile (another identity) means the same."""
    identity = _identity(folder)
    if identity is None:
        raise _Superseded
    try:
        first = _read_file(folder, None, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        manifest = _parse_json(folder, MANIFEST_FILE, first)
        validate_manifest(folder, manifest)
        files = {name: _read_file(folder, None, name, None) for name in (TENSORS_FILE, DOCUMENTS_FILE)}
        if _read_file(folder, None, MANIFEST_FILE, MAX_MANIFEST_BYTES) != first:
            raise _Superseded
    except (FileNotFoundError, PermissionError, NotADirectoryError) as error:  # Permission: Windows, replaced
        if transient or _identity(folder) != identity:
            raise _Superseded from None
        raise MemoryFormatError(f"{folder}: a file cannot be read ({error})") from None
    return _verify(folder, manifest, files)


def _identity(folder: Path) -> tuple[int, int] | None:
    """The folder's device and file number; ``None`` if there is no folder there."""
    try:
        info = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise MemoryFormatError(f"{folder}: not a folder")
    return info.st_dev, info.st_ino


def _verify(
    folder: Path, manifest: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, str]]]:
    """Tensors and documents from a memory's file contents, each verified against its manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    for name in (TENSORS_FILE, DOCUMENTS_FILE):
        _require(
            hashlib.sha256(files[name]).hexdigest() == manifest["files"][name],
            folder,
            f"{name} does not match its hash in the manifest (altered or truncated)",
        )
    try:
        tensors = load(files[TENSORS_FILE])
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise MemoryFormatError(f"{folder}: {TENSORS_FILE} cannot be read ({error})") from None
    expected = manifest["adapter"]["tensors"]
    _require(
        set(tensors) == set(expected),
        folder,
        f"tensor names differ from the manifest: {sorted(set(tensors) ^ set(expected))[:5]}",
    )
    for name, tensor in tensors.items():
        spec = expected[name]
        _require(
            list(tensor.shape) == spec["shape"],
            folder,
            f"tensor {name!r} has shape {list(tensor.shape)}, manifest says {spec['shape']}",
        )
        _require(
            str(tensor.dtype).removeprefix("torch.") == spec["dtype"],
            folder,
            f"tensor {name!r} has dtype {tensor.dtype}, manifest says {spec['dtype']}",
        )
        problem = tensor_problem(tensor)
        _require(problem is None, folder, f"tensor {name!r} {problem}")
    documents = _parse_json(folder, DOCUMENTS_FILE, files[DOCUMENTS_FILE])
    _require(
        isinstance(documents, list) and len(documents) == len(manifest["documents"]),
        folder,
        f"{DOCUMENTS_FILE} does not list the manifest's documents",
    )
    for index, (doc, entry) in enumerate(zip(documents, manifest["documents"], strict=True)):
        _require(
            isinstance(doc, dict) and _is_text(doc.get("title")) and _is_text(doc.get("text")),
            folder,
            f"document {index} in {DOCUMENTS_FILE} needs a title and a text (valid Unicode)",
        )
        _require(
            document_sha256(doc["title"], doc["text"]) == entry["sha256"],
            folder,
            f"document {index} does not match its hash",
        )
    return manifest, tensors, documents


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why a memory may not hold ``tensor`` (NaN, infinite or absurdly large values), or ``None``."""
    if tensor.numel() == 0:
        return None
    if not bool(tensor.isfinite().all()):
        return "holds NaN or infinite values"
    largest = float(tensor.detach().abs().max())
    if largest > MAX_ABS_WEIGHT:
        return (
            f"holds weights of magnitude {largest:.3g}, beyond {MAX_ABS_WEIGHT:,.0f} (float16's largest "
            "value, where a model run in float16 overflows)"
        )
    return None
