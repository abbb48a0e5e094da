"""Tests of prep/build.py (``prep build-shards``, ``prep index``) on tiny synthetic corpora.

Audio is synthetic (written here), metadata and MIDI are the real Slakh Track00001 fixture.
Expected values are recomputed independently: soxr for the mixture, a per-note loop over
the frame times for the piano roll.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import soxr
import yaml

from prep.build import BuildError, PartialBuild, StrictError, build_shards, index_shards
from prep.shards import Manifest, ShardSet, read_manifest, verify

FIXTURE = Path(__file__).parent / "fixtures" / "Track00001"
PREP = Path(sys.executable).parent / "prep"
INSTRUMENTS = ["piano", "guitar", "bass"]
STEMS_WITH_AUDIO = ["S00", "S01", "S02", "S03", "S04", "S05", "S07", "S08", "S09", "S10"]
SR_IN = 44100
SECONDS = 3.0


def stem_signal(key: str, seconds: float = SECONDS, rate: int = SR_IN, channels: int = 1,
                seed: int = 0) -> np.ndarray:
    """A distinct loud signal per stem (sine + noise), so a wrongly mixed stem shows."""
    number = int(key[1:])
    rng = np.random.default_rng(seed * 100 + number)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (110.0 * (number + 1)) * t) + 0.05 * rng.standard_normal(t.size)
    if channels == 1:
        return wave.astype(np.float32)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1).astype(
        np.float32)


def make_track(folder: Path, seed: int = 0, seconds: float = SECONDS,
               overrides: dict[str, dict] | None = None) -> Path:
    """Copy the real fixture to ``folder`` and write stems/Sxx.flac for the stems that have
    audio in Slakh (S06 left missing, as in the dataset)."""
    shutil.copytree(FIXTURE, folder)
    (folder / "stems").mkdir()
    for key in STEMS_WITH_AUDIO:
        options = {"rate": SR_IN, "channels": 1, **(overrides or {}).get(key, {})}
        audio = stem_signal(key, seconds, options["rate"], options["channels"], seed)
        sf.write(folder / "stems" / f"{key}.flac", audio, options["rate"])
    return folder


def expected_stem(path: Path) -> np.ndarray:
    """Independent decode: channel mean, soxr HQ (the build's default resampler) to 16 kHz."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return mono if rate == 16000 else soxr.resample(mono, rate, 16000, quality="HQ")


def reference_roll(midi_paths: list[Path], n_frames: int) -> np.ndarray:
    """Union of the files' notes, sampled at frame times t * 500 / 16000 (note by note)."""
    times = np.arange(n_frames) * 500 / 16000
    roll = np.zeros((n_frames, 88), dtype=bool)
    for path in midi_paths:
        for instrument in pretty_midi.PrettyMIDI(str(path)).instruments:
            if instrument.is_drum:
                continue
            for note in instrument.notes:
                if 21 <= note.pitch <= 108:
                    roll[:, note.pitch - 21] |= (times >= note.start) & (times < note.end)
    return roll


def read_track(out: Path, split: str, track_id: str) -> dict[str, np.ndarray]:
    shards = ShardSet(out, split)
    index = [t.track_id for t in shards.tracks].index(track_id)
    fields = ("spec", "roll", "activity", "harmonic_mask", "mix")
    if shards.tracks[index].has_stems:
        fields = fields + ("stems",)
    data = shards.read_track(index, fields)
    data["attrs"] = shards.track_attrs(index)
    return data


def build(root: Path, out: Path, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda line: None)
    return build_shards(root, out, INSTRUMENTS, **kwargs)


# --------------------------------------------------------------------------------------------


def test_fixture_track_mix_roll_and_exclusions(tmp_path: Path) -> None:
    corpus = tmp_path / "flat"  # flat layout: no split folders
    track = make_track(corpus / "Track00001")
    manifest = build(corpus, tmp_path / "out", stems="all")
    assert manifest.skipped == []  # S06 (no audio, no MIDI, not selected) is tolerated
    data = read_track(tmp_path / "out", "train", "Track00001")

    stems = {k: expected_stem(track / "stems" / f"{k}.flac") for k in ("S00", "S02", "S03", "S08")}
    guitar = stems["S00"] + stems["S08"]  # the two distortion guitars summed
    np.testing.assert_allclose(data["stems"][0], stems["S02"], atol=1e-6)
    np.testing.assert_allclose(data["stems"][1], guitar, atol=1e-6)
    np.testing.assert_allclose(data["stems"][2], stems["S03"], atol=1e-6)
    # the mixture is exactly the selected stems: drums, jazz guitar, choir, organ left out
    np.testing.assert_allclose(data["mix"], stems["S02"] + guitar + stems["S03"], atol=1e-6)
    assert data["mix"].shape == (int(SECONDS * 16000),)
    assert data["attrs"]["source_stems"] == {"piano": ["S02"], "guitar": ["S00", "S08"],
                                             "bass": ["S03"]}

    n_frames = 1 + data["mix"].size // 500
    guitar_roll = reference_roll([track / "MIDI" / "S00.mid", track / "MIDI" / "S08.mid"],
                                 n_frames)
    assert guitar_roll.any()
    np.testing.assert_array_equal(data["roll"][:, 1], guitar_roll)
    np.testing.assert_array_equal(data["roll"][:, 0],
                                  reference_roll([track / "MIDI" / "S02.mid"], n_frames))
    np.testing.assert_array_equal(data["activity"], data["roll"].any(axis=-1))
    # X = |STFT(mix)| (stored as float16)
    window = np.sqrt(np.hanning(2049)[:-1])  # periodic Hann, square-rooted
    padded = np.pad(data["mix"].astype(np.float64), 1024)
    frame = padded[500 * 40: 500 * 40 + 2048] * window
    np.testing.assert_allclose(data["spec"][40], np.abs(np.fft.rfft(frame)), rtol=2e-3,
                               atol=2e-3)
    # train activity rate from the roll, over all train frames
    rate = data["roll"].any(axis=-1).mean(axis=0)
    assert manifest.activity_rate == pytest.approx(dict(zip(INSTRUMENTS, rate, strict=True)))
    assert set(manifest.class_weight) == set(INSTRUMENTS)
    assert verify(tmp_path / "out") == []


def test_stereo_and_22k_stems_are_downmixed_and_resampled(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    track = make_track(corpus / "test" / "Track01900",
                       overrides={"S00": {"channels": 2}, "S08": {"rate": 22050},
                                  "S02": {"rate": 16000, "channels": 2}})
    sf.write(track / "stems" / "S03.flac", stem_signal("S03", SECONDS - 0.5), SR_IN)
    manifest = build(corpus, tmp_path / "out")
    data = read_track(tmp_path / "out", "test", "Track01900")
    # a stem shorter by < 1 s is zero-padded, and the manifest says so
    bass = expected_stem(track / "stems" / "S03.flac")
    np.testing.assert_allclose(data["stems"][2][: bass.size], bass, atol=1e-6)
    assert not data["stems"][2][bass.size:].any() and bass.size < data["mix"].size
    assert [w["track"] for w in manifest.warnings] == ["Track01900"]
    assert "S03.flac zero-padded" in manifest.warnings[0]["warning"]
    stereo = sf.read(track / "stems" / "S00.flac", dtype="float32")[0]
    expected_guitar = (soxr.resample(stereo.mean(axis=1), SR_IN, 16000, quality="HQ")
                       + soxr.resample(sf.read(track / "stems" / "S08.flac",
                                               dtype="float32")[0], 22050, 16000, quality="HQ"))
    np.testing.assert_allclose(data["stems"][1], expected_guitar, atol=1e-6)
    piano = sf.read(track / "stems" / "S02.flac", dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(data["stems"][0], piano, atol=1e-6)  # 16 kHz: not resampled
    assert data["attrs"]["source_sample_rates"]["S08"] == 22050


def _edit_metadata(track: Path, edit) -> None:
    path = track / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    edit(meta)
    path.write_text(yaml.safe_dump(meta))


def _robustness_corpus(root: Path) -> dict[str, str]:
    """One good track and one bad track per failure; returns {track id: expected text}."""
    make_track(root / "train" / "Track00001")
    expected = {}

    bad = make_track(root / "train" / "Track00002")
    (bad / "stems" / "S00.flac").write_bytes(b"fLaC" + os.urandom(300))
    expected["Track00002"] = "S00.flac"

    bad = make_track(root / "train" / "Track00004")
    (bad / "stems" / "S02.flac").unlink()
    expected["Track00004"] = "S02.flac"

    bad = make_track(root / "train" / "Track00005")
    (bad / "MIDI" / "S03.mid").unlink()
    expected["Track00005"] = "S03.mid"

    bad = make_track(root / "train" / "Track00006")
    (bad / "MIDI" / "S08.mid").write_text("this is not a MIDI file\n")
    expected["Track00006"] = "S08.mid"

    bad = make_track(root / "train" / "Track00007")
    (bad / "metadata.yaml").write_text("stems: {S00: [unclosed\n")
    expected["Track00007"] = "metadata.yaml"

    bad = make_track(root / "train" / "Track00008")
    (bad / "metadata.yaml").unlink()
    expected["Track00008"] = "metadata.yaml"

    bad = make_track(root / "train" / "Track00009")
    _edit_metadata(bad, lambda m: m["stems"].__setitem__("../../x", m["stems"].pop("S00")))
    expected["Track00009"] = "metadata.yaml"

    bad = make_track(root / "train" / "Track00010")

    def only_drums_and_others(meta: dict) -> None:
        for key in ("S00", "S02", "S03", "S08"):
            del meta["stems"][key]

    _edit_metadata(bad, only_drums_and_others)
    expected["Track00010"] = "none of the requested instruments"

    bad = make_track(root / "train" / "Track00011")
    short = stem_signal("S03", seconds=1.0)
    sf.write(bad / "stems" / "S03.flac", short, SR_IN)  # 2 s shorter than the others
    expected["Track00011"] = "S03.flac"

    make_track(root / "omitted" / "Track00012", seconds=0.5)  # Slakh2100-redux's left-outs
    expected["Track00012"] = "omitted/"
    return expected


def test_bad_tracks_are_skipped_with_reasons(tmp_path: Path) -> None:
    expected = _robustness_corpus(tmp_path / "corpus")
    manifest = build(tmp_path / "corpus", tmp_path / "out")
    reasons = {s["track"]: s["reason"] for s in manifest.skipped}
    assert set(reasons) == set(expected)
    for track_id, text in expected.items():
        assert text in reasons[track_id], (track_id, reasons[track_id])
        assert "\n" not in reasons[track_id]
    assert "not a plain file name" in reasons["Track00009"]
    assert "invalid YAML" in reasons["Track00007"]
    assert "missing metadata" in reasons["Track00008"]
    assert "unreadable MIDI" in reasons["Track00006"]
    assert [t.track_id for s in manifest.shards for t in s.tracks] == ["Track00001"]

    with pytest.raises(StrictError, match="10 track"):
        build(tmp_path / "corpus", tmp_path / "out_strict", strict=True)
    assert (tmp_path / "out_strict" / "manifest.json").is_file()  # still written in full


def test_cli_strict_and_zero_usable_tracks_exit_nonzero(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    bad = make_track(corpus / "train" / "Track00002", seconds=1.0)
    (bad / "MIDI" / "S03.mid").unlink()
    with pytest.raises(BuildError, match="zero usable tracks"):
        build(corpus, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()

    make_track(corpus / "train" / "Track00001", seconds=1.0)
    command = [str(PREP), "build-shards", "--slakh-root", str(corpus), "--out",
               str(tmp_path / "cli"), "--instruments", "piano,guitar,bass", "--no-progress"]
    strict = subprocess.run([*command, "--strict"], capture_output=True, text=True)
    assert strict.returncode != 0
    assert "S03.mid" in strict.stdout and "--strict" in strict.stderr
    assert (tmp_path / "cli" / "manifest.json").is_file()  # the usable track was built
    empty = tmp_path / "empty"
    empty.mkdir()
    none = subprocess.run([str(PREP), "build-shards", "--slakh-root", str(empty), "--out",
                           str(tmp_path / "none")], capture_output=True, text=True)
    assert none.returncode != 0 and "zero usable tracks" in none.stderr


def _split_corpus(root: Path, seconds: float) -> None:
    # Folders disagree with split2 on purpose: the id decides.
    for folder, track_id in [("train", "Track00001"), ("train", "Track00003"),
                             ("train", "Track00026"), ("test", "Track02100"),
                             ("train", "Track00002"), ("validation", "Track01600"),
                             ("test", "Track01900"), ("train", "Track00004")]:
        make_track(root / folder / track_id, seed=int(track_id[5:]), seconds=seconds)


def _shard_digests(manifest: Manifest) -> dict[str, str]:
    return {s.path: s.sha256 for s in manifest.shards}


def test_splits_by_id_and_parts_plus_index_equal_full_build(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _split_corpus(corpus, seconds=2.0)
    full = build(corpus, tmp_path / "full", shard_size_mb=0.3)
    by_split = {s.split: [] for s in full.shards}
    for shard in full.shards:
        by_split[shard.split].extend(t.track_id for t in shard.tracks)
    assert by_split == {"train": ["Track00001", "Track00002", "Track00004", "Track01600",
                                  "Track02100"],
                        "validation": ["Track00026"], "test": ["Track00003", "Track01900"]}
    assert len(full.shards) >= 4

    # part 1 in two worker processes (torch single-threaded there): same bytes
    first = build(corpus, tmp_path / "parts", shard_size_mb=0.3, part=(1, 2), workers=2)
    assert isinstance(first, PartialBuild) and first.pending
    second = build(corpus, tmp_path / "parts", shard_size_mb=0.3, part=(2, 2))
    indexed = index_shards(tmp_path / "parts")
    assert _shard_digests(indexed) == _shard_digests(full)
    assert indexed == full  # provenance (build times) aside
    assert second == full  # the last part finds every shard complete and writes the manifest


def test_killed_build_resumes_to_the_same_shards(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _split_corpus(corpus, seconds=2.5)
    out = tmp_path / "resumed"
    command = [str(PREP), "build-shards", "--slakh-root", str(corpus), "--out", str(out),
               "--shard-size-mb", "0.01", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/*.h5")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()  # really interrupted
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/*.h5")
            if p.with_name(p.name[:-3] + ".build.json").exists()}

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    if kept:
        assert f"resuming: {len(kept)} finished shard(s) kept" in rerun.stdout
    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime  # finished shards were not rebuilt
    resumed = read_manifest(out)
    clean = build(corpus, tmp_path / "clean", shard_size_mb=0.01)
    assert _shard_digests(resumed) == _shard_digests(clean)
    assert resumed == clean
    assert verify(out) == []
    assert not list(out.glob("*/.*.partial"))


def test_stems_modes_and_rerun_with_other_options(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    make_track(corpus / "train" / "Track00001", seconds=1.0)
    make_track(corpus / "validation" / "Track01501", seconds=1.0)
    make_track(corpus / "test" / "Track01900", seconds=1.0)
    out = tmp_path / "out"
    expected = {"none": set(), "test": {"Track01900"}, "eval": {"Track01501", "Track01900"},
                "all": {"Track00001", "Track01501", "Track01900"}}
    for mode, with_stems in expected.items():  # options changed: shards rebuilt, not reused
        manifest = build(corpus, out, stems=mode)
        has = {t.track_id for s in manifest.shards for t in s.tracks if t.has_stems}
        assert has == with_stems, mode
    manifest = build(corpus, out, stems="eval")
    with h5py.File(out / manifest.shards[0].path) as handle:
        assert handle.attrs["stems_mode"] == "eval"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.h5")}
    assert build(corpus, out, stems="eval") == manifest  # rerun: everything kept
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.h5")} == stamps
    forced = build(corpus, out, stems="eval", force=True)  # rebuilt, to the same bytes
    assert forced == manifest
    assert any(p.stat().st_mtime_ns != t for p, t in stamps.items())
    assert build(corpus, out).shards != manifest.shards  # the default is "test"
    only_bass = build_shards(corpus, tmp_path / "bass", ["bass"], progress=False,
                             log=lambda line: None)
    assert only_bass.instruments == ["bass"]
    with pytest.raises(BuildError, match="not in the instrument map"):
        build_shards(corpus, tmp_path / "x", ["drums"], progress=False, log=lambda line: None)
