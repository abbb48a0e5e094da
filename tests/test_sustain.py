"""The sustain pedal (MIDI CC 64) in the rolls: prep.features.apply_sustain, the build's
``--sustain/--no-sustain`` and what the real Slakh fixture holds.

Expected note ends are written out by hand from the MIDI sustain rule (a note released while
the pedal is down sounds until the pedal is lifted or the same key is struck again).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from click.testing import CliRunner

from prep import features
from prep.build import build_shards, read_stem_notes
from prep.cli import main
from prep.shards import ShardSet, read_manifest
from prep.slakh import load_instrument_map, read_metadata, select_stems

FIXTURE = Path(__file__).parent / "fixtures" / "Track00001"
INSTRUMENTS = ["piano", "guitar", "bass"]


def sustained(notes: list[pretty_midi.Note], pedal: list[tuple[float, int]],
              end_s: float = 10.0) -> list[tuple[int, float, float]]:
    """apply_sustain on pretty_midi notes and CC64 (time, value) events."""
    result, _ = features.apply_sustain(
        [(n.pitch, n.start, n.end) for n in notes], features.pedal_intervals(pedal, end_s))
    return result


def test_note_released_under_the_pedal_lasts_until_it_is_lifted() -> None:
    notes = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.1, 0.4)]
    assert sustained(notes, [(0.2, 127), (2.0, 0)]) == [(60, 0.0, 2.0), (64, 0.1, 2.0)]


def test_note_released_before_the_pedal_or_held_past_it_is_unchanged() -> None:
    notes = [pretty_midi.Note(80, 60, 0.0, 0.5),  # released before the pedal goes down
             pretty_midi.Note(80, 62, 1.0, 3.0)]  # still held when it is lifted
    assert sustained(notes, [(1.0, 127), (2.0, 0)]) == [(60, 0.0, 0.5), (62, 1.0, 3.0)]


def test_restrike_of_the_same_key_cuts_the_sustained_note() -> None:
    notes = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 60, 1.0, 1.2),
             pretty_midi.Note(80, 67, 0.0, 0.5)]  # another pitch is not cut
    assert sustained(notes, [(0.2, 127), (2.0, 0)]) == [
        (60, 0.0, 1.0), (60, 1.0, 2.0), (67, 0.0, 2.0)]


def test_pedal_never_lifted_holds_to_the_end_of_the_track_or_the_next_note() -> None:
    notes = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.0, 0.5),
             pretty_midi.Note(80, 64, 3.0, 3.5)]
    assert sustained(notes, [(0.1, 100)], end_s=6.0) == [
        (60, 0.0, 6.0), (64, 0.0, 3.0), (64, 3.0, 6.0)]


def test_without_pedal_events_nothing_changes() -> None:
    notes = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.2, 0.9)]
    assert sustained(notes, []) == [(60, 0.0, 0.5), (64, 0.2, 0.9)]
    # pedal events of other values only (never >= 64): still nothing
    assert sustained(notes, [(0.1, 10), (0.3, 63)]) == [(60, 0.0, 0.5), (64, 0.2, 0.9)]


def test_pedal_boundaries_and_repeated_values() -> None:
    """Release at the press is caught, release at the lift is not; the half-pedal values a
    controller sends on the way down (64..127 repeated) are one press."""
    pedal = [(1.0, 64), (1.2, 90), (1.5, 127), (2.0, 30), (2.1, 0), (3.0, 127), (4.0, 0)]
    assert features.pedal_intervals(pedal, 10.0) == [(1.0, 2.0), (3.0, 4.0)]
    notes = [pretty_midi.Note(80, 60, 0.0, 1.0),  # off exactly at the press
             pretty_midi.Note(80, 62, 1.5, 2.0),  # off exactly at the lift
             pretty_midi.Note(80, 64, 2.5, 3.5)]  # off in the second press
    assert sustained(notes, pedal) == [(60, 0.0, 2.0), (62, 1.5, 2.0), (64, 2.5, 4.0)]
    # events at or after the end of the track are ignored; an open press closes at the end
    assert features.pedal_intervals([(1.0, 127), (5.0, 0)], 3.0) == [(1.0, 3.0)]
    assert features.pedal_intervals([(4.0, 127)], 3.0) == []


def _midi_with_pedal(path: Path, program: int = 0) -> None:
    """One instrument: C4 0.0-0.5 and E4 0.1-0.4 under a pedal 0.2-1.5; G4 2.0-2.2 with the
    pedal pressed at 2.1 and never lifted."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.1, 0.4),
                  pretty_midi.Note(80, 67, 2.0, 2.2)]
    inst.control_changes = [pretty_midi.ControlChange(64, 127, 0.2),
                            pretty_midi.ControlChange(64, 0, 1.5),
                            pretty_midi.ControlChange(64, 127, 2.1)]
    midi.instruments = [inst]
    midi.write(str(path))


def test_read_stem_notes_applies_the_files_pedal(tmp_path: Path) -> None:
    path = tmp_path / "S00.mid"
    _midi_with_pedal(path)
    stem = read_stem_notes(path, sustain=True, end_s=3.0)
    assert stem.pedal_events == 3 and stem.sustained == 3
    assert sorted((p, round(s, 3), round(e, 3)) for p, s, e in stem.notes) == [
        (60, 0.0, 1.5), (64, 0.1, 1.5), (67, 2.0, 3.0)]
    plain = read_stem_notes(path, sustain=False, end_s=3.0)
    assert sorted((p, round(s, 3), round(e, 3)) for p, s, e in plain.notes) == [
        (60, 0.0, 0.5), (64, 0.1, 0.4), (67, 2.0, 2.2)]


def _corpus_with_pedalled_piano(root: Path, seconds: float = 3.0) -> Path:
    """The real fixture with audio written here and its piano stem S02 replaced by a MIDI
    file with a pedal."""
    track = root / "Track00001"
    shutil.copytree(FIXTURE, track)
    (track / "stems").mkdir()
    meta = read_metadata(track)
    rng = np.random.default_rng(0)
    for key in meta.stems:
        if (track / "MIDI" / f"{key}.mid").is_file():
            sf.write(track / "stems" / f"{key}.flac",
                     0.1 * rng.standard_normal(int(seconds * 44100)).astype(np.float32), 44100)
    _midi_with_pedal(track / "MIDI" / "S02.mid", program=1)
    return track


def _expected_piano_roll(n_frames: int, sustain: bool) -> np.ndarray:
    times = np.arange(n_frames) * features.HOP_LENGTH / features.SAMPLE_RATE
    ends = (1.5, 1.5, 3.0) if sustain else (0.5, 0.4, 2.2)
    roll = np.zeros((n_frames, 88), dtype=bool)
    for pitch, start, end in zip((60, 64, 67), (0.0, 0.1, 2.0), ends, strict=True):
        roll[:, pitch - 21] |= (times >= start) & (times < end)
    return roll


def test_build_applies_the_pedal_and_records_the_setting(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _corpus_with_pedalled_piano(corpus)
    for sustain in (True, False):
        out = tmp_path / f"out-{sustain}"
        manifest = build_shards(corpus, out, INSTRUMENTS, stems="none", sustain=sustain,
                                progress=False, log=lambda line: None)
        assert manifest.source["sustain_pedal"] is sustain
        shards = ShardSet(out, "train")
        data = shards.read_track(0, ("roll", "harmonic_mask"))
        n_frames = data["roll"].shape[0]
        expected = _expected_piano_roll(n_frames, sustain)
        np.testing.assert_array_equal(data["roll"][:, 0], expected)
        np.testing.assert_array_equal(data["harmonic_mask"][:, 0],
                                      features.harmonic_mask(expected))
        assert shards.track_attrs(0)["sustained_notes"] == (3 if sustain else 0)
        assert read_manifest(out).source["sustain_pedal"] is sustain


def test_cli_flag_and_rerun_with_the_other_setting_rebuilds(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _corpus_with_pedalled_piano(corpus)
    out = tmp_path / "out"
    base = ["build-shards", "--slakh-root", str(corpus), "--out", str(out), "--stems", "none",
            "--no-progress"]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 0, result.output
    assert read_manifest(out).source["sustain_pedal"] is True  # the default
    result = CliRunner().invoke(main, [*base, "--no-sustain"])
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output  # another setting: the shard is rebuilt
    assert read_manifest(out).source["sustain_pedal"] is False
    roll = ShardSet(out, "train").read_track(0, ("roll",))["roll"]
    np.testing.assert_array_equal(roll[:, 0], _expected_piano_roll(roll.shape[0], False))


def test_slakh_fixture_has_no_sustain_pedal() -> None:
    """Slakh's Track00001: none of its stems' MIDI files has a CC64 event, so its rolls are
    the same with and without --sustain (other controllers: CC 0/1/7/10/11/32/91/93)."""
    meta = read_metadata(FIXTURE)
    selected = select_stems(meta, load_instrument_map(), INSTRUMENTS)
    assert selected == {"piano": ["S02"], "guitar": ["S00", "S08"], "bass": ["S03"]}
    for key in meta.stems:
        path = FIXTURE / "MIDI" / f"{key}.mid"
        if not path.is_file():
            continue
        on, off = read_stem_notes(path, sustain=True), read_stem_notes(path, sustain=False)
        assert on.pedal_events == 0 and on.sustained == 0, key
        assert on.notes == off.notes, key


@pytest.mark.parametrize("seconds", [6.0, 30.0])
def test_generated_piano_pedal_changes_with_the_chords(seconds: float) -> None:
    """The generator's piano parts hold CC64 only inside a chord: pressed a 32nd note after a
    chord starts, lifted when the chord changes (or at the bar line); no other part pedals."""
    from prep import synth_music as music

    pedalled = 0
    for number in range(1, 13):
        rng = np.random.default_rng([0, number])
        song = music.compose_song(rng, seconds)
        parts = music.arrange(rng, song, music.draw_variant(rng, number))
        for part in parts:
            if part.role != "piano":
                assert part.pedal == [], part.role
                continue
            for down, up in part.pedal:
                bar, offset = divmod(down - music.PEDAL_DELAY_STEPS, music.STEPS_PER_BAR)
                spans = music._chord_spans(song.bars[int(bar)])
                assert (offset, up - bar * music.STEPS_PER_BAR) in spans
            inst = part.to_instrument(song, "piano")
            events = [(c.number, c.value) for c in inst.control_changes]
            assert events == [(64, 127), (64, 0)] * (len(events) // 2)
            assert all(c.time <= seconds - music.TAIL_S + 1e-9 for c in inst.control_changes)
            pedalled += bool(events)
    assert pedalled >= 3
