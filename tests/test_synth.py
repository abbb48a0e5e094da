"""The rendered demo corpus, checked as a Slakh2100 corpus, independently of its generator.

A tiny corpus is rendered once per module; the checks read its files back with soundfile,
pretty_midi and yaml and compare them with the real Slakh metadata in tests/fixtures, with
prep/data/splits_v2.json read here on its own, and with pyloudnorm (the loudness meter Slakh
used). The renderer's own pieces (control changes, the K-weighted loudness meter, soundfont
pools) are checked at the end.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pyloudnorm
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from prep.cli import main
from prep.synth import (
    DEFAULT_SOUNDFONT,
    RENDER_KEY,
    SOUNDFONTS,
    SYNTH_PRESETS,
    SynthError,
    check_presets,
    choose_track_numbers,
    integrated_loudness,
    preset_settings,
    render_instrument,
    synth_slakh,
)

FIXTURE_METADATA = Path(__file__).parent / "fixtures" / "Track00001" / "metadata.yaml"
DATA = Path(__file__).parents[1] / "prep" / "data"
SR = 44100
TARGET_GROUPS = {
    0: "acoustic piano",
    1: "acoustic piano",
    29: "distorted electric guitar",
    30: "distorted electric guitar",
    33: "electric bass",
    34: "electric bass",
}
TARGET_CLASS = {0: "piano", 1: "piano", 29: "guitar", 30: "guitar", 33: "bass", 34: "bass"}
ORIGINAL_RANGES = {"train": (1, 1500), "validation": (1501, 1875), "test": (1876, 2100)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    preset = SYNTH_PRESETS["tiny"]
    out = tmp_path_factory.mktemp("synth") / "corpus"
    dirs = synth_slakh(out, preset.tracks, preset.seconds, preset.seed, workers=2, progress=False)
    return out, dirs


def metadata(track: Path) -> dict:
    return yaml.safe_load((track / "metadata.yaml").read_text())


def rendered(meta: dict) -> dict[str, dict]:
    return {k: s for k, s in meta["stems"].items() if s["audio_rendered"]}


def read_int16(path: Path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="int16")
    assert sr == SR, path
    return audio


def test_preset_none_renders_nothing(tmp_path: Path) -> None:
    """The pipeline's render stage on a real Slakh2100 copy: an explained, empty folder."""
    result = CliRunner().invoke(main, ["synth-slakh", "--preset", "none", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["NOTHING_RENDERED.txt"]


def test_presets() -> None:
    assert set(SYNTH_PRESETS) == {"demo", "bench", "heldout", "tiny"}
    (option,) = [o for o in main.commands["synth-slakh"].params if o.name == "preset"]
    assert set(option.type.choices) == set(SYNTH_PRESETS) | {"none"}
    assert (
        SYNTH_PRESETS["tiny"].tracks * SYNTH_PRESETS["tiny"].seconds
        < SYNTH_PRESETS["demo"].tracks * SYNTH_PRESETS["demo"].seconds
        < SYNTH_PRESETS["bench"].tracks * SYNTH_PRESETS["bench"].seconds
    )
    for fast in ("demo", "tiny"):  # one font, dry: fast, and what the pipeline tests expect
        assert SYNTH_PRESETS[fast].soundfonts == (DEFAULT_SOUNDFONT,)
        assert not SYNTH_PRESETS[fast].effects
    bench, heldout = SYNTH_PRESETS["bench"], SYNTH_PRESETS["heldout"]
    assert bench.effects and heldout.effects
    assert len(bench.soundfonts) >= 3 and len(heldout.soundfonts) >= 2
    assert heldout.seed != bench.seed
    with pytest.raises(SynthError, match="unknown preset 'nope'"):
        preset_settings("nope")


# Sample families of the Debian GM fonts (fonts sharing samples), written out here on their
# own: a held-out font must share no family with the training pool.
FONT_FAMILIES = {
    "FluidR3_GM.sf2": "FluidR3",
    "FluidR3_GS.sf2": "FluidR3",
    "FluidR3Mono_GM.sf3": "FluidR3",
    "MuseScore_General_Lite.sf3": "FluidR3",
    "MuseScore_General.sf3": "FluidR3",
    "TimGM6mb.sf2": "TimGM6mb",
    "sf_GMbank.sf2": "TimGM6mb",
}


def test_heldout_fonts_share_no_samples_with_bench() -> None:
    bench = {FONT_FAMILIES[p.name] for p in SYNTH_PRESETS["bench"].soundfonts}
    heldout = {FONT_FAMILIES[p.name] for p in SYNTH_PRESETS["heldout"].soundfonts}
    assert not bench & heldout


def test_every_preset_font_is_installed_and_complete() -> None:
    """The Makefile's system-deps installs every pool font; each has the presets we play."""
    for name, preset in SYNTH_PRESETS.items():
        for font in preset.soundfonts:
            assert font.is_file(), f"{name}: {font} missing (make system-deps)"
            assert font.name in SOUNDFONTS
            check_presets(font)


def test_layout_in_original_split_folders(corpus: tuple[Path, list[Path]]) -> None:
    out, dirs = corpus
    assert len(dirs) == SYNTH_PRESETS["tiny"].tracks
    assert sorted(p for p in out.glob("*/Track*")) == sorted(dirs)
    for track in dirs:
        number = int(re.fullmatch(r"Track(\d{5})", track.name).group(1))
        low, high = ORIGINAL_RANGES[track.parent.name]
        assert low <= number <= high, track
        for name in ("metadata.yaml", "all_src.mid", "mix.flac", "MIDI", "stems"):
            assert (track / name).exists(), track / name
    assert not [p for p in out.rglob(".*")], "temporary folders left behind"


def test_metadata_has_every_real_slakh_field(corpus: tuple[Path, list[Path]]) -> None:
    real = yaml.safe_load(FIXTURE_METADATA.read_text())
    rendered_keys = set(real["stems"]["S00"])
    unrendered_keys = set(real["stems"]["S06"])  # a stem Slakh lists but never rendered
    gm = json.loads((DATA / "general_midi_inst_0based.json").read_text())
    patches = json.loads((DATA / "patch_classes.json").read_text())
    uuids = set()
    for track in corpus[1]:
        meta = metadata(track)
        assert set(meta) == set(real)
        assert re.fullmatch(r"[0-9a-f]{32}", meta["UUID"])
        uuids.add(meta["UUID"])
        assert (meta["audio_dir"], meta["midi_dir"]) == ("stems", "MIDI")
        assert meta["normalization_factor"] == -13.0 and meta["target_peak"] == -1.0
        assert meta["normalized"] is True and 0 < meta["overall_gain"] < 10
        assert isinstance(meta["lmd_midi_dir"], str)
        for key, stem in meta["stems"].items():
            assert re.fullmatch(r"S\d{2}", key)
            if stem["audio_rendered"]:  # Slakh's fields, and which font and effects we used
                assert set(stem) == rendered_keys | {RENDER_KEY}
                assert stem[RENDER_KEY] == {"soundfont": DEFAULT_SOUNDFONT.name, "effects": None}
            else:
                assert set(stem) == unrendered_keys
            assert stem["midi_saved"] == stem["audio_rendered"]
            program = stem["program_num"]
            assert stem["is_drum"] == (program == 128)
            assert stem["inst_class"] == gm[str(program)]["class"]
            assert stem["midi_program_name"] == gm[str(program)]["name"]
            assert isinstance(stem["plugin_name"], str)
            if program in TARGET_GROUPS:
                assert stem["plugin_name"] in patches[TARGET_GROUPS[program]], stem
            if stem["audio_rendered"]:
                assert np.isfinite(stem["integrated_loudness"])
    assert len(uuids) == len(corpus[1])


def test_referenced_files_exist_and_nothing_else(corpus: tuple[Path, list[Path]]) -> None:
    for track in corpus[1]:
        keys = set(rendered(metadata(track)))
        assert {p.stem for p in (track / "stems").iterdir()} == keys
        assert {p.stem for p in (track / "MIDI").iterdir()} == keys
        assert all((track / "stems" / f"{k}.flac").is_file() for k in keys)


def test_audio_is_mono_44k_16bit_flac_of_equal_length(corpus: tuple[Path, list[Path]]) -> None:
    n = round(SYNTH_PRESETS["tiny"].seconds * SR)
    for track in corpus[1]:
        for path in [track / "mix.flac", *sorted((track / "stems").glob("*.flac"))]:
            info = sf.info(str(path))
            assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
                "FLAC",
                "PCM_16",
                1,
                SR,
                n,
            ), path


def check_mix_and_peaks(track: Path) -> None:
    """mix.flac is the sum of the stems; the mix peaks at target_peak, or lower when a stem
    alone would otherwise clip (then that stem peaks at target_peak)."""
    meta = metadata(track)
    stems = [read_int16(track / "stems" / f"{k}.flac").astype(np.int64) for k in rendered(meta)]
    mix = read_int16(track / "mix.flac").astype(np.int64)
    assert np.abs(mix - np.sum(stems, axis=0)).max() <= len(stems)  # a few LSB at most
    peaks_db = [20 * np.log10(np.abs(x).max() / 32767) for x in [mix, *stems]]
    assert max(peaks_db) < meta["target_peak"] + 0.01, track.name
    assert abs(peaks_db[0] - meta["target_peak"]) < 0.01 or abs(
        max(peaks_db) - meta["target_peak"]) < 0.01, track.name


def test_mix_is_sum_of_stems_and_peaks_at_target(corpus: tuple[Path, list[Path]]) -> None:
    for track in corpus[1]:
        check_mix_and_peaks(track)


def check_loudness_normalised(track: Path) -> None:
    """Each stem file = rendered stem scaled to normalization_factor LUFS, times overall_gain,
    measured with pyloudnorm (BS.1770-4, K-weighted), the meter Slakh used.

    0.3 LU tolerance: the -70 LUFS absolute gate is applied at the rendered stem's level in
    the renderer and at the written level here, so a few quiet release blocks differ.
    """
    meta = metadata(track)
    expected = meta["normalization_factor"] + 20 * np.log10(meta["overall_gain"])
    meter = pyloudnorm.Meter(SR)
    for key, stem in rendered(meta).items():
        audio = read_int16(track / "stems" / f"{key}.flac") / 32767.0
        assert abs(meter.integrated_loudness(audio) - expected) < 0.3, (track.name, key)
        assert np.isfinite(stem["integrated_loudness"]) and stem["integrated_loudness"] < 0


def test_stems_are_loudness_normalised(corpus: tuple[Path, list[Path]]) -> None:
    for track in corpus[1]:
        check_loudness_normalised(track)


def frame_rms(audio: np.ndarray, hop: int = 1024, length: int = 2048) -> np.ndarray:
    n = len(audio) // hop
    return np.sqrt([np.mean(audio[i * hop : i * hop + length] ** 2) for i in range(n)]) + 1e-9


def released_at(note: pretty_midi.Note, instrument: pretty_midi.Instrument) -> float:
    """When ``note`` stops being held: its note-off, or the sustain pedal's (CC64) release
    if the pedal is down at the note-off."""
    pedal = sorted((c.time, c.value >= 64) for c in instrument.control_changes if c.number == 64)
    down = False
    for time, is_down in pedal:
        if time > note.end:
            if down and not is_down:
                return time
            continue
        down = is_down
    return float("inf") if down else note.end


def check_alignment(tracks: list[Path], quiet_ratio: float = 30.0) -> dict[str, int]:
    """Pitched stems: frames under a note are far louder than frames > 1.5 s from any held
    note (held: up to its note-off or, when the sustain pedal is down, its pedal release).

    Drums: the 30 ms after each onset are far louder than the 30 ms before it. Returns how
    many stems of each kind were checked.
    """
    checked = {"pitched": 0, "drums": 0}
    hop, w = 1024, int(0.03 * SR)
    for track in tracks:
        meta = metadata(track)
        for key, stem in rendered(meta).items():
            audio = read_int16(track / "stems" / f"{key}.flac") / 32767.0
            (instrument,) = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{key}.mid")).instruments
            assert instrument.is_drum == stem["is_drum"]
            if not stem["is_drum"]:
                assert instrument.program == stem["program_num"]
            assert instrument.notes, (track.name, key)
            if stem["is_drum"]:
                ratios = []
                for start in sorted({n.start for n in instrument.notes}):
                    i = round(start * SR)
                    if w <= i <= len(audio) - w:
                        ratios.append(
                            np.sqrt(np.mean(audio[i : i + w] ** 2))
                            / (np.sqrt(np.mean(audio[i - w : i] ** 2)) + 1e-7)
                        )
                assert np.median(ratios) > 2.0, (track.name, key)
                checked["drums"] += 1
                continue
            rms = frame_rms(audio, hop)
            times = (np.arange(len(rms)) * hop + hop) / SR  # frame centres
            sounding = np.zeros(len(rms), bool)
            near = np.zeros(len(rms), bool)
            for note in instrument.notes:
                sounding |= (times >= note.start) & (times < note.end)
                near |= (times >= note.start - 0.05) & (
                    times < released_at(note, instrument) + 1.5)
            assert np.median(rms[sounding]) > 10 ** (-50 / 20), (track.name, key)
            if (~near).sum() >= 10:
                assert np.median(rms[sounding]) > quiet_ratio * np.percentile(rms[~near], 90), (
                    track.name,
                    key,
                )
                checked["pitched"] += 1
    return checked


def test_midi_notes_line_up_with_audio_energy(corpus: tuple[Path, list[Path]]) -> None:
    checked = check_alignment(corpus[1])
    # Only parts with a rest of over 1.5 s in a 6-s clip give far-from-note frames; how many
    # do is the generator's business. Every track's drums are checked.
    assert checked["pitched"] >= 1 and checked["drums"] == len(corpus[1])


def test_target_notes_in_piano_range(corpus: tuple[Path, list[Path]]) -> None:
    for track in corpus[1]:
        for instrument in pretty_midi.PrettyMIDI(str(track / "all_src.mid")).instruments:
            if not instrument.is_drum and instrument.program in TARGET_CLASS:
                assert all(21 <= n.pitch <= 108 for n in instrument.notes), track.name


def test_all_src_holds_every_listed_stem(corpus: tuple[Path, list[Path]]) -> None:
    for track in corpus[1]:
        meta = metadata(track)
        instruments = pretty_midi.PrettyMIDI(str(track / "all_src.mid")).instruments
        listed = [meta["stems"][k] for k in sorted(meta["stems"])]
        assert [128 if i.is_drum else i.program for i in instruments] == [
            s["program_num"] for s in listed
        ]


def test_stem_line_up_varies(corpus: tuple[Path, list[Path]]) -> None:
    """Drums and a non-target pitched stem everywhere; some tracks lack or double a target."""
    lacking = doubled = unrendered = 0
    for track in corpus[1]:
        stems = list(metadata(track)["stems"].values())
        programs = [s["program_num"] for s in stems if s["audio_rendered"]]
        assert 128 in programs
        assert any(p != 128 and p not in TARGET_CLASS for p in programs)
        classes = [TARGET_CLASS[p] for p in programs if p in TARGET_CLASS]
        lacking += len(set(classes)) < 3
        doubled += len(classes) > len(set(classes))
        unrendered += any(not s["audio_rendered"] for s in stems)
    assert lacking >= 1 and doubled >= 1 and unrendered >= 1


def split2_moves() -> dict[str, tuple[str, str]]:
    table = json.loads((DATA / "splits_v2.json").read_text())
    return {
        k: (v["source_split"], v["destination_split"])
        for k, v in table.items()
        if v["action"] == "move"
    }


def test_split2_moves_some_chosen_tracks(corpus: tuple[Path, list[Path]]) -> None:
    moves = split2_moves()
    ours = {p.name: p.parent.name for p in corpus[1]}
    moved = {moves[t] for t in ours if t in moves}
    assert ("train", "test") in moved and ("train", "validation") in moved
    for track, folder in ours.items():
        if track in moves:
            assert moves[track][0] == folder
    # A larger corpus: ~70/15/15 from the original ranges, moves out of every range.
    numbers = choose_track_numbers(200)
    assert numbers == sorted(set(numbers)) and len(numbers) == 200
    by_range = {s: [n for n in numbers if lo <= n <= hi] for s, (lo, hi) in ORIGINAL_RANGES.items()}
    assert [len(v) for v in by_range.values()] == [140, 30, 30]
    for split, ids in by_range.items():
        sources = {moves[f"Track{n:05d}"][0] for n in ids if f"Track{n:05d}" in moves}
        assert sources == {split}
        assert 0.1 <= sum(f"Track{n:05d}" in moves for n in ids) / len(ids) <= 0.5


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_deterministic_and_resumable(corpus: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, _ = corpus
    preset = SYNTH_PRESETS["tiny"]
    again = tmp_path / "again"
    synth_slakh(again, preset.tracks, preset.seconds, preset.seed, workers=1, progress=False)
    reference = tree_bytes(out)
    assert tree_bytes(again) == reference

    # An interrupted run: one track missing, a half-written hidden folder in its place.
    victim = sorted(again.glob("train/Track*"))[0]
    shutil.rmtree(victim)
    partial = victim.parent / f".{victim.name}.interrupted"
    (partial / "stems").mkdir(parents=True)
    (partial / "stems" / "S00.flac").write_bytes(b"half")
    kept = sorted(again.glob("*/Track*/mix.flac"))
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    synth_slakh(again, preset.tracks, preset.seconds, preset.seed, workers=1, progress=False)
    assert tree_bytes(again) == reference
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes  # complete tracks skipped


def test_other_settings_into_same_folder_refused(corpus: tuple[Path, list[Path]]) -> None:
    preset = SYNTH_PRESETS["tiny"]
    with pytest.raises(SynthError, match="synth_slakh.json"):
        synth_slakh(corpus[0], preset.tracks, preset.seconds, preset.seed + 1, progress=False)


def test_missing_soundfont_names_path_and_package(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sf2"
    with pytest.raises(SynthError, match="fluid-soundfont-gm") as error:
        synth_slakh(tmp_path / "c", 1, 1.0, 0, soundfont=missing, progress=False)
    assert str(missing) in str(error.value)


def test_cli_overrides_preset(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        ["synth-slakh", "--preset", "tiny", "--tracks", "1", "--seconds", "1.5", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (track,) = list(out.glob("*/Track*"))
    assert sf.info(str(track / "mix.flac")).frames == round(1.5 * SR)
    result = CliRunner().invoke(
        main,
        ["synth-slakh", "--out", str(tmp_path / "x"), "--soundfont", str(tmp_path / "none.sf2")],
    )
    assert result.exit_code != 0 and "fluid-soundfont-gm" in result.output


def test_missing_pool_font_names_path_and_its_package(tmp_path: Path) -> None:
    missing = tmp_path / "TimGM6mb.sf2"
    with pytest.raises(SynthError, match="timgm6mb-soundfont") as error:
        synth_slakh(tmp_path / "c", 1, 1.0, 0, soundfonts=[DEFAULT_SOUNDFONT, missing],
                    progress=False)
    assert str(missing) in str(error.value)


def test_unloadable_soundfont_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"RIFF\0\0\0\0not a soundfont")
    with pytest.raises(SynthError, match="cannot load") as error:
        synth_slakh(tmp_path / "c", 1, 1.0, 0, soundfont=bad, progress=False)
    assert str(bad) in str(error.value)


def test_cli_soundfont_overrides_the_pool(tmp_path: Path) -> None:
    """--soundfont replaces bench's pool by one font; the preset's effects stay on."""
    font = SYNTH_PRESETS["heldout"].soundfonts[0]
    out = tmp_path / "one-font"
    result = CliRunner().invoke(main, ["synth-slakh", "--preset", "bench", "--tracks", "1",
                                       "--seconds", "2", "--soundfont", str(font),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "synth_slakh.json").read_text())
    assert config["soundfonts"] == [font.name] and config["effects"] is not None
    (track,) = list(out.glob("*/Track*"))
    for stem in rendered(metadata(track)).values():
        assert stem[RENDER_KEY]["soundfont"] == font.name
        assert stem[RENDER_KEY]["effects"]["reverb"]["wet_level"] >= 0


# --- the renderer's pieces ------------------------------------------------------------------

def piano_note(controls: list[tuple[float, int, int]]) -> pretty_midi.Instrument:
    """A piano playing C4 from 0.5 s to 1.0 s, with (time, CC number, value) changes."""
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(100, 60, 0.5, 1.0))
    piano.control_changes = [pretty_midi.ControlChange(n, v, t) for t, n, v in controls]
    return piano


def rms_between(audio: np.ndarray, start: float, stop: float) -> float:
    return float(np.sqrt(np.mean(audio[round(start * SR) : round(stop * SR)] ** 2)))


def test_sustain_pedal_rings_longer() -> None:
    dry = render_instrument(piano_note([]), DEFAULT_SOUNDFONT, 4 * SR)
    held = render_instrument(piano_note([(0.2, 64, 127), (3.0, 64, 0)]), DEFAULT_SOUNDFONT,
                             4 * SR)
    assert np.allclose(dry[: round(0.99 * SR)], held[: round(0.99 * SR)], atol=1e-6)
    # after the note-off: the pedal keeps the note ringing until it is released at 3.0 s
    assert rms_between(held, 1.6, 2.6) > 30 * rms_between(dry, 1.6, 2.6)
    assert rms_between(held, 3.5, 4.0) < 0.1 * rms_between(held, 2.0, 2.9)
    # a pedal pressed at the note-on's very sample holds the note too (control changes first)
    at_onset = render_instrument(piano_note([(0.5, 64, 127)]), DEFAULT_SOUNDFONT, 4 * SR)
    assert rms_between(at_onset, 1.6, 2.6) > 30 * rms_between(dry, 1.6, 2.6)


def test_volume_and_expression_act_at_their_time() -> None:
    full = render_instrument(piano_note([]), DEFAULT_SOUNDFONT, 2 * SR)
    for number in (7, 11):
        cut = render_instrument(piano_note([(0.75, number, 0)]), DEFAULT_SOUNDFONT, 2 * SR)
        assert np.allclose(cut[: round(0.74 * SR)], full[: round(0.74 * SR)], atol=1e-6)
        assert rms_between(cut, 0.8, 1.0) < 0.01 * rms_between(full, 0.8, 1.0), number


def test_loudness_is_bs1770_lufs() -> None:
    """Known values of BS.1770-4 with K-weighting, and pyloudnorm's reading of the same."""
    t = np.arange(10 * SR) / SR
    sine_997 = np.sin(2 * np.pi * 997 * t)
    quiet_1k = 0.1 * np.sin(2 * np.pi * 1000 * t)  # -20 dBFS
    assert integrated_loudness(sine_997) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(quiet_1k) == pytest.approx(-23.0, abs=0.06)
    low = 0.5 * np.sin(2 * np.pi * 30 * t)  # the 38 Hz high-pass takes a lot off
    assert integrated_loudness(low) < integrated_loudness(0.5 * np.sin(2 * np.pi * 1000 * t)) - 4
    noise = np.random.default_rng(0).standard_normal(7 * SR) * 0.1
    noise[2 * SR : 4 * SR] *= 0.01  # a quiet stretch: the relative gate drops it
    meter = pyloudnorm.Meter(SR)
    for x in (sine_997, quiet_1k, low, noise):
        assert integrated_loudness(x) == pytest.approx(meter.integrated_loudness(x), abs=1e-3)
    assert integrated_loudness(np.zeros(SR)) == float("-inf")
