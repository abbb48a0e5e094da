"""Tests of prep/music_stats.py: statistics recomputed here note by note, on hand-made notes,
on the real Slakh Track00001 fixture and on the generator's music."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from prep import music_stats as ms
from prep.music_stats import (
    MusicStats,
    MusicStatsError,
    count_notes,
    load_reference,
    measure_corpus,
    measure_track,
    reference_stats,
)

FIXTURE = Path(__file__).parent / "fixtures" / "Track00001"
CLASSES = ("piano", "guitar", "bass")


def frame_roll(notes: list[tuple[int, float, float]], n_frames: int) -> np.ndarray:
    """[T, 128] bool: note active at frame t iff start <= t * 500 / 16000 < end."""
    times = np.arange(n_frames) * 500 / 16000
    roll = np.zeros((n_frames, 128), dtype=bool)
    for pitch, start, end in notes:
        roll[:, pitch] |= (times >= start) & (times < end)
    return roll


def test_counts_of_hand_made_notes() -> None:
    seconds = 2.0  # 32000 samples at 16 kHz: 65 frames
    notes = {
        "piano": [(60, 0.0, 1.0), (64, 0.0, 0.5), (60, 1.5, 1.6)],  # 35 frames, poly 2 then 1
        "bass": [(40, 0.25, 1.25)],
        # guitar absent
    }
    counts = count_notes(notes, CLASSES, seconds)
    assert counts.frames == 65 and counts.seconds == 2.0 and counts.tracks == 1
    rolls = {c: frame_roll(notes.get(c, []), 65) for c in CLASSES}
    active = [rolls[c].any(axis=1) for c in CLASSES]
    assert counts.active_frames == [int(a.sum()) for a in active]
    assert counts.pitch_frames == [int(rolls[c].sum()) for c in CLASSES]
    assert counts.notes == [3, 0, 1]
    together = np.sum(active, axis=0)
    assert counts.together == [int((together == k).sum()) for k in range(4)]
    stats = MusicStats.from_counts(counts, sustain=True)
    piano = stats.classes["piano"]
    assert piano.active_fraction == pytest.approx(active[0].mean())
    assert piano.mean_polyphony == pytest.approx(rolls["piano"][active[0]].sum(1).mean())
    assert piano.notes_per_second == pytest.approx(1.5)
    assert piano.notes_per_active_second == pytest.approx(3 / (active[0].sum() / 32))
    assert stats.classes["guitar"] == ms.ClassStats(0.0, 0.0, 0.0, 0.0)
    assert sum(stats.together) == pytest.approx(1.0)


def test_notes_outside_the_track_or_the_piano_range_are_not_counted() -> None:
    notes = {"piano": [(20, 0.0, 0.5), (60, 0.5, 0.4), (60, 3.0, 3.5), (61, 0.1, 0.2)]}
    counts = count_notes(notes, CLASSES, 2.0)
    assert counts.notes[0] == 1
    with pytest.raises(ValueError, match="> 0 s"):
        count_notes(notes, CLASSES, 0.0)


def test_aggregate_is_duration_weighted() -> None:
    short = count_notes({"piano": [(60, 0.0, 1.0)]}, CLASSES, 1.0)  # always active
    long = count_notes({"bass": [(40, 0.0, 3.0)]}, CLASSES, 3.0)  # piano never
    total = MusicStats.from_counts(short + long, sustain=True)
    assert total.tracks == 2 and total.frames == short.frames + long.frames
    assert total.classes["piano"].active_fraction == pytest.approx(
        short.active_frames[0] / (short.frames + long.frames))
    assert MusicStats.from_dict(total.to_dict()) == total
    with pytest.raises(ValueError, match="classes"):
        _ = short + ms.MusicCounts(("piano",))


def test_fixture_statistics_recomputed_from_pretty_midi() -> None:
    stats = measure_track(FIXTURE)
    end = pretty_midi.PrettyMIDI(str(FIXTURE / "all_src.mid")).get_end_time()  # no audio
    n_frames = 1 + int(round(end * 16000)) // 500
    assert stats.frames == n_frames and stats.tracks == 1
    stems = {"piano": ["S02"], "guitar": ["S00", "S08"], "bass": ["S03"]}  # default map
    active = []
    for name, keys in stems.items():
        notes = [(n.pitch, n.start, n.end) for k in keys
                 for i in pretty_midi.PrettyMIDI(str(FIXTURE / "MIDI" / f"{k}.mid")).instruments
                 for n in i.notes]
        roll = frame_roll(notes, n_frames)[:, 21:109]
        mask = roll.any(axis=1)
        active.append(mask)
        got = stats.classes[name]
        assert got.active_fraction == pytest.approx(mask.mean())
        assert got.mean_polyphony == pytest.approx(roll[mask].sum(1).mean())
        assert got.notes_per_second == pytest.approx(len(notes) / (n_frames - 1) / 500 * 16000,
                                                     rel=1e-3)
    together = np.sum(active, axis=0)
    assert stats.together == pytest.approx([(together == k).mean() for k in range(4)])
    # no CC64 in the fixture: the pedal changes nothing
    assert measure_track(FIXTURE, sustain=False).classes == stats.classes


def test_packaged_reference_is_the_fixture_measured_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """prep/data/slakh_track00001_music_stats.json is what --reference writes today."""
    monkeypatch.chdir(FIXTURE.parents[2])  # the repository root, as the file records
    packaged = json.loads((Path(ms.__file__).parent / "data" / ms.REFERENCE_FILE).read_text())
    assert packaged == json.loads(json.dumps(reference_stats(Path("tests/fixtures/Track00001"))))
    stats, info = load_reference(sustain=True)
    assert stats.classes == measure_track(FIXTURE).classes
    assert "CC BY 4.0" in info["_source"] and "Slakh2100" in info["_source"]


def test_audio_length_wins_over_midi_end(tmp_path: Path) -> None:
    track = tmp_path / "Track00001"
    shutil.copytree(FIXTURE, track)
    (track / "all_src.mid").unlink()
    midi_only = measure_track(track)  # the selected stems' last MIDI event
    assert midi_only.seconds == pytest.approx(max(
        pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{k}.mid")).get_end_time()
        for k in ("S00", "S02", "S03", "S08")), abs=1 / 16000)
    sf.write(track / "mix.flac", np.zeros(44100 * 10, dtype=np.float32), 44100)
    assert measure_track(track).seconds == pytest.approx(10.0)


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(MusicStatsError, match=str(tmp_path / "nothing" / "metadata.yaml")):
        measure_track(tmp_path / "nothing")
    track = tmp_path / "corpus" / "Track00002"
    shutil.copytree(FIXTURE, track)
    (track / "MIDI" / "S02.mid").unlink()
    with pytest.raises(MusicStatsError, match=str(track / "MIDI" / "S02.mid")):
        measure_track(track)
    shutil.copytree(FIXTURE, tmp_path / "corpus" / "Track00001")
    corpus = measure_corpus(tmp_path / "corpus")  # the bad track is left out, with its reason
    assert corpus.tracks == 1
    assert [t for t, _ in corpus.skipped] == ["Track00002"]
    assert "S02.mid" in corpus.skipped[0][1]
    only = measure_corpus(tmp_path / "corpus", track_ids={"Track00001"})
    assert only.skipped == () and only.classes == corpus.classes
    with pytest.raises(MusicStatsError, match="no track could be measured"):
        measure_corpus(tmp_path / "corpus", track_ids={"Track00002"})


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert ms.main([str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "piano" in out and "classes sounding together" in out
    assert ms.main([str(FIXTURE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tracks"] == 1
    assert ms.main(["/nonexistent/corpus"]) == 1
    assert "/nonexistent/corpus" in capsys.readouterr().err


def test_generated_music_is_near_slakh() -> None:
    """The generator's statistics, straight from its parts (no rendering), 60 tracks of 60 s:
    piano near Slakh's 41 %, guitar and bass in Slakh-like ranges, and frames without any
    target as well as frames with all three."""
    from prep import features
    from prep import synth_music as music

    total = ms.MusicCounts(CLASSES)
    for number in range(1, 61):
        rng = np.random.default_rng([0, number])
        song = music.compose_song(rng, 60.0)
        notes: dict[str, list[tuple[int, float, float]]] = {c: [] for c in CLASSES}
        for part in music.arrange(rng, song, music.draw_variant(rng, number)):
            if part.role in CLASSES:
                inst = part.to_instrument(song, part.role)
                own = [(n.pitch, n.start, n.end) for n in inst.notes]
                pedal = [(c.time, c.value) for c in inst.control_changes if c.number == 64]
                own, _ = features.apply_sustain(own, features.pedal_intervals(pedal, 60.0))
                notes[part.role].extend(own)
        total = total + count_notes(notes, CLASSES, 60.0)
    stats = MusicStats.from_counts(total, sustain=True)
    assert 0.35 <= stats.classes["piano"].active_fraction <= 0.55
    assert 0.08 <= stats.classes["guitar"].active_fraction <= 0.3
    assert 0.5 <= stats.classes["bass"].active_fraction <= 0.8
    assert stats.together[0] >= 0.05 and stats.together[3] >= 0.02
