"""Small file-system helpers shared by memories, checkpoints and the model cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def user_path(value: str | os.PathLike[str]) -> Path:
    """``value`` as a path with a leading ``~`` expanded. A ``~name`` of no known user stays as written, as
    ``os.path.expanduser`` leaves it (``Path.expanduser`` raises a ``RuntimeError`` there), so a memory
    name such as ``"~0"`` is looked up as what it is rather than failing."""
    return Path(os.path.expanduser(os.fsdecode(value)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a folder's new entries (renames, created files) durable; a no-op where folders can't be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def path_lock(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (the file ``.NAME.lock`` beside it) against other threads and processes.

    The lock file stays: deleting it would let a waiting process lock a file that a third one has just
    recreated. The operating system drops the lock of a process that dies, so no stale lock remains.
    """
    from filelock import FileLock

    with FileLock(target.with_name(f".{target.name}.lock")):
        yield
