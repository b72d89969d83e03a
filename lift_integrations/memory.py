"""``Memory``: what absorbing documents produces, and its files on disk.

A saved memory is a folder of three files that this library reads, none of which can run code:

* ``adapter.safetensors``: the adapter tensors;
* ``documents.json``: the absorbed documents (titles and texts), needed for head/tail context and for
  retrieving chunks in hybrid mode;
* ``manifest.json``: format version, base-model fingerprint, adapter kind/config and tensor shapes,
  the absorption config, document titles and hashes, sizes, and the SHA-256 of the other files.

and files for other tools, written by every save and never read back here (folders saved before they
existed load as before): ``README.md``, a Hugging Face model card, and for a LoRA memory PEFT's
``adapter_config.json`` and ``adapter_model.safetensors``, so ``PeftModel.from_pretrained(model, folder)``
loads it. :meth:`Memory.push_to_hub` and :meth:`Memory.from_pretrained` move memories through the Hub.

Saving writes a new folder beside the target and swaps it in with renames, so a crash leaves either the
old memory or the new one, never a mixture.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_integrations._fs import fsync_dir, path_lock, sha256_file, user_path
from lift_integrations._hub import looks_like_hub_id
from lift_integrations.config import LIFTConfig
from lift_integrations.documents import Document
from lift_integrations.errors import MemoryFormatError, MemoryMismatchError
from lift_integrations.memory_export import model_card, peft_adapter
from lift_integrations.memory_validation import (
    ALLOWED_DTYPES,
    CARD_FILE,
    DOCUMENTS_FILE,
    FOLDER_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MEMORY_FILES,
    OLD_MARKER,
    PEFT_CONFIG_FILE,
    PEFT_TENSORS_FILE,
    TENSORS_FILE,
    is_memory_folder,
    old_versions,
    read_memory,
    tensor_problem,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DOCUMENTS_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "TENSORS_FILE",
    "AbsorbedDocument",
    "Memory",
    "MemoryFormatError",
    "MemoryMismatchError",
    "check_save_target",
    "save_or_rescue",
]


AbsorbedDocument = Document
"""The documents a memory holds: the core :class:`~lift_integrations.documents.Document` (an alias kept
for code written against the older name)."""


def check_save_target(path: str | os.PathLike[str]) -> Path:
    """The resolved folder :meth:`Memory.save` would write to ``path``, or an error naming why it would
    refuse: ``ValueError`` for an empty path, a file-system root, or the working directory (or a folder
    holding it); ``FileExistsError`` for a symbolic link, a file, or a folder that is not verifiably a
    memory (see :func:`~lift_integrations.memory_validation.is_memory_folder`). Callers that train before
    saving check this first, so a long absorption never ends in a refused save."""
    if isinstance(path, (str, bytes)) and not path.strip():
        raise ValueError("the path to save a memory to is empty; name a folder for it")
    given = user_path(path)
    if given.is_symlink():
        raise FileExistsError(f"{given} is a symbolic link; save to the folder it points to instead")
    target = given.resolve()
    if target.parent == target:
        raise ValueError(f"{target} is a file-system root; save the memory into a folder of its own")
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ValueError(
            f"{target} is the working directory or holds it; save the memory into a folder of its own"
        )
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if target.exists() and any(target.iterdir()):
        reason = is_memory_folder(target)
        if reason is not None:
            raise FileExistsError(
                f"{target} is a folder that does not hold a memory: {reason}; replacing it would delete "
                "what it holds, so it is not overwritten"
            )
    return target


def save_or_rescue(memory: Memory, path: str | os.PathLike[str]) -> Path:
    """``memory.save(path)``; if that fails (disk full, permissions, a folder that appeared meanwhile),
    save to a fresh sibling ``<name>.unsaved-<pid>`` so that the absorption behind it is not lost, then
    raise an ``OSError`` that names both. Meant for the end of a long unattended absorption."""
    try:
        return memory.save(path)
    except OSError as error:
        given = user_path(path)
        rescue = given.with_name(f"{given.name}.unsaved-{os.getpid()}")
        try:
            memory.save(rescue)
        except OSError as second:
            raise OSError(
                f"could not save the memory to {given} ({error}) nor to {rescue} ({second})"
            ) from error
        raise OSError(f"could not save the memory to {given} ({error}); it was saved to {rescue}") from error


class Memory:
    """A set of absorbed documents stored in adapter weights, tied to one base model.

    Create memories with :meth:`LIFTModel.absorb` or :meth:`Memory.load`; pass one to
    :meth:`LIFTModel.generate` (``memory=``) or :meth:`LIFTModel.attach`.
    """

    def __init__(
        self,
        *,
        adapter_kind: str,
        adapter_config: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        documents: Sequence[Document],
        config: LIFTConfig,
        base_model_name: str,
        base_fingerprint: str,
        stats: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> None:
        self.adapter_kind = adapter_kind
        self.adapter_config = dict(adapter_config)
        self.tensors = dict(tensors)
        self.documents = tuple(documents)
        if config.checkpoint_dir is not None:  # a local path, meaningless elsewhere: never part of a memory
            config = dataclasses.replace(config, checkpoint_dir=None)
        self.config = config
        self.base_model_name = base_model_name
        self.base_fingerprint = base_fingerprint
        self.stats = dict(stats or {})
        self.created_at = created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._id: str | None = None

    # Identity and sizes ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """A content hash: the same tensors, documents, base model and adapter give the same id."""
        if self._id is None:
            digest = hashlib.sha256()
            digest.update(
                json.dumps(
                    [
                        self.adapter_kind,
                        self.adapter_config,
                        self.base_fingerprint,
                        [d.sha256 for d in self.documents],
                    ],
                    sort_keys=True,
                ).encode()
            )
            for name in sorted(self.tensors):
                tensor = self.tensors[name].detach().to("cpu").contiguous()
                digest.update(name.encode())
                digest.update(tensor.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
            self._id = digest.hexdigest()[:16]
        return self._id

    @property
    def titles(self) -> list[str]:
        return [d.title for d in self.documents]

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    @property
    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __repr__(self) -> str:
        return (
            f"Memory(id={self.id!r}, adapter={self.adapter_kind!r}, documents={len(self.documents)}, "
            f"parameters={self.num_parameters:,}, base={self.base_model_name!r})"
        )

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "id": self.id,
            "created_at": self.created_at,
            "base_model": {"name": self.base_model_name, "fingerprint": self.base_fingerprint},
            "adapter": {
                "kind": self.adapter_kind,
                "config": self.adapter_config,
                "tensors": {
                    name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for name, t in sorted(self.tensors.items())
                },
            },
            "config": self.config.to_dict(),
            "documents": [
                {"title": d.title, "sha256": d.sha256, "num_chars": len(d.text)} for d in self.documents
            ],
            "stats": self.stats,
            "num_parameters": self.num_parameters,
            "size_bytes": self.size_bytes,
        }

    # Saving ----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the memory to the folder ``path`` atomically; an existing memory there is replaced.

        The folder holds the memory's files, its model card, and for a LoRA memory PEFT's adapter files
        (see the module docstring).

        Returns the resolved folder. The write happens in a sibling temporary folder that is renamed
        into place, so an interruption never leaves a half-written memory at ``path``: a kill at any
        moment leaves the old memory or the new one loadable. Saves to one path, from any threads and
        processes, take turns through the lock file ``.NAME.lock`` beside it. Nothing else is written
        outside ``path`` except the temporary sibling (and the old version's, between the two renames).
        Tensors that cannot be loaded back (NaN, infinite, absurdly large, unknown dtype) are refused
        before anything is written. A folder at ``path`` is replaced only if it verifiably holds a
        memory and nothing else; see :func:`check_save_target` for every refusal.
        """
        return self._save(path, card_name=None)

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """:meth:`save`, under the name Hugging Face libraries use: the folder loads with
        :meth:`from_pretrained` (and, for a LoRA memory, with ``PeftModel.from_pretrained``)."""
        return self._save(save_directory, card_name=None)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        commit_message: str | None = None,
    ) -> Any:
        """Upload the memory to the Hugging Face Hub model repository ``repo_id`` (created if missing),
        as :meth:`save` writes it, in one commit; memory files of an earlier upload that this memory
        does not have (PEFT's, after a LoRA memory) are deleted in that commit. ``token`` defaults to
        the logged-in user's. Returns ``huggingface_hub``'s ``CommitInfo``; load it back with
        ``Memory.from_pretrained(repo_id)``."""
        from lift_integrations._hub import upload

        if not isinstance(repo_id, str) or not looks_like_hub_id(repo_id):
            raise ValueError(f"repo_id must be a hub id 'owner/name', got {repo_id!r}")
        with tempfile.TemporaryDirectory(prefix="lift-push-") as staging:
            folder = self._save(Path(staging) / "memory", card_name=repo_id)
            return upload(
                folder,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message
                or f"Upload LIFT memory {self.id} ({len(self.documents)} documents)",
                delete_patterns=FOLDER_FILES,
            )

    def _save(self, path: str | os.PathLike[str], *, card_name: str | None) -> Path:
        from safetensors.torch import save_file

        check_save_target(path)
        self._check_savable()
        target = user_path(path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        with path_lock(target):
            check_save_target(path)  # again: the folder may have changed while this save waited
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.tensors.items()}
                save_file(tensors, str(staging / TENSORS_FILE), metadata={"format": FORMAT_NAME})
                documents = [{"title": d.title, "text": d.text} for d in self.documents]
                (staging / DOCUMENTS_FILE).write_text(
                    json.dumps(documents, ensure_ascii=False), encoding="utf-8"
                )
                written = [TENSORS_FILE, DOCUMENTS_FILE]
                if self.adapter_kind == "lora":
                    peft_config, peft_tensors = peft_adapter(
                        self.adapter_config, tensors, self.base_model_name
                    )
                    save_file(peft_tensors, str(staging / PEFT_TENSORS_FILE), metadata={"format": "pt"})
                    (staging / PEFT_CONFIG_FILE).write_text(
                        json.dumps(peft_config, indent=2), encoding="utf-8"
                    )
                    written += [PEFT_TENSORS_FILE, PEFT_CONFIG_FILE]
                manifest = self.manifest()
                manifest["files"] = {name: sha256_file(staging / name) for name in written}
                (staging / MANIFEST_FILE).write_text(
                    json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8"
                )
                (staging / CARD_FILE).write_text(model_card(manifest, name=card_name), encoding="utf-8")
                for name in [*written, MANIFEST_FILE, CARD_FILE]:
                    with (staging / name).open("rb") as handle:
                        os.fsync(handle.fileno())
                fsync_dir(staging)
                _swap_into_place(staging, target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            for old in old_versions(target):  # superseded now; left by saves killed between renames
                if not any(old.iterdir()) or is_memory_folder(old) is None:
                    shutil.rmtree(old, ignore_errors=True)
        return target

    def _check_savable(self) -> None:
        """Raise ``ValueError`` for tensors that :meth:`load` would refuse, before anything is written."""
        for name, tensor in self.tensors.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype not in ALLOWED_DTYPES:
                raise ValueError(
                    f"tensor {name!r} has dtype {dtype}; a memory holds only {sorted(ALLOWED_DTYPES)}"
                )
            problem = tensor_problem(tensor)
            if problem is not None:
                raise ValueError(f"tensor {name!r} {problem}; not saving a broken memory")

    # Loading ---------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Memory:
        """Read and verify a saved memory. Only JSON and safetensors are read; nothing is unpickled.

        Raises :class:`MemoryFormatError` for anything missing, altered or malformed. A memory is bound to
        its base model when it is first used; a different base model raises :class:`MemoryMismatchError`.
        A save to the same path meanwhile is never seen half-done: this returns the old or the new memory.
        """
        folder = user_path(path).resolve()  # as save() resolves it
        if (folder / PEFT_CONFIG_FILE).is_file() and not (folder / MANIFEST_FILE).exists():
            raise MemoryFormatError(
                f"{folder} holds a PEFT adapter but not a lift-integrations memory (no {MANIFEST_FILE}): "
                "load it with peft.PeftModel.from_pretrained, or save a memory with Memory.save"
            )
        manifest, tensors, documents = read_memory(folder)
        memory = cls(
            adapter_kind=manifest["adapter"]["kind"],
            adapter_config=manifest["adapter"]["config"],
            tensors=tensors,
            documents=[Document(title=d["title"], text=d["text"]) for d in documents],
            config=LIFTConfig.from_dict(manifest["config"]),
            base_model_name=manifest["base_model"]["name"],
            base_fingerprint=manifest["base_model"]["fingerprint"],
            stats=manifest.get("stats", {}),
            created_at=manifest.get("created_at"),
        )
        if memory.id != manifest["id"]:
            raise MemoryFormatError(f"{folder}: the tensors and documents do not give the id in the manifest")
        return memory

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
    ) -> Memory:
        """A memory from a local folder or, where no such folder exists, from the Hugging Face Hub
        (``"user/memory"``, at ``revision``; only the memory's three files are downloaded, into the hub
        cache, by ``huggingface_hub.snapshot_download``: with ``HF_HUB_OFFLINE=1`` a cached copy is used).
        Loaded and verified as :meth:`load` does: the files of a downloaded memory are as untrusted as
        local ones."""
        if not isinstance(name_or_path, (str, os.PathLike)):
            raise TypeError(
                f"a memory is named by a folder path or a hub id, got {type(name_or_path).__name__}"
            )
        local = user_path(name_or_path)
        if (
            local.exists()
            or isinstance(name_or_path, os.PathLike)
            or not looks_like_hub_id(str(name_or_path))
        ):
            if not local.exists():
                raise FileNotFoundError(f"no memory at {local}")
            return cls.load(local)
        from lift_integrations._hub import download, plain_copy

        try:
            snapshot = download(
                str(name_or_path),
                allow_patterns=MEMORY_FILES,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
            )
        except FileNotFoundError as error:  # say which of the two ways of naming a memory failed
            raise FileNotFoundError(f"no memory folder {local} here, and {error}") from error
        with plain_copy(snapshot, MEMORY_FILES) as folder:
            try:
                return cls.load(folder)
            except MemoryFormatError as error:
                raise MemoryFormatError(
                    f"the hub repository {name_or_path!r} does not hold a valid memory: {error}"
                ) from None


def memory_from(value: Any) -> Memory | None:
    """A :class:`Memory` from what users name one with: a ``Memory``, ``None``, a folder path or a hub
    id (:meth:`Memory.from_pretrained`)."""
    if value is None or isinstance(value, Memory):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Memory.from_pretrained(value)
    raise TypeError(f"memory must be a Memory, a folder path, a hub id or None, got {type(value).__name__}")


class NamedMemories:
    """Memories named by folder path or hub id, loaded once each: a folder is read again when its
    manifest changes (a new save); at most ``size`` are kept, the least recently used dropped."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._cache: collections.OrderedDict[str, tuple[Any, Memory]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str | os.PathLike[str]) -> Memory:
        local = user_path(name)
        key = str(local.resolve()) if local.exists() else os.fsdecode(name)
        signature = _signature(local)
        with self._lock:
            found = self._cache.get(key)
            if found is not None and found[0] == signature:
                self._cache.move_to_end(key)
                return found[1]
        memory = Memory.from_pretrained(name)
        with self._lock:
            self._cache[key] = (signature, memory)
            self._cache.move_to_end(key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return memory


def _signature(folder: Path) -> Any:
    """What changes when a memory is saved to ``folder`` again (``None`` for a hub id)."""
    try:
        info = os.stat(folder / MANIFEST_FILE)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        fsync_dir(target.parent)
        return
    old = target.with_name(f".{target.name}{OLD_MARKER}{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    target.rename(old)
    reason = is_memory_folder(old) if any(old.iterdir()) else None
    if reason is not None:  # something was put in the folder while this save wrote: keep it
        old.rename(target)
        raise FileExistsError(
            f"{target} changed while the memory was saved and no longer holds only a memory: {reason}; "
            "it is not overwritten"
        )
    staging.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
