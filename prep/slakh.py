"""Reading a Slakh2100-layout corpus: track discovery, ``metadata.yaml``, splits, instrument maps.

Slakh2100 (Manilow et al., WASPAA 2019, CC BY 4.0) stores one folder per track::

    <root>/[<split>/]TrackNNNNN/{metadata.yaml, mix.flac, all_src.mid, MIDI/Sxx.mid, stems/Sxx.flac}

with or without split folders (``train``/``validation``/``test``, plus ``omitted`` in the
"redux" release). This module only *reads* that layout; it never decodes audio (see
``prep/build.py``).

Decisions (documented here once, referred to elsewhere):

* **Split of a track** is decided by its id, not by the folder it sits in. ``split2`` (the
  paper's Slakh2100-split2, default) reads ``prep/data/splits_v2.json``; ``orig`` uses the
  original id ranges 1-1500 train, 1501-1875 validation, 1876-2100 test. A track whose folder
  name is not ``TrackNNNNN``, or whose id the scheme does not know, falls back to the name of
  its split folder when that is ``train``/``validation``/``test``; otherwise it is skipped with
  a reason (:class:`SplitError`). Tracks inside ``omitted/`` (redux) are skipped: that
  release left them out on purpose (duplicated MIDI across splits).
* **Instruments** are selected by an instrument map (YAML, :func:`load_instrument_map`): a stem
  belongs to class *c* when its ``program_num`` is in ``c.programs`` or its ``plugin_name`` is in
  ``c.plugin_names``. Drum stems (``is_drum: true``) never belong to any class.
* **Paths** come only from plain names: stem keys, ``audio_dir`` and ``midi_dir`` must be single
  path components (no ``/``, ``\\``, ``..``), so nothing outside the track folder is ever read.
  Symlinks inside a track folder are followed (a corpus assembled with links still works).
* Slakh's ``audio_rendered``/``midi_saved`` flags are unreliable (they are ``false`` in released
  tracks that do have files): file existence is what counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SPLITS: tuple[str, ...] = ("train", "validation", "test")
OMITTED_FOLDER = "omitted"
SPLIT_FOLDERS: tuple[str, ...] = (*SPLITS, OMITTED_FOLDER)
SPLIT_SCHEMES: tuple[str, ...] = ("split2", "orig")
AUDIO_EXTENSIONS: tuple[str, ...] = (".flac", ".wav")  # tried in this order
MIDI_EXTENSION = ".mid"
METADATA_FILE = "metadata.yaml"
# a corpus rendered by `prep synth-slakh` holds its settings here, at its root (not a Slakh file)
SYNTH_CONFIG_FILE = "synth_slakh.json"
DEFAULT_INSTRUMENT_MAP = "instrument_map_programs.yaml"
PATCH_INSTRUMENT_MAP = "instrument_map_patches.yaml"

TRACK_ID_RE = re.compile(r"^Track(\d{5})$")
# A stem key / sub-folder name must be one plain path component.
PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
CLASS_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Original Slakh2100 split by id range (inclusive upper bounds).
ORIG_SPLIT_RANGES: tuple[tuple[int, str], ...] = ((1500, "train"), (1875, "validation"),
                                                  (2100, "test"))


class SlakhError(ValueError):
    """A corpus file is missing or malformed; the message names the file and the problem."""


class SplitError(SlakhError):
    """The split of a track cannot be decided (unknown id and no split folder)."""


@dataclass(frozen=True)
class SlakhTrack:
    """One track folder found in a corpus.

    Attributes:
        track_id: folder name, ``TrackNNNNN`` in released corpora.
        path: the track folder.
        folder_split: name of the split folder it sits in (``train``/``validation``/``test``/
            ``omitted``), or ``None`` in a flat layout.
    """

    track_id: str
    path: Path
    folder_split: str | None = None


@dataclass(frozen=True)
class StemInfo:
    """The per-stem fields of ``metadata.yaml`` this project uses."""

    key: str
    program_num: int
    is_drum: bool
    plugin_name: str | None = None
    inst_class: str | None = None
    midi_program_name: str | None = None


@dataclass(frozen=True)
class TrackMetadata:
    """A parsed ``metadata.yaml``: stem folder names and the stems, keyed like ``S00``."""

    path: Path
    audio_dir: str
    midi_dir: str
    stems: dict[str, StemInfo]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def track_dir(self) -> Path:
        return self.path.parent

    def audio_path(self, key: str) -> Path | None:
        """The stem's audio file (FLAC preferred over WAV), or None when neither exists."""
        for ext in AUDIO_EXTENSIONS:
            candidate = self.track_dir / self.audio_dir / f"{key}{ext}"
            if candidate.is_file():
                return candidate
        return None

    def midi_path(self, key: str) -> Path | None:
        """The stem's MIDI file ``<midi_dir>/<key>.mid``, or None when it does not exist."""
        candidate = self.track_dir / self.midi_dir / f"{key}{MIDI_EXTENSION}"
        return candidate if candidate.is_file() else None

    def expected_audio_path(self, key: str) -> Path:
        """Where the stem's FLAC would be (for error messages)."""
        return self.track_dir / self.audio_dir / f"{key}{AUDIO_EXTENSIONS[0]}"

    def expected_midi_path(self, key: str) -> Path:
        """Where the stem's MIDI would be (for error messages)."""
        return self.track_dir / self.midi_dir / f"{key}{MIDI_EXTENSION}"


@dataclass(frozen=True)
class InstrumentClass:
    """One target instrument class (one index i of the paper's Y[i, n, t])."""

    name: str  # short name used on the command line and in shards: piano, guitar, bass
    long_name: str  # e.g. "acoustic piano"
    programs: frozenset[int] = frozenset()  # 0-based General MIDI program numbers
    plugin_names: frozenset[str] = frozenset()  # Slakh patch names (metadata ``plugin_name``)

    def matches(self, stem: StemInfo) -> bool:
        """Whether ``stem`` belongs to this class (drums never do)."""
        if stem.is_drum:
            return False
        return stem.program_num in self.programs or (
            stem.plugin_name is not None and stem.plugin_name in self.plugin_names
        )


@dataclass(frozen=True)
class InstrumentMap:
    """Instrument classes by short name, plus where the map came from."""

    classes: dict[str, InstrumentClass]
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, stored in the manifest."""
        return {
            "source": self.source,
            "classes": {
                name: {
                    "name": cls.long_name,
                    "programs": sorted(cls.programs),
                    "plugin_names": sorted(cls.plugin_names),
                }
                for name, cls in self.classes.items()
            },
        }


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def is_plain_name(name: str) -> bool:
    """True if ``name`` is one safe path component (no separators, not ``.``/``..``)."""
    return bool(PLAIN_NAME_RE.match(name)) and name not in (".", "..")


def _looks_like_track(path: Path) -> bool:
    return path.is_dir() and (TRACK_ID_RE.match(path.name) is not None
                              or (path / METADATA_FILE).is_file())


def find_tracks(root: Path) -> list[SlakhTrack]:
    """Find every track folder under a Slakh2100-layout ``root``.

    Split folders (``train``, ``validation``, ``test``, ``omitted``) are searched when present;
    a flat layout (track folders directly under ``root``) is read too, and both may be mixed.
    Inside a split folder every sub-folder counts as a track (a broken one is then reported,
    not silently ignored); directly under ``root`` only folders named ``TrackNNNNN`` or holding a
    ``metadata.yaml`` do. Hidden folders are ignored.

    Returns:
        Tracks sorted by (track id, path). The same id may appear twice (e.g. in two split
        folders); the build reports the duplicates.

    Raises:
        SlakhError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise SlakhError(f"{root}: corpus root is not a directory")
    tracks: list[SlakhTrack] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if child.name in SPLIT_FOLDERS and not _looks_like_track(child):
            for sub in sorted(child.iterdir()):
                if sub.is_dir() and not sub.name.startswith("."):
                    tracks.append(SlakhTrack(sub.name, sub, child.name))
        elif _looks_like_track(child):
            tracks.append(SlakhTrack(child.name, child, None))
    tracks.sort(key=lambda t: (t.track_id, str(t.path)))
    return tracks


# --------------------------------------------------------------------------------------------
# metadata.yaml
# --------------------------------------------------------------------------------------------


def _plain_dir_name(value: Any, default: str, where: Path, key: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not is_plain_name(value):
        raise SlakhError(f"{where}: {key} {value!r} is not a plain folder name inside the track")
    return value


def _parse_stem(key: Any, entry: Any, where: Path) -> StemInfo:
    if not isinstance(key, str) or not is_plain_name(key):
        raise SlakhError(f"{where}: stem key {key!r} is not a plain file name; refusing it")
    if not isinstance(entry, Mapping):
        raise SlakhError(f"{where}: stem {key} is not a mapping")
    program = entry.get("program_num")
    # bool is an int subclass; a YAML `true` is not a program number
    if isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 128:
        raise SlakhError(f"{where}: stem {key} has no valid program_num (got {program!r})")
    is_drum = entry.get("is_drum", False)
    if not isinstance(is_drum, bool):
        raise SlakhError(f"{where}: stem {key} has a non-boolean is_drum ({is_drum!r})")

    def optional_str(name: str) -> str | None:
        value = entry.get(name)
        return None if value is None else str(value)

    return StemInfo(
        key=key,
        program_num=program,
        is_drum=is_drum or program == 128,  # Slakh writes program 128 for drum kits
        plugin_name=optional_str("plugin_name"),
        inst_class=optional_str("inst_class"),
        midi_program_name=optional_str("midi_program_name"),
    )


def read_metadata(track_dir: Path) -> TrackMetadata:
    """Parse ``track_dir/metadata.yaml`` (``yaml.safe_load``) and validate what is used.

    Raises:
        SlakhError: missing or unreadable file, invalid YAML, no ``stems`` mapping, a stem key
            or folder name that is not a plain name (path traversal), or a stem without a
            valid ``program_num``/``is_drum``. The message names the file.
    """
    path = Path(track_dir) / METADATA_FILE
    if not path.is_file():
        raise SlakhError(f"{path}: missing metadata file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlakhError(f"{path}: unreadable ({exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SlakhError(f"{path}: invalid YAML ({problem})") from exc
    if not isinstance(raw, dict):
        raise SlakhError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    stems_raw = raw.get("stems")
    if not isinstance(stems_raw, dict):
        raise SlakhError(f"{path}: no 'stems' mapping")
    stems = {}
    for key, entry in stems_raw.items():
        stem = _parse_stem(key, entry, path)
        stems[stem.key] = stem
    return TrackMetadata(
        path=path,
        audio_dir=_plain_dir_name(raw.get("audio_dir"), "stems", path, "audio_dir"),
        midi_dir=_plain_dir_name(raw.get("midi_dir"), "MIDI", path, "midi_dir"),
        stems=dict(sorted(stems.items())),
        raw=raw,
    )


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

_SPLIT2_CACHE: dict[str, str] | None = None


def load_split2() -> dict[str, str]:
    """Slakh2100-split2 as ``{track_id: split}`` from the packaged ``splits_v2.json``.

    ``"action": "move"`` sends a track to ``destination_split``; ``null`` keeps it in its
    original split (by id range).
    """
    global _SPLIT2_CACHE
    if _SPLIT2_CACHE is None:
        text = resources.files("prep").joinpath("data/splits_v2.json").read_text("utf-8")
        table: dict[str, str] = {}
        for track_id, entry in json.loads(text).items():
            if entry.get("action") == "move":
                table[track_id] = entry["destination_split"]
            else:
                table[track_id] = original_split(track_id)
        _SPLIT2_CACHE = table
    return _SPLIT2_CACHE


def original_split(track_id: str) -> str:
    """Original Slakh2100 split by id range: 1-1500 train, 1501-1875 validation, 1876-2100 test.

    Raises:
        SplitError: the id is not ``TrackNNNNN`` or is outside 1-2100.
    """
    match = TRACK_ID_RE.match(track_id)
    number = int(match.group(1)) if match else 0
    for upper, split in ORIG_SPLIT_RANGES:
        if 1 <= number <= upper:
            return split
    raise SplitError(f"{track_id}: not a Slakh2100 track id (Track00001-Track02100)")


def assign_split(track_id: str, scheme: str = "split2", folder_split: str | None = None) -> str:
    """The split (``train``/``validation``/``test``) of a track, decided by its id.

    Args:
        track_id: ``TrackNNNNN``.
        scheme: ``split2`` (the paper's, from ``splits_v2.json``) or ``orig`` (id ranges).
        folder_split: name of the folder the track sits in; only used as a fallback for ids
            the scheme does not know, and only if it is a split name.

    Raises:
        SplitError: unknown scheme, or id unknown to the scheme and no split folder to fall
            back on.
    """
    if scheme not in SPLIT_SCHEMES:
        raise SplitError(f"unknown split scheme {scheme!r}; choose one of {SPLIT_SCHEMES}")
    try:
        if scheme == "split2":
            table = load_split2()
            if track_id in table:
                return table[track_id]
            raise SplitError(f"{track_id}: not in splits_v2.json")
        return original_split(track_id)
    except SplitError as exc:
        if folder_split in SPLITS:
            return folder_split
        raise SplitError(f"{exc}, and its folder is not a split folder; split unknown") from exc


# --------------------------------------------------------------------------------------------
# Instrument maps
# --------------------------------------------------------------------------------------------

_MAP_KEYS = {"name", "programs", "plugin_names"}


def _parse_class(name: Any, entry: Any, where: str) -> InstrumentClass:
    if not isinstance(name, str) or not CLASS_NAME_RE.match(name):
        raise SlakhError(f"{where}: class name {name!r} must be lower-case letters/digits/_")
    if not isinstance(entry, Mapping):
        raise SlakhError(f"{where}: class {name} must be a mapping")
    unknown = set(entry) - _MAP_KEYS
    if unknown:
        raise SlakhError(f"{where}: class {name} has unknown keys {sorted(unknown)} "
                         f"(allowed: {sorted(_MAP_KEYS)})")
    programs = entry.get("programs") or []
    plugin_names = entry.get("plugin_names") or []
    if not isinstance(programs, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 127 for p in programs
    ):
        raise SlakhError(f"{where}: class {name}: programs must be a list of 0-127 "
                         "(0-based General MIDI; drums are never selected)")
    if not isinstance(plugin_names, list) or not all(isinstance(p, str) for p in plugin_names):
        raise SlakhError(f"{where}: class {name}: plugin_names must be a list of strings")
    if not programs and not plugin_names:
        raise SlakhError(f"{where}: class {name} selects nothing (no programs, no plugin_names)")
    return InstrumentClass(
        name=name,
        long_name=str(entry.get("name", name)),
        programs=frozenset(programs),
        plugin_names=frozenset(plugin_names),
    )


def parse_instrument_map(data: Any, source: str) -> InstrumentMap:
    """Validate an instrument map already loaded from YAML (see :func:`load_instrument_map`)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("classes"), Mapping):
        raise SlakhError(f"{source}: expected a top-level 'classes:' mapping")
    classes = {name: _parse_class(name, entry, source) for name, entry in data["classes"].items()}
    if not classes:
        raise SlakhError(f"{source}: no classes")
    # A stem must not fall into two classes: programs and patch names must be disjoint.
    names = list(classes)
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            shared_programs = classes[a].programs & classes[b].programs
            shared_plugins = classes[a].plugin_names & classes[b].plugin_names
            if shared_programs or shared_plugins:
                raise SlakhError(
                    f"{source}: classes {a} and {b} overlap "
                    f"(programs {sorted(shared_programs)}, plugin_names {sorted(shared_plugins)})"
                )
    return InstrumentMap(classes=classes, source=source)


def load_instrument_map(path: Path | str | None = None) -> InstrumentMap:
    """Load an instrument map (YAML, ``yaml.safe_load``).

    Format::

        classes:
          piano:                       # short name (CLI, shards)
            name: acoustic piano       # long name
            programs: [0, 1, 3]        # 0-based GM program_num, optional
            plugin_names: [...]        # Slakh patch names, optional

    Args:
        path: a YAML file; ``None`` loads the packaged default
            ``prep/data/instrument_map_programs.yaml`` (by program number).
            ``instrument_map_patches.yaml`` (by patch) also ships with the package; a bare name
            of a packaged map is accepted.

    Raises:
        SlakhError: missing file, invalid YAML, or an invalid map (message names the file).
    """
    if path is None or (not Path(path).exists()
                        and str(path) in (DEFAULT_INSTRUMENT_MAP, PATCH_INSTRUMENT_MAP)):
        name = DEFAULT_INSTRUMENT_MAP if path is None else str(path)
        text = resources.files("prep").joinpath(f"data/{name}").read_text("utf-8")
        source = f"prep/data/{name}"
    else:
        file = Path(path)
        if not file.is_file():
            raise SlakhError(f"{file}: instrument map not found")
        text = file.read_text(encoding="utf-8")
        source = str(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SlakhError(f"{source}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    return parse_instrument_map(data, source)


def parse_instruments(value: str | Iterable[str], instrument_map: InstrumentMap) -> list[str]:
    """Turn ``"piano,guitar,bass"`` (or a list) into validated class names, in the given order.

    Raises:
        SlakhError: empty, duplicated, or not in the map.
    """
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise SlakhError("no instruments requested")
    if len(set(names)) != len(names):
        raise SlakhError(f"instruments listed twice: {names}")
    unknown = [n for n in names if n not in instrument_map.classes]
    if unknown:
        raise SlakhError(f"instruments {unknown} are not in the instrument map "
                         f"{instrument_map.source} (it has {sorted(instrument_map.classes)})")
    return names


def select_stems(
    metadata: TrackMetadata, instrument_map: InstrumentMap, instruments: Sequence[str]
) -> dict[str, list[str]]:
    """Stem keys of each requested instrument class in one track.

    Args:
        metadata: the track's parsed ``metadata.yaml``.
        instrument_map: the class definitions.
        instruments: requested class names, e.g. ``["piano", "guitar", "bass"]``.

    Returns:
        ``{class name: sorted stem keys}`` for every requested class (empty list when the track
        has no stem of that class). Drum stems and stems of other classes are left out.

    Raises:
        SlakhError: an instrument not in the map, or a stem matching two classes (e.g. by
            program one, by patch name another).
    """
    unknown = [n for n in instruments if n not in instrument_map.classes]
    if unknown:
        raise SlakhError(f"instruments {unknown} are not in {instrument_map.source}")
    selected: dict[str, list[str]] = {name: [] for name in instruments}
    for key, stem in metadata.stems.items():
        matches = [name for name in instruments if instrument_map.classes[name].matches(stem)]
        if len(matches) > 1:  # e.g. program of one class, patch name of another
            raise SlakhError(f"{metadata.path}: stem {key} (program {stem.program_num}, "
                             f"{stem.plugin_name}) matches several classes {matches} of "
                             f"{instrument_map.source}")
        for name in matches:
            selected[name].append(key)
    return {name: sorted(keys) for name, keys in selected.items()}
