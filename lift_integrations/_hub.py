"""The Hugging Face Hub calls of memories and banks, all through ``huggingface_hub`` (imported when used).

Downloads go through ``snapshot_download``, so the hub cache, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` work as
for any model; uploads create the repository if needed and commit a saved folder in one commit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def looks_like_hub_id(name: str) -> bool:
    """``owner/name``: two non-empty parts of letters, digits, ``-``, ``_`` and ``.``."""
    parts = name.split("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return len(parts) == 2 and all(p and set(p) <= allowed and p not in (".", "..") for p in parts)


def download(
    repo_id: str,
    *,
    allow_patterns: Sequence[str],
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The files of ``repo_id`` matching ``allow_patterns``, fetched (or, offline, found in the cache) by
    ``snapshot_download``; any failure is a ``FileNotFoundError`` naming the repository and why."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=None if cache_dir is None else Path(cache_dir),
            local_dir=None if local_dir is None else Path(local_dir),
            allow_patterns=list(allow_patterns),
        )
    except Exception as error:  # offline and not cached, unknown repository, no access, revision
        raise FileNotFoundError(f"the hub repository {repo_id!r} could not be fetched: {error}") from error
    return Path(folder)


@contextlib.contextmanager
def plain_copy(snapshot: Path, names: Sequence[str]) -> Iterator[Path]:
    """A temporary folder holding regular-file copies of ``names`` from a hub snapshot.

    The hub cache stores a snapshot's files as symbolic links to its blobs, and a memory folder must hold
    its own files (links are refused: see :mod:`~lift_integrations.memory_validation`), so the memory is
    read from copies. A name missing from the snapshot is left missing, for the reader to report.
    """
    with tempfile.TemporaryDirectory(prefix="lift-memory-") as staging:
        for name in names:
            source = snapshot / name
            if not source.exists():
                continue
            resolved = source.resolve()
            if not stat.S_ISREG(resolved.stat().st_mode):
                raise FileNotFoundError(f"{source} is not a file")
            shutil.copyfile(resolved, Path(staging) / name)
        yield Path(staging)


def upload(
    folder: Path,
    repo_id: str,
    *,
    private: bool | None,
    token: str | bool | None,
    commit_message: str,
    delete_patterns: Sequence[str],
) -> Any:
    """Create ``repo_id`` (a model repository) if it does not exist and commit ``folder`` to it in one
    commit; files matching ``delete_patterns`` that ``folder`` does not hold are deleted in that commit
    (a previous upload's leftovers). Returns ``huggingface_hub``'s ``CommitInfo``."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=getattr(repo, "repo_id", repo_id),
        folder_path=folder,
        repo_type="model",
        commit_message=commit_message,
        delete_patterns=list(delete_patterns),
    )
