"""Unaligned scores (``prep synth-slakh --unaligned-scores``, prep/unaligned.py) and their
alignment (``prep align``, prep/align.py) on a tiny rendered corpus.

The warp is checked against the files themselves (score onsets read back with pretty_midi),
the alignment against that warp, and the aligned corpus by building shards from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pretty_midi
import pytest
import yaml
from click.testing import CliRunner

from prep import cli
from prep.build import build_shards
from prep.cli import main
from prep.synth import synth_slakh
from prep.unaligned import SCORE_KEY, ScoreError, read_warp, score_to_performance

pytest.importorskip("synctoolbox")

from prep.align import DEFAULT_MAX_COST, SUMMARY_FILE, align_corpus, score_timing  # noqa: E402

TRACKS, SECONDS, SEED = 3, 8.0, 0


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def starts(path: Path) -> list[tuple[int, int, float]]:
    """(instrument index, pitch, start) of every note, sorted."""
    midi = pretty_midi.PrettyMIDI(str(path))
    return sorted((i, n.pitch, n.start) for i, inst in enumerate(midi.instruments)
                  for n in inst.notes)


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unaligned") / "corpus"
    synth_slakh(out, TRACKS, SECONDS, SEED, workers=2, progress=False, unaligned_scores=True)
    return out


@pytest.fixture(scope="module")
def aligned(unaligned: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("aligned") / "corpus"
    return out, align_corpus(unaligned, out, progress=False, log=lambda line: None)


def test_unaligned_scores_are_deterministic_and_leave_slakh_files_alone(
        unaligned: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth_slakh(again, TRACKS, SECONDS, SEED, workers=1, progress=False, unaligned_scores=True)
    assert tree_bytes(again) == tree_bytes(unaligned)
    plain = tmp_path / "plain"
    synth_slakh(plain, TRACKS, SECONDS, SEED, workers=2, progress=False)
    with_scores, without = tree_bytes(unaligned), tree_bytes(plain)
    for name, data in without.items():
        if name.endswith("metadata.yaml"):  # the same, plus the distortion's key
            meta = yaml.safe_load(with_scores[name])
            assert set(meta.pop(SCORE_KEY)) >= {"tempo_factor", "curve_depth", "jitter_s"}
            assert meta == yaml.safe_load(data)
        elif name != "synth_slakh.json":
            assert with_scores[name] == data, name
    extra = sorted(set(with_scores) - set(without))
    assert extra and all("/score/" in name for name in extra)


def test_warp_maps_score_onsets_onto_performance_onsets_exactly(unaligned: Path) -> None:
    for track in sorted(unaligned.glob("*/Track*")):
        warp = read_warp(track / "score" / "warp.json")
        params = yaml.safe_load((track / "metadata.yaml").read_text())[SCORE_KEY]
        assert abs(np.log(params["tempo_factor"])) >= np.log(1.05) - 1e-12
        for score, performance in [(track / "score" / "all_src.mid", track / "all_src.mid"),
                                   *[(p, track / "MIDI" / p.name)
                                     for p in sorted((track / "score" / "MIDI").glob("*.mid"))]]:
            score_notes, performance_notes = starts(score), starts(performance)
            assert len(score_notes) == len(performance_notes) > 0, score
            moved = score_to_performance(np.array([s for _, _, s in score_notes]), warp)
            mapped = sorted((i, p, float(t)) for (i, p, _), t in zip(score_notes, moved,
                                                                        strict=True))
            assert mapped == performance_notes, score  # exact, float for float
            shifts = np.array([s for _, _, s in score_notes]) - moved
            assert np.abs(shifts).max() > 0.05, score  # the score really is off


def test_align_brings_onsets_onto_the_audio(aligned: tuple[Path, dict]) -> None:
    out, summary = aligned
    assert summary["aligned"] == TRACKS and summary["skipped"] == []
    overall = summary["onset_error"]["overall"]
    before, after = overall["before"], overall["after"]
    assert before["median_s"] > 0.2  # a tempo change of at least 5 %
    # measured on this corpus: see benchmarks/perf/align_speed.py for the figures
    assert after["median_s"] < before["median_s"] / 4
    # the goals, on every class: median <= 25 ms, >= 90 % of onsets within 50 ms
    # (measured here 3-8 ms and 97-100 %)
    for name, phases in summary["onset_error"].items():
        assert phases["after"]["median_s"] <= 0.025, name
        assert phases["after"]["within_50ms"] >= 0.9, name
    for track in sorted(p for p in out.glob("*/Track*") if p.is_dir()):
        assert (track / "mix.flac").is_symlink() and (track / "stems").is_symlink()
        report = (out / "alignment" / f"{track.name}.json").read_text()
        assert "normalised_cost" in report and "onset_error" in report


def test_onset_rows_mark_the_clicks_and_the_notes() -> None:
    from prep.align import (
        AUDIO_RATE,
        FEATURE_RATE,
        ONSET_DECAY,
        ScoreNote,
        audio_onset_row,
        score_onset_row,
    )

    clicks = [0.5, 1.25, 2.0, 2.9, 3.3]
    audio = np.zeros(4 * AUDIO_RATE)
    rng = np.random.default_rng(0)
    for t in clicks:  # 20-ms noise bursts, decaying
        start = int(t * AUDIO_RATE)
        burst = rng.standard_normal(441) * np.exp(-np.arange(441) / 100)
        audio[start:start + 441] += burst
    n = 4 * FEATURE_RATE
    row = audio_onset_row(audio, n)[0]
    peaks = np.flatnonzero(row == 1.0)  # an onset's frame holds the decay's first value, 1
    assert len(peaks) == len(clicks)
    assert np.all(np.abs(peaks / FEATURE_RATE - np.array(clicks)) <= 1.5 / FEATURE_RATE)
    assert not audio_onset_row(np.zeros(AUDIO_RATE), 50).any()  # silence: no onsets

    notes = [ScoreNote("S00", "Drums", 36, t, t + 0.1, 100, True) for t in (0.5, 1.0)]
    notes.append(ScoreNote("S01", "Piano", 60, 1.0, 1.5, 80, False))
    row = score_onset_row(notes, n)[0]
    np.testing.assert_allclose(row[25:35], ONSET_DECAY)  # drums count; one onset per frame
    np.testing.assert_allclose(row[50:60], ONSET_DECAY)


def test_method_none_keeps_the_scores_timing_for_the_unaligned_baseline(
        unaligned: Path, aligned: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "unaligned-as-is"
    result = CliRunner().invoke(main, ["align", "--corpus", str(unaligned), "--out", str(out),
                                       "--method", "none", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / SUMMARY_FILE).read_text())
    overall = summary["onset_error"]["overall"]
    assert summary["aligned"] == TRACKS and summary["method"].startswith("none")
    assert overall["after"] == overall["before"] == aligned[1]["onset_error"]["overall"][
        "before"]
    for track in sorted(p for p in out.glob("*/Track*") if p.is_dir()):
        source = next(unaligned.glob(f"*/{track.name}")) / "score"
        assert tree_bytes(track / "MIDI") == tree_bytes(source / "MIDI")
        assert (track / "all_src.mid").read_bytes() == (source / "all_src.mid").read_bytes()
    assert score_timing(out)["method"].startswith("none")
    bad = CliRunner().invoke(main, ["align", "--corpus", str(unaligned), "--out", str(out),
                                    "--method", "magic"])
    assert bad.exit_code != 0 and "magic" in bad.output


def test_aligned_corpus_builds_shards(aligned: tuple[Path, dict], tmp_path: Path) -> None:
    """With 2 workers, in the process that rendered and aligned (synth_slakh's executor once
    made joblib's workers fail here)."""
    out, summary = aligned
    manifest = build_shards(out, tmp_path / "data", ["piano", "guitar", "bass"], workers=2,
                            shard_size_mb=0.5, progress=False, log=lambda line: None)
    assert manifest.skipped == [] or all("instrument" in s["reason"] for s in manifest.skipped)
    assert manifest.n_tracks + len(manifest.skipped) == TRACKS and manifest.n_tracks >= 1

    # the shards say which alignment made their scores; the data card prints it
    timing = manifest.source["score_timing"]
    after = summary["onset_error"]["overall"]["after"]
    assert timing["source"] == "prep align" and timing["tracks_aligned"] == TRACKS
    assert timing["onset_error"]["after"] == after and str(out) not in json.dumps(timing)
    assert score_timing(tmp_path) == {"source": "corpus MIDI"}  # a corpus without alignment.json
    with h5py.File(tmp_path / "data" / manifest.shards[0].path) as handle:
        assert json.loads(handle.attrs["score_timing"]) == timing
    card = tmp_path / "card.md"
    assert CliRunner().invoke(main, ["card", str(tmp_path / "data"), "--out", str(card)]
                              ).exit_code == 0
    text = card.read_text()
    assert "synthetic demo corpus" in text  # the render's settings travel with the alignment
    assert ("scores aligned to the audio by `prep align`" in text
            and f"median {1000 * after['median_s']:.0f} ms" in text)


def test_garbage_scores_are_skipped_with_a_reason(unaligned: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(unaligned, corpus, symlinks=True)
    tracks = sorted(corpus.glob("*/Track*"))
    # aligned once intact: a rerun that skips a track leaves nothing of it to build from
    align_corpus(corpus, tmp_path / "out", progress=False, log=lambda line: None)
    unreadable = tracks[0] / "score" / "MIDI" / "S00.mid"
    unreadable.write_bytes(b"MThd garbage")
    # a readable score of random notes: not this audio's music
    wrong = tracks[1] / "score"
    rng = np.random.default_rng(0)
    for path in [wrong / "all_src.mid", *sorted((wrong / "MIDI").glob("*.mid"))]:
        midi = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0)
        for start in np.sort(rng.uniform(0, SECONDS, 40)):
            inst.notes.append(pretty_midi.Note(90, int(rng.integers(30, 90)), start, start + 0.3))
        midi.instruments.append(inst)
        midi.write(str(path))
    shutil.rmtree(tracks[2] / "score")
    lines: list[str] = []
    summary = align_corpus(corpus, tmp_path / "out", progress=False, log=lines.append)
    reasons = {s["track"]: s["reason"] for s in summary["skipped"]}
    assert str(unreadable) in reasons[tracks[0].name] and "unreadable" in reasons[tracks[0].name]
    assert "--max-cost" in reasons[tracks[1].name]
    assert str(tracks[2] / "score" / "all_src.mid") in reasons[tracks[2].name]
    assert all("\n" not in r for r in reasons.values()) and len(lines) == 3
    assert summary["aligned"] == 0 and (tmp_path / "out" / SUMMARY_FILE).is_file()
    assert not [p for p in (tmp_path / "out").glob("*/Track*") if p.is_dir()]
    assert not list((tmp_path / "out" / "alignment").iterdir())


def test_cli_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = CliRunner().invoke(main, ["align", "--corpus", str(missing), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0 and str(missing) in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["align", "--corpus", str(empty), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0 and str(empty) in result.output and "no track" in result.output
    result = CliRunner().invoke(main, ["align", "--corpus", str(empty), "--out",
                                       str(empty / "inside")])
    assert result.exit_code != 0 and "outside the corpus" in result.output
    # a pipeline whose corpus stage rendered nothing (corpus.preset: none)
    result = CliRunner().invoke(main, ["align", "--corpus", str(empty), "--out",
                                       str(tmp_path / "out"), "--allow-empty", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["aligned"] == 0


def test_cli_default_max_cost_is_the_aligners() -> None:
    assert cli.DEFAULT_MAX_COST == DEFAULT_MAX_COST


def test_shared_filtering_leaves_the_features_unchanged(unaligned: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """prep.align's speed-up (filters designed once, filtering shared by the pitch and onset
    features) gives synctoolbox's own features, bit for bit."""
    from scipy import signal
    from synctoolbox.feature import filterbank, pitch, pitch_onset
    from synctoolbox.feature.chroma import pitch_to_chroma, quantize_chroma
    from synctoolbox.feature.dlnco import pitch_onset_features_to_DLNCO

    from prep.align import AUDIO_RATE, FEATURE_RATE, MIDI_HIGH, MIDI_LOW, audio_features, read_mix

    audio, _ = read_mix(sorted(unaligned.glob("*/Track*"))[0] / "mix.flac")
    fast = [audio_features(audio) for _ in range(2)]  # the second with warm caches
    with monkeypatch.context() as patch:  # synctoolbox as installed
        for module in (pitch, pitch_onset):
            patch.setattr(module, "signal", signal)
            patch.setattr(module, "generate_filterbank", filterbank.generate_filterbank)
            patch.setattr(module, "generate_list_of_downsampled_audio",
                          filterbank.generate_list_of_downsampled_audio)
        pitches = pitch.audio_to_pitch_features(f_audio=audio, Fs=AUDIO_RATE,
                                                feature_rate=FEATURE_RATE, midi_min=MIDI_LOW,
                                                midi_max=MIDI_HIGH)
        peaks = pitch_onset.audio_to_pitch_onset_features(f_audio=audio, Fs=AUDIO_RATE,
                                                          midi_min=MIDI_LOW, midi_max=MIDI_HIGH)
    chroma = quantize_chroma(f_chroma=pitch_to_chroma(f_pitch=pitches))
    dlnco = pitch_onset_features_to_DLNCO(f_peaks=peaks, feature_rate=FEATURE_RATE,
                                          feature_sequence_length=chroma.shape[1])
    for features in fast:
        np.testing.assert_array_equal(features[0], chroma)
        np.testing.assert_array_equal(features[1], dlnco)


def test_workers_give_the_same_aligned_corpus(unaligned: Path, aligned: tuple[Path, dict],
                                              tmp_path: Path) -> None:
    out, summary = aligned
    two = align_corpus(unaligned, tmp_path / "two", workers=2, progress=False,
                       log=lambda line: None)
    # every file, reports included, is the same bytes (times are returned, never written):
    # a pipeline's shard stage is not rerun on an unchanged alignment
    assert tree_bytes(out) == tree_bytes(tmp_path / "two")
    assert two["real_time_factor"] > 0 and "runtime_s" not in json.loads(
        (tmp_path / "two" / SUMMARY_FILE).read_text())


def test_cli_renders_unaligned_scores_and_refuses_mixing(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = ["synth-slakh", "--preset", "tiny", "--tracks", "1", "--seconds", "3",
               "--out", str(out)]
    result = CliRunner().invoke(main, [*command, "--unaligned-scores"])
    assert result.exit_code == 0, result.output
    (track,) = list(out.glob("*/Track*"))
    assert {p.name for p in (track / "score").iterdir()} == {"all_src.mid", "MIDI", "warp.json"}
    assert json.loads((out / "synth_slakh.json").read_text())["unaligned_scores"]
    result = CliRunner().invoke(main, command)  # the same folder without scores: refused
    assert result.exit_code != 0 and "synth_slakh.json" in result.output


def test_bad_warp_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "warp.json"
    bad.write_text('{"score_s": [0, 1, 1], "performance_s": [0, 1, 2]}')
    with pytest.raises(ScoreError, match="increasing") as error:
        read_warp(bad)
    assert str(bad) in str(error.value)
    bad.write_text("not json")
    with pytest.raises(ScoreError, match="unreadable warp"):
        read_warp(bad)


def test_bar_edits_drop_or_repeat_a_bar_and_the_warp_says_where(tmp_path: Path) -> None:
    out = tmp_path / "edits"
    synth_slakh(out, 6, 10.0, SEED, workers=2, progress=False, unaligned_scores=True,
                score_bar_edits=True)
    kinds = set()
    for track in sorted(out.glob("*/Track*")):
        edit = yaml.safe_load((track / "metadata.yaml").read_text())[SCORE_KEY]["bar_edit"]
        kinds.add(edit["kind"])
        b0, b1 = edit["start_s"], edit["end_s"]
        warp = read_warp(track / "score" / "warp.json")
        for score in [track / "score" / "all_src.mid",
                      *sorted((track / "score" / "MIDI").glob("*.mid"))]:
            performance = starts(track / score.relative_to(track / "score"))
            notes = starts(score)
            moved = score_to_performance(np.array([s for _, _, s in notes]), warp)
            mapped = sorted((i, p, float(t)) for (i, p, _), t in zip(notes, moved, strict=True))
            in_bar = [(i, p, t) for i, p, t in performance if b0 <= t < b1]
            if edit["kind"] == "drop":  # the bar's notes are gone, the rest map exactly
                expected = sorted(set(performance) - set(in_bar))
            else:  # played twice: the second time stands for the bar's end
                expected = sorted(performance + [(i, p, b1) for i, p, _ in in_bar])
            assert mapped == expected, score
    assert kinds == {"drop", "repeat"}
    with pytest.raises(Exception, match="--unaligned-scores"):
        synth_slakh(tmp_path / "x", 1, 2.0, SEED, progress=False, score_bar_edits=True)
