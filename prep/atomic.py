"""Whole-or-nothing file writes, shared by every writer of the project.

A file under its final name is always complete: it is written to ``.<name>.partial`` in the
same folder, flushed and fsynced, renamed over the final name (atomic on POSIX), and the folder
is fsynced so the rename survives a power cut. A failure removes the temporary file; an
``OSError`` becomes a :class:`ShardWriteError` whose message names the path and the cause
("disk full", "not writable", ...). Used for shards' manifest and build records
(:mod:`prep.shards`, :mod:`prep.build`), data cards, and checkpoints and run files
(:mod:`train.model`, :mod:`train.trainer`).

Example::

    atomic_write_text(Path("data/manifest.json"), json.dumps(manifest))
    atomic_write(Path("runs/step1/last.pt"), lambda f: torch.save(state, f))
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from prep.faults import fault_point

PARTIAL_SUFFIX = ".partial"


class ShardWriteError(OSError):
    """A shard, manifest, build record or checkpoint could not be written (disk full, folder not
    writable, I/O error). The temporary file is already removed; the message names the path and
    the cause. An ``OSError``: a build stops on it, it is not a bad track."""

    def __init__(self, message: str, errno_code: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_code


_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")
_WRITE_CAUSES = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOTDIR: "not writable (a parent of it is a file, not a folder)",
    errno.EEXIST: "not writable (a parent of it is a file, not a folder)",
}


def partial_path(path: Path) -> Path:
    """The temporary name of ``path`` while it is being written: ``.<name>.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def discard(path: Path) -> None:
    """Delete a temporary file if it exists (also when its folder never came to be)."""
    try:
        Path(path).unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass


def write_error(path: Path, error: OSError, action: str = "cannot write") -> ShardWriteError:
    """A :class:`ShardWriteError` saying what failed at ``path`` and why.

    h5py reports HDF5 I/O failures as ``OSError`` without ``errno`` but with ``errno = N`` in
    its text; both forms are understood.
    """
    code = error.errno
    if code is None:
        match = _ERRNO_IN_TEXT.search(str(error))
        code = int(match.group(1)) if match else None
    cause = _WRITE_CAUSES.get(code, str(error).strip().splitlines()[0] if str(error) else "")
    return ShardWriteError(f"{path}: {action}: {cause or type(error).__name__}", code)


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    write: Callable[[BinaryIO], None],
    *,
    fault: str | None = None,
    action: str = "cannot write",
) -> Path:
    """Write ``path`` whole or not at all: ``write(handle)`` fills a temporary file in the same
    folder, which is fsynced and renamed over ``path``.

    Args:
        path: the final file name; its folder is created if missing.
        write: called once with a binary file handle.
        fault: a :mod:`prep.faults` point hit between the fsync and the rename (tests).
        action: the start of the error message, e.g. "cannot write manifest".

    Raises:
        ShardWriteError: the write or rename failed (the message names ``path`` and the cause);
            any other exception from ``write`` propagates. The temporary file is removed.
    """
    path = Path(path)
    temp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if fault is not None:
            fault_point(fault)
        os.replace(temp, path)
        fsync_folder(path.parent)
    except OSError as error:
        discard(temp)
        raise write_error(path, error, action) from error
    except BaseException:
        discard(temp)
        raise
    return path


def atomic_write_text(
    path: Path, text: str, *, fault: str | None = None, action: str = "cannot write"
) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), fault=fault, action=action)
