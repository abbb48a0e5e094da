"""The output folder's lock: one writer of ``OUT`` at a time.

``prep build-shards`` holds it for its whole run and ``prep index`` while it writes the
manifest, so two builds with different options (or a build and an index) can never mix their
shards, delete each other's files or write one ``.partial`` file together.

The lock is a folder ``OUT/.lock/`` of holder files ``<host>.<pid>.json``, one per process,
each written atomically under a name no other process uses, saying who holds it: pid, host,
command, start time, and what it does (``build`` with its plan id and ``--part``, or
``index``). A process takes the lock by writing its holder file and then reading the others
(write, then check: of two processes that start together, at worst both back off, never both
go on). Another holder is compatible only when both build the same plan (same corpus and
options: same shards) and different ``--part``\\ s, so the parts of one build can run on several
machines into shared storage; anything else is refused with a message naming the holder.

A holder file of a dead process (same host, pid gone or a zombie, or the pid reused by a
process that started later) is stale: it is removed and the lock taken over, which is said in
the log. A holder on another host cannot be checked from here: the message says which file to
remove if that build is gone. Plain files and ``rename``/``unlink`` only, so the lock also works
on NFS, where ``flock`` may not.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from prep.atomic import atomic_write_text, discard

LOCK_FOLDER = ".lock"


class LockError(RuntimeError):
    """The output folder is in use by another process (the message names the holder)."""


@dataclass(frozen=True)
class Holder:
    """Who holds (a share of) the lock of an output folder."""

    pid: int
    host: str
    command: str
    started: str  # UTC, ISO 8601
    action: str  # "build" or "index"
    plan_id: str = ""  # builds: the plan (corpus + options) they build
    part: str = ""  # builds: "I/N"
    proc_start: int = 0  # the process's start time in clock ticks after boot (Linux; pid reuse)

    @property
    def file_name(self) -> str:
        return f"{self.host}.{self.pid}.json"

    def describe(self) -> str:
        what = f"{self.action} --part {self.part}" if self.action == "build" else self.action
        return (f"pid {self.pid} on {self.host} since {self.started} ({what}: "
                f"{self.command})")

    def compatible(self, other: Holder) -> bool:
        """Two parts of the same build plan may write into one folder together."""
        return (self.action == other.action == "build" and bool(self.plan_id)
                and self.plan_id == other.plan_id and self.part != other.part)


def _proc_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks after boot (0 where /proc cannot tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else 0


def _alive(holder: Holder) -> bool | None:
    """Whether the holder's process runs: ``None`` when it is on another host (unknowable)."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    try:
        stat = Path(f"/proc/{holder.pid}/stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            return False  # a zombie writes nothing
    except OSError:
        pass
    start = _proc_start(holder.pid)
    return not (holder.proc_start and start and start != holder.proc_start)


def _read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def lock_holders(out: Path) -> list[tuple[Path, Holder | None]]:
    """Every holder file of ``OUT``'s lock and what it says (``None``: unreadable)."""
    folder = Path(out) / LOCK_FOLDER
    if not folder.is_dir():
        return []
    return [(p, _read_holder(p)) for p in sorted(folder.glob("*.json"))]


@contextmanager
def output_lock(
    out: Path, action: str, plan_id: str = "", part: str = "",
    log: Callable[[str], None] | None = None,
) -> Iterator[Holder]:
    """Hold ``OUT``'s lock for ``action`` (``"build"`` or ``"index"``) inside the block.

    Raises:
        LockError: a live process holds an incompatible share of it (the message names the
            process, host, command and start time, and the lock file).
    """
    out = Path(out)
    folder = out / LOCK_FOLDER
    me = Holder(pid=os.getpid(), host=socket.gethostname(),
                command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
                started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                action=action, plan_id=plan_id, part=part, proc_start=_proc_start(os.getpid()))
    mine = folder / me.file_name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(mine, json.dumps(asdict(me), indent=1) + "\n", action="cannot lock")
    try:
        _check_others(out, me, mine, log or (lambda line: None))
    except BaseException:
        discard(mine)
        raise
    try:
        yield me
    finally:
        discard(mine)
        try:
            folder.rmdir()  # the last holder out removes the folder
        except OSError:
            pass


def _check_others(out: Path, me: Holder, mine: Path, log: Callable[[str], None]) -> None:
    """Refuse (LockError) if another live holder is incompatible; remove stale ones."""
    for path, other in lock_holders(out):
        if path == mine:
            continue
        if other is None:
            # a holder file is written whole (rename); unreadable means damaged: old ones are
            # taken over, a fresh one may be another process's lock being replaced
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > 60:
                discard(path)
                log(f"removed unreadable lock file {path}")
                continue
            raise LockError(f"{path}: {out} is locked (unreadable lock file); retry, or remove "
                            "it if no build or index is running on this folder")
        alive = _alive(other)
        if alive is False:
            discard(path)
            log(f"took over the lock of {out} from a dead process ({other.describe()})")
            continue
        if me.compatible(other):
            continue
        hint = ("wait for it to finish or stop it" if alive else
                f"wait for it to finish, or remove {path} if that process is gone")
        raise LockError(f"{out}: in use by {other.describe()}; {hint}")


__all__ = ["LOCK_FOLDER", "Holder", "LockError", "lock_holders", "output_lock"]
