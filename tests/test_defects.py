"""Tests of prep/defects.py: Slakh's known-bad stems, stems without audio, the bass octave and
the split-leakage check, alone and through ``build_shards``, the manifest and the data card.

Corpora are copies of the real Slakh Track00001 fixture (metadata and MIDI) with short
synthetic stems; MIDI files for the leakage check are written here with pretty_midi, and the
MIDI reader is checked against mido on every fixture file.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from prep import defects as D
from prep.build import build_shards, index_shards
from prep.card import render_card
from prep.shards import Manifest
from prep.slakh import read_metadata

FIXTURE = Path(__file__).parent / "fixtures" / "Track00001"
STEMS_WITH_AUDIO = ["S00", "S01", "S02", "S03", "S04", "S05", "S07", "S08", "S09", "S10"]
SELECTED = {"piano": ["S02"], "guitar": ["S00", "S08"], "bass": ["S03"]}  # default map
GREENBECH = "https://github.com/ethman/slakh-utils/issues/17"
UUID_00357 = "2dfc2e66f4cace81c83f18e2d2f12f74"  # Track00357: S03 (bass) white-noise
UUID_00377 = "6162b7f141fc3ce2325345cb057dee29"  # Track00377: S07 (jazz guitar) white-noise


def make_track(folder: Path, uuid: str | None = None, seconds: float = 1.0,
               without_audio: tuple[str, ...] = ()) -> Path:
    """The fixture track with short stems; ``uuid`` replaces its metadata UUID."""
    shutil.copytree(FIXTURE, folder)
    (folder / "stems").mkdir()
    t = np.arange(int(seconds * 16000)) / 16000
    for key in STEMS_WITH_AUDIO:
        if key not in without_audio:
            sf.write(folder / "stems" / f"{key}.flac",
                     (0.1 * np.sin(2 * np.pi * 110 * (int(key[1:]) + 1) * t)).astype(np.float32),
                     16000)
    if uuid is not None:
        edit_metadata(folder, lambda m: m.__setitem__("UUID", uuid))
    return folder


def edit_metadata(folder: Path, edit) -> None:
    path = folder / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    edit(meta)
    path.write_text(yaml.safe_dump(meta))


def set_rendered(flags: dict[str, bool]):
    def edit(meta: dict) -> None:
        for key, stem in meta["stems"].items():
            stem["audio_rendered"] = flags.get(key, True)
    return edit


# --------------------------------------------------------------------------------------------
# The packaged list
# --------------------------------------------------------------------------------------------


def test_known_defects_file_loads_and_every_entry_is_well_formed() -> None:
    known = D.load_known_defects()
    assert len(known.entries) == 24
    by_source = {key: [e for e in known.entries if e.source == key] for key in known.sources}
    assert len(by_source["greenbech-problem-stems"]) == 22  # "22 stems are found" (issue #17)
    assert [(e.track, e.stem) for e in by_source["slakh-utils-21"]] == [
        ("Track01500", "S12"), ("Track01500", "S13")]
    for entry in known.entries:
        assert re.fullmatch(r"Track0[0-2]\d{3}", entry.track) and 1 <= int(entry.track[5:]) <= 2100
        assert re.fullmatch(r"S\d{2}", entry.stem)
        assert re.fullmatch(r"[0-9a-f]{32}", entry.uuid)
        assert entry.defect in known.classes and entry.source in known.sources
    for source in known.sources.values():
        assert source.url.startswith("https://github.com/ethman/slakh-utils/issues/")
        assert source.author and source.published and source.licence
    text = (Path(D.__file__).parent / "data" / D.KNOWN_DEFECTS_FILE).read_text()
    assert "Retrieved 2026-12-02" in text and "7f7c04cb62a59a5c578dfc2564ff122273818481" in text
    # the list's own example: Track00357 S03 is white noise, only with Slakh's UUID
    assert [(e.stem, e.defect) for e in known.lookup("Track00357", UUID_00357)] == [
        ("S03", "white-noise")]
    assert known.lookup("Track00357", "0" * 32) == [] and known.lookup("Track00357", None) == []


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(uuid="not-a-md5"), "uuid"),
    (lambda e: e.update(defect="gremlins"), "not in classes"),
    (lambda e: e.update(source="hearsay"), "not in sources"),
    (lambda e: e.pop("stem"), "exactly"),
])
def test_malformed_known_defects_are_refused(tmp_path: Path, change, message: str) -> None:
    data = yaml.safe_load((Path(D.__file__).parent / "data" / D.KNOWN_DEFECTS_FILE).read_text())
    change(data["entries"][3])
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(D.DefectsError, match=message):
        D.load_known_defects(path)


# --------------------------------------------------------------------------------------------
# Per-stem checks
# --------------------------------------------------------------------------------------------


def test_known_bad_stem_skips_when_selected_and_is_unused_otherwise(tmp_path: Path) -> None:
    bad = make_track(tmp_path / "Track00357", uuid=UUID_00357)
    found = D.check_stems("Track00357", read_metadata(bad), SELECTED)
    assert [(d.stem, d.kind, d.action, d.instrument) for d in found] == [
        ("S03", "known-bad: white-noise", D.SKIPPED_TRACK, "bass")]
    reason = D.skip_reason(found, bad)
    assert reason.startswith(str(bad)) and "white noise" in reason and GREENBECH in reason
    assert "slakh-utils#17" in reason

    other = make_track(tmp_path / "Track00377", uuid=UUID_00377)
    found = D.check_stems("Track00377", read_metadata(other), SELECTED)  # S07: jazz guitar
    assert [(d.stem, d.action) for d in found] == [("S07", D.NOT_USED)]
    assert D.skip_reason(found, other) is None

    impostor = make_track(tmp_path / "copy" / "Track00357")  # Slakh's id, another UUID
    assert D.check_stems("Track00357", read_metadata(impostor), SELECTED) == []


def test_stems_without_audio_get_a_reason_from_audio_rendered(tmp_path: Path) -> None:
    # S02 (piano) selected, S07 (not selected) marked rendered: both without audio
    track = make_track(tmp_path / "Track00002", without_audio=("S02", "S07"))
    edit_metadata(track, set_rendered({"S02": False, "S06": False}))
    found = {d.stem: d for d in D.check_stems("Track00002", read_metadata(track), SELECTED)}
    assert set(found) == {"S02", "S07"}  # S06 (no audio, marked unrendered, unselected): fine
    assert found["S02"].kind == "not-rendered" and found["S02"].action == D.SKIPPED_TRACK
    assert "audio_rendered: false" in found["S02"].reason and "S02.flac" in found["S02"].reason
    assert found["S07"].kind == "rendered-but-missing" and found["S07"].action == D.NOT_USED

    edit_metadata(track, set_rendered({"S06": False}))  # S02 now claims to be rendered
    (found,) = [d for d in D.check_stems("Track00002", read_metadata(track), SELECTED)
                if d.stem == "S02"]
    assert found.kind == "rendered-but-missing" and "incomplete copy" in found.reason

    edit_metadata(track, lambda m: [s.__setitem__("audio_rendered", False)
                                    for s in m["stems"].values()])  # Slakh2100-orig's flags
    (found,) = D.check_stems("Track00002", read_metadata(track), SELECTED)
    assert found.kind == "no-audio-file" and "cannot tell" in found.reason
    assert D.skip_reason([found], track).startswith(str(track / "stems" / "S02.flac"))


def test_bass_octave_of_the_real_fixture_is_flagged_from_all_src(tmp_path: Path) -> None:
    original = D.read_midi_notes(FIXTURE / "all_src.mid")
    offsets = D.bass_octave_offsets(D.read_midi_notes(FIXTURE / "MIDI" / "S03.mid"), original)
    # Slakh's Track00001: every bass label is 12 semitones above the original, and the notes
    # below B1 there are 24 above (checked note by note with pretty_midi when written)
    assert offsets == {12: 193, 24: 168}
    (flag,) = D.bass_octave_defects("Track00001", read_metadata(FIXTURE), SELECTED, original)
    assert (flag.stem, flag.kind, flag.action, flag.instrument) == (
        "S03", "bass-octave", D.FLAGGED, "bass")
    assert "168 of 361" in flag.reason
    demo = make_track(tmp_path / "Track00001")
    edit_metadata(demo, lambda m: m.__setitem__("lmd_midi_dir", "scorecritic_synth/x.mid"))
    assert D.bass_octave_defects("Track00001", read_metadata(demo), SELECTED, original) == []


# --------------------------------------------------------------------------------------------
# MIDI reader and split leakage
# --------------------------------------------------------------------------------------------


def mido_note_ons(path: Path) -> list[tuple[int, int, int, int]]:
    notes = []
    for track in mido.MidiFile(path).tracks:
        tick, programs = 0, [0] * 16
        for message in track:
            tick += message.time
            if message.type == "program_change":
                programs[message.channel] = message.program
            elif message.type == "note_on" and message.velocity > 0:
                notes.append((tick, message.note, message.channel, programs[message.channel]))
    return notes


@pytest.mark.parametrize("name", ["all_src.mid", *[f"MIDI/{p.name}" for p in
                                                     sorted((FIXTURE / "MIDI").glob("*.mid"))]])
def test_midi_reader_agrees_with_mido(name: str) -> None:
    notes = D.read_midi_notes(FIXTURE / name)
    got = list(zip(notes.ticks.tolist(), notes.pitches.tolist(), notes.channels.tolist(),
                   notes.programs.tolist(), strict=True))
    assert got == mido_note_ons(FIXTURE / name) and got
    assert notes.ticks_per_beat == mido.MidiFile(FIXTURE / name).ticks_per_beat


def test_midi_reader_refuses_garbage_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "text.mid").write_text("not midi at all")
    (tmp_path / "cut.mid").write_bytes((FIXTURE / "all_src.mid").read_bytes()[:5000])
    for name in ("text.mid", "cut.mid"):
        with pytest.raises(D.MidiParseError, match=name):
            D.read_midi_notes(tmp_path / name)


def write_song(path: Path, seed: int, tempo: float = 120.0, edits: int = 0,
               edit_seed: int = 99) -> Path:
    """A random two-part song of 64 beats; ``edits`` notes of it re-pitched."""
    rng = np.random.default_rng(seed)
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    beat = 60.0 / tempo
    parts = []
    for program in (0, 33):
        part = pretty_midi.Instrument(program)
        for step in range(128):
            if rng.random() < 0.7:
                pitch = int(rng.integers(40, 80))
                part.notes.append(pretty_midi.Note(90, pitch, step * beat / 2,
                                                   (step + 1) * beat / 2))
        parts.append(part)
    chooser = np.random.default_rng(edit_seed)
    for index in chooser.choice(len(parts[0].notes), edits, replace=False):
        parts[0].notes[int(index)].pitch += 1
    midi.instruments.extend(parts)
    midi.write(str(path))
    return path


def leak_track(path: Path, track_id: str, split: str, song: str | None = None):
    return D.LeakageTrack(track_id, split, D.fingerprint(D.read_midi_notes(path)), song)


def test_identical_and_near_identical_midi_across_splits_are_reported(tmp_path: Path) -> None:
    song = write_song(tmp_path / "a.mid", seed=1)
    tracks = [
        leak_track(song, "Track00010", "train"),
        leak_track(song, "Track01950", "test"),  # the same file in test
        leak_track(write_song(tmp_path / "a_slow.mid", 1, tempo=90.0), "Track01600",
                   "validation"),  # same notes, other tempo: the ticks say it is the same
        leak_track(write_song(tmp_path / "a_edit.mid", 1, edits=4), "Track01960", "test"),
        leak_track(song, "Track00011", "train"),  # same split as Track00010: not leakage
        leak_track(write_song(tmp_path / "b.mid", seed=2), "Track01970", "test"),
        leak_track(write_song(tmp_path / "c.mid", seed=3), "Track00012", "train"),
    ]
    pairs = {(p.track_a, p.track_b): p for p in D.find_split_leakage(tracks)}
    identical = {k for k, p in pairs.items() if p.kind == "identical"}
    assert identical == {(a, b) for a in ("Track00010", "Track00011")
                         for b in ("Track01600", "Track01950")} | {("Track01600", "Track01950")}
    near = {k: p.similarity for k, p in pairs.items() if p.kind == "near-identical"}
    assert set(near) == {("Track00010", "Track01960"), ("Track00011", "Track01960"),
                         ("Track01600", "Track01960")}
    assert all(0.9 < s < 1.0 for s in near.values())
    exact = D.jaccard(tracks[0].fingerprint.tokens, tracks[3].fingerprint.tokens)
    assert near["Track00010", "Track01960"] == round(exact, 4)
    assert not any("Track01970" in k or "Track00012" in k for k in pairs)  # unrelated songs
    assert D.jaccard(tracks[0].fingerprint.tokens, tracks[5].fingerprint.tokens) < 0.2


def test_same_song_pairs_come_from_the_million_song_id(tmp_path: Path) -> None:
    meta = read_metadata(FIXTURE)
    assert D.song_id(meta) == "TROOHTB128F931F9DF"
    tracks = [leak_track(write_song(tmp_path / "a.mid", 1), "Track00001", "train", "TRX"),
              leak_track(write_song(tmp_path / "b.mid", 2), "Track01900", "test", "TRX"),
              leak_track(write_song(tmp_path / "c.mid", 3), "Track01901", "test", "TRY")]
    (pair,) = D.find_split_leakage(tracks)
    assert (pair.track_a, pair.track_b, pair.kind) == ("Track00001", "Track01900", "same-song")
    assert pair.similarity < D.NEAR_DUPLICATE_JACCARD


# --------------------------------------------------------------------------------------------
# Through the build, the manifest and the card
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    base = tmp_path_factory.mktemp("defects")
    corpus = base / "corpus"
    make_track(corpus / "train" / "Track00001")
    make_track(corpus / "test" / "Track01900")  # the same MIDI as Track00001: leakage
    make_track(corpus / "train" / "Track00357", uuid=UUID_00357)  # known-bad bass: skipped
    make_track(corpus / "train" / "Track00377", uuid=UUID_00377)  # known-bad, not selected
    unrendered = make_track(corpus / "train" / "Track00002", without_audio=("S02",))
    edit_metadata(unrendered, set_rendered({"S02": False, "S06": False}))
    manifest = build_shards(corpus, base / "out", ["piano", "guitar", "bass"], progress=False,
                            log=lambda line: None)
    return base, manifest


def test_build_skips_and_records_defects_in_the_manifest(built: tuple[Path, Manifest]) -> None:
    base, manifest = built
    reasons = {s["track"]: s["reason"] for s in manifest.skipped}
    assert set(reasons) == {"Track00357", "Track00002"}
    assert GREENBECH in reasons["Track00357"] and "white-noise" in reasons["Track00357"]
    assert "audio_rendered: false" in reasons["Track00002"]
    built_ids = {t.track_id for s in manifest.shards for t in s.tracks}
    assert built_ids == {"Track00001", "Track01900", "Track00377"}
    rows = {(d["track"], d["stem"], d["kind"], d["action"]) for d in manifest.defects}
    assert rows == {
        ("Track00357", "S03", "known-bad: white-noise", D.SKIPPED_TRACK),
        ("Track00377", "S07", "known-bad: white-noise", D.NOT_USED),
        ("Track00002", "S02", "not-rendered", D.SKIPPED_TRACK),
        *{(t, "S03", "bass-octave", D.FLAGGED) for t in built_ids},
    }
    assert [(p["track_a"], p["split_a"], p["track_b"], p["split_b"], p["kind"])
            for p in manifest.split_leakage] == [
        ("Track00001", "train", "Track01900", "test", "identical"),
        ("Track00377", "train", "Track01900", "test", "identical")]
    check = D.read_report(base / "out")["defect_checks"]["split_leakage"]
    assert check["split_scheme"] == "split2" and check["tracks"] == 3
    indexed = index_shards(base / "out")  # prep index keeps them
    assert (indexed.defects, indexed.split_leakage) == (manifest.defects,
                                                        manifest.split_leakage)


def test_card_lists_defects_and_leakage(built: tuple[Path, Manifest]) -> None:
    _, manifest = built
    text = render_card(manifest)
    section = text[text.index("## Known defects and split leakage"):]
    section = section[:section.index("\n## ", 5)]
    assert "**6 defect(s) found**" in section  # 3 bass flags, 2 known-bad, 1 not rendered
    for needle in ("`Track00357`", "known-bad: white-noise", D.SKIPPED_TRACK, D.NOT_USED,
                   "not-rendered", "bass-octave", "### Split leakage", "**2 pair(s)**",
                   "identical", GREENBECH):
        assert needle in section, needle
    clean = replace(manifest, split_leakage=[])
    assert "**None found**" in render_card(clean)
    old = replace(manifest, defects=[], split_leakage=[],
                  problems=[f"OUT/defects.json: {D.REPORT_MISSING} (rebuild to check)"])
    assert "Not recorded" in render_card(old) and "None found" not in render_card(old)


def test_manifest_of_an_unchecked_build_says_so(built: tuple[Path, Manifest],
                                                 tmp_path: Path) -> None:
    blank = replace(built[1], defects=[], split_leakage=[], problems=[])
    manifest = replace(blank, problems=[])
    D.apply_report(manifest, tmp_path)  # no OUT/defects.json: built before the checks
    assert manifest.defects == [] and manifest.split_leakage == []
    assert D.REPORT_MISSING in manifest.problems[0]
    pair = {"track_a": "Track00001", "split_a": "train", "track_b": "Track01900",
            "split_b": "test", "kind": "identical", "similarity": 1.0}
    D.write_report(tmp_path, {"defects": [], "split_leakage": [pair], "defect_checks": {}})
    checked = replace(blank, problems=[])
    D.apply_report(checked, tmp_path)
    assert (checked.problems, checked.defects, checked.split_leakage) == ([], [], [pair])
