"""A knowledge base of many memories: one folder, memories loaded when used, routed per question.

:class:`MemoryBank` holds named memories (typically one per document, from
:meth:`LIFTModel.absorb_many <lift_integrations.LIFTModel.absorb_many>`). Saved, it is one folder: a
manifest (``bank.json``: each memory's name, folder, id and documents, and the bank's routing options)
and one memory folder each, written and verified as :meth:`Memory.save` and :meth:`Memory.load` do.
Adding or removing a memory rewrites the manifest and that memory's folder only. A loaded bank reads a
memory's tensors when it is first used and drops the least recently used ones past ``max_loaded_bytes``
(they are read again when needed), so a bank of thousands of memories fits in a process.

:class:`~lift_integrations.bank_router.BankRouter` (:meth:`MemoryBank.router`) chooses, per question, the
one memory it is about, or none.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_integrations._fs import fsync_dir, path_lock, user_path
from lift_integrations._hub import looks_like_hub_id
from lift_integrations.bank_router import BankRouter, BankRouting
from lift_integrations.documents import Document
from lift_integrations.errors import MemoryFormatError
from lift_integrations.memory import Memory, check_save_target
from lift_integrations.memory_export import bank_card
from lift_integrations.memory_validation import (
    CARD_FILE,
    FOLDER_FILES,
    MANIFEST_FILE,
    MEMORY_FILES,
    is_memory_folder,
)
from lift_integrations.routing import Embedder

if TYPE_CHECKING:
    from lift_integrations.model import LIFTModel

BANK_FILE = "bank.json"
BANK_FORMAT = "lift-memory-bank"
BANK_VERSION = 1
BANK_DOWNLOAD = (BANK_FILE, *(f"*/{name}" for name in MEMORY_FILES))
"""What :meth:`MemoryBank.from_pretrained` downloads: the manifest and each memory's own files."""
MAX_BANK_BYTES = 512 * 1024 * 1024


def bank_names(titles: Sequence[str]) -> list[str]:
    """A unique, folder-safe memory name for each title: its letters, digits, ``-``, ``_`` and ``.``
    (other characters become ``-``), ``document-N`` for an empty one, ``-2``, ``-3``... on repeats."""
    names: list[str] = []
    taken: set[str] = set()
    for index, title in enumerate(titles):
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:80] or f"document-{index + 1}"
        name, count = base, 1
        while name.casefold() in taken:
            count += 1
            name = f"{base}-{count}"
        taken.add(name.casefold())
        names.append(name)
    return names


def check_name(name: Any) -> str:
    """A memory's name in a bank: also its folder's name, so no separators, dots or empty names."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\:\0")
        or name != name.strip()
    ):
        raise ValueError(f"a memory's name must be a non-empty folder name without slashes, got {name!r}")
    return name


@dataclass
class _Entry:
    documents: list[Document]
    memory: Memory | None = None
    folder: Path | None = None
    id: str | None = None


class MemoryBank:
    """Named memories, saved as one folder, loaded when used (see the module docstring).

    ``memories``: a mapping of names to memories. ``max_loaded_bytes``: the tensors of loaded memories
    kept at most (``None``: all); only memories read from a saved bank are dropped, since the others
    could not be read again. ``routing``: how :meth:`router` routes (:attr:`routing`).
    """

    def __init__(
        self,
        memories: Mapping[str, Memory] | None = None,
        *,
        max_loaded_bytes: int | None = None,
        routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> None:
        if max_loaded_bytes is not None and (
            not isinstance(max_loaded_bytes, int)
            or isinstance(max_loaded_bytes, bool)
            or max_loaded_bytes < 0
        ):
            raise ValueError(f"max_loaded_bytes must be a non-negative int or None, got {max_loaded_bytes!r}")
        self.max_loaded_bytes = max_loaded_bytes
        self.routing = routing  # the setter checks it
        self._entries: dict[str, _Entry] = {}
        self._loaded: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.RLock()
        self.path: Path | None = None
        for name, memory in (memories or {}).items():
            self.add(name, memory)

    @classmethod
    def from_documents(
        cls,
        lift: LIFTModel,
        documents: Any,
        *,
        names: Sequence[str] | None = None,
        max_loaded_bytes: int | None = None,
        **absorb_kwargs: Any,
    ) -> MemoryBank:
        """One memory per document (or per group: a list item that is itself a list), absorbed together
        by :meth:`LIFTModel.absorb_many <lift_integrations.LIFTModel.absorb_many>` (``absorb_kwargs``:
        its ``config``, ``generator``, ``show_progress``, ``callback``). ``names`` default to the
        documents' titles made folder-safe (:func:`bank_names`)."""
        from lift_integrations.absorber import normalize_groups

        groups = normalize_groups(documents)
        if names is None:
            names = bank_names([group[0].title for group in groups])
        elif len(names) != len(groups):
            raise ValueError(f"got {len(names)} names for {len(groups)} memories")
        for name in names:
            check_name(name)
        if len({n.casefold() for n in names}) != len(names):
            raise ValueError("memory names must be unique (ignoring case: they are folder names)")
        memories = lift.absorb_many([list(group) for group in groups], **absorb_kwargs)
        return cls(dict(zip(names, memories, strict=True)), max_loaded_bytes=max_loaded_bytes)

    # The collection ------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __repr__(self) -> str:
        return f"MemoryBank({len(self)} memories, {len(self._loaded)} loaded)"

    @property
    def routing(self) -> BankRouting:
        """The options :meth:`router` (and a binding given this bank without its own ``bank_routing``)
        routes with; saved in the manifest, so a loaded bank routes as it did when saved. Set it to a
        :class:`~lift_integrations.bank_router.BankRouting`, a dict of its options or ``None`` (defaults)."""
        return self._routing

    @routing.setter
    def routing(self, value: BankRouting | Mapping[str, Any] | None) -> None:
        self._routing = BankRouting.of(value)

    @property
    def id(self) -> str:
        """A content hash of the bank: its names and their memories' ids (a cache key, like
        :attr:`Memory.id`)."""
        with self._lock:
            pairs = [
                f"{name}={entry.id if entry.memory is None else entry.memory.id}"
                for name, entry in self._entries.items()
            ]
        return hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]

    def documents(self, name: str) -> list[Document]:
        """The documents memory ``name`` was absorbed from (read without loading its tensors)."""
        return list(self._entry(name).documents)

    def add(self, name: str, memory: Memory | str | os.PathLike[str], *, replace: bool = False) -> None:
        """Add ``memory`` (a :class:`Memory`, a folder or a hub id) as ``name``; an existing name needs
        ``replace=True``."""
        check_name(name)
        if not isinstance(memory, (Memory, str, os.PathLike)):
            raise TypeError(
                f"a bank holds memories (a Memory, a folder or a hub id), got {type(memory).__name__}"
            )
        memory = memory if isinstance(memory, Memory) else Memory.from_pretrained(memory)
        if not memory.documents:
            raise ValueError(f"memory {name!r} holds no documents: a bank routes by its memories' documents")
        with self._lock:
            if name in self._entries and not replace:
                raise ValueError(f"the bank already holds a memory named {name!r} (pass replace=True)")
            clash = [
                other for other in self._entries if other != name and other.casefold() == name.casefold()
            ]
            if clash:
                raise ValueError(f"{name!r} and {clash[0]!r} would share a folder where case is ignored")
            self._entries[name] = _Entry(list(memory.documents), memory=memory)
            self._loaded.pop(name, None)

    def remove(self, name: str) -> Memory | None:
        """Forget memory ``name`` (its folder is removed at the next :meth:`save`); returns it if loaded."""
        with self._lock:
            entry = self._entry(name)
            del self._entries[name]
            self._loaded.pop(name, None)
            return entry.memory

    def get(self, name: str) -> Memory:
        """Memory ``name``, read from the bank's folder if it is not loaded."""
        with self._lock:
            entry = self._entry(name)
            if entry.memory is None:
                assert entry.folder is not None
                memory = Memory.load(entry.folder)
                if memory.id != entry.id or list(memory.documents) != entry.documents:
                    raise MemoryFormatError(
                        f"{entry.folder}: holds memory {memory.id}, not the one the bank's manifest names "
                        f"({entry.id}, with its documents)"
                    )
                entry.memory = memory
                self._loaded[name] = memory.size_bytes
                self._evict(keep=name)
            elif name in self._loaded:
                self._loaded.move_to_end(name)
            return entry.memory

    __getitem__ = get

    @property
    def loaded_bytes(self) -> int:
        """The tensors of the memories read from the bank's folder and held now."""
        return sum(self._loaded.values())

    def _evict(self, keep: str) -> None:
        if self.max_loaded_bytes is None:
            return
        while self.loaded_bytes > self.max_loaded_bytes and len(self._loaded) > 1:
            name = next(iter(self._loaded))
            if name == keep:
                self._loaded.move_to_end(name)
                continue
            del self._loaded[name]
            self._entries[name].memory = None

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"the bank holds no memory named {name!r}") from None

    # Saving and loading --------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], *, routing: BankRouting | Mapping[str, Any] | None = None
    ) -> Path:
        """Write the bank to the folder ``path``: each memory not yet saved there (by id) into its own
        folder, then the manifest and a model card (``README.md``, unless a memory has that name);
        folders of memories removed from the bank are deleted. A folder that is neither a bank nor
        empty is refused, as :meth:`Memory.save` refuses to replace non-memories. The manifest keeps
        :attr:`routing`, or ``routing`` when given (a binding saving the options its model routes
        with; the bank's own are left as they are)."""
        return self._save(path, card_name=None, routing=routing)

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """:meth:`save`, under the name Hugging Face libraries use."""
        return self._save(save_directory, card_name=None)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        commit_message: str | None = None,
    ) -> Any:
        """Upload the bank to the Hub model repository ``repo_id`` (created if missing) as :meth:`save`
        writes it, in one commit that also deletes the files of memories no longer in the bank. Returns
        ``huggingface_hub``'s ``CommitInfo``; load it back with ``MemoryBank.from_pretrained(repo_id)``."""
        from lift_integrations._hub import upload

        if not isinstance(repo_id, str) or not looks_like_hub_id(repo_id):
            raise ValueError(f"repo_id must be a hub id 'owner/name', got {repo_id!r}")
        with tempfile.TemporaryDirectory(prefix="lift-push-") as staging:
            folder = self._save(Path(staging) / "bank", card_name=repo_id)
            return upload(
                folder,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message or f"Upload LIFT memory bank ({len(self)} memories)",
                delete_patterns=[BANK_FILE, CARD_FILE, *(f"*/{name}" for name in FOLDER_FILES)],
            )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        local_dir: str | os.PathLike[str] | None = None,
        max_loaded_bytes: int | None = None,
    ) -> MemoryBank:
        """A bank from a local folder (:meth:`load`) or, where no such folder exists, from the Hub
        (``"user/bank"``, at ``revision``): its manifest and its memories' own files are downloaded by
        ``huggingface_hub.snapshot_download`` into ``local_dir`` (default: a temporary folder removed
        when the bank is garbage-collected; name one to keep the files between runs), since memories are
        read from there when first used."""
        local = user_path(name_or_path)
        if (
            local.exists()
            or isinstance(name_or_path, os.PathLike)
            or not looks_like_hub_id(str(name_or_path))
        ):
            return cls.load(local, max_loaded_bytes=max_loaded_bytes)
        from lift_integrations._hub import download

        target = Path(local_dir) if local_dir is not None else Path(tempfile.mkdtemp(prefix="lift-bank-"))
        try:
            folder = download(
                str(name_or_path),
                allow_patterns=BANK_DOWNLOAD,
                revision=revision,
                token=token,
                local_dir=target,
            )
            bank = cls.load(folder, max_loaded_bytes=max_loaded_bytes)
        except BaseException:
            if local_dir is None:
                shutil.rmtree(target, ignore_errors=True)
            raise
        if local_dir is None:
            weakref.finalize(bank, shutil.rmtree, target, ignore_errors=True)
        return bank

    def _save(
        self,
        path: str | os.PathLike[str],
        *,
        card_name: str | None,
        routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> Path:
        kept = self.routing if routing is None else BankRouting.of(routing)
        folder = user_path(path).resolve()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / BANK_FILE).is_file():
            raise ValueError(f"{folder} is not empty and holds no memory bank: refusing to write into it")
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock, path_lock(folder / BANK_FILE):
            saved = _read_manifest(folder)[0] if (folder / BANK_FILE).is_file() else {}
            records = []
            for name, entry in self._entries.items():
                target = folder / name
                memory_id = entry.id if entry.memory is None else entry.memory.id
                if saved.get(name, {}).get("id") != memory_id or not _holds_memory(target):
                    memory = self.get(name) if entry.memory is None else entry.memory
                    check_save_target(target)
                    memory.save(target)
                records.append(
                    {
                        "name": name,
                        "id": memory_id,
                        "documents": [{"title": d.title, "text": d.text} for d in entry.documents],
                    }
                )
            manifest = {
                "format": BANK_FORMAT,
                "version": BANK_VERSION,
                "memories": records,
                "routing": kept.to_dict(),
            }
            _write_json(folder / BANK_FILE, manifest)
            if CARD_FILE.casefold() not in {name.casefold() for name in self._entries}:
                _write_text(folder / CARD_FILE, self._card(folder, card_name))
            for name in saved:
                if name not in self._entries and _holds_memory(folder / name):
                    _remove_memory_folder(folder / name)
            for name, entry in self._entries.items():
                if entry.memory is not None and entry.folder is None:
                    entry.folder, entry.id = folder / name, entry.memory.id
            self.path = folder
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_loaded_bytes: int | None = None) -> MemoryBank:
        """A saved bank; its memories' tensors are read when each is first used. A manifest without
        routing options (written before banks kept them) gives the defaults."""
        folder = user_path(path).resolve()
        records, routing = _read_manifest(folder)
        bank = cls(max_loaded_bytes=max_loaded_bytes)
        try:
            bank.routing = routing
        except (TypeError, ValueError) as error:
            raise MemoryFormatError(f"{folder / BANK_FILE}: 'routing': {error}") from None
        for name, record in records.items():
            if not _holds_memory(folder / name):
                raise MemoryFormatError(
                    f"{folder}: the manifest names {name!r}, which is not a memory folder"
                )
            documents = [Document(title=d["title"], text=d["text"]) for d in record["documents"]]
            bank._entries[name] = _Entry(documents, folder=folder / name, id=record["id"])
        bank.path = folder
        return bank

    def _card(self, folder: Path, card_name: str | None) -> str:
        """The bank's model card; the base model and adapter are those of its first memory, read from the
        manifest just saved (a bank's memories share one base model to be routed between)."""
        base: str | None = None
        adapter: str | None = None
        if self._entries:
            try:
                first = json.loads((folder / self.names[0] / MANIFEST_FILE).read_text(encoding="utf-8"))
                base, adapter = first["base_model"]["name"], first["adapter"]["kind"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        titles = {name: [d.title for d in entry.documents] for name, entry in self._entries.items()}
        return bank_card(titles, base_model=base, adapter=adapter, name=card_name)

    # Routing -------------------------------------------------------------------------------------

    def router(self, embed: Embedder | None = None, **options: Any) -> BankRouter:
        """A :class:`BankRouter` over this bank's memories as they are now, routing with :attr:`routing`;
        ``options`` override it: ``routing=`` (a :class:`~lift_integrations.bank_router.BankRouting`) or
        its options one by one (``margin=0.1``, ``calibration="joint"``, ...)."""
        if options.get("routing") is None:
            options["routing"] = self.routing
        return BankRouter(self, embed=embed, **options)


def bank_from(value: Any, *, max_loaded_bytes: int | None = None) -> MemoryBank:
    """A :class:`MemoryBank` from what users name one with: a bank, a folder or a hub id
    (:meth:`MemoryBank.from_pretrained`)."""
    if isinstance(value, MemoryBank):
        return value
    if isinstance(value, (str, os.PathLike)):
        return MemoryBank.from_pretrained(value, max_loaded_bytes=max_loaded_bytes)
    raise TypeError(
        f"memory_bank must be a MemoryBank, the folder of one or a hub id, got {type(value).__name__}"
    )


def _read_manifest(folder: Path) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each memory's record, by name, and the routing options as written (``None`` when absent)."""
    path = folder / BANK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no memory bank at {folder} (no {BANK_FILE})")
    if path.stat().st_size > MAX_BANK_BYTES:
        raise MemoryFormatError(f"{path} is larger than {MAX_BANK_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MemoryFormatError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT or data.get("version") != BANK_VERSION:
        raise MemoryFormatError(f"{path} is not a {BANK_FORMAT} manifest of version {BANK_VERSION}")
    memories = data.get("memories")
    if not isinstance(memories, list):
        raise MemoryFormatError(f"{path}: 'memories' must be a list")
    records: dict[str, dict[str, Any]] = {}
    for index, record in enumerate(memories):
        where = f"{path}: memory {index}"
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise MemoryFormatError(f"{where} needs a name, an id and its documents")
        try:
            name = check_name(record.get("name"))
        except ValueError as error:
            raise MemoryFormatError(f"{where}: {error}") from None
        documents = record.get("documents")
        if (
            not isinstance(documents, list)
            or not documents
            or not all(
                isinstance(d, dict) and isinstance(d.get("title"), str) and isinstance(d.get("text"), str)
                for d in documents
            )
        ):
            raise MemoryFormatError(f"{where}: 'documents' must be a list of {{title, text}}")
        if name in records:
            raise MemoryFormatError(f"{where}: the name {name!r} repeats")
        records[name] = record
    return records, data.get("routing")


def _write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    _write_text(path, json.dumps(data, ensure_ascii=False))


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    fsync_dir(path.parent)


def _holds_memory(folder: Path) -> bool:
    return folder.is_dir() and is_memory_folder(folder) is None


def _remove_memory_folder(folder: Path) -> None:
    for name in os.listdir(folder):
        (folder / name).unlink()
    folder.rmdir()
