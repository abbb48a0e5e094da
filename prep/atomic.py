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
import secrets
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


def partial_path(path: Path, writer: str | None = None) -> Path:
    """The temporary name of ``path`` while it is being written: ``.<name>.partial``, or, for
    a file that two processes may write at once, ``.<head>.<writer>.<rest>.partial`` (``name``
    = ``<head>.<rest>``; ``writer`` from :func:`writer_token`).

    A Dask task whose worker was declared dead may still be running when its retry starts
    elsewhere: each writes its own temporary file and renames it whole (the bytes are the
    same), instead of both truncating one file.

    >>> partial_path(Path("data/train/train-00003.h5")).name
    '.train-00003.h5.partial'
    >>> partial_path(Path("data/train/train-00003.h5"), "4242-0a1b2c3d").name
    '.train-00003.4242-0a1b2c3d.h5.partial'
    """
    path = Path(path)
    if writer is None:
        return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    if not _WRITER_TOKEN.fullmatch(writer):
        raise ValueError(f"writer token must look like PID-8HEX, got {writer!r}")
    head, dot, rest = path.name.partition(".")
    return path.with_name(f".{head}.{writer}{dot}{rest}{PARTIAL_SUFFIX}")


_WRITER_TOKEN = re.compile(r"\d+-[0-9a-f]{8}")


def writer_token() -> str:
    """This writer's part of a :func:`partial_path`: the process id and 32 random bits."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def final_name(partial: Path) -> str | None:
    """The file name a temporary file of :func:`partial_path` becomes; None for another file.

    >>> final_name(Path(".train-00003.4242-0a1b2c3d.h5.partial"))
    'train-00003.h5'
    """
    name = Path(partial).name
    if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
        return None
    inner = name[1:-len(PARTIAL_SUFFIX)]
    head, _, rest = inner.partition(".")
    token, _, tail = rest.partition(".")
    return f"{head}.{tail}" if _WRITER_TOKEN.fullmatch(token) and tail else inner


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
    own_temp: bool = False,
) -> Path:
    """Write ``path`` whole or not at all: ``write(handle)`` fills a temporary file in the same
    folder, which is fsynced and renamed over ``path``.

    Args:
        path: the final file name; its folder is created if missing.
        write: called once with a binary file handle.
        fault: a :mod:`prep.faults` point hit between the fsync and the rename (tests).
        action: the start of the error message, e.g. "cannot write manifest".
        own_temp: a temporary file of this writer's own (:func:`partial_path` with a
            :func:`writer_token`), for files that two processes may write at once.

    Raises:
        ShardWriteError: the write or rename failed (the message names ``path`` and the cause);
            any other exception from ``write`` propagates. The temporary file is removed.
    """
    path = Path(path)
    temp = partial_path(path, writer_token() if own_temp else None)
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
    path: Path, text: str, *, fault: str | None = None, action: str = "cannot write",
    own_temp: bool = False,
) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), fault=fault, action=action,
                        own_temp=own_temp)
