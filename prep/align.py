"""``prep align``: align each track's score to its mixture audio and write a Slakh-layout
corpus whose MIDI follows the audio, which ``prep build-shards`` reads unchanged.

The method needs every mixture's score aligned in time to the audio; Slakh's is (its audio
was rendered from the MIDI), a user's recording and score are not (another tempo, rubato).
This is synctoolbox's audio-score design (Müller et al., ``sync_audio_score_full.ipynb`` in
meinardmueller/synctoolbox):

1. audio (``mix.flac``, resampled to 22.05 kHz): pitch features from an IIR filterbank
   (``audio_to_pitch_features``), chroma, quantised (``quantize_chroma``); pitch onsets
   (``audio_to_pitch_onset_features``) as DLNCO features (decaying locally adaptive
   normalised chroma onsets);
2. score (``score/MIDI/*.mid``, the rendered parts; drums left out): the same features from
   its notes (``df_to_pitch_features``, ``df_to_pitch_onset_features``), i.e. the score's
   piano roll rendered as features;
3. one more onset row on each side, ours (:func:`audio_onset_row`, :func:`score_onset_row`):
   the mixture's broadband spectral-flux onsets, and the onsets of every score note, drums
   included, each decayed as DLNCO rows are. DLNCO sees only pitched onsets; this row lets
   the drums and every note's attack pin the path, and brings the share of onsets within
   50 ms from 82 % to 98 % (reports/bench/findings/36-alignment-accuracy.md);
4. memory-restricted multiscale DTW on both (``sync_via_mrmsdtw``: chroma on coarse levels,
   chroma + the 13 onset rows on the finest, 50 frames/s), made strictly monotonic
   (``make_path_strictly_monotonic``);
5. every event of ``score/all_src.mid`` and ``score/MIDI/Sxx.mid`` (note starts *and* ends,
   pedal, pitch bends) is moved through the path (linear between its points) and written as
   the aligned track's ``all_src.mid`` and ``MIDI/Sxx.mid``.

Output, for each track aligned::

    ALIGNED/<split>/TrackNNNNN/
        mix.flac, stems/      symlinks to the corpus's files (absolute)
        metadata.yaml         a copy
        all_src.mid, MIDI/    the aligned score
    ALIGNED/alignment/TrackNNNNN.json   the track's report
    ALIGNED/alignment.json              the summary: settings, reports' totals, skipped tracks
    ALIGNED/synth_slakh.json            a copy of the corpus's, where it has one (a rendered
                                        corpus stays one: data cards describe its render)

``prep build-shards`` records where its corpus's timing came from in the shards' checksummed
root attribute ``score_timing`` (:func:`score_timing`): the corpus's own MIDI, or this
aligner with its settings, track counts and pooled onset errors; the data card prints it.

Confidence: ``normalised_cost`` is the mean over the path of the chroma cost 1 - <a, s>
between the audio's and the score's l2-normalised quantised chroma (0 identical, 1
orthogonal). A track above ``max_cost`` (``--max-cost``) is skipped with the reason, as is a
track without a readable score or mixture. Where the corpus has the true warp
(``score/warp.json``, ``prep synth-slakh --unaligned-scores``) the report gives the onset
error of every score note against it, before (the score's times taken as they are) and after
alignment: median, 90th percentile and share within 50 ms, per instrument (metadata's
``inst_class``) and overall.

Example::

    prep synth-slakh --preset tiny --out corpus/u --unaligned-scores
    prep align --corpus corpus/u --out corpus/u-aligned
    prep build-shards --slakh-root corpus/u-aligned --out data-aligned
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import yaml

from prep.slakh import METADATA_FILE, SYNTH_CONFIG_FILE, SlakhError, find_tracks
from prep.unaligned import SCORE_DIR, WARP_FILE, ScoreError, read_warp, score_to_performance

FEATURE_RATE = 50  # frames per second of every feature (synctoolbox's default)
AUDIO_RATE = 22050  # synctoolbox's filterbanks are designed for this rate
STEP_WEIGHTS = (1.5, 1.5, 2.0)  # DTW steps (1, 0), (0, 1), (1, 1): the notebook's
THRESHOLD_REC = 10 ** 6  # MrMsDTW's largest rectangle between anchors (the notebook's)
DEFAULT_MAX_COST = 0.5  # tracks whose normalised path cost exceeds this are skipped
TIMING_KEYS = ("runtime_s", "cpu_s", "real_time_factor")  # in returned reports, not in files
ONSET_TOLERANCE_S = 0.05  # "within 50 ms" of the onset-error report
REPORT_DIR = "alignment"
SUMMARY_FILE = "alignment.json"
METHOD = ("synctoolbox MrMsDTW on chroma, DLNCO and a broadband onset row "
          "(mixture spectral flux against every score note's onset)")
METHODS = {"dtw": METHOD, "none": "none: the scores' own timing, not aligned"}
ONSET_WEIGHT = 1.0  # the broadband onset row's scale beside DLNCO's 12 unit-norm rows
ONSET_FFT, ONSET_HOP = 1024, 441  # its STFT at AUDIO_RATE: 46 ms frames, 50 frames/s
ONSET_LOCAL_FRAMES = 10  # a flux peak must exceed the mean of +-10 frames by ...
ONSET_THRESHOLD_STD = 0.5  # ... this many standard deviations of the track's flux
ONSET_MIN_GAP_FRAMES = 3  # peaks at least 60 ms apart
ONSET_DECAY = np.sqrt(1 / np.arange(1, 11))  # synctoolbox's DLNCO decay, 200 ms
# The pitches of the features (synctoolbox's default is 21-108). Its filterbank runs bands
# 96-108 at 22.05 kHz, five times the rate of 60-95, which made them ~60 % of the audio
# features' time; above B6 the audio holds harmonics more than the score's fundamentals.
MIDI_LOW, MIDI_HIGH = 21, 95


class AlignError(ValueError):
    """The run cannot start (no corpus, bad options); the message names the path."""


class AlignSkip(Exception):
    """A track cannot be aligned; the one-line message names the file and the problem."""


@dataclass(frozen=True)
class ScoreNote:
    """One note of a score part: its stem, instrument class, pitch and times (seconds)."""

    stem: str
    instrument: str
    pitch: int
    start: float
    end: float
    velocity: int
    is_drum: bool


# --------------------------------------------------------------------------------------------
# Reading a track
# --------------------------------------------------------------------------------------------


def _read_midi(path: Path) -> pretty_midi.PrettyMIDI:
    if not path.is_file():
        raise AlignSkip(f"{path}: missing score file (render with `prep synth-slakh "
                        "--unaligned-scores` or put the score there)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(str(path))
    except Exception as error:  # mido/pretty_midi raise OSError, EOFError, ValueError...
        raise AlignSkip(f"{path}: unreadable score MIDI ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from error


def read_score(track: Path) -> tuple[pretty_midi.PrettyMIDI, dict[str, pretty_midi.PrettyMIDI],
                                     list[ScoreNote]]:
    """The track's score: ``score/all_src.mid``, ``score/MIDI/*.mid`` by stem key, and the
    parts' notes labelled with their stem's ``inst_class`` (from metadata.yaml).

    Raises:
        AlignSkip: a missing or unreadable file, or a score without pitched notes.
    """
    folder = track / SCORE_DIR
    all_src = _read_midi(folder / "all_src.mid")
    stems = {p.stem: _read_midi(p) for p in sorted((folder / "MIDI").glob("*.mid"))}
    if not stems:
        raise AlignSkip(f"{folder / 'MIDI'}: no score parts (Sxx.mid)")
    try:
        meta = yaml.safe_load((track / METADATA_FILE).read_text())
        classes = {str(k): str(v.get("inst_class", k)) for k, v in meta["stems"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        raise AlignSkip(f"{track / METADATA_FILE}: unreadable metadata ({error})") from error
    notes = [ScoreNote(key, classes.get(key, key), n.pitch, n.start, n.end, n.velocity,
                       inst.is_drum)
             for key, midi in stems.items() for inst in midi.instruments for n in inst.notes]
    if not any(not n.is_drum and MIDI_LOW <= n.pitch <= MIDI_HIGH for n in notes):
        raise AlignSkip(f"{folder / 'MIDI'}: the score has no pitched notes in MIDI "
                        f"{MIDI_LOW}-{MIDI_HIGH} to align")
    return all_src, stems, notes


def read_mix(path: Path) -> tuple[np.ndarray, float]:
    """``mix.flac`` as mono float at ``AUDIO_RATE`` and its length in seconds.

    Raises:
        AlignSkip: missing, unreadable, empty or non-finite audio.
    """
    import soundfile as sf
    import soxr

    if not path.is_file():
        raise AlignSkip(f"{path}: missing mixture audio")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError...
        raise AlignSkip(f"{path}: unreadable audio ({error})") from error
    mono = audio.mean(axis=1)
    if mono.size == 0 or not np.all(np.isfinite(mono)):
        raise AlignSkip(f"{path}: empty or non-finite audio")
    seconds = mono.size / rate
    if rate != AUDIO_RATE:
        mono = soxr.resample(mono, rate, AUDIO_RATE, quality="HQ")
    return mono.astype(np.float64), float(seconds)


# --------------------------------------------------------------------------------------------
# Features and DTW (synctoolbox)
# --------------------------------------------------------------------------------------------


def _import_synctoolbox() -> None:
    try:
        import synctoolbox  # noqa: F401
    except ImportError as error:
        raise AlignError(f"cannot import synctoolbox ({error}); `prep align` needs it: "
                         "pip install -e '.[align]'") from error


class _SignalProxy:
    """``scipy.signal`` for synctoolbox's feature modules, with the filter designs
    (``cheb2ord``, ``cheby2``) memoised for the process and ``sosfiltfilt`` memoised for the
    duration of one :func:`audio_features` call (see :func:`design_filters_once`); every other
    name is scipy's."""

    def __init__(self, signal: Any) -> None:
        self._signal = signal
        self.cheb2ord = functools.cache(signal.cheb2ord)
        self.cheby2 = functools.cache(signal.cheby2)
        self.shared: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def sosfiltfilt(self, sos: np.ndarray, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        if self.shared is None or kwargs:
            return self._signal.sosfiltfilt(sos, x, **kwargs)
        key = (id(sos), id(x))
        hit = self.shared.get(key)
        if hit is not None and hit[0] is sos and hit[1] is x:  # the same arrays, kept alive
            return hit[2].copy()
        y = self._signal.sosfiltfilt(sos, x)
        self.shared[key] = (sos, x, y)
        return y.copy()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._signal, name)


@functools.cache
def design_filters_once() -> _SignalProxy:
    """Make synctoolbox design its filters once per process, and let its pitch and onset
    features share their filtering within one :func:`audio_features` call.

    The two feature functions each downsample the audio and run the same 75 band-pass
    filters over it (``sosfiltfilt``), and each call designs the filterbank's elliptic
    filters (``generate_filterbank``) and, in the onset features, a Chebyshev smoother per
    pitch anew. All of that depends on the audio and on constants only (tuning 0 here), so
    designs are memoised for the process and downsampling and filtering are computed once
    per call and handed to both: the features are unchanged (tests/test_align.py compares
    them with synctoolbox's own), in about a third of the time.
    """
    from scipy import signal
    from synctoolbox.feature import filterbank, pitch, pitch_onset

    designed = functools.cache(filterbank.generate_filterbank)
    proxy = _SignalProxy(signal)
    downsampled: list[tuple[np.ndarray, list[np.ndarray]]] = []

    def downsample(f_audio: np.ndarray) -> list[np.ndarray]:
        if proxy.shared is not None and downsampled and downsampled[0][0] is f_audio:
            return downsampled[0][1]
        result = filterbank.generate_list_of_downsampled_audio(f_audio)
        if proxy.shared is not None:
            downsampled[:] = [(f_audio, result)]
        return result

    for module in (pitch, pitch_onset):
        module.generate_filterbank = designed
        module.generate_list_of_downsampled_audio = downsample
        module.signal = proxy
    proxy.downsampled = downsampled  # type: ignore[attr-defined]
    return proxy


@contextlib.contextmanager
def _shared_filtering() -> Iterator[None]:
    """Within: synctoolbox's feature functions share downsampling and filtering (one audio)."""
    proxy = design_filters_once()
    proxy.shared = {}
    try:
        yield
    finally:
        proxy.shared = None
        proxy.downsampled.clear()  # type: ignore[attr-defined]


def audio_features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantised chroma [12, N] and DLNCO [12, N] of mono audio at ``AUDIO_RATE``."""
    from synctoolbox.feature.chroma import pitch_to_chroma, quantize_chroma
    from synctoolbox.feature.dlnco import pitch_onset_features_to_DLNCO
    from synctoolbox.feature.pitch import audio_to_pitch_features
    from synctoolbox.feature.pitch_onset import audio_to_pitch_onset_features

    # synctoolbox prints a dot per pitch
    with contextlib.redirect_stdout(io.StringIO()), _shared_filtering():
        pitch = audio_to_pitch_features(f_audio=audio, Fs=AUDIO_RATE, feature_rate=FEATURE_RATE,
                                        midi_min=MIDI_LOW, midi_max=MIDI_HIGH)
        peaks = audio_to_pitch_onset_features(f_audio=audio, Fs=AUDIO_RATE, midi_min=MIDI_LOW,
                                              midi_max=MIDI_HIGH)
    chroma = quantize_chroma(f_chroma=pitch_to_chroma(f_pitch=pitch))
    dlnco = pitch_onset_features_to_DLNCO(f_peaks=peaks, feature_rate=FEATURE_RATE,
                                          feature_sequence_length=chroma.shape[1])
    return chroma, dlnco


def _decayed_onsets(times_s: np.ndarray, n_frames: int) -> np.ndarray:
    """A row [1, n_frames]: 1 at each onset's frame (FEATURE_RATE), decayed as DLNCO."""
    row = np.zeros(n_frames)
    frames = np.round(np.asarray(times_s) * FEATURE_RATE).astype(np.int64)
    row[frames[(frames >= 0) & (frames < n_frames)]] = 1.0
    return np.convolve(row, ONSET_DECAY)[:n_frames][None, :]


def audio_onset_row(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The mixture's broadband onsets as a decayed row [1, n_frames]: peaks of the half-wave
    rectified spectral flux of log(1 + 100 |STFT|) (Hann, ``ONSET_FFT`` / ``ONSET_HOP`` at
    ``AUDIO_RATE``) above a local mean plus ``ONSET_THRESHOLD_STD`` standard deviations."""
    from scipy.signal import find_peaks

    n_stft = max(0, 1 + (audio.size - ONSET_FFT) // ONSET_HOP)
    window = np.hanning(ONSET_FFT)
    flux = np.zeros(n_stft)
    previous = None
    for first in range(0, n_stft, 2048):  # in blocks: a long track's STFT is not held whole
        frames = np.arange(first, min(first + 2048, n_stft))
        index = frames[:, None] * ONSET_HOP + np.arange(ONSET_FFT)[None, :]
        level = np.log1p(100 * np.abs(np.fft.rfft(audio[index] * window, axis=1)))
        if previous is not None:
            level = np.vstack([previous, level])
        rise = np.maximum(np.diff(level, axis=0), 0).sum(axis=1)
        flux[frames[-rise.size:]] = rise
        previous = level[-1:]
    if flux.size == 0 or not np.any(flux):
        return np.zeros((1, n_frames))
    width = 2 * ONSET_LOCAL_FRAMES + 1
    local = np.convolve(flux, np.ones(width) / width, mode="same")
    peaks, _ = find_peaks(flux, height=local + ONSET_THRESHOLD_STD * flux.std(),
                          distance=ONSET_MIN_GAP_FRAMES)
    return _decayed_onsets((peaks * ONSET_HOP + ONSET_FFT / 2) / AUDIO_RATE, n_frames)


def score_onset_row(notes: list[ScoreNote], n_frames: int) -> np.ndarray:
    """Every score note's onset (drums and all pitches included) as a decayed row
    [1, n_frames], the counterpart of :func:`audio_onset_row`."""
    return _decayed_onsets(np.array([n.start for n in notes]), n_frames)


def score_features(notes: list[ScoreNote]) -> tuple[np.ndarray, np.ndarray]:
    """Quantised chroma and DLNCO of the score's pitched notes (drums left out): the notes
    rendered as synctoolbox's symbolic pitch and onset features."""
    import pandas as pd
    from synctoolbox.feature.chroma import pitch_to_chroma, quantize_chroma
    from synctoolbox.feature.csv_tools import df_to_pitch_features, df_to_pitch_onset_features
    from synctoolbox.feature.dlnco import pitch_onset_features_to_DLNCO

    rows = [(n.start, n.end - n.start, n.pitch, n.velocity, "pitched") for n in notes
            if not n.is_drum and MIDI_LOW <= n.pitch <= MIDI_HIGH]
    frame = pd.DataFrame(rows, columns=["start", "duration", "pitch", "velocity", "instrument"])
    pitch = df_to_pitch_features(frame, feature_rate=FEATURE_RATE, midi_min=MIDI_LOW,
                                 midi_max=MIDI_HIGH)
    chroma = quantize_chroma(f_chroma=pitch_to_chroma(f_pitch=pitch))
    peaks = df_to_pitch_onset_features(frame, midi_min=MIDI_LOW, midi_max=MIDI_HIGH)
    dlnco = pitch_onset_features_to_DLNCO(f_peaks=peaks, feature_rate=FEATURE_RATE,
                                          feature_sequence_length=chroma.shape[1])
    return chroma, dlnco


def dtw_features(audio: np.ndarray, notes: list[ScoreNote]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the DTW compares: the audio's chroma [12, N] and onset rows [13, N] (DLNCO and
    the broadband row), and the score's chroma [12, M] and onset rows [13, M]."""
    chroma_a, dlnco_a = audio_features(audio)
    chroma_s, dlnco_s = score_features(notes)
    onsets_a = np.vstack([dlnco_a, ONSET_WEIGHT * audio_onset_row(audio, chroma_a.shape[1])])
    onsets_s = np.vstack([dlnco_s, ONSET_WEIGHT * score_onset_row(notes, chroma_s.shape[1])])
    return chroma_a, onsets_a, chroma_s, onsets_s


def dtw_path(audio_chroma: np.ndarray, audio_onsets: np.ndarray, score_chroma: np.ndarray,
             score_onsets: np.ndarray) -> np.ndarray:
    """Strictly monotonic MrMsDTW path [2, T] of (audio frame, score frame) pairs."""
    from synctoolbox.dtw.mrmsdtw import sync_via_mrmsdtw
    from synctoolbox.dtw.utils import make_path_strictly_monotonic

    with contextlib.redirect_stdout(io.StringIO()):
        path = sync_via_mrmsdtw(f_chroma1=audio_chroma, f_onset1=audio_onsets,
                                f_chroma2=score_chroma, f_onset2=score_onsets,
                                input_feature_rate=FEATURE_RATE,
                                step_weights=np.array(STEP_WEIGHTS, dtype=np.float64),
                                threshold_rec=THRESHOLD_REC)
    return make_path_strictly_monotonic(path).astype(np.int64)


def path_cost(audio_chroma: np.ndarray, score_chroma: np.ndarray,
              path: np.ndarray) -> tuple[float, float]:
    """(total, mean) chroma cost 1 - <a, s> along ``path`` between l2-normalised chroma
    vectors (a silent frame counts as the uniform unit vector, as synctoolbox does)."""
    def unit(chroma: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(chroma, axis=0, keepdims=True)
        uniform = np.full_like(chroma, 1 / np.sqrt(chroma.shape[0]))
        return np.where(norm < 1e-3, uniform, chroma / np.maximum(norm, 1e-12))

    a, s = unit(audio_chroma)[:, path[0]], unit(score_chroma)[:, path[1]]
    cost = 1.0 - np.sum(a * s, axis=0)
    return float(cost.sum()), float(cost.mean())


def path_knots(path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score seconds, audio seconds) knots of a strict path, extended past its last point
    with the path's overall slope (events after the last frame keep moving)."""
    score_s = path[1] / FEATURE_RATE
    audio_s = path[0] / FEATURE_RATE
    slope = (audio_s[-1] - audio_s[0]) / max(score_s[-1] - score_s[0], 1e-9)
    pad = 3600.0
    return (np.concatenate([score_s, [score_s[-1] + pad]]),
            np.concatenate([audio_s, [audio_s[-1] + pad * slope]]))


# --------------------------------------------------------------------------------------------
# Scoring against the true warp
# --------------------------------------------------------------------------------------------


def error_stats(errors: np.ndarray) -> dict[str, float | int]:
    """Median, 90th percentile (seconds) and share within ``ONSET_TOLERANCE_S`` of absolute
    onset errors."""
    errors = np.abs(np.asarray(errors, dtype=np.float64))
    if errors.size == 0:
        return {"notes": 0}
    return {"notes": int(errors.size), "median_s": float(np.median(errors)),
            "p90_s": float(np.percentile(errors, 90)),
            "within_50ms": float(np.mean(errors <= ONSET_TOLERANCE_S))}


def onset_report(errors: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """:func:`error_stats` of each class and phase of :func:`onset_errors`' errors."""
    return {name: {phase: error_stats(values) for phase, values in phases.items()}
            for name, phases in errors.items()}


def onset_errors(notes: list[ScoreNote], truth: np.ndarray,
                 aligned: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Absolute onset errors (seconds) of every note before and after alignment, by class
    (``overall`` and each ``inst_class``)."""
    starts = np.array([n.start for n in notes])
    classes = np.array([n.instrument for n in notes])
    return {name: {"before": np.abs(starts[mask] - truth[mask]),
                   "after": np.abs(aligned[mask] - truth[mask])}
            for name, mask in [("overall", np.ones(len(notes), bool)),
                               *[(c, classes == c) for c in sorted(set(classes.tolist()))]]}


# --------------------------------------------------------------------------------------------
# One track
# --------------------------------------------------------------------------------------------


def _move(midi: pretty_midi.PrettyMIDI, knots: tuple[np.ndarray, np.ndarray]
          ) -> pretty_midi.PrettyMIDI:
    from prep.unaligned import warp_midi

    tempo = float(midi.get_tempo_changes()[1][0]) if midi.get_tempo_changes()[1].size else 120.0
    return warp_midi(midi, knots[0], knots[1], tempo)


def align_track(track: Path, destination: Path, max_cost: float,
                method: str = "dtw") -> dict[str, Any]:
    """Align one track's score to its ``mix.flac`` and write the aligned track folder to
    ``destination`` (atomically); return its report.

    ``method``: ``"dtw"`` aligns; ``"none"`` keeps the score's own timing (its files are
    copied as they are: the unaligned baseline that alignment is measured against).

    Raises:
        AlignSkip: missing or unreadable files, or a normalised cost above ``max_cost``
            (nothing is written then).
    """
    if method not in METHODS:
        raise AlignError(f"unknown alignment method {method!r}; choose from "
                         f"{', '.join(METHODS)}")
    started, cpu = time.perf_counter(), time.process_time()
    all_src, stems, notes = read_score(track)
    warp_path = track / SCORE_DIR / WARP_FILE
    try:
        warp = read_warp(warp_path) if warp_path.is_file() else None
    except ScoreError as error:
        raise AlignSkip(str(error)) from error
    audio, seconds = read_mix(track / "mix.flac")
    report: dict[str, Any] = {"track": track.name, "source": str(track), "seconds": seconds}
    if method == "none":
        knots = (np.array([0.0, 1e6]), np.array([0.0, 1e6]))  # the identity
    else:
        chroma_a, onsets_a, chroma_s, onsets_s = dtw_features(audio, notes)
        path = dtw_path(chroma_a, onsets_a, chroma_s, onsets_s)
        total, mean = path_cost(chroma_a, chroma_s, path)
        if not mean <= max_cost:
            raise AlignSkip(f"{track / SCORE_DIR}: alignment rejected, normalised chroma cost "
                            f"{mean:.3f} above --max-cost {max_cost:g} (not this track's "
                            "score?)")
        knots = path_knots(path)
        report.update({"cost": total, "normalised_cost": mean,
                       "path_points": int(path.shape[1]),
                       "audio_frames": int(chroma_a.shape[1]),
                       "score_frames": int(chroma_s.shape[1])})

    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{track.name}.", dir=destination.parent))
    try:
        (tmp / "MIDI").mkdir()
        for name in ("mix.flac", "stems"):
            if (track / name).exists():
                os.symlink((track / name).resolve(), tmp / name)
        shutil.copyfile(track / METADATA_FILE, tmp / METADATA_FILE)
        if method == "none":
            shutil.copyfile(track / SCORE_DIR / "all_src.mid", tmp / "all_src.mid")
            for key in stems:
                shutil.copyfile(track / SCORE_DIR / "MIDI" / f"{key}.mid",
                                tmp / "MIDI" / f"{key}.mid")
        else:
            _move(all_src, knots).write(str(tmp / "all_src.mid"))
            for key, midi in stems.items():
                _move(midi, knots).write(str(tmp / "MIDI" / f"{key}.mid"))
        if destination.exists():
            shutil.rmtree(destination)
        tmp.rename(destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report.update({"runtime_s": time.perf_counter() - started,
                   "cpu_s": time.process_time() - cpu})
    report["real_time_factor"] = seconds / max(report["runtime_s"], 1e-9)
    if warp is not None:
        starts = np.array([n.start for n in notes])
        errors = onset_errors(notes, score_to_performance(starts, warp),
                              np.interp(starts, *knots))
        report["onset_error"] = onset_report(errors)
        report["_errors"] = errors  # per-note, for the corpus summary; not written
    return report


def _align_one(track: Path, destination: Path, max_cost: float,
               method: str) -> tuple[dict | None, str | None]:
    """``align_track`` for a worker: (report, None) or (None, the one-line skip reason)."""
    try:
        return align_track(track, destination, max_cost, method), None
    except AlignSkip as skip:
        return None, str(skip)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def pooled_onset_report(errors: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Onset-error figures over every note of several tracks (per-note errors pooled, not
    per-track figures averaged), per instrument class and overall."""
    table: dict[str, dict[str, list[np.ndarray]]] = {}
    for track in errors:
        for name, phases in track.items():
            for phase, values in phases.items():
                table.setdefault(name, {}).setdefault(phase, []).append(values)
    return onset_report({name: {phase: np.concatenate(parts) for phase, parts in phases.items()}
                         for name, phases in sorted(table.items())})


def _collect(jobs: list[tuple[Path, Path]], results: Iterator[tuple[dict | None, str | None]],
             out: Path, progress: bool, log: Callable[[str], None]
             ) -> tuple[list[dict[str, Any]], list[dict[str, dict[str, np.ndarray]]],
                        list[dict[str, str]]]:
    """Write each track's report as it comes; return the reports, their per-note onset
    errors and the skipped tracks with their reasons."""
    from tqdm import tqdm

    reports: list[dict[str, Any]] = []
    errors: list[dict[str, dict[str, np.ndarray]]] = []
    skipped: list[dict[str, str]] = []
    (out / REPORT_DIR).mkdir(parents=True, exist_ok=True)
    for (path, destination), (report, reason) in tqdm(zip(jobs, results, strict=True), total=len(jobs),
                                            desc="align", unit="track",
                                            disable=not progress):
        if report is None:
            skipped.append({"track": path.name, "reason": str(reason)})
            log(f"skipped {path.name}: {reason}")
            # nothing of an earlier run's alignment of the track is left to build from
            (out / REPORT_DIR / f"{path.name}.json").unlink(missing_ok=True)
            shutil.rmtree(destination, ignore_errors=True)
            continue
        if "_errors" in report:
            errors.append(report.pop("_errors"))
        reports.append(report)
        written = {k: v for k, v in report.items() if k not in TIMING_KEYS}
        (out / REPORT_DIR / f"{path.name}.json").write_text(
            json.dumps(written, indent=1, sort_keys=True) + "\n")
    return reports, errors, skipped


def align_corpus(corpus: Path, out: Path, max_cost: float = DEFAULT_MAX_COST, workers: int = 1,
                 progress: bool = True, log: Callable[[str], None] = print,
                 allow_empty: bool = False, method: str = "dtw") -> dict[str, Any]:
    """Align every track of a Slakh-layout ``corpus`` (each with ``score/``) into ``out``;
    return the summary written to ``out/alignment.json``.

    Args:
        corpus: corpus root (split folders or flat), e.g. from ``prep synth-slakh
            --unaligned-scores``.
        out: the aligned corpus (same split folders), plus the reports.
        max_cost: skip tracks whose normalised chroma cost along the path is above this.
        workers: tracks aligned in parallel (processes).
        progress: show a progress bar.
        log: where the skipped tracks and the summary lines go.
        method: ``"dtw"`` (align) or ``"none"`` (keep the scores' timing: the unaligned
            baseline, in the same layout and with the same reports).
        allow_empty: a corpus folder without track folders gives an empty aligned corpus
            (a pipeline whose corpus stage rendered nothing, ``corpus.preset: none``), not an
            error.

    Raises:
        AlignError: no corpus folder, no tracks (unless ``allow_empty``), ``out`` inside the
            corpus, bad options, or synctoolbox missing.
    """
    corpus, out = Path(corpus), Path(out)
    if not corpus.is_dir():
        raise AlignError(f"{corpus}: no such corpus folder")
    if workers < 1:
        raise AlignError(f"--workers must be >= 1, got {workers}")
    if not max_cost > 0:
        raise AlignError(f"--max-cost must be > 0, got {max_cost}")
    if method not in METHODS:
        raise AlignError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}")
    if out.resolve() == corpus.resolve() or corpus.resolve() in out.resolve().parents:
        raise AlignError(f"{out}: --out must lie outside the corpus {corpus}")
    try:
        tracks = find_tracks(corpus)
    except (SlakhError, OSError) as error:
        raise AlignError(str(error)) from error
    if not tracks and not allow_empty:
        raise AlignError(f"{corpus}: no track folders (TrackNNNNN/) found")
    out.mkdir(parents=True, exist_ok=True)
    if (corpus / SYNTH_CONFIG_FILE).is_file():
        shutil.copyfile(corpus / SYNTH_CONFIG_FILE, out / SYNTH_CONFIG_FILE)
    else:
        (out / SYNTH_CONFIG_FILE).unlink(missing_ok=True)
    if tracks:
        _import_synctoolbox()
        design_filters_once()

    jobs = [(t.path, out / t.folder_split / t.track_id if t.folder_split else out / t.track_id)
            for t in tracks]
    started = time.perf_counter()
    if workers == 1:  # here: numba compiles once, no process to start
        results: Iterator[tuple[dict | None, str | None]] = (
            _align_one(path, dest, max_cost, method) for path, dest in jobs)
    else:  # loky's reusable processes, as prep synth-slakh uses; results in track order
        from joblib.externals.loky import get_reusable_executor

        executor = get_reusable_executor(max_workers=workers)
        results = executor.map(_align_one, *zip(*jobs, strict=True),
                               [max_cost] * len(jobs), [method] * len(jobs))
    try:
        reports, errors, skipped = _collect(jobs, results, out, progress, log)
    finally:
        if workers > 1:  # as prep.synth.synth_slakh: leave no process-wide executor behind
            executor.shutdown(wait=True)
    seconds = sum(r["seconds"] for r in reports)
    summary = {
        "corpus": str(corpus), "method": METHODS[method], "settings": {
            "feature_rate": FEATURE_RATE, "audio_rate": AUDIO_RATE,
            "onset_weight": ONSET_WEIGHT,
            "step_weights": list(STEP_WEIGHTS), "threshold_rec": THRESHOLD_REC,
            "max_cost": max_cost},
        "aligned": len(reports), "skipped": skipped,
        "audio_s": seconds,
        "normalised_cost": {r["track"]: r["normalised_cost"] for r in reports
                            if "normalised_cost" in r},
    }
    runtime = sum(r["runtime_s"] for r in reports)
    if errors:
        summary["onset_error"] = pooled_onset_report(errors)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    # times vary from run to run: returned and printed, never written, so that an unchanged
    # alignment leaves OUT byte-identical (a pipeline does not rebuild on it)
    return {**summary, "wall_s": time.perf_counter() - started, "runtime_s": runtime,
            "real_time_factor": seconds / max(runtime, 1e-9)}


def score_timing(corpus: Path) -> dict[str, Any]:
    """Where the timing of ``corpus``'s MIDI comes from, as the shards record it (no paths).

    ``{"source": "corpus MIDI"}`` for a corpus without ``alignment.json`` (Slakh2100 and
    ``prep synth-slakh`` corpora: the audio was rendered from that MIDI); for one written by
    :func:`align_corpus`: ``source: "prep align"``, the method and settings, the tracks
    aligned and skipped, and, where the true warp was known, the pooled overall onset error
    (median and 90th percentile in seconds, share within 50 ms) before and after.

    Raises:
        AlignError: an ``alignment.json`` that cannot be read.
    """
    path = Path(corpus) / SUMMARY_FILE
    if not path.is_file():
        return {"source": "corpus MIDI"}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        timing = {"source": "prep align", "method": summary.get("method", METHOD),
                  "settings": summary["settings"], "tracks_aligned": summary["aligned"],
                  "tracks_skipped": len(summary["skipped"])}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AlignError(f"{path}: unreadable alignment summary ({error}); rerun `prep "
                         "align`") from error
    overall = (summary.get("onset_error") or {}).get("overall")
    if overall:
        timing["onset_error"] = overall
    return timing
