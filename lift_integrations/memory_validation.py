"""Reading a memory folder as untrusted input: every field checked before anything is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_integrations.config import LIFTConfig
from lift_integrations.memory import (
    _ALLOWED_DTYPES,
    DOCUMENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    TENSORS_FILE,
    AbsorbedDocument,
    MemoryFormatError,
    _sha256_file,
)

if TYPE_CHECKING:
    import torch

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
"""Nesting deeper than this in a manifest is refused: hashing or re-serialising it could exhaust the stack."""
ADAPTER_KINDS = ("gated_memory", "lora")


def _require(condition: bool, folder: Path, message: str) -> None:
    if not condition:
        raise MemoryFormatError(f"{folder}: {message}")


def _is_int(value: Any) -> bool:
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


def _read_json(folder: Path, name: str, limit: int | None) -> Any:
    """A JSON file of the folder, never through a symbolic link, any decoding problem a format error."""
    path = folder / name
    _require(path.is_file() and not path.is_symlink(), folder, f"{name} is missing (or a symbolic link)")
    if limit is not None:
        _require(path.stat().st_size <= limit, folder, f"{name} is larger than {limit} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
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
    tensors = adapter.get("tensors")
    _require(isinstance(tensors, dict) and tensors, folder, "adapter tensor list is missing or empty")
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
            isinstance(dtype, str) and dtype in _ALLOWED_DTYPES,
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


def read_memory_folder(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, str]]]:
    """Manifest, tensors and documents of a memory folder, each verified against the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _require(folder.is_dir(), folder, "not a folder")
    manifest = _read_json(folder, MANIFEST_FILE, MAX_MANIFEST_BYTES)
    validate_manifest(folder, manifest)
    for name in (TENSORS_FILE, DOCUMENTS_FILE):
        path = folder / name
        _require(path.is_file() and not path.is_symlink(), folder, f"{name} is missing")
        _require(
            _sha256_file(path) == manifest["files"][name],
            folder,
            f"{name} does not match its hash in the manifest (altered or truncated)",
        )
    try:
        tensors = load_file(str(folder / TENSORS_FILE), device="cpu")
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
        _require(bool(tensor.isfinite().all()), folder, f"tensor {name!r} holds NaN or infinite values")
    documents = _read_json(folder, DOCUMENTS_FILE, None)
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
            AbsorbedDocument(doc["title"], doc["text"]).sha256 == entry["sha256"],
            folder,
            f"document {index} does not match its hash",
        )
    return manifest, tensors, documents
