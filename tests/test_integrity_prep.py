"""Integrity that cannot be fooled (issue 32, the prep side), one test per case on tiny data.

1. ``prep index`` never launders a changed shard: the manifest takes each shard's checksum from
   its build record; a shard whose bytes differ is refused (or, asked for, listed unverified,
   which ``prep verify`` keeps reporting).
2. A ``--part`` or interrupted build never verifies or gets a card as complete: the build plan
   (``OUT/plan.json``) names every shard, and ``verify``/``index`` name the missing ones.
3. One writer per output folder: a second build (or an index) is refused naming the holder; a
   dead holder's lock is taken over; parts of one plan may share the folder.
4. SIGTERM/SIGINT stop the workers with the build (exit 143/130, no leaked semaphores, nothing
   written after), and a rerun resumes.
6. Bad input answers with one line naming the file, never a traceback.
7. A build without a train split says so.

Real subprocesses where processes matter (locks, signals). A build is held still with
``SCORECRITIC_FAULT=point:n:SIGSTOP`` (prep/faults.py): no timing is involved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
from test_build import make_track
from test_reliability_prep import FAST, _kill_corpus, build, prep_cli, sha256

from prep import shards as S
from prep.build import IndexRefused, index_shards
from prep.faults import ENV_VAR

BIN = Path(sys.executable).parent
SMALL = ("--shard-size-mb", "0.01", "--no-progress")  # one 1-s track per shard


def build_command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["build-shards", "--slakh-root", str(corpus), "--out", str(out), *SMALL, *extra]


def one_line_error(result: subprocess.CompletedProcess, *names: object) -> str:
    """Non-zero exit, no traceback, and an ``Error:`` line naming every one of ``names``."""
    text = result.stdout + result.stderr
    assert result.returncode not in (0, None), text
    assert "Traceback" not in text, text
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Four 1-s tracks, one per shard: train x2, validation, test."""
    root = tmp_path / "corpus"
    _kill_corpus(root)
    return root


def _spawn(args: list[str], fault: str | None = None) -> subprocess.Popen:
    """``prep ARGS`` in its own process group (so a test can signal the group)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if fault:
        env[ENV_VAR] = fault
    return subprocess.Popen([str(BIN / "prep"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_for(condition, what: str, limit_s: float = 120.0) -> None:
    """Poll until ``condition()`` (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _state(pid: int) -> str:
    """A process's state letter from /proc ("" once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


# --------------------------------------------------------------------------------------------
# 1. prep index launders corruption
# --------------------------------------------------------------------------------------------


def test_index_refuses_a_changed_shard_and_verify_keeps_reporting_it(
    corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = build(corpus, out, shard_size_mb=0.01)
    shard = out / "train" / "train-00000.h5"
    written = manifest.shards[[s.path for s in manifest.shards].index("train/train-00000.h5")]
    flip_byte(shard)
    assert "SHA-256 does not match" in prep_cli("verify", str(out)).stderr

    refused = prep_cli("index", str(out))
    error = one_line_error(refused, out / "manifest.json", "not written")
    assert f"{shard}: SHA-256 differs from its build record train-00000.build.json" in \
        refused.stderr, error
    assert "--accept-unverified" in refused.stderr
    assert S.read_manifest(out).shards == manifest.shards  # the manifest is left as it was
    again = prep_cli("verify", str(out))
    assert again.returncode == 1 and "SHA-256 does not match" in again.stderr
    assert "prep index" not in again.stderr  # a mismatch is never "fixed" by re-indexing

    # the training side's error for a mismatch names the file and recommends a rebuild
    with pytest.raises(S.ShardError) as info:
        S.ShardSet(out, "train")
    assert str(shard) in str(info.value) and "prep build-shards" in str(info.value)
    assert "prep index" not in str(info.value)

    # a manifest laundered by an older `prep index` is caught against the build record
    laundered = S.read_manifest(out)
    laundered.shards = [replace(s, sha256=sha256(shard)) if s.path == written.path else s
                        for s in laundered.shards]
    S.write_manifest(out, laundered)
    assert any(f"{shard}: SHA-256 in" in p and "differs from the one its build wrote" in p
               for p in S.verify(out))

    # accepted on request: listed unverified, still reported, no card
    accepted = prep_cli("index", str(out), "--accept-unverified")
    assert accepted.returncode == 0, accepted.stderr
    assert f"warning: {shard}: listed as unverified" in accepted.stderr
    assert S.read_manifest(out).unverified == ["train/train-00000.h5"]
    reported = prep_cli("verify", str(out))
    assert reported.returncode == 1 and f"{shard}: unverified" in reported.stderr
    one_line_error(prep_cli("card", str(out)), shard, "unverified", "no card written")

    # the build's own record still holds what it wrote: a rerun rebuilds just that shard
    assert json.loads((out / "train" / "train-00000.build.json").read_text())["record"][
        "sha256"] == written.sha256
    rebuilt = build(corpus, out, shard_size_mb=0.01)
    assert rebuilt.shards == manifest.shards and rebuilt.unverified == []
    assert S.verify(out) == []


# --------------------------------------------------------------------------------------------
# 2. Missing shards pass
# --------------------------------------------------------------------------------------------


def test_part_and_interrupted_builds_never_verify_or_card_as_complete(
    corpus: Path, tmp_path: Path
) -> None:
    parts = tmp_path / "parts"
    assert prep_cli(*build_command(corpus, parts, "--part", "1/2")).returncode == 0
    plan = S.BuildPlanFile.read(parts)
    assert plan is not None and len(plan.shards) == 4
    missing = [parts / "train" / "train-00001.h5", parts / "test" / "test-00000.h5"]
    refused = prep_cli("index", str(parts))
    one_line_error(refused, parts / "manifest.json", "not written")
    for path in missing:
        assert f"{path}: planned shard missing" in refused.stderr
    assert not (parts / S.MANIFEST_NAME).exists()
    verified = prep_cli("verify", str(parts))
    assert verified.returncode == 1
    for path in missing:
        assert f"{path}: planned shard missing" in verified.stderr
    one_line_error(prep_cli("card", str(parts)), parts / "manifest.json")
    with pytest.raises(IndexRefused) as info:
        index_shards(parts)
    assert len(info.value.problems) == 2

    # the other part completes the plan: the manifest lists every planned shard
    assert prep_cli(*build_command(corpus, parts, "--part", "2/2")).returncode == 0
    assert prep_cli("verify", str(parts)).returncode == 0
    manifest = index_shards(parts)
    assert manifest.planned_shards == sorted(s.path for s in manifest.shards)
    assert manifest.plan_id == plan.plan_id and len(manifest.shards) == 4

    # a manifest that leaves a planned shard out is caught
    S.write_manifest(parts, replace(manifest, shards=manifest.shards[1:]))
    dropped = parts / manifest.shards[0].path
    assert any(p.startswith(f"{dropped}: planned shard missing from") for p in S.verify(parts))

    # an interrupted build, then index: the same refusal, naming the shards not built
    out = tmp_path / "killed"
    killed = prep_cli(*build_command(corpus, out), fault="shard-write:2")
    assert killed.returncode == -9
    refused = prep_cli("index", str(out))
    assert refused.returncode == 1
    assert refused.stderr.count("planned shard missing") == 3
    assert prep_cli("verify", str(out)).stderr.count("planned shard missing") == 3
    assert prep_cli(*build_command(corpus, out)).returncode == 0  # resumes
    assert S.verify(out) == []


def test_older_manifest_schema_is_refused_with_the_way_out(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    build(corpus, out, shard_size_mb=0.01)
    data = json.loads((out / S.MANIFEST_NAME).read_text())
    for key in ("plan_id", "planned_shards", "unverified"):
        data.pop(key)
    data["schema_version"] = 2
    (out / S.MANIFEST_NAME).write_text(json.dumps(data))
    problems = S.verify(out)
    assert "schema_version 2 found, expected 3; `prep index OUT` rewrites it" in problems[0]
    assert prep_cli("index", str(out)).returncode == 0 and S.verify(out) == []


# --------------------------------------------------------------------------------------------
# 3. No lock
# --------------------------------------------------------------------------------------------


def test_a_second_build_or_index_is_refused_while_a_build_holds_the_folder(
    corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = _spawn(build_command(corpus, out), fault="shard-write:2:SIGSTOP")
    try:
        _wait_for(lambda: _state(first.pid) == "T", "the first build to stop mid-shard")
        other = prep_cli(*build_command(corpus, out, "--n-harmonics", "5", "--stems", "all"))
        error = one_line_error(other, out, f"pid {first.pid}", "build-shards", "since")
        assert "--part 1/1" in error
        one_line_error(prep_cli("index", str(out)), out, f"pid {first.pid}")
        # nothing of the second build, nothing complete-looking from the first
        assert not (out / S.MANIFEST_NAME).exists()
        for record in out.glob("*/*.build.json"):
            shard = out / json.loads(record.read_text())["record"]["path"]
            assert sha256(shard) == json.loads(record.read_text())["record"]["sha256"]
    finally:
        os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert S.verify(out) == [] and not (out / ".lock").exists()
    with h5py.File(out / "train" / "train-00000.h5") as handle:
        assert int(handle.attrs["n_harmonics"]) != 5  # only the first build's shards

    # a holder that died (SIGKILL: no cleanup) leaves a stale lock that the next build takes over
    killed = prep_cli(*build_command(corpus, out, "--force"), fault="shard-write:1")
    assert killed.returncode == -9 and list((out / ".lock").glob("*.json"))
    resumed = prep_cli(*build_command(corpus, out))
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock" in resumed.stdout and "from a dead process" in resumed.stdout
    assert S.verify(out) == [] and not (out / ".lock").exists()


def test_parts_of_one_plan_share_the_folder(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _spawn(build_command(corpus, out, "--part", "1/2"), fault="shard-write:1:SIGSTOP")
    try:
        _wait_for(lambda: _state(first.pid) == "T", "part 1 to stop mid-shard")
        second = prep_cli(*build_command(corpus, out, "--part", "2/2"))
        assert second.returncode == 0, second.stderr
        assert "pending" in second.stdout  # part 1 is not finished
        same_part = prep_cli(*build_command(corpus, out, "--part", "1/2"))
        one_line_error(same_part, f"pid {first.pid}", "--part 1/2")
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.communicate(timeout=300)
    assert first.returncode == 0
    assert S.verify(out) == [] and len(S.read_manifest(out).shards) == 4


# --------------------------------------------------------------------------------------------
# 4. SIGTERM to a build with workers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM to the build", "SIGINT to its process group"])
def test_a_signal_stops_the_workers_with_the_build_and_a_rerun_resumes(
    corpus: Path, tmp_path: Path, how: str
) -> None:
    out = tmp_path / "out"
    # both workers stop themselves inside their first shard write: the build is mid-way
    build_run = _spawn(build_command(corpus, out, "--workers", "2"),
                       fault="shard-write:1:SIGSTOP")
    try:
        _wait_for(lambda: len(list(out.glob("*/.*.h5.partial"))) == 2 and sum(
            _state(pid) == "T" for pid in _group_members(build_run.pid)) == 2,
            "both workers stopped mid-shard")
        if how.startswith("SIGTERM"):
            os.kill(build_run.pid, signal.SIGTERM)
        else:
            os.killpg(build_run.pid, signal.SIGINT)
        stdout, stderr = build_run.communicate(timeout=120)
    finally:
        if build_run.poll() is None:
            os.killpg(build_run.pid, signal.SIGKILL)
            build_run.communicate()
    assert build_run.returncode == (143 if how.startswith("SIGTERM") else 130), stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert f"{out}: build interrupted by" in stderr and "rerun" in stderr
    # every worker is gone with the build, and nothing it left looks complete
    _wait_for(lambda: not _group_members(build_run.pid), "the workers to exit", 60)
    assert not (out / S.MANIFEST_NAME).exists() and not (out / ".lock").exists()
    assert not list(out.glob("*/*.h5"))
    resumed = prep_cli(*build_command(corpus, out, "--workers", "2"))
    assert resumed.returncode == 0, resumed.stderr
    assert S.verify(out) == [] and not list(out.rglob("*.partial"))


# --------------------------------------------------------------------------------------------
# 6. Tracebacks where a one-line error belongs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8 \x80", b"[1, 2, 3]"])
def test_a_bad_manifest_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / S.MANIFEST_NAME).write_bytes(content)
    where = out / S.MANIFEST_NAME
    verified = prep_cli("verify", str(out))
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    assert verified.stderr.startswith(f"{where}: ")
    one_line_error(prep_cli("card", str(out)), where)
    with pytest.raises(S.ShardError, match=f"^{re.escape(str(where))}: "):  # what `train step1` loads through
        S.read_manifest(out)


def test_a_file_that_is_not_a_shard_is_named(corpus: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(os.urandom(4096))
    one_line_error(prep_cli("inspect", str(junk)), junk, "not a readable HDF5 shard")

    out = tmp_path / "out"
    build(corpus, out, shard_size_mb=0.01)
    stray = out / "train" / "random.h5"
    stray.write_bytes(os.urandom(4096))
    refused = prep_cli("index", str(out))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"{stray}: shard file not in the build plan" in refused.stderr
    with pytest.raises(S.ShardError, match=f"^{re.escape(str(stray))}: not a readable HDF5"):
        S.manifest_from_shards(out)
    bare = tmp_path / "bare"
    (bare / "train").mkdir(parents=True)
    (bare / "train" / "random.h5").write_bytes(os.urandom(4096))
    one_line_error(prep_cli("index", str(bare)), bare / "plan.json", "no build plan")


# --------------------------------------------------------------------------------------------
# 7. Quiet failure: no train split
# --------------------------------------------------------------------------------------------


def test_a_build_without_a_train_split_says_so(tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    for track_id in ("Track00003", "Track00026", "Track00066"):  # test, validation, test
        make_track(corpus / "train" / track_id, seed=int(track_id[5:]), seconds=1.0,
                   overrides=FAST)
    result = prep_cli(*build_command(corpus, out))
    assert result.returncode == 0, result.stderr
    assert f"warning: {out / S.MANIFEST_NAME}: no train split" in result.stdout
    assert any("no train split" in p for p in S.read_manifest(out).problems)
    strict = prep_cli(*build_command(corpus, out, "--strict"))
    one_line_error(strict, out / S.MANIFEST_NAME, "no train split")
