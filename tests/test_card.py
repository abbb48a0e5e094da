"""Tests of prep/card.py (``prep card``): data cards of built shard sets.

A tiny demo corpus is rendered with ``prep.synth.synth_slakh`` and built with
``prep.build.build_shards`` once per module (one track made unusable so the build skips it).
The card is then checked against independent readings: the manifest JSON, the shard files
opened with h5py, and a rebuild from the card's own reconstructed command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
import yaml
from click.testing import CliRunner

from prep import card as card_module
from prep.build import build_shards
from prep.card import CardError, render_card, write_card
from prep.cli import main
from prep.shards import ShardError, read_manifest
from prep.synth import synth_slakh

INSTRUMENTS = ["piano", "guitar", "bass"]
PIANO_PROGRAMS = {0, 1, 3}  # prep/data/instrument_map_programs.yaml


def _break_one_track(corpus: Path) -> str:
    """Delete the audio of a selected piano stem of one track, so the build skips it."""
    for metadata in sorted(corpus.glob("*/Track*/metadata.yaml")):
        stems = yaml.safe_load(metadata.read_text())["stems"]
        for key, stem in sorted(stems.items()):
            if not stem["is_drum"] and stem["program_num"] in PIANO_PROGRAMS:
                audio = metadata.parent / "stems" / f"{key}.flac"
                if audio.is_file():
                    audio.unlink()
                    return metadata.parent.name
    raise AssertionError("no track with a piano stem in the tiny corpus")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(base folder, shard folder, skipped track id): corpus in base/corpus, shards in
    base/shards, built with the default options but the fast resampler."""
    base = tmp_path_factory.mktemp("card")
    synth_slakh(base / "corpus", tracks=6, seconds=3.0, seed=3, progress=False)
    broken = _break_one_track(base / "corpus")
    build_shards(base / "corpus", base / "shards", INSTRUMENTS, stems="eval",
                 resample_filter="kaiser_fast", progress=False, log=lambda line: None)
    return base, base / "shards", broken


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def _table_after(text: str, heading: str) -> list[list[str]]:
    """Body rows of the first Markdown table after ``heading`` (cells split on unescaped |)."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip() for c in cells])
    return rows


def test_header_and_sections(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    path = write_card(shards)
    assert path == shards / "DATA_CARD.md"
    text = path.read_text()
    header = _header(text)
    for key in ("license", "source_datasets", "size_categories", "task_categories",
                "pretty_name", "tags"):
        assert header.get(key), key
    assert header["license"] == "cc-by-4.0"
    # synth_slakh.json is in the corpus: the demo corpus, not Slakh audio
    assert header["source_datasets"] != ["Slakh2100"]
    assert "synth" in header["source_datasets"][0]
    assert header["size_categories"] == ["n<1K"]
    assert set(header["task_categories"]) == {"audio-source-separation", "music-transcription"}
    for section in ("## Summary", "## Source and attribution", "## Composition",
                    "## Provenance", "## Intended uses", "## Out-of-scope uses",
                    "## Known limitations", "## Maintenance and changelog"):
        assert f"\n{section}\n" in text, section
    assert "not Slakh audio" in text
    assert "Cutting Music Source Separation Some Slakh" in text


def test_splits_tracks_and_hours_match_manifest(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    manifest = read_manifest(shards)
    text = render_card(read_manifest(shards),
                       facts=card_module.collect_shard_facts(shards, manifest))
    rows = {r[0]: r for r in _table_after(text, "### Splits, hours and bytes on disk")}
    tracks: dict[str, int] = {}
    size: dict[str, int] = {}
    for shard in manifest.shards:
        tracks[shard.split] = tracks.get(shard.split, 0) + len(shard.tracks)
        size[shard.split] = size.get(shard.split, 0) + shard.bytes
    assert set(manifest.hours) == set(tracks) == {r for r in rows if r != "**total**"}
    for split, hours in manifest.hours.items():
        assert int(rows[split][1]) == tracks[split]
        assert rows[split][2] == f"{hours:.3f}"
        assert rows[split][5] == f"{size[split] / 1e6:,.1f}"
    assert int(rows["**total**"][1]) == sum(tracks.values())


def test_schema_dtypes_and_shapes_match_the_shard_file(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    text = write_card(shards).read_text()
    rows = _table_after(text, "### Schema")
    documented = {r[0].strip("`"): (r[1].strip("`"), r[2].strip("`")) for r in rows}
    assert {"mix", "stems", "spec", "roll", "harmonic_mask", "activity"} <= set(documented)
    manifest = read_manifest(shards)
    # stems="eval": validation shards store stems, train shards do not
    shard = next(s for s in manifest.shards if s.split == "validation")
    with h5py.File(shards / shard.path, "r") as handle:
        n_inst = len(handle.attrs["instruments"])
        for track_id, group in handle["tracks"].items():
            sizes = {"n_samples": int(group.attrs["n_samples"]),
                     "T": int(group.attrs["n_frames"]), "I": n_inst}
            for name, (dtype, shape) in documented.items():
                assert name in group, f"{track_id}: card documents {name}, shard lacks it"
                assert str(group[name].dtype) == dtype, name
                dims = [d.strip() for d in shape.strip("[]").split(",")]
                expected = tuple(sizes[d] if d in sizes else int(d) for d in dims)
                assert group[name].shape == expected, name


def test_activity_rates_match_manifest(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    manifest = read_manifest(shards)
    text = write_card(shards).read_text()
    rows = {r[0].strip("`"): r for r in _table_after(text, "### Instrument activity")}
    assert list(rows) == INSTRUMENTS
    paper = {"piano": "0.410", "guitar": "0.140", "bass": "0.670"}
    for name in INSTRUMENTS:
        assert rows[name][2] == f"{manifest.activity_rate[name]:.3f}"
        assert rows[name][3] == paper[name]
        assert rows[name][4] == f"{manifest.class_weight[name]:.3f}"
    # the paper's rates through w_i = (1/r_i) / mean_j(1/r_j), computed here by hand
    inverse = [1 / 0.41, 1 / 0.14, 1 / 0.67]
    for name, inv in zip(INSTRUMENTS, inverse, strict=True):
        assert rows[name][5] == f"{inv / (sum(inverse) / 3):.3f}"
    assert "w_i = (1 / r_i) / mean_j (1 / r_j)" in text


def test_skipped_tracks_listed_without_machine_paths(built: tuple[Path, Path, str]) -> None:
    base, shards, broken = built
    manifest = read_manifest(shards)
    assert [s["track"] for s in manifest.skipped] == [broken]
    assert str(base) in manifest.skipped[0]["reason"]  # the manifest has the full path
    text = write_card(shards).read_text()
    assert "**1 track(s) skipped**" in text
    assert f"- `{broken}`: " in text
    assert "missing audio" in text
    assert str(base) not in text
    assert str(Path.cwd()) not in text
    assert write_card(shards).read_text() == text  # deterministic


def test_cli_writes_card_with_given_command(built: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, shards, _ = built
    command = ("prep build-shards --slakh-root corpus --out shards --instruments "
               "piano,guitar,bass --resample-filter kaiser_fast")
    target = tmp_path / "cards" / "tiny.md"
    result = CliRunner().invoke(main, ["card", str(shards), "--out", str(target),
                                       "--command", command])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert f"```sh\n{command}\n```" in text
    assert "as given to `prep card --command`" in text
    assert "prep verify shards" in text
    assert str(tmp_path) not in text and str(shards.parent) not in text


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ShardError, match=re.escape(str(empty / "manifest.json"))):
        write_card(empty)
    result = CliRunner().invoke(main, ["card", str(empty)])
    assert result.exit_code != 0
    assert str(empty / "manifest.json") in result.output
    assert not (empty / "DATA_CARD.md").exists()


def test_reconstructed_command_rebuilds_identical_shards(
    built: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, shards, _ = built
    monkeypatch.chdir(base)  # paths in the card are shown relative to the working directory
    text = write_card(Path("shards")).read_text()
    command = re.search(r"```sh\n(prep build-shards .*)\n```", text).group(1)
    # the corpus command matches the corpus's settings (synth-slakh refuses other settings)
    synth = re.search(r"```sh\n(prep synth-slakh .*)\n```", text).group(1)
    assert shlex.split(synth)[1:] == ["synth-slakh", "--out", "corpus", "--tracks", "6",
                                      "--seconds", "3", "--seed", "3"]
    result = CliRunner().invoke(main, shlex.split(synth)[1:])
    assert result.exit_code == 0, result.output
    words = shlex.split(command)
    assert words[words.index("--slakh-root") + 1] == "corpus"
    assert words[words.index("--out") + 1] == "shards"
    words[words.index("--out") + 1] = "rebuilt"
    result = CliRunner().invoke(main, [*words[1:], "--no-progress"])
    assert result.exit_code == 0, result.output
    original = {s.path: s.sha256 for s in read_manifest(shards).shards}
    rebuilt = {s.path: s.sha256 for s in read_manifest(base / "rebuilt").shards}
    assert rebuilt == original


def test_slakh_corpus_gets_slakh_attribution(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    manifest = read_manifest(shards)
    manifest.source = {**manifest.source, "source_corpus": "slakh2100"}
    manifest.provenance = {**manifest.provenance,
                           "corpus_root": "/datasets/slakh2100_flac_redux"}
    text = render_card(manifest)
    header = _header(text)
    assert header["source_datasets"] == ["Slakh2100"]
    assert header["license"] == "cc-by-4.0"
    assert "Slakh2100-split2" in header["pretty_name"]
    assert "not Slakh audio" not in text
    assert "Manilow" in text and "CC BY 4.0" in text
    assert "resampled that sum to 16000 Hz" in text
    assert "assumed to be Slakh2100" in text  # that folder does not exist here
    assert "/datasets/" not in text


def test_format_fields_without_documentation_refuse_to_render(
    built: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, shards, _ = built
    docs = dict(card_module.FIELD_DOCS)
    del docs["activity"]
    monkeypatch.setattr(card_module, "FIELD_DOCS", docs)
    with pytest.raises(CardError, match="FIELD_DOCS"):
        write_card(shards)


def test_hand_written_slakh_card_schema_matches_the_format(built: tuple[Path, Path, str]) -> None:
    """data_cards/slakh2100-split2.md is written by hand: its schema table must say what a
    generated card says (dataset names, dtypes, shapes) and its header must parse."""
    _, shards, _ = built
    hand = (Path(__file__).parents[1] / "data_cards" / "slakh2100-split2.md").read_text()
    header = _header(hand)
    assert header["license"] == "cc-by-4.0" and header["source_datasets"] == ["Slakh2100"]
    generated = write_card(shards).read_text()

    def schema(text: str) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in _table_after(text, "### Schema")]

    assert schema(hand) == schema(generated)


def test_music_statistics_beside_slakh(built: tuple[Path, Path, str]) -> None:
    """The section's columns: this corpus measured now (the shards' tracks only), the
    packaged Slakh Track00001 figures, the paper's rates; the build's sustain setting."""
    from prep.music_stats import load_reference, measure_corpus

    base, shards, broken = built
    manifest = read_manifest(shards)
    assert manifest.source["sustain_pedal"] is True  # the build's default
    text = write_card(shards).read_text()
    assert "\n## Music statistics\n" in text
    rows = {r[0]: r[1:] for r in _table_after(text, "## Music statistics")}
    in_shards = {t.track_id for s in manifest.shards for t in s.tracks}
    assert broken not in in_shards
    ours = measure_corpus(base / "corpus", track_ids=in_shards, sustain=True)
    slakh, _ = load_reference(sustain=True)
    paper = {"piano": "0.41 ¹", "guitar": "0.14 ¹", "bass": "0.67 ¹"}
    for name in INSTRUMENTS:
        row = rows[f"`{name}` active-frame fraction"]
        assert row[0] == f"{ours.classes[name].active_fraction:.3f}"
        assert row[1] == f"{slakh.classes[name].active_fraction:.3f}"
        assert row[2] == paper[name]
        row = rows[f"`{name}` mean polyphony while active (pitches)"]
        assert row[0] == f"{ours.classes[name].mean_polyphony:.2f}"
    for k in range(4):
        row = rows[f"frames with {k} of the 3 classes sounding"]
        assert row[0] == f"{ours.together[k]:.3f}" and row[1] == f"{slakh.together[k]:.3f}"
    assert rows["tracks / hours measured"][0].startswith(f"{len(in_shards)} / ")
    assert "CC BY 4.0" in text and "slakh_track00001_music_stats.json" in text
    assert "tests/fixtures" not in text.split("## Music statistics")[1].split("regenerate")[0]
    assert "`--sustain`" in text and "Pitch bends are ignored" in text


def test_music_statistics_without_the_corpus(built: tuple[Path, Path, str],
                                             tmp_path: Path) -> None:
    _, shards, _ = built
    manifest = read_manifest(shards)
    moved = replace(manifest, provenance={**manifest.provenance,
                                          "corpus_root": str(tmp_path / "x")})
    text = render_card(moved, music=card_module.measure_corpus_music(moved))
    assert "This corpus: the corpus folder was not found" in text
    rows = {r[0]: r[1:] for r in _table_after(text, "## Music statistics")}
    assert rows["`piano` active-frame fraction"][0] == "—"
    assert rows["`piano` active-frame fraction"][1] != "—"  # Slakh's column needs no corpus


def test_sustain_setting_in_command_and_limitations(built: tuple[Path, Path, str]) -> None:
    _, shards, _ = built
    manifest = read_manifest(shards)
    command = card_module.reconstruct_command(manifest, card_module.make_path_display(
        shards, manifest, None), "shards")
    assert shlex.split(command)[-1] == "--sustain"
    old = replace(manifest, source={k: v for k, v in manifest.source.items()
                                    if k != "sustain_pedal"})  # a build before the option
    text = render_card(old)
    assert "--no-sustain" in text and "**Sustain pedal not applied**" in text
    assert "note-off times, sustain pedal not applied" in text


def test_corpus_command_names_a_non_default_rendering_preset() -> None:
    """synth_slakh.json records fonts and effects, not the preset: the card's corpus command
    names the preset whose rendering they are, unless it is the default one."""
    from prep.synth import SYNTH_PRESETS

    def rendering(preset: object) -> tuple[list[str], bool]:
        fonts = getattr(preset, "soundfonts", ("FluidR3_GM.sf2",))
        return [Path(f).name for f in fonts], bool(getattr(preset, "effects", False))

    default = rendering(next(iter(SYNTH_PRESETS.values())))
    for name, preset in SYNTH_PRESETS.items():
        fonts, effects = rendering(preset)
        config = {"tracks": preset.tracks, "seconds": preset.seconds, "seed": preset.seed,
                  "soundfonts": fonts, "effects": {"order": ["eq"]} if effects else None}
        words = shlex.split(card_module.synth_command(
            card_module.CorpusInfo("synthetic-demo", "x", "corpus/x", config)))
        same_rendering = (fonts, effects) == default
        if same_rendering:
            assert "--preset" not in words, name
        else:
            assert words[words.index("--preset") + 1] == name
        assert words[words.index("--tracks") + 1] == str(preset.tracks)
