"""Tests of prep/slakh.py: discovery, metadata, splits, instrument maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prep.slakh import (
    SlakhError,
    SplitError,
    assign_split,
    find_tracks,
    load_instrument_map,
    parse_instruments,
    read_metadata,
    select_stems,
)

FIXTURE = Path(__file__).parent / "fixtures" / "Track00001"
SPLITS_JSON = Path(__file__).parents[1] / "prep" / "data" / "splits_v2.json"
INSTRUMENTS = ["piano", "guitar", "bass"]


def _orig_by_range(number: int) -> str:
    return "train" if number <= 1500 else "validation" if number <= 1875 else "test"


def test_split2_moves_and_counts() -> None:
    assert assign_split("Track00003") == "test"
    assert assign_split("Track00026") == "validation"
    assert assign_split("Track02100") == "train"
    assert assign_split("Track00001") == "train"
    # Independent reading of the JSON: every entry, and the paper's 1500/375/225.
    table = json.loads(SPLITS_JSON.read_text())
    counts: dict[str, int] = {}
    for track_id, entry in table.items():
        expected = (
            entry["destination_split"]
            if entry["action"] == "move"
            else _orig_by_range(int(track_id[5:]))
        )
        assert assign_split(track_id, "split2") == expected
        counts[expected] = counts.get(expected, 0) + 1
    assert counts == {"train": 1500, "validation": 375, "test": 225}


def test_orig_scheme_by_id_range() -> None:
    assert assign_split("Track00003", "orig") == "train"
    assert assign_split("Track01500", "orig") == "train"
    assert assign_split("Track01501", "orig") == "validation"
    assert assign_split("Track01875", "orig") == "validation"
    assert assign_split("Track01876", "orig") == "test"
    assert assign_split("Track02100", "orig") == "test"


def test_split_fallback_to_folder_and_unknown() -> None:
    assert assign_split("mysong", "split2", folder_split="validation") == "validation"
    assert assign_split("Track09999", "orig", folder_split="test") == "test"
    # The id decides even when the folder says otherwise.
    assert assign_split("Track00003", "split2", folder_split="train") == "test"
    with pytest.raises(SplitError, match="mysong"):
        assign_split("mysong", "split2", folder_split=None)
    with pytest.raises(SplitError, match="Track09999"):
        assign_split("Track09999", "orig", folder_split="omitted")
    with pytest.raises(SplitError, match="scheme"):
        assign_split("Track00001", "split3")


def _make_track(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metadata.yaml").write_text("stems: {}\n")


def test_find_tracks_split_folders_and_flat(tmp_path: Path) -> None:
    split_root = tmp_path / "split"
    _make_track(split_root / "train" / "Track00002")
    _make_track(split_root / "test" / "Track00001")
    _make_track(split_root / "omitted" / "Track00005")
    (split_root / "README.txt").write_text("not a track")
    found = find_tracks(split_root)
    assert [(t.track_id, t.folder_split) for t in found] == [
        ("Track00001", "test"),
        ("Track00002", "train"),
        ("Track00005", "omitted"),
    ]

    flat_root = tmp_path / "flat"
    _make_track(flat_root / "Track00002")
    _make_track(flat_root / "Track00001")
    (flat_root / "Track00003").mkdir()  # no metadata: still reported as a track
    (flat_root / "notes").mkdir()  # neither a track name nor metadata: ignored
    (flat_root / ".cache").mkdir()
    found = find_tracks(flat_root)
    assert [(t.track_id, t.folder_split) for t in found] == [
        ("Track00001", None),
        ("Track00002", None),
        ("Track00003", None),
    ]
    assert found[0].path == flat_root / "Track00001"

    with pytest.raises(SlakhError, match="not a directory"):
        find_tracks(tmp_path / "missing")


def test_read_metadata_fixture() -> None:
    meta = read_metadata(FIXTURE)
    assert meta.audio_dir == "stems" and meta.midi_dir == "MIDI"
    assert list(meta.stems) == [f"S{i:02d}" for i in range(11)]
    assert meta.stems["S01"].is_drum and meta.stems["S01"].program_num == 128
    assert meta.stems["S00"].program_num == 30 and not meta.stems["S00"].is_drum
    assert meta.midi_path("S00") == FIXTURE / "MIDI" / "S00.mid"
    assert meta.midi_path("S06") is None  # the real dataset has no MIDI for S06
    assert meta.audio_path("S00") is None  # the fixture has no audio


def test_select_stems_fixture_default_and_patch_maps() -> None:
    meta = read_metadata(FIXTURE)
    programs = select_stems(meta, load_instrument_map(), INSTRUMENTS)
    patches = select_stems(meta, load_instrument_map("instrument_map_patches.yaml"), INSTRUMENTS)
    expected = {"piano": ["S02"], "guitar": ["S00", "S08"], "bass": ["S03"]}
    assert programs == expected
    assert patches == expected
    assert select_stems(meta, load_instrument_map(), ["bass"]) == {"bass": ["S03"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stems: [unclosed\n", "invalid YAML"),
        ("- a\n- b\n", "mapping at top level"),
        ("audio_dir: stems\n", "no 'stems' mapping"),
        ("stems:\n  ../../x:\n    program_num: 30\n    is_drum: false\n", "not a plain file name"),
        ("audio_dir: ../..\nstems: {}\n", "not a plain folder name"),
        ("stems:\n  S00:\n    is_drum: false\n", "no valid program_num"),
    ],
)
def test_read_metadata_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "metadata.yaml").write_text(text)
    with pytest.raises(SlakhError, match=message) as info:
        read_metadata(tmp_path)
    assert str(tmp_path / "metadata.yaml") in str(info.value)


def test_read_metadata_missing(tmp_path: Path) -> None:
    with pytest.raises(SlakhError, match="missing metadata"):
        read_metadata(tmp_path)


def test_drums_never_selected_even_by_program(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "T")
    meta = read_metadata(tmp_path / "T")
    custom = tmp_path / "map.yaml"
    # program 0 would match a drum stem that wrongly carries program 0; is_drum wins
    custom.write_text(
        "classes:\n  drums_as_piano:\n    programs: [0]\n    plugin_names: [session_kit_full.nkm]\n"
    )
    assert select_stems(meta, load_instrument_map(custom), ["drums_as_piano"]) == {
        "drums_as_piano": []
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classes:\n  piano:\n    programs: [0]\n  keys:\n    programs: [0, 1]\n", "overlap"),
        ("classes:\n  piano:\n    programs: [200]\n", "0-127"),
        ("classes:\n  piano:\n    name: x\n", "selects nothing"),
        ("classes:\n  piano:\n    program: [0]\n", "unknown keys"),
        ("classes:\n  Piano!:\n    programs: [0]\n", "class name"),
        ("pianos: [0]\n", "classes"),
        ("classes: [\n", "invalid YAML"),
    ],
)
def test_instrument_map_validation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(SlakhError, match=message):
        load_instrument_map(path)


def test_default_map_contents_and_instrument_parsing() -> None:
    imap = load_instrument_map()
    assert set(imap.classes) == {"piano", "guitar", "bass"}
    assert {29, 30} == set(imap.classes["guitar"].programs)
    assert {33, 34} <= set(imap.classes["bass"].programs)
    assert 0 in imap.classes["piano"].programs
    assert 26 not in imap.classes["guitar"].programs  # jazz guitar is not distorted
    assert parse_instruments("bass, piano", imap) == ["bass", "piano"]
    with pytest.raises(SlakhError, match="not in the instrument map"):
        parse_instruments("piano,drums", imap)
    with pytest.raises(SlakhError, match="twice"):
        parse_instruments("piano,piano", imap)
    with pytest.raises(SlakhError, match="not found"):
        load_instrument_map(Path("/nonexistent/map.yaml"))


def test_patch_map_matches_patch_classes_json() -> None:
    groups = json.loads((SPLITS_JSON.parent / "patch_classes.json").read_text())
    imap = load_instrument_map("instrument_map_patches.yaml")
    assert imap.classes["piano"].plugin_names == frozenset(groups["acoustic piano"])
    assert imap.classes["guitar"].plugin_names == frozenset(groups["distorted electric guitar"])
    assert imap.classes["bass"].plugin_names == frozenset(groups["electric bass"])
