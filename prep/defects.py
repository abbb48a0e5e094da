"""Slakh2100's known defects, and a check that no music leaks across train/validation/test.

Slakh2100's users report defects publicly; ``prep build-shards`` acts on each class and records
what it found in ``OUT/defects.json`` (plus how it checked: ``defect_checks``) and in the
manifest (``defects``, ``split_leakage``); the data card lists them. What and why:

* **Known-bad renders** (white noise, wrong pitch or octave, unrendered notes, label lengths;
  24 stems): ``prep/data/slakh_known_defects.yaml``, transcribed from the public list of
  slakh-utils#17 (greenbech, MIT) and the report slakh-utils#21, with attribution in its
  header. An entry applies to a track whose id *and* metadata ``UUID`` (the Lakh MIDI MD5)
  match, so another corpus that reuses Slakh's ids is never matched. A known-bad stem of a
  requested instrument **skips the track**, as the list's own loader does
  (greenbech/slakh-pytorch-dataset): keeping the track without that stem would silently change
  its mixture, and a researcher reading "Track00357" expects the whole track or none. Known-bad
  stems of other instruments are never opened (the mixture is the sum of the selected stems
  only) and are recorded as not used.
* **Stems without audio**: Slakh keeps MIDI for some stems it never rendered
  (slakh-utils#20, mirdata#585). A selected stem without an audio file skips the track, with a
  reason that reads the stem's ``audio_rendered`` flag: ``true`` means the file should be there
  (an incomplete copy), ``false`` in a track where other stems say ``true`` means Slakh did not
  render it, and ``false`` everywhere (the original Slakh2100 release writes ``false`` for every
  stem, rendered or not) tells nothing. Unselected stems marked rendered but without audio are
  recorded as not used (they hint at an incomplete copy).
* **Bass octave** (no public per-stem list): Slakh's generator moves every bass note up an
  octave before rendering it (``midi_rules/pitch.json`` of ethman/slakh-generation), and notes
  below B1 (MIDI 35) in the original score end up one more octave up: Kontakt does not render
  that lowest octave (slakh-utils#18). The labels (``MIDI/Sxx.mid``) carry the shifted pitches;
  its users report the audio sounds an octave below them (slakh-generation#2). The check
  compares each selected bass stem's notes with the same notes in ``all_src.mid`` (the original
  Lakh file) and flags a stem whose lowest octave was moved; the rolls keep the labels as they
  are.
* **Split leakage**: the original splits share MIDI files (slakh-utils ``splits/README.md``;
  Slakh2100-split2, the paper's and this project's default, moves the duplicates into one
  split; redux leaves them out). :func:`find_split_leakage` fingerprints the notes of every
  planned track and reports pairs in different splits of the scheme in use that are
  identical, near-identical (Jaccard >= :data:`NEAR_DUPLICATE_JACCARD`), or transcriptions of
  the same song (the same Million Song Dataset id in ``lmd_midi_dir``). The build keeps every
  pair as it is: the report says whether the scheme is clean.

Cost (``benchmarks/perf/leakage_check.py``: 2100 Lakh-sized songs of ~3000 notes, on the shared
2-core machine under load): reading the MIDI 3.7 ms per file (mido: ~50 ms), fingerprints 1.1 s,
MinHash, LSH and exact Jaccard of the candidates 1.7 s; every planted duplicate found.

Example::

    >>> known = load_known_defects()
    >>> [e.stem for e in known.lookup("Track00357", "2dfc2e66f4cace81c83f18e2d2f12f74")]
    ['S03']
    >>> known.lookup("Track00357", "another-uuid")  # same id, other music: not Slakh's track
    []
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from prep.atomic import atomic_write_text
from prep.slakh import MIDI_EXTENSION, TrackMetadata

if TYPE_CHECKING:
    from prep.shards import Manifest

KNOWN_DEFECTS_FILE = "slakh_known_defects.yaml"
REPORT_NAME = "defects.json"  # OUT/defects.json, written by build-shards, read by prep index
SKIPPED_TRACK = "track skipped"
NOT_USED = "not used (stem not selected)"
FLAGGED = "flagged, kept as is"
LEFT_OUT = "left out of the split-leakage check"
ACTIONS: tuple[str, ...] = (SKIPPED_TRACK, NOT_USED, FLAGGED, LEFT_OUT)
# the manifest note of a shard folder without OUT/defects.json (built before the checks)
REPORT_MISSING = "no defects.json: known defects and split leakage were not checked"
BASS_PROGRAMS = range(32, 40)  # Slakh's "Bass" inst_class (0-based General MIDI)
BASS_LOWEST_RENDERED = 35  # B1: notes below it in all_src.mid are moved up (slakh-utils#18)
DRUM_CHANNEL = 9  # 0-based MIDI channel 10
GRID_PER_BEAT = 4  # fingerprint onsets on a sixteenth-note grid (MIDI ticks, so tempo-free)
NEAR_DUPLICATE_JACCARD = 0.5
MINHASH_BANDS, MINHASH_ROWS = 42, 3  # 126 hashes; P(candidate) = 0.996 at J=0.5, 0.04 at J=0.1
MINHASH_SEED = 29
MSD_ID_RE = re.compile(r"(?:^|/)(TR[A-Z0-9]{16})(?:/|$)")  # Million Song Dataset track id

ISSUE_URLS: dict[str, str] = {
    "not-rendered": "https://github.com/ethman/slakh-utils/issues/20",
    "bass-octave": "https://github.com/ethman/slakh-utils/issues/18",
    "bass-shift": "https://github.com/ethman/slakh-generation/issues/2",
    "leakage": "https://github.com/ethman/slakh-utils/blob/master/splits/README.md",
}


class DefectsError(ValueError):
    """The known-defects file is malformed; the message names the file and the entry."""


class MidiParseError(ValueError):
    """A MIDI file cannot be read by :func:`read_midi_notes`; the message names it."""


# --------------------------------------------------------------------------------------------
# The known-bad list
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefectSource:
    """Where entries of the known-bad list come from (the data file's ``sources``)."""

    key: str
    title: str
    url: str
    author: str
    published: str
    licence: str


@dataclass(frozen=True)
class KnownDefect:
    """One stem of the known-bad list: ``stem`` of ``track`` (whose UUID is ``uuid``)."""

    track: str
    stem: str
    defect: str  # a class of the data file's ``classes``, e.g. "white-noise"
    source: str  # a key of the data file's ``sources``
    uuid: str


@dataclass(frozen=True)
class KnownDefectList:
    """The parsed data file: entries, their sources and what each defect class means."""

    entries: tuple[KnownDefect, ...]
    sources: dict[str, DefectSource]
    classes: dict[str, str]
    path: str

    def lookup(self, track_id: str, uuid: Any) -> list[KnownDefect]:
        """Entries of ``track_id``, if ``uuid`` (the metadata's ``UUID``) is the listed one."""
        return [e for e in self.entries if e.track == track_id and e.uuid == uuid]


_TRACK_RE = re.compile(r"^Track\d{5}$")
_STEM_RE = re.compile(r"^S\d{2}$")
_UUID_RE = re.compile(r"^[0-9a-f]{32}$")
_KNOWN_CACHE: dict[str, KnownDefectList] = {}


def _parse_entry(raw: Any, index: int, classes: Mapping[str, str],
                 sources: Mapping[str, DefectSource], where: str) -> KnownDefect:
    if not isinstance(raw, Mapping) or set(raw) != {"track", "stem", "defect", "source", "uuid"}:
        raise DefectsError(f"{where}: entry {index} must have exactly track, stem, defect, "
                           f"source, uuid (got {raw!r})")
    entry = KnownDefect(**{k: str(v) for k, v in raw.items()})
    checks = [(_TRACK_RE.match(entry.track), "track must be TrackNNNNN"),
              (_STEM_RE.match(entry.stem), "stem must be Snn"),
              (_UUID_RE.match(entry.uuid), "uuid must be 32 lower-case hex digits"),
              (entry.defect in classes, f"defect {entry.defect!r} is not in classes"),
              (entry.source in sources, f"source {entry.source!r} is not in sources")]
    for ok, problem in checks:
        if not ok:
            raise DefectsError(f"{where}: entry {index} ({entry.track} {entry.stem}): {problem}")
    return entry


def parse_known_defects(data: Any, where: str) -> KnownDefectList:
    """Validate the known-defects data already loaded from YAML (:func:`load_known_defects`)."""
    if not isinstance(data, Mapping) or not all(
            isinstance(data.get(k), Mapping) for k in ("sources", "classes")):
        raise DefectsError(f"{where}: expected 'sources' and 'classes' mappings")
    sources = {}
    for key, raw in data["sources"].items():
        try:
            sources[str(key)] = DefectSource(key=str(key), **{k: str(v) for k, v in raw.items()
                                                               if k != "data"})
        except TypeError as error:
            raise DefectsError(f"{where}: source {key}: {error}") from error
    classes = {str(k): str(v) for k, v in data["classes"].items()}
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise DefectsError(f"{where}: 'entries' must be a non-empty list")
    entries = tuple(_parse_entry(raw, i, classes, sources, where)
                    for i, raw in enumerate(raw_entries))
    keys = [(e.track, e.stem) for e in entries]
    if len(set(keys)) != len(keys):
        raise DefectsError(f"{where}: a stem is listed twice")
    return KnownDefectList(entries, sources, classes, where)


def load_known_defects(path: Path | str | None = None) -> KnownDefectList:
    """The known-bad stem list (default: the packaged ``prep/data/slakh_known_defects.yaml``).

    Raises:
        DefectsError: a missing file or a malformed entry (the message names the file).
    """
    key = str(path) if path is not None else ""
    if key in _KNOWN_CACHE:
        return _KNOWN_CACHE[key]
    if path is None:
        text = resources.files("prep").joinpath(f"data/{KNOWN_DEFECTS_FILE}").read_text("utf-8")
        where = f"prep/data/{KNOWN_DEFECTS_FILE}"
    else:
        if not Path(path).is_file():
            raise DefectsError(f"{path}: known-defects file not found")
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DefectsError(f"{where}: invalid YAML ({str(error).splitlines()[0]})") from error
    _KNOWN_CACHE[key] = parse_known_defects(data, where)
    return _KNOWN_CACHE[key]


# --------------------------------------------------------------------------------------------
# Per-track checks (planning time: metadata, file existence, MIDI; no audio decoded)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    """One defect found in a corpus, and what the build did with it (:data:`ACTIONS`)."""

    track: str
    stem: str | None
    kind: str  # e.g. "known-bad: white-noise", "not-rendered", "bass-octave"
    action: str
    reason: str
    source: str  # the URL that documents this defect class
    instrument: str | None = None  # the requested class the stem belongs to, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _selected_keys(selected: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {key: name for name, keys in selected.items() for key in keys}


def _stem_name(key: str, chosen: Mapping[str, str]) -> str:
    return f"selected {chosen[key]} stem {key}" if key in chosen else f"stem {key}"


def _known_bad(track_id: str, meta: TrackMetadata, chosen: Mapping[str, str],
               known: KnownDefectList) -> list[Defect]:
    found = []
    for entry in known.lookup(track_id, meta.raw.get("UUID")):
        source = known.sources[entry.source]
        action = SKIPPED_TRACK if entry.stem in chosen else NOT_USED
        found.append(Defect(
            track=track_id, stem=entry.stem, kind=f"known-bad: {entry.defect}", action=action,
            reason=f"{_stem_name(entry.stem, chosen)} is a known-bad render, {entry.defect}: "
                   f"{known.classes[entry.defect]}; listed in {source.title}",
            source=source.url, instrument=chosen.get(entry.stem)))
    return found


def _missing_audio_reason(meta: TrackMetadata, key: str, instrument: str,
                          any_rendered: bool) -> tuple[str, str]:
    """(kind, reason) for a selected stem without audio, from its ``audio_rendered`` flag."""
    flag = (meta.raw.get("stems", {}).get(key) or {}).get("audio_rendered")
    where = f"{meta.expected_audio_path(key)}: missing audio of selected {instrument} stem {key}"
    if meta.midi_path(key) is None:
        where = (f"{meta.expected_audio_path(key)}: selected {instrument} stem {key} has neither "
                 f"audio nor MIDI ({meta.expected_midi_path(key).name})")
    if flag is True:
        return "rendered-but-missing", (f"{where}; its metadata says audio_rendered: true, so "
                                        "the file should be there (incomplete copy?)")
    if flag is False and any_rendered:
        return "not-rendered", (f"{where}; its metadata says audio_rendered: false: Slakh has "
                                "MIDI but no audio for it (slakh-utils#20)")
    return "no-audio-file", (f"{where} (no .flac or .wav; audio_rendered is not true for any "
                             "stem of this track, so the metadata cannot tell whether it was "
                             "rendered)")


def check_stems(track_id: str, meta: TrackMetadata, selected: Mapping[str, Sequence[str]],
                known: KnownDefectList | None = None) -> list[Defect]:
    """Known-bad stems and stems without audio of one track (file existence only).

    Args:
        track_id: the track folder's name.
        meta: its parsed ``metadata.yaml``.
        selected: ``{instrument: stem keys}`` (:func:`prep.slakh.select_stems`).
        known: the known-bad list (default: the packaged one).

    Returns:
        The defects, sorted by stem; those with action :data:`SKIPPED_TRACK` make the build
        skip the track (:func:`skip_reason`).
    """
    known = known or load_known_defects()
    chosen = _selected_keys(selected)
    found = _known_bad(track_id, meta, chosen, known)
    any_rendered = any((raw or {}).get("audio_rendered") is True
                       for raw in meta.raw.get("stems", {}).values() if isinstance(raw, Mapping))
    for key in meta.stems:
        if meta.audio_path(key) is not None:
            continue
        flag = (meta.raw["stems"].get(key) or {}).get("audio_rendered")
        if key in chosen:
            kind, reason = _missing_audio_reason(meta, key, chosen[key], any_rendered)
            found.append(Defect(track_id, key, kind, SKIPPED_TRACK, reason,
                                ISSUE_URLS["not-rendered"], chosen[key]))
        elif flag is True:
            found.append(Defect(track_id, key, "rendered-but-missing", NOT_USED,
                                f"{meta.expected_audio_path(key)}: metadata says "
                                "audio_rendered: true but there is no audio file",
                                ISSUE_URLS["not-rendered"]))
    return sorted(found, key=lambda d: (d.stem or "", d.kind))


def skip_reason(found: Sequence[Defect], track_dir: Path) -> str | None:
    """The one-line skip reason if any defect skips the track, else None."""
    skipping = [d for d in found if d.action == SKIPPED_TRACK]
    if not skipping:
        return None
    first = skipping[0]
    text = first.reason if first.reason.startswith(str(track_dir)) else (
        f"{track_dir}: {first.reason} ({first.source})")
    more = f" (and {len(skipping) - 1} more defect(s))" if len(skipping) > 1 else ""
    return text + more


# --------------------------------------------------------------------------------------------
# MIDI notes (a minimal Standard MIDI File reader: note-ons only, ~10x faster than mido)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MidiNotes:
    """Note-ons (velocity > 0) of a MIDI file: absolute tick, pitch, channel, program."""

    ticks: np.ndarray  # int64
    pitches: np.ndarray  # int64
    channels: np.ndarray  # int64, 0-based (9 = drums)
    programs: np.ndarray  # int64, the channel's program at the note (0 if never set)
    ticks_per_beat: int

    def grid(self) -> np.ndarray:
        """Onsets on the :data:`GRID_PER_BEAT` grid (rounded), independent of tempo."""
        tpb = self.ticks_per_beat
        return (self.ticks * GRID_PER_BEAT + tpb // 2) // tpb


def _vlq(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i


def _read_track(data: bytes, i: int, end: int, out: list[tuple[int, int, int, int]]) -> None:
    tick = running = 0
    programs = [0] * 16
    while i < end:
        delta, i = _vlq(data, i)
        tick += delta
        status = data[i]
        if status >= 0x80:
            i += 1
        else:  # running status: the previous channel message's status byte
            if not running:
                raise MidiParseError("data byte without a status")
            status = running
        if status == 0xFF:  # meta event: type, length, data
            length, i = _vlq(data, i + 1)
            i += length
        elif status in (0xF0, 0xF7):  # sysex: length, data
            length, i = _vlq(data, i)
            i += length
        else:
            running = status
            kind, channel = status & 0xF0, status & 0x0F
            if kind in (0xC0, 0xD0):
                if kind == 0xC0:
                    programs[channel] = data[i]
                i += 1
            else:
                if kind == 0x90 and data[i + 1] > 0:
                    out.append((tick, data[i], channel, programs[channel]))
                i += 2


def read_midi_notes(path: Path) -> MidiNotes:
    """Every note-on of a Standard MIDI File (format 0 or 1), without tempo or timing maps.

    SMPTE-timed files count a beat as half a second. Raises :class:`MidiParseError` naming the
    file if it is not a MIDI file or is truncated.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"MThd" or len(data) < 14:
        raise MidiParseError(f"{path}: not a Standard MIDI File")
    header_len = int.from_bytes(data[4:8], "big")
    division = struct.unpack(">H", data[12:14])[0]
    if division & 0x8000:  # SMPTE: frames per second x ticks per frame = ticks per second
        tpb = max(1, (256 - (division >> 8)) * (division & 0xFF) // 2)
    else:
        tpb = max(1, division)
    notes: list[tuple[int, int, int, int]] = []
    pos = 8 + header_len
    try:
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos + 4:pos + 8], "big")
            if data[pos:pos + 4] == b"MTrk":
                _read_track(data, pos + 8, min(pos + 8 + length, len(data)), notes)
            pos += 8 + length
    except (IndexError, MidiParseError) as error:
        raise MidiParseError(f"{path}: malformed MIDI ({error or 'truncated'})") from error
    array = np.array(notes, dtype=np.int64).reshape(-1, 4)
    return MidiNotes(array[:, 0], array[:, 1], array[:, 2], array[:, 3], tpb)


# --------------------------------------------------------------------------------------------
# Bass octave
# --------------------------------------------------------------------------------------------


def bass_octave_offsets(stem: MidiNotes, original: MidiNotes) -> dict[int, int]:
    """How far each label note of a bass stem lies above the same note in ``all_src.mid``.

    A stem note matches an original note of a bass program (32-39, not drums) at the same
    sixteenth-note onset with the same pitch class; the smallest non-negative offset wins.

    Returns:
        ``{offset in semitones: notes}``, with ``-1`` counting notes that match none.
    """
    by_onset: dict[tuple[int, int], list[int]] = defaultdict(list)
    is_bass = (original.channels != DRUM_CHANNEL) & np.isin(original.programs, BASS_PROGRAMS)
    for onset, pitch in zip(original.grid()[is_bass].tolist(),
                            original.pitches[is_bass].tolist(), strict=True):
        by_onset[onset, pitch % 12].append(pitch)
    counts: dict[int, int] = defaultdict(int)
    for onset, pitch in zip(stem.grid().tolist(), stem.pitches.tolist(), strict=True):
        offsets = [pitch - p for p in by_onset.get((onset, pitch % 12), []) if pitch >= p]
        counts[min(offsets) if offsets else -1] += 1
    return dict(sorted(counts.items()))


def bass_octave_defects(track_id: str, meta: TrackMetadata,
                        selected: Mapping[str, Sequence[str]],
                        original: MidiNotes | None) -> list[Defect]:
    """Flags for selected bass stems of a Slakh render whose lowest octave was moved up.

    Only tracks rendered from Lakh MIDI (``lmd_midi_dir`` under ``lmd_*``) are checked; a stem
    is flagged when some of its label notes lie two octaves above ``all_src.mid`` (the note was
    below B1 there). Nothing is changed in the rolls.
    """
    if original is None or not str(meta.raw.get("lmd_midi_dir", "")).startswith("lmd_"):
        return []
    found = []
    for key, instrument in sorted(_selected_keys(selected).items()):
        stem = meta.stems[key]
        path = meta.midi_path(key)
        if stem.is_drum or stem.program_num not in BASS_PROGRAMS or path is None:
            continue
        try:
            offsets = bass_octave_offsets(read_midi_notes(path), original)
        except (MidiParseError, OSError):
            continue  # the build reads the file again and reports it
        moved = offsets.get(24, 0)
        if moved:
            total = sum(offsets.values())
            found.append(Defect(
                track_id, key, "bass-octave", FLAGGED,
                f"{moved} of {total} notes of {key} were below B1 (MIDI "
                f"{BASS_LOWEST_RENDERED}) in all_src.mid and are two octaves up in its label "
                f"({offsets.get(12, 0)} are one octave up, as Slakh shifts all bass); the "
                "lowest octave is not rendered (slakh-utils#18)", ISSUE_URLS["bass-octave"],
                instrument))
    return found


# --------------------------------------------------------------------------------------------
# Split leakage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """The note content of one track: a set of (onset on the grid, pitch) tokens."""

    tokens: np.ndarray  # sorted unique int64: onset * 128 + pitch, onsets from the first note
    digest: str  # SHA-256 of the tokens: equal digests = identical content


def fingerprint(notes: MidiNotes) -> Fingerprint:
    """Tokens of every non-drum note: (sixteenth-note onset counted from the first note, pitch).

    Onsets come from MIDI ticks, so a tempo change or a leading silence does not change the
    fingerprint; a transposition or a shift of whole bars does.
    """
    keep = notes.channels != DRUM_CHANNEL
    onsets = notes.grid()[keep]
    if onsets.size:
        onsets = onsets - onsets.min()
    tokens = np.unique(onsets * 128 + notes.pitches[keep])
    return Fingerprint(tokens, hashlib.sha256(tokens.tobytes()).hexdigest())


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A & B| / |A | B| of two sorted unique token arrays (0.0 for two empty ones)."""
    union = np.union1d(a, b).size
    return np.intersect1d(a, b, assume_unique=True).size / union if union else 0.0


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash of each element (uint64, wrapping)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_HASHES = MINHASH_BANDS * MINHASH_ROWS
_SALT = np.uint64(np.random.default_rng(MINHASH_SEED).integers(0, 2**63))


def minhash(tokens: np.ndarray) -> np.ndarray:
    """One-permutation MinHash signature of a token set (:data:`MINHASH_BANDS` x
    :data:`MINHASH_ROWS` values, uint64).

    Each token is hashed once; the hash picks one of the bins and the bin keeps its smallest
    hash, so two signatures agree in a bin with probability close to the Jaccard similarity of
    the sets (Li, Owen & Zhang, NeurIPS 2012), at the cost of one hash per token. An empty bin
    (sets of a few hundred tokens or less) gets a value derived from the whole set, so it agrees
    only with an identical set.
    """
    with np.errstate(over="ignore"):
        hashed = _mix64(tokens.astype(np.uint64) ^ _SALT)
        bins = (hashed % np.uint64(_HASHES)).astype(np.int64)
        salt = np.bitwise_xor.reduce(hashed) if hashed.size else np.uint64(0)
        signature = _mix64(np.arange(_HASHES, dtype=np.uint64) ^ salt)  # the empty bins
        order = np.lexsort((hashed, bins))
        first_bins, first = np.unique(bins[order], return_index=True)
        signature[first_bins] = hashed[order][first]
    return signature


def candidate_pairs(signatures: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of rows whose signatures agree in at least one whole band (LSH banding)."""
    pairs: set[tuple[int, int]] = set()
    for band in range(MINHASH_BANDS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(
            signatures[:, band * MINHASH_ROWS:(band + 1) * MINHASH_ROWS])
        for row in range(block.shape[0]):
            buckets[block[row].tobytes()].append(row)
        for rows in buckets.values():
            pairs.update((a, b) for i, a in enumerate(rows) for b in rows[i + 1:])
    return pairs


@dataclass(frozen=True)
class LeakageTrack:
    """What the leakage check needs of one planned track."""

    track_id: str
    split: str
    fingerprint: Fingerprint
    song: str | None = None  # Million Song Dataset id from lmd_midi_dir, if any


@dataclass(frozen=True)
class LeakagePair:
    """Two tracks in different splits with the same (or nearly the same) music."""

    track_a: str
    split_a: str
    track_b: str
    split_b: str
    kind: str  # "identical", "near-identical" or "same-song"
    similarity: float  # Jaccard similarity of the two fingerprints

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair(a: LeakageTrack, b: LeakageTrack, kind: str, similarity: float) -> LeakagePair:
    first, second = sorted((a, b), key=lambda t: t.track_id)
    return LeakagePair(first.track_id, first.split, second.track_id, second.split, kind,
                       round(float(similarity), 4))


def find_split_leakage(tracks: Sequence[LeakageTrack],
                       threshold: float = NEAR_DUPLICATE_JACCARD) -> list[LeakagePair]:
    """Pairs of tracks in different splits with identical, near-identical or same-song MIDI.

    Exact duplicates by digest; near duplicates by MinHash-LSH candidates (no all-pairs
    comparison) confirmed with the exact Jaccard similarity of the token sets (>= ``threshold``);
    same-song pairs by the Million Song Dataset id in ``lmd_midi_dir`` (Lakh's matched set holds
    several MIDI files of one song), whatever their similarity.

    Returns:
        Pairs sorted by (track_a, track_b), each pair once, ``track_a < track_b``.
    """
    found: dict[tuple[str, str], LeakagePair] = {}
    usable = [t for t in tracks if t.fingerprint.tokens.size]
    for i, j in candidate_pairs(np.stack([minhash(t.fingerprint.tokens) for t in usable])
                                if usable else np.zeros((0, _HASHES), np.uint64)):
        a, b = usable[i], usable[j]
        if a.split == b.split:
            continue
        if a.fingerprint.digest == b.fingerprint.digest:
            pair = _pair(a, b, "identical", 1.0)
        else:
            similarity = jaccard(a.fingerprint.tokens, b.fingerprint.tokens)
            if similarity < threshold:
                continue
            pair = _pair(a, b, "near-identical", similarity)
        found[pair.track_a, pair.track_b] = pair
    by_digest: dict[str, list[LeakageTrack]] = defaultdict(list)
    by_song: dict[str, list[LeakageTrack]] = defaultdict(list)
    for track in tracks:
        by_digest[track.fingerprint.digest].append(track)
        if track.song:
            by_song[track.song].append(track)
    groups = [(group, "identical") for group in by_digest.values()]  # LSH-independent
    groups += [(group, "same-song") for group in by_song.values()]
    for group, kind in groups:
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                key = tuple(sorted((a.track_id, b.track_id)))
                if a.split != b.split and key not in found:
                    similarity = 1.0 if kind == "identical" else jaccard(
                        a.fingerprint.tokens, b.fingerprint.tokens)
                    found[key] = _pair(a, b, kind, similarity)
    return [found[key] for key in sorted(found)]


def song_id(meta: TrackMetadata) -> str | None:
    """The Million Song Dataset id in ``lmd_midi_dir`` (``lmd_matched/A/B/C/TR.../md5.mid``)."""
    match = MSD_ID_RE.search(str(meta.raw.get("lmd_midi_dir", "")))
    return match.group(1) if match else None


def track_midi_notes(meta: TrackMetadata) -> MidiNotes:
    """The notes of ``all_src.mid``, or of every ``<midi_dir>/*.mid`` when it is missing."""
    whole = meta.track_dir / "all_src.mid"
    if whole.is_file():
        return read_midi_notes(whole)
    parts = [read_midi_notes(p) for p in sorted((meta.track_dir / meta.midi_dir).glob(
        f"*{MIDI_EXTENSION}"))]
    if not parts:
        raise MidiParseError(f"{meta.track_dir}: no all_src.mid and no MIDI files")
    # each file on its own resolution: bring every one onto the first one's ticks per beat
    tpb = parts[0].ticks_per_beat
    return MidiNotes(np.concatenate([p.ticks * tpb // p.ticks_per_beat for p in parts]),
                     np.concatenate([p.pitches for p in parts]),
                     np.concatenate([p.channels for p in parts]),
                     np.concatenate([p.programs for p in parts]), tpb)


# --------------------------------------------------------------------------------------------
# Collecting during planning, and the report
# --------------------------------------------------------------------------------------------


@dataclass
class DefectCollector:
    """Gathers defects and fingerprints while ``prep.build.make_plan`` plans the tracks.

    ``check`` runs before a track's files are checked (it may skip the track),
    ``track_planned`` once the track is planned; ``report`` gives what ``OUT/defects.json``
    holds.
    """

    known: KnownDefectList = field(default_factory=load_known_defects)
    defects: list[Defect] = field(default_factory=list)
    tracks: list[LeakageTrack] = field(default_factory=list)

    def check(self, track_id: str, meta: TrackMetadata,
              selected: Mapping[str, Sequence[str]]) -> str | None:
        """Record the track's stem defects; the skip reason if one of them skips it."""
        found = check_stems(track_id, meta, selected, self.known)
        self.defects.extend(found)
        return skip_reason(found, meta.track_dir)

    def track_planned(self, track_id: str, split: str, meta: TrackMetadata,
                      selected: Mapping[str, Sequence[str]]) -> None:
        """Fingerprint a planned track and flag its bass octave (reads MIDI, no audio)."""
        try:
            notes = track_midi_notes(meta)
        except (MidiParseError, OSError) as error:
            self.defects.append(Defect(track_id, None, "unreadable-midi", LEFT_OUT, str(error),
                                       ISSUE_URLS["leakage"]))
            notes = None
        self.defects.extend(bass_octave_defects(track_id, meta, selected, notes))
        if notes is not None:
            self.tracks.append(LeakageTrack(track_id, split, fingerprint(notes), song_id(meta)))

    def report(self, split_scheme: str) -> dict[str, Any]:
        """``{"defects", "split_leakage", "defect_checks"}``: JSON-ready and deterministic."""
        pairs = find_split_leakage(self.tracks)
        splits = sorted({t.split for t in self.tracks})
        return {
            "defects": [d.to_dict() for d in sorted(
                self.defects, key=lambda d: (d.track, d.stem or "", d.kind))],
            "split_leakage": [p.to_dict() for p in pairs],
            "defect_checks": {
                "known_defects": {
                    "file": self.known.path,
                    "entries": len(self.known.entries),
                    "sources": sorted(s.url for s in self.known.sources.values()),
                },
                "split_leakage": {
                    "split_scheme": split_scheme,
                    "splits": splits,
                    "tracks": len(self.tracks),
                    "near_duplicate_jaccard": NEAR_DUPLICATE_JACCARD,
                    "method": LEAKAGE_METHOD,
                },
            },
        }


LEAKAGE_METHOD = (
    "all non-drum note-ons of all_src.mid (else the stems' MIDI) as (sixteenth-note onset from "
    "the first note, pitch) tokens, onsets from MIDI ticks (tempo-independent); identical = "
    "same token set (SHA-256), near-identical = Jaccard similarity >= the threshold "
    f"(one-permutation MinHash, LSH with {MINHASH_BANDS} bands x {MINHASH_ROWS} rows, then "
    "exact Jaccard), same-song = "
    "same Million Song Dataset id in lmd_midi_dir; only pairs in different splits"
)


def write_report(out: Path, report: Mapping[str, Any]) -> Path:
    """Write ``OUT/defects.json`` atomically (``ShardWriteError`` naming it on failure)."""
    text = json.dumps(report, indent=1, sort_keys=True) + "\n"
    return atomic_write_text(Path(out) / REPORT_NAME, text,
                             action="cannot write the defect report")


def read_report(out: Path) -> dict[str, Any]:
    """``OUT/defects.json`` as written by :func:`write_report`; ``{}`` if absent or unreadable
    (a build made before the check existed: the manifest then has no defect keys)."""
    path = Path(out) / REPORT_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keys = ("defects", "split_leakage", "defect_checks")
    return {k: report[k] for k in keys if k in report} if isinstance(report, dict) else {}


def apply_report(manifest: Manifest, out: Path) -> None:
    """Fill a manifest's ``defects`` and ``split_leakage`` from ``OUT/defects.json``.

    Without the report (shards built before the checks) both stay empty and ``problems`` says
    so (:data:`REPORT_MISSING`), so "none found" is never claimed for an unchecked build.
    """
    report = read_report(out)
    manifest.defects = list(report.get("defects", []))
    manifest.split_leakage = list(report.get("split_leakage", []))
    if not report:
        manifest.problems.append(f"{Path(out) / REPORT_NAME}: {REPORT_MISSING} (rebuild to "
                                 "check)")


def summarise(defects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{kind: {action: count}}`` of a manifest's ``defects`` (for the card and the log)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in defects:
        table[str(entry["kind"])][str(entry["action"])] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}
