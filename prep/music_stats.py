"""Music statistics of a Slakh2100-layout corpus, measured from its MIDI as the shards see it.

Why: a corpus is only a fair stand-in for Slakh2100 if its target instruments play about as
often, as densely and as much together as Slakh's do; clip- and frame-level activity labels
carry little information when an instrument sounds in nearly every frame. These statistics
put a corpus (the rendered demo/bench corpus, or Slakh itself) side by side with Slakh.

What is measured, per target class (``piano``, ``guitar``, ``bass`` by default) on the
shards' frame grid (:data:`prep.features.FRAMES_PER_SECOND` = 32 frames/s, frame t at
``t * 500 / 16000`` s, :func:`prep.features.piano_roll`'s rule):

* **active fraction**: frames in which at least one note of the class sounds / all frames;
* **mean polyphony while active**: distinct sounding pitches per active frame, averaged;
* **notes per second**, over the whole track and over the class's active time (onsets of
  notes within MIDI 21-108 that start inside the track);
* over all frames, the **distribution of how many target classes sound together** (0..I).

A track is read the way ``prep build-shards`` reads it, with the same functions: its
``metadata.yaml`` (:func:`prep.slakh.read_metadata`), the stems of each class chosen by the
instrument map (:func:`prep.slakh.select_stems`), their ``MIDI/Sxx.mid`` notes
(:func:`prep.build.read_stem_notes`, sustain pedal applied unless ``sustain=False``, pitch
bends ignored), drums never. No audio is decoded. The track's length is its audio's
(``mix.flac``, else the longest selected stem, from the file header) when there is audio,
else the end of ``all_src.mid``, else the last event of the selected stems' MIDI files; a
track without any stem of the classes is left out, as the build skips it.

Statistics over many tracks are duration-weighted: the per-track frame and note counts
(:class:`MusicCounts`) are summed and the ratios taken once (:class:`MusicStats`).

``prep/data/slakh_track00001_music_stats.json`` holds the statistics of Slakh2100's
Track00001 (metadata and MIDI, CC BY 4.0), with and without the sustain pedal, so that the
data card (:mod:`prep.card`) can compare a corpus with a real Slakh track without the test
fixture. Regenerate it from a Slakh track folder with::

    python -m prep.music_stats --reference tests/fixtures/Track00001

and measure any corpus or track folder with ``python -m prep.music_stats PATH [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from prep import features
from prep.build import TrackSkip, read_stem_notes
from prep.slakh import (
    DEFAULT_INSTRUMENT_MAP,
    OMITTED_FOLDER,
    InstrumentMap,
    SlakhError,
    find_tracks,
    load_instrument_map,
    read_metadata,
    select_stems,
)

DEFAULT_CLASSES: tuple[str, ...] = ("piano", "guitar", "bass")
REFERENCE_FILE = "slakh_track00001_music_stats.json"
REFERENCE_ATTRIBUTION = (
    "Slakh2100 Track00001 (metadata.yaml and MIDI/Sxx.mid), E. Manilow, G. Wichern, "
    "P. Seetharaman, J. Le Roux, 'Cutting Music Source Separation Some Slakh: A Dataset to "
    "Study the Impact of Training Data Quality and Quantity', IEEE WASPAA 2019; licensed "
    "CC BY 4.0 (http://www.slakh.com). The files were taken from the test resources of "
    "mir-dataset-loaders/mirdata (MIT), as tests/fixtures/Track00001. Only the statistics "
    "below are stored here."
)


class MusicStatsError(ValueError):
    """A track cannot be measured; the message names the file and the problem."""


@dataclass
class MusicCounts:
    """Additive frame and note counts of one or more tracks (sum them to aggregate).

    Attributes:
        classes: target class names, in order.
        tracks: tracks counted.
        seconds: their total length in seconds.
        frames: their total number of frames.
        active_frames: per class, frames with at least one sounding note.
        pitch_frames: per class, sum over frames of the number of sounding pitches.
        notes: per class, note onsets inside the tracks (MIDI 21-108).
        together: ``together[k]`` = frames in which exactly k target classes sound.
        sustained_notes: notes whose end the sustain pedal extended.
        pedal_events: CC64 events in the selected stems' MIDI files.
    """

    classes: tuple[str, ...]
    tracks: int = 0
    seconds: float = 0.0
    frames: int = 0
    active_frames: list[int] = field(default_factory=list)
    pitch_frames: list[int] = field(default_factory=list)
    notes: list[int] = field(default_factory=list)
    together: list[int] = field(default_factory=list)
    sustained_notes: int = 0
    pedal_events: int = 0

    def __post_init__(self) -> None:
        n = len(self.classes)
        for name, length in (("active_frames", n), ("pitch_frames", n), ("notes", n),
                             ("together", n + 1)):
            value = getattr(self, name)
            if not value:
                setattr(self, name, [0] * length)
            elif len(value) != length:
                raise ValueError(f"MusicCounts.{name} has {len(value)} entries, expected "
                                 f"{length} for classes {self.classes}")

    def __add__(self, other: MusicCounts) -> MusicCounts:
        if other.classes != self.classes:
            raise ValueError(f"cannot add counts of classes {other.classes} to {self.classes}")

        def pairwise(a: list[int], b: list[int]) -> list[int]:
            return [x + y for x, y in zip(a, b, strict=True)]

        return MusicCounts(
            classes=self.classes,
            tracks=self.tracks + other.tracks,
            seconds=self.seconds + other.seconds,
            frames=self.frames + other.frames,
            active_frames=pairwise(self.active_frames, other.active_frames),
            pitch_frames=pairwise(self.pitch_frames, other.pitch_frames),
            notes=pairwise(self.notes, other.notes),
            together=pairwise(self.together, other.together),
            sustained_notes=self.sustained_notes + other.sustained_notes,
            pedal_events=self.pedal_events + other.pedal_events,
        )


@dataclass(frozen=True)
class ClassStats:
    """The statistics of one target class (see the module docstring)."""

    active_fraction: float
    mean_polyphony: float  # over the class's active frames; 0.0 when it never plays
    notes_per_second: float  # over the whole duration
    notes_per_active_second: float  # over the class's active time; 0.0 when it never plays


@dataclass(frozen=True)
class MusicStats:
    """Duration-weighted statistics of one or more tracks.

    Attributes:
        classes: per target class, in the order of ``together``'s classes.
        together: fraction of all frames in which exactly k = 0..I target classes sound.
        tracks, seconds, frames: what was measured.
        sustain: whether note ends were extended by the sustain pedal.
        counts: the underlying counts (sum them to combine measurements).
        skipped: ``(track id, reason)`` of tracks left out of a corpus measurement.
    """

    classes: dict[str, ClassStats]
    together: tuple[float, ...]
    tracks: int
    seconds: float
    frames: int
    sustain: bool
    counts: MusicCounts
    skipped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_counts(cls, counts: MusicCounts, sustain: bool,
                    skipped: Sequence[tuple[str, str]] = ()) -> MusicStats:
        """Ratios of summed counts (0.0 where a denominator is zero)."""
        frames = counts.frames
        seconds = counts.seconds

        def ratio(a: float, b: float) -> float:
            return float(a) / float(b) if b else 0.0

        per_class = {}
        for i, name in enumerate(counts.classes):
            active = counts.active_frames[i]
            active_s = active / features.FRAMES_PER_SECOND
            per_class[name] = ClassStats(
                active_fraction=ratio(active, frames),
                mean_polyphony=ratio(counts.pitch_frames[i], active),
                notes_per_second=ratio(counts.notes[i], seconds),
                notes_per_active_second=ratio(counts.notes[i], active_s),
            )
        together = tuple(ratio(n, frames) for n in counts.together)
        return cls(per_class, together, counts.tracks, seconds, frames, sustain, counts,
                   tuple(skipped))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse: :meth:`from_dict`)."""
        return {
            "tracks": self.tracks,
            "seconds": self.seconds,
            "frames": self.frames,
            "sustain": self.sustain,
            "classes": {name: asdict(stats) for name, stats in self.classes.items()},
            "together": list(self.together),
            "counts": asdict(self.counts),
            "skipped": [list(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MusicStats:
        """Rebuild from :meth:`to_dict`'s output (the ratios are recomputed from the counts)."""
        raw = dict(data["counts"])
        raw["classes"] = tuple(raw["classes"])
        counts = MusicCounts(**raw)
        skipped = [(str(a), str(b)) for a, b in data.get("skipped", [])]
        return cls.from_counts(counts, bool(data["sustain"]), skipped)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def count_notes(class_notes: Mapping[str, Sequence[tuple[int, float, float]]],
                classes: Sequence[str], seconds: float, sustained_notes: int = 0,
                pedal_events: int = 0) -> MusicCounts:
    """Counts of one track from each class's ``(pitch, start_s, end_s)`` notes.

    ``seconds`` is the track's length: it has ``features.n_frames`` of its 16 kHz samples
    frames, and notes are cut there as the build's rolls are. Classes missing from
    ``class_notes`` count as silent.
    """
    if not seconds > 0:
        raise ValueError(f"track length must be > 0 s, got {seconds}")
    n_samples = int(round(seconds * features.SAMPLE_RATE))
    n_frames = features.n_frames(n_samples)
    counts = MusicCounts(tuple(classes), tracks=1, seconds=n_samples / features.SAMPLE_RATE,
                         frames=n_frames, sustained_notes=sustained_notes,
                         pedal_events=pedal_events)
    sounding = np.zeros(n_frames, dtype=np.int64)
    for i, name in enumerate(classes):
        notes = list(class_notes.get(name, ()))
        roll = features.piano_roll(notes, n_frames)
        active = roll.any(axis=-1)
        counts.active_frames[i] = int(active.sum())
        counts.pitch_frames[i] = int(roll.sum())
        counts.notes[i] = sum(1 for pitch, start, end in notes
                              if features.MIDI_MIN <= round(pitch) <= features.MIDI_MAX
                              and end > start and 0.0 <= start < counts.seconds)
        sounding += active
    counts.together = np.bincount(sounding, minlength=len(classes) + 1).astype(int).tolist()
    return counts


def _audio_seconds(path: Path) -> float | None:
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for bad files
        raise MusicStatsError(f"{path}: unreadable audio header ({exc})") from exc
    return info.frames / info.samplerate if info.samplerate > 0 else None


def track_seconds(track_dir: Path, stem_audio: Sequence[Path]) -> float | None:
    """The length of a track from its audio headers or ``all_src.mid``; None without either.

    ``mix.flac`` first, else the longest of ``stem_audio``, else the end of ``all_src.mid``.
    """
    mix = Path(track_dir) / "mix.flac"
    if mix.is_file():
        seconds = _audio_seconds(mix)
        if seconds:
            return seconds
    lengths = [s for s in (_audio_seconds(p) for p in stem_audio) if s]
    if lengths:
        return max(lengths)
    all_src = Path(track_dir) / "all_src.mid"
    if all_src.is_file():
        try:
            return read_stem_notes(all_src, sustain=False).end_s
        except TrackSkip as exc:
            raise MusicStatsError(str(exc)) from exc
    return None


def measure_track_counts(track_dir: Path, instrument_map: InstrumentMap | None = None,
                         classes: Sequence[str] = DEFAULT_CLASSES,
                         sustain: bool = True) -> MusicCounts:
    """Counts of one Slakh-layout track folder (see the module docstring).

    Raises:
        MusicStatsError: unreadable metadata or MIDI, a selected stem without its MIDI file,
            no stem of any class, or a track of zero length (the message names the file).
    """
    track_dir = Path(track_dir)
    imap = instrument_map or load_instrument_map()
    try:
        meta = read_metadata(track_dir)
        selected = select_stems(meta, imap, classes)
    except SlakhError as exc:
        raise MusicStatsError(str(exc)) from exc
    if not any(selected.values()):
        raise MusicStatsError(f"{meta.path}: none of the classes {', '.join(classes)} among "
                              f"its stems ({imap.source})")
    midi: dict[str, Path] = {}
    audio: list[Path] = []
    for name, keys in selected.items():
        for key in keys:
            path = meta.midi_path(key)
            if path is None:
                raise MusicStatsError(f"{meta.expected_midi_path(key)}: missing MIDI of "
                                      f"selected {name} stem {key}")
            midi[key] = path
            stem_audio = meta.audio_path(key)
            if stem_audio is not None:
                audio.append(stem_audio)
    try:
        seconds = track_seconds(track_dir, audio)
        if seconds is None:  # no audio, no all_src.mid: the selected stems' last MIDI event
            seconds = max(read_stem_notes(p, sustain=False).end_s for p in midi.values())
        if not seconds > 0:
            raise MusicStatsError(f"{meta.path}: the track has zero length (no audio, no notes)")
        class_notes: dict[str, list[tuple[int, float, float]]] = {}
        sustained = pedal_events = 0
        for name, keys in selected.items():
            notes: list[tuple[int, float, float]] = []
            for key in keys:
                stem = read_stem_notes(midi[key], sustain=sustain, end_s=seconds)
                notes.extend(stem.notes)
                sustained += stem.sustained
                pedal_events += stem.pedal_events
            class_notes[name] = notes
    except TrackSkip as exc:
        raise MusicStatsError(str(exc)) from exc
    return count_notes(class_notes, classes, seconds, sustained, pedal_events)


def measure_track(track_dir: Path, instrument_map: InstrumentMap | None = None,
                  classes: Sequence[str] = DEFAULT_CLASSES, sustain: bool = True) -> MusicStats:
    """:class:`MusicStats` of one track folder (metadata.yaml + MIDI/Sxx.mid)."""
    counts = measure_track_counts(track_dir, instrument_map, classes, sustain)
    return MusicStats.from_counts(counts, sustain)


def measure_corpus(root: Path, instrument_map: InstrumentMap | None = None,
                   classes: Sequence[str] = DEFAULT_CLASSES, sustain: bool = True,
                   track_ids: Collection[str] | None = None) -> MusicStats:
    """Duration-weighted :class:`MusicStats` over every track of a corpus root.

    Tracks are found as the build finds them (:func:`prep.slakh.find_tracks`; ``omitted/``
    left out); ``track_ids`` restricts the measurement to those ids (e.g. the tracks a shard
    set holds). A track that cannot be measured is left out and listed in ``skipped`` with
    its reason, as the build does with a bad track.

    Raises:
        MusicStatsError: ``root`` is not a corpus, or no track could be measured.
    """
    imap = instrument_map or load_instrument_map()
    try:
        tracks = find_tracks(Path(root))
    except SlakhError as exc:
        raise MusicStatsError(str(exc)) from exc
    total = MusicCounts(tuple(classes))
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for track in tracks:
        if track.folder_split == OMITTED_FOLDER or track.track_id in seen:
            continue
        if track_ids is not None and track.track_id not in track_ids:
            continue
        seen.add(track.track_id)
        try:
            total = total + measure_track_counts(track.path, imap, classes, sustain)
        except MusicStatsError as exc:
            skipped.append((track.track_id, str(exc)))
    if total.tracks == 0:
        detail = "".join(f"\n  {t}: {r}" for t, r in skipped[:10])
        raise MusicStatsError(f"{root}: no track could be measured{detail}")
    return MusicStats.from_counts(total, sustain, skipped)


# --------------------------------------------------------------------------------------------
# The packaged Slakh reference
# --------------------------------------------------------------------------------------------


def reference_stats(track_dir: Path) -> dict[str, Any]:
    """The content of :data:`REFERENCE_FILE` for a Slakh track folder (default map)."""
    track_dir = Path(track_dir)
    imap = load_instrument_map()
    meta = read_metadata(track_dir)
    stems = select_stems(meta, imap, DEFAULT_CLASSES)
    return {
        "_source": REFERENCE_ATTRIBUTION,
        "_generated_by": f"python -m prep.music_stats --reference {track_dir.as_posix()}",
        "track": track_dir.name,
        "instrument_map": f"prep/data/{DEFAULT_INSTRUMENT_MAP}",
        "stems": stems,
        "sustain_on": measure_track(track_dir, imap, DEFAULT_CLASSES, True).to_dict(),
        "sustain_off": measure_track(track_dir, imap, DEFAULT_CLASSES, False).to_dict(),
    }


def write_reference(track_dir: Path, out: Path | None = None) -> Path:
    """Write :func:`reference_stats` of ``track_dir`` (default: into ``prep/data``)."""
    target = Path(out) if out is not None else Path(__file__).parent / "data" / REFERENCE_FILE
    text = json.dumps(reference_stats(track_dir), indent=1, sort_keys=True) + "\n"
    target.write_text(text, encoding="utf-8")
    return target


def load_reference(sustain: bool = True) -> tuple[MusicStats, dict[str, Any]]:
    """The packaged Slakh Track00001 statistics, and the file's other fields (source, stems).

    Raises:
        MusicStatsError: the packaged file is missing or malformed (names it).
    """
    where = f"prep/data/{REFERENCE_FILE}"
    try:
        data = json.loads(resources.files("prep").joinpath(f"data/{REFERENCE_FILE}")
                          .read_text("utf-8"))
        stats = MusicStats.from_dict(data["sustain_on" if sustain else "sustain_off"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MusicStatsError(f"{where}: unreadable reference statistics ({exc}); regenerate "
                              "it with `python -m prep.music_stats --reference "
                              "tests/fixtures/Track00001`") from exc
    info = {k: v for k, v in data.items() if k not in ("sustain_on", "sustain_off")}
    return stats, info


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def format_stats(stats: MusicStats) -> str:
    """A plain-text table of the statistics."""
    lines = [f"{stats.tracks} track(s), {stats.seconds / 3600:.3f} h, {stats.frames} frames, "
             f"sustain pedal {'on' if stats.sustain else 'off'} "
             f"({stats.counts.sustained_notes} notes extended, "
             f"{stats.counts.pedal_events} CC64 events)"]
    lines.append(f"{'class':<8} {'active':>7} {'poly':>6} {'notes/s':>8} {'notes/act-s':>11}")
    for name, c in stats.classes.items():
        lines.append(f"{name:<8} {c.active_fraction:7.3f} {c.mean_polyphony:6.2f} "
                     f"{c.notes_per_second:8.2f} {c.notes_per_active_second:11.2f}")
    lines.append("classes sounding together: " + ", ".join(
        f"{k}: {v:.3f}" for k, v in enumerate(stats.together)))
    for track, reason in stats.skipped:
        lines.append(f"skipped {track}: {reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prep.music_stats PATH``: statistics of a corpus root or a track folder."""
    parser = argparse.ArgumentParser(prog="python -m prep.music_stats",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="corpus root or one track folder")
    parser.add_argument("--instrument-map", default=None,
                        help="instrument map YAML (default: the build's default map)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES))
    parser.add_argument("--no-sustain", action="store_true",
                        help="use note-off times, not the sustain pedal")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--reference", action="store_true",
                        help=f"write prep/data/{REFERENCE_FILE} from this Slakh track folder")
    args = parser.parse_args(argv)
    try:
        if args.reference:
            print(f"wrote {write_reference(args.path)}")
            return 0
        imap = load_instrument_map(args.instrument_map)
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        path = Path(args.path)
        if (path / "metadata.yaml").is_file():
            stats = measure_track(path, imap, classes, not args.no_sustain)
        else:
            stats = measure_corpus(path, imap, classes, not args.no_sustain)
    except (MusicStatsError, SlakhError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats.to_dict(), indent=1) if args.json else format_stats(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
