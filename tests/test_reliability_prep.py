"""Fault injection on the prep side: killed builds, a malformed corpus, corrupted shards, a full
disk, an unwritable output folder and unsafe YAML.

Kills are deterministic: ``SCORECRITIC_FAULT=point:n`` (prep/faults.py) makes ``prep
build-shards`` SIGKILL itself at a named point (inside a shard write, before a rename, inside the
manifest write ...). Every kill is followed by the checks a user relies on: no shard under its
final name differs from an uninterrupted build's, no manifest that does not match the shards,
and the rerun finishes to the same bytes. Already covered elsewhere and not repeated here:
tests/test_build.py (a kill by polling for the first shard, the original skip reasons, stereo
and 22.05 kHz stems), tests/test_shards.py (writer atomicity on an exception, verify on one
damaged shard at a time, format version of manifest and shard read path).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import mido
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml
from test_build import INSTRUMENTS, make_track, read_track, reference_roll, stem_signal

import prep.build as build_module
from prep import shards as S
from prep.build import BuildError, StrictError, build_shards
from prep.faults import ENV_VAR, parse_faults

BIN = Path(sys.executable).parent
SR = 16000  # stems written at 16 kHz: no resampling, so the tests stay fast
SELECTED = ("S00", "S02", "S03", "S08")  # the fixture's guitar, piano, bass, guitar stems
FAST = {key: {"rate": SR} for key in ("S00", "S01", "S02", "S03", "S04", "S05", "S07", "S08",
                                      "S09", "S10")}


def build(root: Path, out: Path, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda line: None)
    return build_shards(root, out, INSTRUMENTS, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prep_cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if fault:
        env[ENV_VAR] = fault
    return subprocess.run([str(BIN / "prep"), *args], capture_output=True, text=True, env=env,
                          timeout=300)


# --------------------------------------------------------------------------------------------
# 1. Killed prep
# --------------------------------------------------------------------------------------------


def _kill_corpus(root: Path) -> None:
    """Four 1-s tracks, one per shard: train x2, validation, test (split2 decides by id)."""
    for track_id in ("Track00001", "Track00002", "Track00026", "Track00003"):
        make_track(root / "train" / track_id, seed=int(track_id[5:]), seconds=1.0,
                   overrides=FAST)


def shard_contents(path: Path) -> dict:
    """Every dataset's bytes and every attribute of a shard, in file order."""
    with h5py.File(path, "r") as handle:
        contents: dict = {"/": json.dumps(S.read_attrs(handle), sort_keys=True, default=str)}

        def visit(name: str, obj) -> None:
            attrs = S.read_attrs(obj)
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
            contents[name] = (json.dumps(attrs, sort_keys=True, default=str), data)
        handle.visititems(visit)
    return contents


def without_checksums(manifest: S.Manifest) -> S.Manifest:
    """The manifest with each shard's sha256 and size blanked (its provenance is outside ``==``
    anyway): byte-equality is checked as "each file matches its own manifest" plus equal
    contents, shard by shard."""
    return replace(manifest, shards=[replace(s, sha256="", bytes=0) for s in manifest.shards])


def assert_same_shard(path: Path, reference: Path) -> None:
    assert shard_contents(path) == shard_contents(reference), f"{path} differs from {reference}"


def assert_no_false_complete(out: Path, clean: Path) -> None:
    """Everything under a final name is what an uninterrupted build wrote; a manifest is only
    there when it is the finished one."""
    for path in out.glob("*/*.h5"):
        assert_same_shard(path, clean / path.relative_to(out))
    for path in out.glob("*/*.build.json"):
        record = json.loads(path.read_text())  # complete JSON, never truncated
        reference = json.loads((clean / path.relative_to(out)).read_text())
        assert record["record"]["tracks"] == reference["record"]["tracks"]
        assert record["skipped"] == reference["skipped"]
        shard = out / record["record"]["path"]
        if shard.exists():  # a record never vouches for bytes the shard does not have
            assert sha256(shard) == record["record"]["sha256"]
    if (out / S.MANIFEST_NAME).exists():
        assert without_checksums(S.read_manifest(out)) == without_checksums(S.read_manifest(clean))
        assert S.verify(out) == []


# (fault, what the killed run must have left behind) in the order a build meets them
KILLS = [
    ("track-processed:1", "no shard"),
    ("shard-write:1", "half-written partial"),
    ("shard-rename:1", "complete partial, not renamed"),
    ("shard-renamed:1", "renamed shard without build record"),
    ("record-write:1", "build record partial"),
    ("manifest-write:1", "manifest partial"),
]


def test_killed_build_at_every_point_resumes_to_identical_shards(tmp_path: Path) -> None:
    corpus, out, clean = tmp_path / "corpus", tmp_path / "out", tmp_path / "clean"
    _kill_corpus(corpus)
    clean_manifest = build(corpus, clean, shard_size_mb=0.01)
    assert len(clean_manifest.shards) == 4
    command = ["build-shards", "--slakh-root", str(corpus), "--out", str(out),
               "--shard-size-mb", "0.01", "--no-progress"]
    partials_seen = []
    for fault, left in KILLS:
        killed = prep_cli(*command, fault=fault)
        assert killed.returncode == -9, (fault, killed.stdout, killed.stderr)
        partials_seen.append(sorted(p.name for p in out.rglob(".*.partial")))
        assert_no_false_complete(out, clean)
        if fault != "manifest-write:1":
            assert not (out / S.MANIFEST_NAME).exists(), left
        assert "no manifest" in " ".join(S.verify(out)), left
    # the kills really hit their points: a half-written shard, a shard complete under its
    # temporary name, a build record and the manifest under theirs
    assert any(p.endswith(".h5.partial") for p in partials_seen[1])
    assert any(p.endswith(".h5.partial") for p in partials_seen[2])
    assert any(p.endswith(".build.json.partial") for p in partials_seen[4])
    assert ".manifest.json.partial" in partials_seen[5]

    final = prep_cli(*command)
    assert final.returncode == 0, final.stderr
    assert prep_cli("verify", str(out)).returncode == 0
    assert S.verify(out) == []
    assert not list(out.rglob("*.partial"))
    manifest = S.read_manifest(out)
    assert without_checksums(manifest) == without_checksums(clean_manifest)
    for entry in manifest.shards:
        assert sha256(out / entry.path) == entry.sha256
        assert_same_shard(out / entry.path, clean / entry.path)

    # A forced rebuild killed half-way must not leave the old manifest pointing at shards it
    # already deleted or replaced.
    forced = prep_cli(*command, "--force", fault="shard-write:2")
    assert forced.returncode == -9
    assert not (out / S.MANIFEST_NAME).exists()
    assert_no_false_complete(out, clean)
    rebuilt = build(corpus, out, shard_size_mb=0.01)
    assert without_checksums(rebuilt) == without_checksums(clean_manifest)
    assert S.verify(out) == []


def test_fault_hook_is_inert_unless_set_and_rejects_typos(monkeypatch) -> None:
    from prep.faults import fault_point

    monkeypatch.delenv(ENV_VAR, raising=False)
    fault_point("shard-write")  # nothing happens
    assert parse_faults("shard-write:2, manifest-write:1") == {"shard-write": 2,
                                                               "manifest-write": 1}
    for bad in ("shard-wrte:1", "shard-write", "shard-write:0"):
        with pytest.raises(ValueError, match=ENV_VAR):
            parse_faults(bad)


# --------------------------------------------------------------------------------------------
# 3. Malformed corpus
# --------------------------------------------------------------------------------------------


def _edit_metadata(track: Path, edit) -> None:
    path = track / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    edit(meta)
    path.write_text(yaml.safe_dump(meta))


def _write_midi(path: Path, program: int, events: list[tuple[int, mido.Message]],
                tempo_changes: list[tuple[int, int]] = ()) -> None:
    """A type-1 MIDI file, 480 ticks per beat; events are (absolute tick, message)."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack(_relative([(tick, mido.MetaMessage("set_tempo", tempo=tempo))
                                     for tick, tempo in sorted(tempo_changes)]))
    notes = mido.MidiTrack([mido.Message("program_change", program=program, time=0)])
    notes.extend(_relative(sorted(events, key=lambda e: e[0])))
    midi.tracks.extend([meta, notes])
    midi.save(path)


def _relative(events: list[tuple[int, mido.Message]]) -> list[mido.Message]:
    result, now = [], 0
    for tick, message in events:
        result.append(message.copy(time=tick - now))
        now = tick
    return result


def _note(pitch: int, on: int, off: int) -> list[tuple[int, mido.Message]]:
    return [(on, mido.Message("note_on", note=pitch, velocity=90)),
            (off, mido.Message("note_off", note=pitch, velocity=0))]


def _malformed_corpus(root: Path, outside: Path) -> dict[str, str]:
    """Good tracks plus one track per kind of damage; returns {track id: how it must end}.

    "skip:<text>" = skipped with a reason containing <text>; "keep" = built (checked apart).
    """
    expect: dict[str, str] = {}
    for good in ("Track00001", "Track00002"):
        make_track(root / "train" / good, seed=int(good[5:]), seconds=1.0, overrides=FAST)
        expect[good] = "keep"

    def damaged(track_id: str, **kwargs) -> Path:
        return make_track(root / "train" / track_id, seed=int(track_id[5:]), seconds=1.0,
                          overrides={**FAST, **kwargs.get("overrides", {})})

    track = damaged("Track00004")  # truncated FLAC (a download cut short)
    data = (track / "stems" / "S02.flac").read_bytes()
    (track / "stems" / "S02.flac").write_bytes(data[: len(data) // 2])
    expect["Track00004"] = "skip:S02.flac: unreadable audio"

    track = damaged("Track00005")  # corrupt FLAC: random bytes after the magic
    (track / "stems" / "S03.flac").write_bytes(b"fLaC" + np.random.default_rng(5).bytes(4000))
    expect["Track00005"] = "skip:S03.flac: unreadable audio"

    track = damaged("Track00006")  # a stem named in the metadata, audio and MIDI missing
    _edit_metadata(track, lambda m: m["stems"].__setitem__(
        "S42", {**m["stems"]["S02"], "program_num": 0}))
    expect["Track00006"] = "skip:S42.flac: selected piano stem S42 has neither audio nor MIDI"

    track = damaged("Track00007")  # a selected stem without MIDI
    (track / "MIDI" / "S08.mid").unlink()
    expect["Track00007"] = "skip:S08.mid: missing MIDI"

    track = damaged("Track00008")  # a MIDI file that is not MIDI
    (track / "MIDI" / "S00.mid").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    expect["Track00008"] = "skip:S00.mid: unreadable MIDI"

    track = damaged("Track00009")  # invalid YAML
    (track / "metadata.yaml").write_text("stems:\n  S00: {program_num: 30\n")
    expect["Track00009"] = "skip:metadata.yaml: invalid YAML"

    track = damaged("Track00010")  # no metadata at all
    (track / "metadata.yaml").unlink()
    expect["Track00010"] = "skip:metadata.yaml: missing metadata"

    # ../../x: a key that would point outside the track; a sentinel waits there
    track = damaged("Track00011")
    _edit_metadata(track, lambda m: m["stems"].__setitem__("../../x", m["stems"].pop("S02")))
    for suffix in (".flac", ".mid"):  # stems/../../x.flac = <split folder>/x.flac
        shutil.copy(track / "stems" / "S00.flac", root / "train" / f"x{suffix}")
        shutil.copy(track / "stems" / "S00.flac", outside / f"x{suffix}")
    expect["Track00011"] = "skip:stem key '../../x' is not a plain file name"

    track = damaged("Track00012")  # none of the target instruments
    _edit_metadata(track, lambda m: [m["stems"].pop(k) for k in SELECTED])
    expect["Track00012"] = "skip:none of the requested instruments"

    (root / "train" / "Track00013").mkdir()  # an empty folder
    expect["Track00013"] = "skip:Track00013/metadata.yaml: missing metadata"

    track = damaged("Track00014")  # stems differ by 1 s or more
    sf.write(track / "stems" / "S03.flac", stem_signal("S03", 3.0, SR), SR)
    expect["Track00014"] = "skip:stems differ by 1 s or more"

    # Damage that is handled, not skipped (checked in the test):
    damaged("Track00015", overrides={"S02": {"rate": SR, "channels": 2}})  # stereo stem: downmixed
    damaged("Track00016", overrides={"S03": {"rate": 22050}})  # 22.05 kHz stem: resampled
    track = damaged("Track00017")  # stems differ by less than 1 s: zero-padded, warned
    sf.write(track / "stems" / "S08.flac", stem_signal("S08", 0.75, SR), SR)
    track = damaged("Track00018")  # empty score: MIDI without notes
    _write_midi(track / "MIDI" / "S02.mid", 0, [])
    track = damaged("Track00019")  # notes outside 21-108, zero-length and overlapping notes
    _write_midi(track / "MIDI" / "S02.mid", 0,
                _note(15, 0, 480) + _note(120, 0, 480) + _note(60, 240, 240)  # 0-length
                + _note(64, 0, 480) + _note(64, 240, 720)  # overlapping, same pitch
                + _note(67, 0, 600) + _note(69, 100, 300))
    track = damaged("Track00020")  # tempo changes and pitch bends
    bends = [(tick, mido.Message("pitchwheel", pitch=4000)) for tick in range(0, 960, 60)]
    _write_midi(track / "MIDI" / "S03.mid", 33,
                _note(40, 0, 480) + _note(43, 480, 960) + _note(45, 960, 1200) + bends,
                tempo_changes=[(0, 250000), (480, 500000), (960, 1000000)])
    for track_id in ("Track00015", "Track00016", "Track00017", "Track00018", "Track00019",
                     "Track00020"):
        expect[track_id] = "keep"
    return expect


def _opened_paths(monkeypatch) -> list[Path]:
    """Record every path the build opens: Python files, libsndfile, pretty_midi, h5py."""
    seen: list[Path] = []

    def spy(function, position=0):
        def wrapper(*args, **kwargs):
            target = args[position] if len(args) > position else None
            if isinstance(target, str | os.PathLike):
                seen.append(Path(target).absolute())
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(io, "open", spy(io.open))  # pathlib's read_text/open
    monkeypatch.setattr(build_module.sf, "read", spy(sf.read))
    monkeypatch.setattr(build_module.sf, "info", spy(sf.info))
    monkeypatch.setattr(pretty_midi, "PrettyMIDI", spy(pretty_midi.PrettyMIDI))
    monkeypatch.setattr(h5py, "File", spy(h5py.File))
    return seen


def test_malformed_corpus_good_tracks_unchanged_bad_ones_handled_or_named(
    tmp_path: Path, monkeypatch
) -> None:
    corpus, out, outside = tmp_path / "corpus", tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    expect = _malformed_corpus(corpus, outside)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    opened = _opened_paths(monkeypatch)
    manifest = build(corpus, out)
    monkeypatch.undo()
    assert any(p.suffix == ".flac" for p in opened) and any(p.suffix == ".mid" for p in opened)

    # nothing read or written outside the corpus and the output folder
    for path in opened:
        if tmp_path in path.parents:
            assert corpus in path.parents or out in path.parents, f"opened {path}"
            assert path.name not in ("x.flac", "x.mid"), f"followed ../../x to {path}"
    after = {p for p in tmp_path.rglob("*") if p.is_file()}
    new = {p for p in after - set(before) if out not in p.parents}
    assert new == set(), new
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())

    reasons = {s["track"]: s["reason"] for s in manifest.skipped}
    built = [t.track_id for s in manifest.shards for t in s.tracks]
    assert sorted(built) == sorted(k for k, v in expect.items() if v == "keep")
    for track_id, outcome in expect.items():
        if outcome.startswith("skip:"):
            assert outcome[5:] in reasons[track_id], (track_id, reasons.get(track_id))
            assert str(corpus) in reasons[track_id] and "\n" not in reasons[track_id]
    assert len(reasons) == sum(v != "keep" for v in expect.values())

    # good tracks: the same arrays as when each is built alone
    for good in ("Track00001", "Track00002"):
        alone = tmp_path / f"alone-{good}"
        shutil.copytree(corpus / "train" / good, alone / "train" / good)
        build(alone, tmp_path / f"out-{good}")
        mine, reference = read_track(out, "train", good), read_track(tmp_path / f"out-{good}",
                                                                     "train", good)
        for name in ("mix", "spec", "roll", "harmonic_mask", "activity"):
            np.testing.assert_array_equal(mine[name], reference[name], err_msg=f"{good} {name}")

    warnings = {}
    for entry in manifest.warnings:
        warnings.setdefault(entry["track"], []).append(entry["warning"])
    track_dir = corpus / "train"
    # stereo: the channel mean; 22.05 kHz: resampled (both checked against an independent
    # decode in tests/test_build.py, here: the mix is the sum of the decoded stems)
    stereo = read_track(out, "train", "Track00015")
    piano = sf.read(track_dir / "Track00015" / "stems" / "S02.flac", dtype="float32")[0]
    guitar = sum(sf.read(track_dir / "Track00015" / "stems" / f"{k}.flac", dtype="float32")[0]
                 for k in ("S00", "S08"))
    bass = sf.read(track_dir / "Track00015" / "stems" / "S03.flac", dtype="float32")[0]
    np.testing.assert_allclose(stereo["mix"], piano.mean(axis=1) + guitar + bass, atol=1e-6)
    resampled = read_track(out, "train", "Track00016")
    assert resampled["attrs"]["source_sample_rates"]["S03"] == 22050
    assert resampled["mix"].shape == (SR,)
    padded = read_track(out, "train", "Track00017")
    assert padded["mix"].shape == (SR,)
    assert any("S08.flac zero-padded by 4000 samples" in w for w in warnings["Track00017"])
    # empty score: kept, its piano column silent, and said
    empty = read_track(out, "train", "Track00018")
    assert not empty["roll"][:, 0].any() and empty["roll"][:, 1].any()
    assert any("S02.mid has no notes" in w for w in warnings["Track00018"])
    # out-of-range notes dropped and counted; zero-length notes never sound; overlaps: union
    odd = read_track(out, "train", "Track00019")
    n_frames = odd["roll"].shape[0]
    np.testing.assert_array_equal(
        odd["roll"][:, 0], reference_roll([track_dir / "Track00019" / "MIDI" / "S02.mid"],
                                          n_frames))
    assert odd["attrs"]["dropped_notes"] == 2
    assert not odd["roll"][:, 0, 60 - 21].any()
    assert any("2 notes outside MIDI 21-108 dropped" in w for w in warnings["Track00019"])
    # tempo 240, 120, 60 bpm from beats 0, 1, 2: notes at 0-0.25 s, 0.25-0.75 s, 0.75-1.25 s
    # (times from the tempo map by hand), whatever the pitch bends do
    tempo = read_track(out, "train", "Track00020")
    times = np.arange(tempo["roll"].shape[0]) * 500 / SR
    expected = np.zeros((times.size, 88), dtype=bool)
    for pitch, start, end in ((40, 0.0, 0.25), (43, 0.25, 0.75), (45, 0.75, 1.25)):
        expected[:, pitch - 21] = (times >= start) & (times < end)
    np.testing.assert_array_equal(tempo["roll"][:, 2], expected)

    # --strict: non-zero exit, and the good shards are still written
    strict = prep_cli("build-shards", "--slakh-root", str(corpus), "--out",
                      str(tmp_path / "strict"), "--no-progress", "--strict")
    assert strict.returncode != 0 and "--strict" in strict.stderr
    assert "S03.flac: unreadable audio" in strict.stdout  # the reasons are printed
    assert S.read_manifest(tmp_path / "strict").shards == manifest.shards
    assert S.verify(tmp_path / "strict") == []
    with pytest.raises(StrictError):
        build(corpus, tmp_path / "strict-api", strict=True)


# --------------------------------------------------------------------------------------------
# 4. Corrupted shards (trainer side: tests/test_reliability_train.py)
# --------------------------------------------------------------------------------------------


def test_prep_verify_names_every_damaged_shard(tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    _kill_corpus(corpus)
    manifest = build(corpus, out, shard_size_mb=0.01)
    paths = [out / s.path for s in manifest.shards]
    flipped, truncated, deleted, intact = paths
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0x5A
    flipped.write_bytes(bytes(data))
    os.truncate(truncated, truncated.stat().st_size - 1000)
    deleted.unlink()
    result = prep_cli("verify", str(out))
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"{flipped}: SHA-256 does not match" in text
    assert f"{truncated}: " in text and "truncated" in text
    assert f"{deleted}: listed in manifest.json but missing" in text
    assert str(intact) not in text


# --------------------------------------------------------------------------------------------
# 5. Disk full, unwritable output
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", [1, 9])  # the first dataset of the first / second track
def test_disk_full_during_a_shard_write_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch, fail_at: int
) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    for track_id in ("Track00001", "Track00002"):
        make_track(corpus / "train" / track_id, seed=int(track_id[5:]), seconds=1.0,
                   overrides=FAST)
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def full_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(BuildError) as info:
        build(corpus, out)  # both tracks go into one shard
    message = str(info.value)
    assert str(out / "train" / "train-00000.h5") in message and "disk full" in message
    assert not list(out.rglob("*.h5")) and not list(out.rglob("*.partial"))
    assert not (out / S.MANIFEST_NAME).exists()
    monkeypatch.undo()
    assert build(corpus, out).skipped == [] and S.verify(out) == []  # space freed: resumes


def test_disk_full_while_writing_the_manifest(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    make_track(tmp_path / "corpus" / "train" / "Track00001", seconds=1.0, overrides=FAST)
    real_fsync = os.fsync

    def full_on_manifest(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".manifest.json.partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_on_manifest)
    with pytest.raises(BuildError, match=r"manifest.json: cannot write manifest: disk full"):
        build(tmp_path / "corpus", out)
    assert not (out / S.MANIFEST_NAME).exists() and not list(out.glob(".*.partial"))
    assert len(list(out.glob("*/*.h5"))) == 1  # the finished shard is kept
    monkeypatch.undo()
    assert build(tmp_path / "corpus", out).shards and S.verify(out) == []


def _immutable(folder: Path) -> bool:
    """Make ``folder`` immutable (root cannot write into it either), if the filesystem lets us."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["parent-is-a-file", "chmod-or-immutable"])
def test_unwritable_output_says_so_and_names_the_path(tmp_path: Path, how: str) -> None:
    corpus = tmp_path / "corpus"
    make_track(corpus / "train" / "Track00001", seconds=1.0, overrides=FAST)
    if how == "parent-is-a-file":
        (tmp_path / "file").write_text("a regular file where a folder should be\n")
        out = tmp_path / "file" / "out"
        expected = f"{out}: cannot create the output folder: not writable"
    else:
        out = tmp_path / "locked"
        (out / "train").mkdir(parents=True)
        os.chmod(out / "train", 0o500)
        locked = None
        if os.geteuid() == 0:  # root ignores modes: use the immutable flag instead
            os.chmod(out / "train", 0o700)
            if not _immutable(out / "train"):
                pytest.skip("running as root and this filesystem has no immutable flag "
                            "(chattr +i): no way to make a folder unwritable for root")
            locked = out / "train"
        expected = "train-00000.h5: cannot create shard: not writable"
    try:
        result = prep_cli("build-shards", "--slakh-root", str(corpus), "--out", str(out),
                          "--no-progress")
    finally:
        if how != "parent-is-a-file":
            if locked is not None:
                subprocess.run(["chattr", "-i", str(locked)], check=True)
            os.chmod(out / "train", 0o700)
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    if how != "parent-is-a-file":
        assert not list(out.rglob("*.h5")) and not list(out.rglob("*.partial"))


# --------------------------------------------------------------------------------------------
# 6. Unsafe YAML (checkpoints and format versions: tests/test_reliability_train.py)
# --------------------------------------------------------------------------------------------

UNSAFE = "!!python/object/apply:os.mkdir [{target}]\n"


def test_python_tags_in_metadata_and_instrument_map_are_refused(tmp_path: Path) -> None:
    corpus, target = tmp_path / "corpus", tmp_path / "pwned"
    make_track(corpus / "train" / "Track00001", seconds=1.0, overrides=FAST)
    bad = make_track(corpus / "train" / "Track00002", seconds=1.0, overrides=FAST)
    (bad / "metadata.yaml").write_text("stems:\n  S00: " + UNSAFE.format(target=target))
    manifest = build(corpus, tmp_path / "out")
    [skip] = manifest.skipped
    assert skip["track"] == "Track00002"
    assert f"{bad / 'metadata.yaml'}: invalid YAML" in skip["reason"]
    assert "python/object" in skip["reason"]

    imap = tmp_path / "map.yaml"
    imap.write_text("classes: " + UNSAFE.format(target=target))
    result = prep_cli("build-shards", "--slakh-root", str(corpus), "--out",
                      str(tmp_path / "out2"), "--instrument-map", str(imap), "--no-progress")
    assert result.returncode != 0
    assert f"{imap}: invalid YAML" in result.stderr and "python/object" in result.stderr
    assert not target.exists()  # never constructed


def test_shard_of_another_format_version_is_named_by_verify(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_track(tmp_path / "corpus" / "train" / "Track00001", seconds=1.0, overrides=FAST)
    manifest = build(tmp_path / "corpus", out)
    path = out / manifest.shards[0].path
    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = 7
    # a manifest whose checksums match, so only the version can be wrong
    entry = replace(manifest.shards[0], sha256=sha256(path), bytes=path.stat().st_size)
    S.write_manifest(out, replace(manifest, shards=[entry]))
    result = prep_cli("verify", str(out))
    assert result.returncode != 0
    assert f"{path}: format_version 7 found, expected {S.FORMAT_VERSION}" in (
        result.stdout + result.stderr)
    manifest_v = json.loads((out / S.MANIFEST_NAME).read_text())
    manifest_v["format_version"] = 0
    (out / S.MANIFEST_NAME).write_text(json.dumps(manifest_v))
    result = prep_cli("verify", str(out))
    assert result.returncode != 0
    assert "format_version 0 found" in result.stdout + result.stderr
    assert f"format_version {S.FORMAT_VERSION}" in result.stdout + result.stderr
