"""prep.atomic: a final name always holds a complete file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from prep.atomic import ShardWriteError, atomic_write, atomic_write_text, partial_path


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failing_writer_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    atomic_write_text(target, "complete")

    def half_then_crash(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "complete" and not partial_path(target).exists()


def test_disk_full_names_the_path_and_the_cause(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"

    def disk_full(handle) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ShardWriteError, match=r"manifest\.json: cannot write manifest: disk full"):
        atomic_write(target, disk_full, action="cannot write manifest")
    assert not target.exists() and not partial_path(target).exists()


def test_a_parent_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    with pytest.raises(ShardWriteError, match="not writable"):
        atomic_write_text(tmp_path / "blocker" / "x.json", "{}")
