"""The offline build: a Slakh2100-layout corpus -> HDF5 shards + ``manifest.json``.

``build_shards`` (CLI: ``prep build-shards``) runs in two phases:

1. **Plan** (cheap, main process, deterministic): find the tracks, read every
   ``metadata.yaml``, decide each track's split by its id (:func:`prep.slakh.assign_split`),
   select the stems of the requested instruments, check that each selected stem has an audio
   file and a MIDI file, read the audio headers (``soundfile.info``) to estimate the track's
   size, then pack the tracks of each split, sorted by id, into shards of at most
   ``shard_size_mb`` (estimated, uncompressed; a track never spans two shards). The shard list
   is a function of the corpus and the options only, so ``--part I/N`` builds a fixed subset:
   the shards whose global index k (train, then validation, then test) has ``k % N == I - 1``.
2. **Build** each shard of this part, track by track (memory is bounded by the longest track):
   decode each selected stem once (``soundfile``), downmix to mono by averaging the channels,
   sum the stems of a class at their own sample rate, resample each class's sum to 16 kHz
   once (resampling is linear; ``soxr`` HQ by default, resampy's ``kaiser_best``/``kaiser_fast``
   on request; any input rate; already-16-kHz audio is untouched), which gives that
   instrument's source s_i; the mixture x = sum_i s_i (never ``mix.flac``:
   it holds every instrument). Then X = |STFT(x)|, the piano roll Y[t, i, n] of each class from
   its stems' MIDI files (``pretty_midi``; drum instruments never; notes outside MIDI 21-108
   dropped and counted), the harmonic mask A and the frame activity.

Sustain pedal (``sustain=True``, CLI ``--sustain``, the default; ``--no-sustain`` turns it
off): a note released while its instrument's CC64 pedal is down stays in Y and A until the
pedal is lifted or the same pitch is struck again (:func:`prep.features.apply_sustain`, the
rule of Magenta's ``note_seq``); a pedal never lifted holds to the end of the track's audio.
The setting is recorded as ``source["sustain_pedal"]`` (a root attr of every shard, in the
manifest, and in the plan key, so changing it rebuilds the shards) and the number of extended
notes as each track's ``sustained_notes`` attr. Pitch bends are ignored: notes keep their
nominal MIDI pitch (only note numbers are read).

Balance weights: the frame-wise activity rate r_i of each instrument over the *train* split and
``prep.features.class_weights(r)`` go into the manifest.

Robustness: a bad track never aborts the run. It is skipped with a one-line reason naming the
file and the problem, listed in ``manifest.json`` (``skipped``) and in the summary printed at
the end; ``strict=True`` turns any skip into an error after the build. Reasons: unreadable or
invalid ``metadata.yaml``; a stem key or folder that is not a plain name (never read outside the
track folder); split unknown; none of the requested instruments; a selected stem without audio,
without MIDI, with unreadable/corrupt audio or MIDI, empty or non-finite audio; stems whose
lengths (at 16 kHz) differ by 1 s or more. Stems differing by less than 1 s are zero-padded to
the longest, which is recorded in ``warnings``. Stems that are not selected are never opened,
so a missing unselected stem (Slakh's ``S06``-like unrendered stems) is fine.
Slakh's known defects (:mod:`prep.defects`): a selected stem on the packaged known-bad list
skips its track too; planning also fingerprints every track's MIDI to find music shared across
splits, and writes what it found to ``OUT/defects.json``, which the manifest carries as
``defects`` and ``split_leakage``.

Atomic and resumable: each shard is written under a temporary name and renamed when complete
(``ShardWriter``); then a small build record ``<split>-NNNNN.build.json`` (planned tracks, plan
key, checksum, skipped tracks, activity counts, timing) is written atomically next to it. A
rerun keeps every shard whose record matches the plan and whose file matches the recorded
size and SHA-256, and builds the rest; the manifest is written last, atomically, once every
planned shard is complete. (A kill between a shard's rename and its record's write rebuilds
that one shard.) ``force=True`` rebuilds everything. The manifest is
``prep.shards.manifest_from_shards`` (what ``prep index`` computes from the shard files) plus
the build records' ``skipped`` and ``warnings``, so a build and ``prep index`` of the same
shards give the same manifest.

Integrity: before building, the plan is written to ``OUT/plan.json``
(:class:`prep.shards.BuildPlanFile`); the manifest lists every planned shard with the SHA-256
of its build record, and ``prep index`` (:func:`index_shards`) writes one only when every
planned shard is complete and unchanged (``--accept-unverified``: changed ones marked as such).
OUT is locked for the whole build (:mod:`prep.lock`; parts of one plan may share it), and
SIGTERM/SIGINT unwind the build (:func:`interrupt_on_signals`): workers are stopped before it
exits, finished shards kept for the rerun.

Stems (the per-instrument references s_i) are stored for the splits of :data:`STEMS_MODES`:
``"test"`` (default) for the test split only, where evaluation needs them; ``"eval"`` for
validation and test; ``"all"`` for every split (the supervised reference trains on them);
``"none"`` never (then separation cannot be scored from the shards). The weakly supervised
steps refuse shards whose train or validation split holds stems, so that no stem can leak into
their training or model selection (``train.assemble.check_stem_access``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from prep import __version__ as PACKAGE_VERSION
from prep import features
from prep.align import AlignError, score_timing
from prep.atomic import PARTIAL_SUFFIX, atomic_write_text, final_name
from prep.cluster import ClusterError
from prep.defects import DefectCollector, apply_report, write_report
from prep.faults import fault_point
from prep.features import SAMPLE_RATE, FeatureParams
from prep.lock import LockError, output_lock
from prep.shards import (
    BUILD_RECORD_SUFFIX,
    DEFAULT_TARGET_SHARD_BYTES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PLAN_NAME,
    REBUILD_HINT,
    BuildPlanFile,
    Manifest,
    PlannedShard,
    ShardError,
    ShardRecord,
    ShardWriteError,
    ShardWriter,
    TrackArrays,
    build_record_path,
    discard,
    list_shard_files,
    manifest_from_shards,
    plan_problems,
    read_build_record,
    sha256_file,
    shard_path,
    write_error,
    write_manifest,
)
from prep.slakh import (
    OMITTED_FOLDER,
    SPLITS,
    SYNTH_CONFIG_FILE,
    SlakhError,
    SlakhTrack,
    TrackMetadata,
    assign_split,
    find_tracks,
    load_instrument_map,
    parse_instruments,
    read_metadata,
    select_stems,
)

#: ``--stems`` mode -> the splits whose tracks store their stems.
STEMS_MODES: dict[str, tuple[str, ...]] = {
    "test": ("test",),
    "eval": ("validation", "test"),
    "all": ("train", "validation", "test"),
    "none": (),
}
DEFAULT_STEMS_MODE = "test"
# resampy filters: kaiser_best (resampy's default, most accurate) or kaiser_fast (about 2.5x
# faster, wider transition band below the new Nyquist).
# Resamplers to 16 kHz. soxr_hq (libsoxr "HQ", librosa's default) is the default: measured by
# benchmarks/perf/prep_throughput.py on 44.1 kHz stems it is ~90x cheaper than resampy's kaiser_best and more
# accurate (passband tone SNR 65 vs 34 dB, aliases -143 vs -105 dB). soxr_vhq is marginally more
# accurate at about the same cost; the resampy filters are kept for shards built before.
RESAMPLE_FILTERS = ("soxr_hq", "soxr_vhq", "kaiser_best", "kaiser_fast")
DEFAULT_RESAMPLE_FILTER = "soxr_hq"
RESAMPLER_LIBRARY = {"soxr_hq": "soxr", "soxr_vhq": "soxr", "kaiser_best": "resampy",
                     "kaiser_fast": "resampy"}
MAX_LENGTH_MISMATCH_S = 1.0  # stems differing by less are zero-padded, by more: track skipped
DEFAULT_SLAKH_ROOT = Path("corpus/demo")
BACKENDS = ("local", "dask")  # where shards are built: this machine, or a Dask cluster
SHARD_NAME_RE = re.compile(r"^(train|validation|test)-(\d{5})(\.h5|\.build\.json)$")


@dataclass(frozen=True)
class PartialBuild:
    """What ``build_shards`` returns for one ``--part`` while other parts' shards are missing."""

    built: list[str]  # shard names complete now (this part's and others')
    pending: list[str]  # shard names still to build (by other parts)
    skipped: list[dict[str, str]]  # tracks skipped so far, with reasons


class BuildError(RuntimeError):
    """The build cannot produce a usable output (e.g. zero usable tracks)."""


class StrictError(BuildError):
    """``strict=True`` and some tracks were skipped (the output was still written)."""


class IndexRefused(ShardError):
    """``prep index`` will not write a manifest: planned shards are missing, or a shard's bytes
    differ from its build record. ``problems`` holds one line per shard, naming its file."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{problems[0]} (and {len(problems) - 1} more problem(s))")
        self.problems = list(problems)


class BuildInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT reached the build: its workers are stopped, finished shards kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class TrackSkip(Exception):
    """A track cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackPlan:
    """A usable-looking track: its split, selected stems and their files (relative paths)."""

    track_id: str
    split: str
    path: Path  # the track folder
    stems: dict[str, list[str]]  # instrument -> stem keys, for every requested instrument
    audio_files: dict[str, str]  # stem key -> path relative to the track folder
    midi_files: dict[str, str]
    file_sizes: dict[str, int]  # relative path -> bytes (part of the plan key)
    n_samples: int  # estimated at 16 kHz (longest stem)
    est_bytes: int

    @property
    def hours(self) -> float:
        return self.n_samples / SAMPLE_RATE / 3600


@dataclass(frozen=True)
class ShardPlan:
    """One planned shard: its split, index within the split, global index and tracks."""

    split: str
    index: int
    global_index: int
    tracks: tuple[TrackPlan, ...]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}"

    def path(self, out: Path) -> Path:
        return shard_path(out, self.split, self.index)

    def record_path(self, out: Path) -> Path:
        return Path(out) / self.split / f"{self.name}{BUILD_RECORD_SUFFIX}"


@dataclass(frozen=True)
class BuildSettings:
    """Everything besides the tracks that determines the bytes of a shard."""

    instruments: tuple[str, ...]
    feature_params: FeatureParams
    stems: str
    source: dict[str, Any]  # shard root attrs: source_corpus, split_scheme, instrument_map, ...
    resample_filter: str = DEFAULT_RESAMPLE_FILTER  # also in source, hence in the plan key
    sustain: bool = True  # sustain pedal applied to the rolls; source["sustain_pedal"] too

    def stores_stems(self, split: str) -> bool:
        return split in STEMS_MODES[self.stems]

    def to_key_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "instruments": list(self.instruments),
            "feature_params": self.feature_params.to_dict(),
            "stems": self.stems,
            "source": self.source,
        }


@dataclass
class Plan:
    """The result of planning: shards to build and tracks skipped before decoding."""

    shards: list[ShardPlan]
    skipped: list[dict[str, str]]
    settings: BuildSettings
    # OUT/defects.json: known defects found and split leakage (prep.defects.DefectCollector)
    defect_report: dict[str, Any] = field(default_factory=dict)

    def shard_key(self, shard: ShardPlan) -> str:
        """Hash of what determines the shard's bytes: settings, tracks, stem files and sizes."""
        content = {
            "settings": self.settings.to_key_dict(),
            "shard": shard.name,
            # the first shard's build record carries the tracks skipped while planning
            # by track id: the reasons name files, and a moved corpus is the same corpus
            "planning_skipped": sorted(s["track"] for s in self.skipped)
            if shard.global_index == 0 else [],
            "tracks": [
                {
                    "track_id": t.track_id,
                    "stems": t.stems,
                    "audio": t.audio_files,
                    "midi": t.midi_files,
                    "sizes": t.file_sizes,
                }
                for t in shard.tracks
            ],
        }
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def estimate_track_bytes(n_samples: int, n_instruments: int, with_stems: bool) -> int:
    """Uncompressed size of a stored track (mix, stems, float16 spec, roll, packed mask)."""
    frames = features.n_frames(n_samples)
    audio = 4 * n_samples * (1 + (n_instruments if with_stems else 0))
    frame_bytes = frames * (2 * features.N_BINS + n_instruments * (features.N_PITCHES + 129 + 1))
    return audio + frame_bytes


def _stem_files(
    meta: TrackMetadata, selected: dict[str, list[str]]
) -> tuple[dict[str, str], dict[str, str]]:
    """Audio and MIDI files of the selected stems; TrackSkip naming the first missing one."""
    audio_files: dict[str, str] = {}
    midi_files: dict[str, str] = {}
    for name, keys in selected.items():
        for key in keys:
            audio = meta.audio_path(key)
            midi = meta.midi_path(key)
            if audio is None and midi is None:
                raise TrackSkip(
                    f"{meta.expected_audio_path(key)}: selected {name} stem {key} has neither "
                    f"audio nor MIDI ({meta.expected_midi_path(key).name})"
                )
            if audio is None:
                raise TrackSkip(f"{meta.expected_audio_path(key)}: missing audio of selected "
                                f"{name} stem {key} (no .flac or .wav)")
            if midi is None:
                raise TrackSkip(f"{meta.expected_midi_path(key)}: missing MIDI of selected "
                                f"{name} stem {key}")
            audio_files[key] = audio.relative_to(meta.track_dir).as_posix()
            midi_files[key] = midi.relative_to(meta.track_dir).as_posix()
    return audio_files, midi_files


def _estimated_samples(audio: Path) -> int:
    """Length at 16 kHz from the audio header (TrackSkip when the header is unreadable)."""
    try:
        info = sf.info(str(audio))
    except Exception as exc:  # soundfile raises several types for bad files
        raise TrackSkip(f"{audio}: unreadable audio ({_one_line(exc)})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise TrackSkip(f"{audio}: empty audio ({info.frames} frames at {info.samplerate} Hz)")
    # resampy's output length is int(n * sr_new / sr_orig)
    return int(info.frames * SAMPLE_RATE / info.samplerate)


def plan_track(
    track: SlakhTrack, split_scheme: str, instrument_map, instruments: Sequence[str],
    stems_mode: str, defects: DefectCollector | None = None,
) -> TrackPlan:
    """Plan one track (no audio decoded). Raises TrackSkip / SlakhError with the reason.

    ``defects`` records the track's known defects (a known-bad or unrendered selected stem
    skips it: :mod:`prep.defects`) and, once planned, its MIDI fingerprint.
    """
    if track.folder_split == OMITTED_FOLDER:
        raise TrackSkip(f"{track.path}: in {OMITTED_FOLDER}/ (Slakh2100-redux leaves these out)")
    split = assign_split(track.track_id, split_scheme, track.folder_split)
    meta = read_metadata(track.path)
    selected = select_stems(meta, instrument_map, instruments)
    defect = defects.check(track.track_id, meta, selected) if defects is not None else None
    if defect:
        raise TrackSkip(defect)
    if not any(selected.values()):
        raise TrackSkip(f"{meta.path}: none of the requested instruments "
                        f"({', '.join(instruments)}) among its stems")
    audio_files, midi_files = _stem_files(meta, selected)
    n_samples = max(_estimated_samples(track.path / rel) for rel in audio_files.values())
    sizes = {rel: (track.path / rel).stat().st_size
             for rel in [*audio_files.values(), *midi_files.values()]}
    with_stems = split in STEMS_MODES[stems_mode]
    if defects is not None:
        defects.track_planned(track.track_id, split, meta, selected)
    return TrackPlan(
        track_id=track.track_id,
        split=split,
        path=track.path,
        stems=selected,
        audio_files=audio_files,
        midi_files=midi_files,
        file_sizes=sizes,
        n_samples=n_samples,
        est_bytes=estimate_track_bytes(n_samples, len(instruments), with_stems),
    )


def pack_shards(tracks: Sequence[TrackPlan], shard_bytes: int) -> list[ShardPlan]:
    """Pack tracks into shards: per split (train, validation, test), sorted by id, greedily
    up to ``shard_bytes`` estimated bytes (at least one track per shard)."""
    shards: list[ShardPlan] = []
    for split in SPLITS:
        in_split = sorted((t for t in tracks if t.split == split), key=lambda t: t.track_id)
        current: list[TrackPlan] = []
        size = 0
        for track in in_split:
            if current and size + track.est_bytes > shard_bytes:
                shards.append(ShardPlan(split, _count(shards, split), len(shards), tuple(current)))
                current, size = [], 0
            current.append(track)
            size += track.est_bytes
        if current:
            shards.append(ShardPlan(split, _count(shards, split), len(shards), tuple(current)))
    return shards


def _count(shards: Sequence[ShardPlan], split: str) -> int:
    return sum(1 for s in shards if s.split == split)


def make_plan(
    slakh_root: Path,
    instruments: Sequence[str],
    instrument_map,
    settings: BuildSettings,
    split_scheme: str,
    shard_bytes: int,
) -> Plan:
    """Discover and plan every track of the corpus (see the module docstring, phase 1)."""
    skipped: list[dict[str, str]] = []
    planned: list[TrackPlan] = []
    seen: dict[str, Path] = {}
    defects = DefectCollector()
    for track in find_tracks(slakh_root):
        if track.track_id in seen:
            skipped.append({"track": track.track_id,
                            "reason": f"{track.path}: duplicate of {seen[track.track_id]}"})
            continue
        seen[track.track_id] = track.path
        try:
            planned.append(plan_track(track, split_scheme, instrument_map, instruments,
                                      settings.stems, defects))
        except (TrackSkip, SlakhError) as exc:
            skipped.append({"track": track.track_id, "reason": str(exc)})
        except OSError as exc:  # permissions, vanished files, I/O errors
            skipped.append({"track": track.track_id,
                            "reason": f"{exc.filename or track.path}: {_one_line(exc)}"})
    return Plan(pack_shards(planned, shard_bytes), skipped, settings,
                defects.report(split_scheme))


# --------------------------------------------------------------------------------------------
# Per-track processing
# --------------------------------------------------------------------------------------------

_RESAMPY_WARM = False


def warm_resampler(resample_filter: str = DEFAULT_RESAMPLE_FILTER) -> float:
    """Pay a resampler's one-off start-up cost once per process; returns seconds.

    resampy's first call JIT-compiles it with numba (about 2 s of CPU per worker process, numba's
    on-disk cache is not enabled by resampy); soxr needs no warming.
    """
    global _RESAMPY_WARM
    if RESAMPLER_LIBRARY.get(resample_filter) != "resampy" or _RESAMPY_WARM:
        return 0.0
    import resampy

    start = time.perf_counter()
    # numba compiles per argument types, not per filter: one call warms every filter
    resampy.resample(np.zeros(4410, dtype=np.float32), 44100, SAMPLE_RATE)
    _RESAMPY_WARM = True
    return time.perf_counter() - start


def warm_resampy() -> float:
    """JIT-compile resampy once per process (kept for callers of the old name)."""
    return warm_resampler("kaiser_best")


def resampled_length(n_samples: int, rate: int, resample_filter: str) -> int:
    """Length at 16 kHz that :func:`resample_to_16k` gives for ``n_samples`` at ``rate``."""
    if rate == SAMPLE_RATE:
        return int(n_samples)
    if RESAMPLER_LIBRARY[resample_filter] == "soxr":
        return int(n_samples * SAMPLE_RATE / rate + 0.5)  # soxr rounds to nearest
    return int(n_samples * SAMPLE_RATE / rate)  # resampy truncates


def resample_to_16k(wave: np.ndarray, rate: int, resample_filter: str) -> np.ndarray:
    """Resample mono ``wave`` from ``rate`` to 16 kHz (``float32``; 16 kHz input untouched).

    Linear in ``wave``, so resampling the sum of several stems equals the sum of the resampled
    stems up to float rounding (the build resamples each class's sum once).
    """
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(wave, dtype=np.float32)
    if resample_filter not in RESAMPLER_LIBRARY:
        raise ValueError(f"resample filter must be one of {RESAMPLE_FILTERS}, "
                         f"got {resample_filter!r}")
    if RESAMPLER_LIBRARY[resample_filter] == "soxr":
        import soxr

        quality = "HQ" if resample_filter == "soxr_hq" else "VHQ"
        out = soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), rate, SAMPLE_RATE,
                            quality=quality)
    else:
        import resampy

        out = resampy.resample(wave, rate, SAMPLE_RATE, filter=resample_filter)
    return np.ascontiguousarray(out, dtype=np.float32)


def decode_stem(path: Path) -> tuple[np.ndarray, int]:
    """Decode a stem and downmix it to mono (channel mean) at its own sample rate.

    Returns:
        (float32 [n], the file's sample rate). Raises TrackSkip naming the file.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
        raise TrackSkip(f"{path}: unreadable audio ({_one_line(exc)})") from exc
    if data.shape[0] == 0:
        raise TrackSkip(f"{path}: empty audio")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise TrackSkip(f"{path}: non-finite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def load_stem_audio(
    path: Path, resample_filter: str = DEFAULT_RESAMPLE_FILTER
) -> tuple[np.ndarray, int]:
    """Decode a stem, downmix to mono (channel mean), resample it to 16 kHz.

    Returns:
        (float32 [n] at 16 kHz, the file's sample rate). Raises TrackSkip naming the file.
    """
    mono, rate = decode_stem(path)
    return resample_to_16k(mono, rate, resample_filter), rate


@dataclass(frozen=True)
class StemNotes:
    """The notes of one stem's MIDI file as the rolls use them.

    Attributes:
        notes: ``(pitch, start_s, end_s)`` of every non-drum note, ends sustained when asked.
        sustained: how many of them the sustain pedal extended.
        pedal_events: CC64 events in the file (non-drum instruments).
        end_s: the file's end time (last event of any kind), as pretty_midi computes it.
    """

    notes: list[tuple[int, float, float]]
    sustained: int = 0
    pedal_events: int = 0
    end_s: float = 0.0


def read_stem_notes(path: Path, sustain: bool = True, end_s: float | None = None) -> StemNotes:
    """Non-drum notes of a MIDI file, with the sustain pedal applied when ``sustain``.

    Each instrument's own CC64 events (:data:`prep.features.SUSTAIN_CONTROL`) extend its own
    notes (:func:`prep.features.apply_sustain`); a pedal still down at the end holds its notes
    to ``end_s`` (the track's end; default: the file's last event). Pitch bends are not read:
    every note keeps its nominal MIDI pitch.

    Raises:
        TrackSkip: the file cannot be parsed (the message names it).
    """
    import pretty_midi

    try:
        with warnings.catch_warnings():
            # pretty_midi warns about tempo/key events on non-zero tracks; harmless here.
            warnings.simplefilter("ignore")
            midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido/pretty_midi raise OSError, EOFError, ValueError, KeyError...
        raise TrackSkip(f"{path}: unreadable MIDI ({_one_line(exc)})") from exc
    file_end = float(midi.get_end_time())
    track_end = file_end if end_s is None else float(end_s)
    notes: list[tuple[int, float, float]] = []
    sustained = pedal_events = 0
    for instrument in midi.instruments:
        if instrument.is_drum:
            continue
        own = [(int(n.pitch), float(n.start), float(n.end)) for n in instrument.notes]
        pedal = [(float(c.time), int(c.value)) for c in instrument.control_changes
                 if c.number == features.SUSTAIN_CONTROL]
        pedal_events += len(pedal)
        if sustain and pedal:
            own, extended = features.apply_sustain(
                own, features.pedal_intervals(pedal, max(track_end, 0.0)))
            sustained += extended
        notes.extend(own)
    return StemNotes(notes, sustained, pedal_events, file_end)


@dataclass
class TrackResult:
    """A processed track plus what the build record keeps about it."""

    arrays: TrackArrays
    active_frames: np.ndarray  # [I] frames in which each instrument is active
    warnings: list[str]
    decode_cpu_s: float  # CPU seconds (all threads) decoding and resampling
    total_cpu_s: float
    stage_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage


def _add_into(total: np.ndarray | None, wave: np.ndarray) -> np.ndarray:
    """``total + wave``, the shorter zero-padded to the longer (in place when it fits)."""
    if total is None:
        return wave.copy()
    if len(wave) > len(total):
        total = np.pad(total, (0, len(wave) - len(total)))
    total[: len(wave)] += wave
    return total


def _resample_class_sums(
    sums: dict[tuple[int, int], np.ndarray], n_instruments: int, resample_filter: str,
    n_samples: int,
) -> np.ndarray:
    """s_i at 16 kHz ``[I, n_samples]`` from each class's stems summed per sample rate."""
    sources = np.zeros((n_instruments, n_samples), dtype=np.float32)
    for (index, rate) in list(sums):
        resampled = resample_to_16k(sums.pop((index, rate)), rate, resample_filter)
        sources[index, : min(len(resampled), n_samples)] += resampled[:n_samples]
    return sources


def process_track(plan: TrackPlan, settings: BuildSettings) -> TrackResult:
    """Decode, mix and featurise one track (see the module docstring, phase 2)."""
    start = time.process_time()
    instruments = settings.instruments
    notes_warning: list[str] = []
    # Resampling is linear: the stems of a class are summed at their own rate as they are
    # decoded, then each class's sum is resampled once, which gives the class's source s_i with
    # one resampler call per class instead of one per stem (and holds one sum per class, not
    # every decoded stem); x = sum_i s_i stays exact.
    sums: dict[tuple[int, int], np.ndarray] = {}  # (instrument index, rate) -> summed stems
    rates: dict[str, int] = {}
    lengths: dict[str, int] = {}  # each stem's length at 16 kHz
    for index, name in enumerate(instruments):
        for key in plan.stems[name]:
            wave, rates[key] = decode_stem(plan.path / plan.audio_files[key])
            lengths[key] = resampled_length(len(wave), rates[key], settings.resample_filter)
            sums[index, rates[key]] = _add_into(sums.get((index, rates[key])), wave)
            del wave
    stage = {"decode": time.process_time() - start}

    # Equal lengths: Slakh renders every stem to the same length; small differences (other
    # renderers, resampling from different rates) are zero-padded, large ones are an error.
    n_samples = max(lengths.values())
    shortest = min(lengths, key=lengths.__getitem__)
    longest = max(lengths, key=lengths.__getitem__)
    if n_samples - lengths[shortest] >= MAX_LENGTH_MISMATCH_S * SAMPLE_RATE:
        raise TrackSkip(
            f"{plan.path / plan.audio_files[shortest]}: {lengths[shortest] / SAMPLE_RATE:.2f} s "
            f"but {plan.audio_files[longest]} is {n_samples / SAMPLE_RATE:.2f} s (stems differ "
            f"by {MAX_LENGTH_MISMATCH_S:g} s or more)"
        )
    for key in plan.audio_files:
        if lengths[key] < n_samples:
            notes_warning.append(f"{plan.audio_files[key]} zero-padded by "
                                 f"{n_samples - lengths[key]} samples to the longest stem")
    mark = time.process_time()
    sources = _resample_class_sums(sums, len(instruments), settings.resample_filter, n_samples)
    stage["resample"] = time.process_time() - mark
    decode_cpu_s = time.process_time() - start
    mix = sources.sum(axis=0)  # x = sum_i s_i over the selected instruments only

    mark = time.process_time()
    n_frames = features.n_frames(n_samples)
    roll = np.zeros((n_frames, len(instruments), features.N_PITCHES), dtype=bool)
    dropped_notes = 0
    sustained_notes = 0
    for index, name in enumerate(instruments):
        notes: list[tuple[int, float, float]] = []
        for key in plan.stems[name]:
            # A pedal never lifted holds its notes to the end of the track's audio.
            stem = read_stem_notes(plan.path / plan.midi_files[key], settings.sustain,
                                   end_s=n_samples / SAMPLE_RATE)
            if not stem.notes:  # kept (silence is a valid score), but worth a look
                notes_warning.append(f"{plan.midi_files[key]} has no notes (empty {name} score)")
            notes.extend(stem.notes)
            sustained_notes += stem.sustained
        dropped_notes += features.count_out_of_range(notes)
        # union of the class's stems = roll of all their notes together
        roll[:, index] = features.piano_roll(notes, n_frames)
    if dropped_notes:
        notes_warning.append(f"{dropped_notes} notes outside MIDI "
                             f"{features.MIDI_MIN}-{features.MIDI_MAX} dropped")

    stage["midi_roll"] = time.process_time() - mark
    mark = time.process_time()
    spec = features.magnitude_spectrogram(mix)
    stage["stft"] = time.process_time() - mark
    mark = time.process_time()
    mask = features.harmonic_mask(
        roll,
        n_harmonics=settings.feature_params.n_harmonics,
        tolerance_bins=settings.feature_params.tolerance_bins,
        tuning_hz=settings.feature_params.tuning_hz,
    )
    activity = features.frame_activity(roll)
    stage["harmonic_mask"] = time.process_time() - mark
    attrs = {
        "source_stems": plan.stems,
        "source_sample_rates": dict(sorted(rates.items())),
        "dropped_notes": dropped_notes,
        "sustained_notes": sustained_notes,
    }
    arrays = TrackArrays(
        track_id=plan.track_id,
        mix=mix,
        stems=sources if settings.stores_stems(plan.split) else None,
        spec=spec,
        roll=roll,
        harmonic_mask=mask,
        activity=activity,
        attrs=attrs,
    )
    return TrackResult(
        arrays=arrays,
        active_frames=activity.sum(axis=0).astype(np.int64),
        warnings=[f"{plan.path}: {w}" for w in notes_warning],
        decode_cpu_s=decode_cpu_s,
        total_cpu_s=time.process_time() - start,
        stage_cpu_s=stage,
    )


# --------------------------------------------------------------------------------------------
# Per-shard building (runs in a worker)
# --------------------------------------------------------------------------------------------


@dataclass
class ShardOutcome:
    """The build record of one shard (written as ``<split>-NNNNN.build.json``)."""

    shard: str
    split: str
    plan_key: str
    planned: list[str]
    record: dict[str, Any] | None  # ShardRecord.to_dict(), None if every track was skipped
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    active_frames: list[int] = field(default_factory=list)
    frames: int = 0
    samples: int = 0
    planning_skipped: list[dict[str, str]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)  # not part of any checksum
    # where and when: corpus folder, host, UTC time, package version (not part of any checksum)
    provenance: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _write_json_atomic(path: Path, content: Any) -> None:
    """A build record, whole or not at all (:func:`prep.atomic.atomic_write_text`)."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text, fault="record-write", action="cannot write build record",
                      own_temp=True)  # a Dask task and its retry may write it at once


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to build one shard; picklable, so it runs in a joblib worker,
    a Dask worker on another machine, or this process alike.

    ``provenance`` (corpus folder, package version) goes into the build record with the
    worker's host name and the time, never into the shard.
    """

    shard: ShardPlan
    plan_key: str
    settings: BuildSettings
    out: Path
    planning_skipped: tuple[dict[str, str], ...] = ()
    provenance: tuple[tuple[str, str], ...] = ()


def build_one_shard(
    job: ShardJob, single_thread: bool, on_track: Callable[[TrackPlan], None] | None = None,
) -> ShardOutcome:
    """Build one shard (whole tracks, in id order) and its build record; returns the record."""
    import torch

    # The build parallelises across shards (workers), never inside a track: torch's intra-op
    # threads only spin on the per-track STFT (benchmarks/perf/prep_throughput.py: 5x its CPU on 2 threads).
    # In a worker (single_thread) the setting stays; in the caller's process it is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_one_shard(job, on_track)
    finally:
        if not single_thread:
            torch.set_num_threads(threads)


def _build_one_shard(
    job: ShardJob, on_track: Callable[[TrackPlan], None] | None,
) -> ShardOutcome:
    """:func:`build_one_shard` with torch's threads already set."""
    shard, settings, out = job.shard, job.settings, job.out
    warm_s = warm_resampler(settings.resample_filter)
    start, start_cpu = time.perf_counter(), time.process_time()
    outcome = ShardOutcome(
        shard=shard.name, split=shard.split, plan_key=job.plan_key,
        planned=[t.track_id for t in shard.tracks], record=None,
        active_frames=[0] * len(settings.instruments),
        planning_skipped=list(job.planning_skipped),
        provenance={**dict(job.provenance), "host": socket.gethostname(),
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    decode_cpu_s = 0.0
    process_cpu_s = 0.0
    stage_cpu_s: dict[str, float] = {"write": 0.0}
    writer: ShardWriter | None = None
    try:
        for track in shard.tracks:
            try:
                result = process_track(track, settings)
            except TrackSkip as exc:
                outcome.skipped.append({"track": track.track_id, "reason": str(exc)})
                continue
            except Exception as exc:  # never abort the run for one track; reported as a skip
                outcome.skipped.append({"track": track.track_id, "reason":
                                        f"{track.path}: unexpected {type(exc).__name__}: "
                                        f"{_one_line(exc)}"})
                continue
            finally:
                if on_track is not None:
                    on_track(track)
            fault_point("track-processed")
            decode_cpu_s += result.decode_cpu_s
            process_cpu_s += result.total_cpu_s
            for name, seconds in result.stage_cpu_s.items():
                stage_cpu_s[name] = stage_cpu_s.get(name, 0.0) + seconds
            mark = time.process_time()
            if writer is None:
                writer = ShardWriter(shard.path(out), split=shard.split,
                                     instruments=list(settings.instruments),
                                     feature_params=settings.feature_params,
                                     source=settings.source)
            try:
                writer.add_track(result.arrays)  # validates before writing anything
            except ShardError as exc:
                outcome.skipped.append({"track": track.track_id,
                                        "reason": f"{track.path}: {_one_line(exc)}"})
                continue
            finally:
                stage_cpu_s["write"] += time.process_time() - mark
            outcome.warnings.extend({"track": track.track_id, "warning": w}
                                    for w in result.warnings)
            outcome.active_frames = [a + int(b) for a, b in
                                     zip(outcome.active_frames, result.active_frames, strict=True)]
            outcome.frames += int(result.arrays.spec.shape[0])
            outcome.samples += int(result.arrays.mix.shape[0])
            del result
        if writer is not None:
            mark = time.process_time()
            record: ShardRecord = writer.close()
            stage_cpu_s["write"] += time.process_time() - mark  # flush, fsync, SHA-256
            outcome.record = record.to_dict()
            fault_point("shard-renamed")
        else:
            shard.path(out).unlink(missing_ok=True)  # a stale file from an older plan
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    outcome.timing = {
        "warmup_s": warm_s,
        "decode_resample_cpu_s": decode_cpu_s,
        "process_cpu_s": process_cpu_s,
        **{f"{name}_cpu_s": seconds for name, seconds in stage_cpu_s.items()},
        "total_cpu_s": time.process_time() - start_cpu,  # incl. MIDI, features and writing
        "total_s": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    _write_json_atomic(shard.record_path(out), outcome.to_json())
    return outcome


def load_complete_outcome(shard: ShardPlan, plan_key: str, out: Path) -> ShardOutcome | None:
    """The build record of a finished shard that matches the plan, else None (rebuild it)."""
    record_path = shard.record_path(out)
    if not record_path.is_file():
        return None
    try:
        content = json.loads(record_path.read_text(encoding="utf-8"))
        outcome = ShardOutcome(**content)
    except (OSError, ValueError, TypeError):
        return None
    if outcome.plan_key != plan_key or outcome.planned != [t.track_id for t in shard.tracks]:
        return None
    path = shard.path(out)
    if outcome.record is None:
        return None if path.exists() else outcome
    if not path.is_file() or path.stat().st_size != outcome.record["bytes"]:
        return None
    if sha256_file(path) != outcome.record["sha256"]:
        return None
    return outcome


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def read_build_records(out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All build records under OUT (sorted by path), and records that could not be read."""
    records, problems = [], []
    for path in sorted(Path(out).glob(f"*/*{BUILD_RECORD_SUFFIX}")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable build record ({_one_line(exc)})")
    return records, problems


def assemble_manifest(
    out: Path, known_sha256: dict[str, str] | None = None,
    plan: BuildPlanFile | None = None, unverified: Sequence[str] = (),
) -> Manifest:
    """``manifest_from_shards(out)`` plus the build records' skipped tracks and warnings.

    Used by both ``build_shards`` and ``prep index``, so the two agree. ``known_sha256``: the
    checksums of the shards to list (relative path -> SHA-256), as their build records hold
    them; with ``plan``, exactly those shards are listed and the plan recorded.
    """
    files = None if plan is None else sorted(Path(out) / path for path in known_sha256 or {})
    manifest = manifest_from_shards(out, known_sha256, files)
    if plan is not None:
        manifest.plan_id = plan.plan_id
        manifest.planned_shards = sorted(known_sha256 or {})
        manifest.unverified = sorted(unverified)
    records, problems = read_build_records(out)
    skipped: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    for record in records:
        skipped.extend(record.get("planning_skipped", []))
        skipped.extend(record.get("skipped", []))
        notes.extend(record.get("warnings", []))
    built = {record["record"]["path"] for record in records if record.get("record")}
    for entry in manifest.shards:
        if entry.path not in built:
            problems.append(f"{out / entry.path}: no build record; its skipped tracks, if "
                            "any, are unknown")
    manifest.provenance = merge_provenance(r.get("provenance", {}) for r in records)
    manifest.skipped = sorted(skipped, key=lambda s: (s["track"], s["reason"]))
    manifest.warnings = sorted(notes, key=lambda w: (w["track"], w["warning"]))
    if "train" not in manifest.splits:
        problems.append(f"{Path(out) / MANIFEST_NAME}: no train split (the tracks all fall in "
                        f"{', '.join(manifest.splits)}): no class weights, and training needs "
                        "train shards (more tracks, or another --split-scheme)")
    manifest.problems = problems
    apply_report(manifest, out)  # defects and split_leakage from OUT/defects.json
    return manifest


def merge_provenance(entries: Iterable[dict[str, str]]) -> dict[str, Any]:
    """Where and when the shards were built, from their build records.

    One value per key when the records agree (``corpus_root``, ``instrument_map_path``,
    ``package_version``), else the sorted distinct values; ``hosts`` lists every builder and
    ``built_from``/``built_to`` span the build times. Never part of a checksum.
    """
    values: dict[str, set[str]] = {}
    for entry in entries:
        for key, value in entry.items():
            values.setdefault(key, set()).add(str(value))
    merged: dict[str, Any] = {}
    for key, found in sorted(values.items()):
        if key == "host":
            merged["hosts"] = sorted(found)
        elif key == "built_at":
            merged["built_from"], merged["built_to"] = min(found), max(found)
        else:
            merged[key] = found.pop() if len(found) == 1 else sorted(found)
    return merged


def index_shards(
    out: Path, accept_unverified: bool = False, log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> Manifest:
    """``prep index OUT``: rebuild ``OUT/manifest.json`` from the build plan and the complete
    build records (e.g. after ``--part`` builds); returns the manifest.

    Each shard is listed with the SHA-256 its build wrote, after checking that its bytes still
    have it. Holds OUT's lock (:mod:`prep.lock`) while it reads and writes.

    Args:
        accept_unverified: list a shard whose bytes differ from its build record anyway, with
            its present checksum, named in the manifest's ``unverified`` (``prep verify`` keeps
            reporting it).
        progress: a tqdm bar over the shards checksummed (on stderr).

    Raises:
        IndexRefused: a planned shard is missing (not built, another part's), a shard file is not
            in the plan, or (without ``accept_unverified``) a shard differs from its record; the
            manifest is not written.
        ShardError: no or a bad ``plan.json``, an unreadable shard.
        LockError: a build or index is running on OUT.
    """
    out = Path(out)
    plan = BuildPlanFile.read(out)
    if plan is None:
        raise ShardError(f"{out / PLAN_NAME}: no build plan (not built by this scorecritic's "
                         "`prep build-shards`, or built before plans were recorded): rerun "
                         "`prep build-shards` with the same options; finished shards are kept")
    from tqdm import tqdm

    with output_lock(out, "index", log=log):
        problems = plan_problems(out, plan)
        checksums: dict[str, str] = {}
        unverified: list[str] = []
        for entry in tqdm(plan.shards, desc="index", unit="shard", disable=not progress):
            try:
                record = read_build_record(out, entry.path)
            except ShardError:
                continue  # unreadable (in problems already)
            written = (record or {}).get("record")
            path = out / entry.path
            if not written or record.get("plan_key") != entry.plan_key or not path.is_file():
                continue  # every track skipped, or missing (in problems already)
            digest = sha256_file(path)
            if digest == written["sha256"] and path.stat().st_size == written["bytes"]:
                checksums[entry.path] = written["sha256"]
            elif accept_unverified:
                checksums[entry.path] = digest
                unverified.append(entry.path)
            else:
                problems.append(
                    f"{path}: SHA-256 differs from its build record "
                    f"{build_record_path(out, entry.path).name} (corrupted or changed after the "
                    f"build); {REBUILD_HINT}, or list it as unverified with "
                    "`prep index --accept-unverified`")
        planned = {entry.path for entry in plan.shards}
        for path in list_shard_files(out):
            if path.relative_to(out).as_posix() not in planned:
                problems.append(f"{path}: shard file not in the build plan {out / PLAN_NAME} "
                                "(from another build? move it away)")
        if problems:
            raise IndexRefused(problems)
        if not checksums:
            raise ShardError(f"{out}: the build plan's shards hold no tracks (every track was "
                             "skipped)")
        manifest = assemble_manifest(out, checksums, plan, unverified)
        write_manifest(out, manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def default_slakh_root() -> Path:
    """``$SLAKH_ROOT`` if set, else the demo corpus ``corpus/demo`` (what ``make demo`` renders)."""
    env = os.environ.get("SLAKH_ROOT")
    return Path(env) if env else DEFAULT_SLAKH_ROOT


def corpus_label(slakh_root: Path) -> str:
    """What a corpus is, never where: the ``source_corpus`` root attr of its shards.

    ``"synthetic (prep synth-slakh)"`` for a corpus rendered by ``prep synth-slakh`` (its root
    holds ``synth_slakh.json``), else ``"slakh2100"``. Two copies of one corpus in different
    folders thus give the same shard bytes; the folder is recorded as provenance.
    """
    if (Path(slakh_root) / SYNTH_CONFIG_FILE).is_file():
        return "synthetic (prep synth-slakh)"
    return "slakh2100"


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--part must look like I/N (e.g. 1/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"--part {text}: need 1 <= I <= N")
    return index, count


def _partials(shard: ShardPlan, out: Path) -> list[Path]:
    """Temporary files of the shard and its build record left by interrupted writers."""
    names = {shard.path(out).name, shard.record_path(out).name}
    folder = shard.path(out).parent
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob(f".*{PARTIAL_SUFFIX}")) if final_name(p) in names]


def _stale_files(out: Path, shards: Sequence[ShardPlan]) -> list[Path]:
    """Shard files, partials and build records that the plan does not name."""
    planned = {s.name for s in shards}
    stale = []
    for split in SPLITS:
        folder = out / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = SHARD_NAME_RE.match(final_name(path) or path.name)
            if match and f"{match.group(1)}-{match.group(2)}" not in planned:
                stale.append(path)
    return stale


def build_shards(
    slakh_root: Path,
    out: Path,
    instruments: Sequence[str] | str,
    split_scheme: str = "split2",
    instrument_map: Path | None = None,
    stems: str = DEFAULT_STEMS_MODE,
    workers: int = 1,
    part: tuple[int, int] = (1, 1),
    backend: str = "local",
    scheduler: str | None = None,
    strict: bool = False,
    force: bool = False,
    shard_size_mb: float = DEFAULT_TARGET_SHARD_BYTES / 2**20,
    n_harmonics: int = features.DEFAULT_N_HARMONICS,
    resample_filter: str = DEFAULT_RESAMPLE_FILTER,
    sustain: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Manifest | PartialBuild:
    """Build HDF5 shards and ``OUT/manifest.json`` from a Slakh2100-layout corpus.

    Args:
        slakh_root: corpus root (split folders or flat).
        out: output folder (``OUT/<split>/<split>-NNNNN.h5``, ``OUT/manifest.json``).
        instruments: class names of the instrument map, e.g. ``["piano", "guitar", "bass"]``
            (order = the instrument index i of Y[i, n, t]).
        split_scheme: ``split2`` (paper) or ``orig``.
        instrument_map: YAML map (``None``: ``prep/data/instrument_map_programs.yaml``).
        stems: a :data:`STEMS_MODES` key: which splits store stems (default ``test``).
        workers: processes (joblib), each building whole shards; with ``backend="dask"`` and
            no ``scheduler``, the workers of a local Dask cluster.
        part: (I, N): build only the shards k with ``k % N == I - 1``.
        backend: ``"local"`` (this machine, joblib processes) or ``"dask"`` (one task per
            shard on a Dask cluster: :mod:`prep.cluster`; OUT must be shared storage that every
            worker sees at the same path).
        scheduler: the Dask scheduler's address (``tcp://host:8786``) or its scheduler file
            (``dask scheduler --scheduler-file``); ``None`` starts a local cluster.
        strict: raise :class:`StrictError` (after writing everything) if any track was skipped.
        force: rebuild shards even when a matching finished one exists.
        shard_size_mb: target shard size, on the estimated uncompressed track sizes.
        n_harmonics: L, harmonics per note in the harmonic mask A.
        resample_filter: one of :data:`RESAMPLE_FILTERS` (default ``soxr_hq``).
        sustain: extend note ends by each stem's sustain pedal (CC64) in the rolls and
            harmonic masks (:func:`prep.features.apply_sustain`); recorded as
            ``source["sustain_pedal"]`` (root attr ``sustain_pedal`` of every shard).
        progress: show a tqdm progress bar (tracks, audio hours per second).
        log: where summary lines go (default: print to stdout).

    Returns:
        The :class:`~prep.shards.Manifest` when every planned shard is complete (always for
        ``part=(1, 1)``); otherwise a :class:`PartialBuild` (run the other parts, then
        ``prep index OUT``).

    Raises:
        BuildError: bad options, no track found, or zero usable tracks.
        StrictError: ``strict`` and some tracks were skipped.
    """
    started = time.perf_counter()
    say = log or print
    slakh_root, out = Path(slakh_root), Path(out)
    if stems not in STEMS_MODES:
        raise BuildError(f"--stems must be one of {', '.join(STEMS_MODES)}, got {stems!r}")
    part_index, part_count = part
    if not 1 <= part_index <= part_count:
        raise BuildError(f"part {part_index}/{part_count}: need 1 <= I <= N")
    if workers < 1:
        raise BuildError(f"workers must be >= 1, got {workers}")
    if backend not in BACKENDS:
        raise BuildError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if scheduler is not None and backend != "dask":
        raise BuildError(f"a scheduler ({scheduler}) needs backend 'dask', got {backend!r}")
    if resample_filter not in RESAMPLE_FILTERS:
        raise BuildError(f"resample filter must be one of {RESAMPLE_FILTERS}, "
                         f"got {resample_filter!r}")
    if shard_size_mb <= 0:
        raise BuildError(f"shard size must be > 0 MB, got {shard_size_mb}")
    try:
        imap = load_instrument_map(instrument_map)
        names = parse_instruments(instruments, imap)
        params = FeatureParams(n_harmonics=n_harmonics)
        if not slakh_root.is_dir():
            raise SlakhError(f"{slakh_root}: corpus root is not a directory (set --slakh-root "
                             "or $SLAKH_ROOT; `make demo` renders the demo corpus to corpus/demo)")
    except (SlakhError, ValueError) as exc:
        raise BuildError(str(exc)) from exc

    # Shard content never names a place: the corpus by what it is, a custom instrument map by
    # its file name; where they were is provenance (build records and manifest, not checksummed).
    try:
        timing = score_timing(slakh_root)  # the corpus's MIDI, or `prep align`'s
    except AlignError as exc:
        raise BuildError(str(exc)) from exc
    source = {
        "source_corpus": corpus_label(slakh_root),
        "score_timing": timing,
        "split_scheme": split_scheme,
        "stems_mode": stems,
        "resample_filter": f"{RESAMPLER_LIBRARY[resample_filter]} {resample_filter}",
        "sustain_pedal": bool(sustain),
        "instrument_map": {**imap.to_dict(), "source": Path(imap.source).name
                           if instrument_map is not None else imap.source},
    }
    provenance = {
        "corpus_root": str(slakh_root.resolve()),
        "instrument_map_path": str(Path(imap.source).resolve())
        if instrument_map is not None else imap.source,
        "package_version": PACKAGE_VERSION,
    }
    settings = BuildSettings(tuple(names), params, stems, source, resample_filter,
                             bool(sustain))
    plan = make_plan(slakh_root, names, imap, settings, split_scheme,
                     int(shard_size_mb * 2**20))
    if not plan.shards:
        detail = "".join(f"\n  {s['track']}: {s['reason']}" for s in plan.skipped[:20])
        raise BuildError(f"{slakh_root}: zero usable tracks ({len(plan.skipped)} found, all "
                         f"skipped){detail}")

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(str(write_error(out, exc, "cannot create the output folder"))) from exc
    keys = {s.name: plan.shard_key(s) for s in plan.shards}
    planned = [PlannedShard(s.name, s.path(out).relative_to(out).as_posix(), s.split,
                            keys[s.name], [t.track_id for t in s.tracks]) for s in plan.shards]
    plan_file = BuildPlanFile(BuildPlanFile.make_id(planned), planned)
    try:
        with interrupt_on_signals(), output_lock(out, "build", plan_file.plan_id,
                                                 f"{part_index}/{part_count}", log=say):
            return _build_locked(
                plan, plan_file, keys, out, slakh_root, provenance, part, workers, backend,
                scheduler, strict, force, progress, say, started)
    except LockError as exc:
        raise BuildError(str(exc)) from exc
    except ShardWriteError as exc:  # the lock file cannot be written
        raise BuildError(str(exc)) from exc


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`BuildInterrupted` in the main thread, so that the
    build unwinds: joblib kills its workers (``abort_everything``), a Dask cluster is closed, a
    shard being written here is discarded, the lock is released, and no worker writes into OUT
    after the build has exited. Further signals are ignored while it unwinds. A signal that is
    ignored already (``nohup``, background jobs) stays ignored; outside the main thread this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watched = [sig for sig in (signal.SIGTERM, signal.SIGINT)
               if signal.getsignal(sig) is not signal.SIG_IGN]

    def interrupt(signum: int, frame: Any) -> None:
        for sig in watched:
            signal.signal(sig, signal.SIG_IGN)
        raise BuildInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _build_locked(
    plan: Plan, plan_file: BuildPlanFile, keys: dict[str, str], out: Path, slakh_root: Path,
    provenance: dict[str, str], part: tuple[int, int], workers: int, backend: str,
    scheduler: str | None, strict: bool, force: bool, progress: bool,
    say: Callable[[str], None], started: float,
) -> Manifest | PartialBuild:
    """:func:`build_shards` once OUT is locked: record the plan, keep the finished shards,
    build the rest, write the manifest when every planned shard is complete."""
    part_index, part_count = part
    try:
        plan_file.write(out)  # OUT/plan.json: what `prep index` and `prep verify` check against
        report_text = json.dumps(plan.defect_report, indent=1, sort_keys=True) + "\n"
        report_path = out / "defects.json"
        if not report_path.is_file() or report_path.read_text(errors="replace") != report_text:
            write_report(out, plan.defect_report)  # OUT/defects.json, for the manifest and index
    except OSError as exc:
        raise BuildError(str(exc)) from exc
    mine = [s for s in plan.shards if s.global_index % part_count == part_index - 1]
    outcomes: dict[str, ShardOutcome] = {}
    todo: list[ShardPlan] = []
    for shard in mine:
        done = None if force else load_complete_outcome(shard, keys[shard.name], out)
        if done is not None:
            outcomes[shard.name] = done
        else:
            todo.append(shard)
    stale = _stale_files(out, plan.shards)
    if todo or stale:
        # The old manifest no longer describes OUT once a shard changes: remove it first, so an
        # interrupted rebuild leaves no manifest (-> "run prep build-shards"), never one whose
        # shards are missing or different.
        discard(out / MANIFEST_NAME)
    for path in stale:
        path.unlink()
        say(f"removed stale {path} (not in the current plan)")
    for shard in todo:
        for path in (shard.path(out), shard.record_path(out), *_partials(shard, out)):
            path.unlink(missing_ok=True)
    if outcomes:
        say(f"resuming: {len(outcomes)} finished shard(s) kept, {len(todo)} to build")

    # Tracks skipped while planning travel in the first shard's build record.
    first = plan.shards[0].name
    jobs = [ShardJob(shard, keys[shard.name], plan.settings, out,
                     tuple(plan.skipped) if shard.name == first else (),
                     tuple(sorted(provenance.items()))) for shard in todo]
    built_now: list[ShardOutcome] = []
    try:
        for shard_outcome in _run_shards(jobs, workers, backend, scheduler, progress):
            written = shard_outcome.record and out / shard_outcome.record["path"]
            if written and not written.is_file():
                host = shard_outcome.provenance.get("host", "a worker")
                raise BuildError(f"{written}: built on {host} but not visible here: OUT must be "
                                 "storage that every worker sees at the same path")
            outcomes[shard_outcome.shard] = shard_outcome
            built_now.append(shard_outcome)
    except ShardWriteError as exc:  # disk full, folder not writable: stop, keep finished shards
        raise BuildError(f"{exc} (finished shards are kept; rerun to resume)") from exc
    except ClusterError as exc:
        raise BuildError(str(exc)) from exc

    # Shards of other parts count when they are already complete (checked once, here).
    for shard in plan.shards:
        if shard.name not in outcomes:
            done = load_complete_outcome(shard, keys[shard.name], out)
            if done is not None:
                outcomes[shard.name] = done
    pending = [s.name for s in plan.shards if s.name not in outcomes]
    skipped = plan.skipped + [s for o in outcomes.values() for s in o.skipped]
    if pending:
        _print_summary(say, [outcomes[s.name] for s in mine if s.name in outcomes], built_now,
                       skipped, started, complete=False)
        say(f"part {part_index}/{part_count} done; {len(pending)} shard(s) of other parts "
            "pending: run them, then `prep index OUT`")
        result = PartialBuild(built=sorted(outcomes), pending=pending, skipped=skipped)
        if strict and skipped:
            raise StrictError(f"--strict: {len(skipped)} track(s) skipped")
        return result
    if not any(o.record for o in outcomes.values()):
        raise BuildError(f"{slakh_root}: zero usable tracks (every planned track failed; "
                         "see the reasons above)")
    # each shard with the checksum its build wrote (kept shards were checked against it)
    verified = {o.record["path"]: o.record["sha256"] for o in outcomes.values() if o.record}
    manifest = assemble_manifest(out, verified, plan_file)
    try:
        write_manifest(out, manifest)
    except ShardWriteError as exc:
        raise BuildError(f"{exc} (the shards are complete; rerun or `prep index OUT`)") from exc
    _print_summary(say, [outcomes[s.name] for s in plan.shards], built_now, manifest.skipped,
                   started, complete=True, manifest=manifest)
    if strict and manifest.skipped:
        raise StrictError(f"--strict: {len(manifest.skipped)} track(s) skipped "
                          f"(listed in {out / 'manifest.json'})")
    if "train" not in manifest.splits:
        say(f"warning: {out / MANIFEST_NAME}: no train split: training needs train shards")
        if strict:
            raise StrictError(f"--strict: {out / MANIFEST_NAME} has no train split")
    return manifest


def _run_shards(
    jobs: Sequence[ShardJob], workers: int, backend: str, scheduler: str | None, progress: bool,
) -> Iterator[ShardOutcome]:
    """Build shards in this process, in joblib workers or on a Dask cluster, yielding each
    record as it finishes; a tqdm bar counts tracks and hours."""
    from tqdm import tqdm

    total_tracks = sum(len(j.shard.tracks) for j in jobs)
    bar = tqdm(total=total_tracks, unit="track", disable=not progress or not jobs,
               desc="build-shards", file=sys.stderr)
    bar_start = time.perf_counter()
    hours_done = 0.0

    def advance(tracks: Sequence[TrackPlan]) -> None:
        nonlocal hours_done
        hours_done += sum(t.hours for t in tracks)
        elapsed = max(time.perf_counter() - bar_start, 1e-9)
        bar.set_postfix_str(f"{hours_done:.2f} h audio, {hours_done * 3600 / elapsed:.1f} "
                            "audio-s/s", refresh=False)
        bar.update(len(tracks))

    by_name = {j.shard.name: j.shard for j in jobs}
    try:
        if backend == "dask":
            from prep.cluster import run_on_dask

            for outcome in run_on_dask(jobs, scheduler, workers):
                advance(by_name[outcome.shard].tracks)
                yield outcome
        elif workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield build_one_shard(job, single_thread=False, on_track=lambda t: advance([t]))
        else:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator_unordered")
            for outcome in parallel(delayed(build_one_shard)(job, True) for job in jobs):
                advance(by_name[outcome.shard].tracks)
                yield outcome
    finally:
        bar.close()


def _print_summary(
    say: Callable[[str], None], outcomes: Sequence[ShardOutcome],
    built: Sequence[ShardOutcome], skipped: Sequence[dict[str, str]], started: float,
    complete: bool, manifest: Manifest | None = None,
) -> None:
    """Tracks, hours and size per split; throughput of the shards built now; skips; time."""
    elapsed = time.perf_counter() - started
    say("build-shards summary" + ("" if complete else " (this part)"))
    for split in SPLITS:
        tracks = sum(len(o.record["tracks"]) for o in outcomes if o.record and o.split == split)
        samples = sum(o.samples for o in outcomes if o.split == split)
        size = sum(o.record["bytes"] for o in outcomes if o.record and o.split == split)
        if tracks:
            hours = samples / SAMPLE_RATE / 3600
            say(f"  {split:<10} {tracks:5d} tracks {hours:8.3f} h  {size / 2**20:9.1f} MiB  "
                f"{size / max(hours, 1e-12) / 2**30:.2f} GiB per audio-hour")
    if built:
        decode = sum(o.timing.get("decode_resample_cpu_s", 0.0) for o in built)
        cpu = sum(o.timing.get("total_cpu_s", 0.0) for o in built)
        audio_s = sum(o.samples for o in built) / SAMPLE_RATE
        peak = max(o.timing.get("peak_rss_mb", 0.0) for o in built)
        say(f"  built now: {audio_s:.1f} s of audio in {cpu:.1f} CPU-s in workers "
            f"({audio_s / max(cpu, 1e-9):.1f} audio-s per CPU-s), decode+resample "
            f"{100 * decode / max(cpu, 1e-9):.0f}% of it, peak RSS per worker {peak:.0f} MiB")
    if manifest is not None and manifest.class_weight:
        say(f"  train activity rate {manifest.activity_rate}, "
            f"class weights {manifest.class_weight}")
    if manifest is not None:
        for line in manifest.problems:
            say(f"  note: {line}")
    notes = manifest.warnings if manifest is not None else []
    for entry in notes[:20]:
        say(f"  warning {entry['track']}: {entry['warning']}")
    if len(notes) > 20:
        say(f"  ... {len(notes) - 20} more warnings in manifest.json")
    say(f"  skipped {len(skipped)} track(s)" + (":" if skipped else ""))
    for entry in skipped:
        say(f"    {entry['track']}: {entry['reason']}")
    say(f"  time {elapsed:.1f} s")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
