"""Unaligned scores: a score MIDI per rendered track whose timing differs from the audio in
known ways, and the true warping path from score time to performance time.

Slakh's MIDI is aligned to its audio for free (the audio was rendered from it); a user's
recording and score are not: another tempo, rubato, a player's timing. ``prep synth-slakh
--unaligned-scores`` writes, beside each rendered track, a score made from the performance
MIDI by a drawn distortion, and the exact warp, so that an aligner (``prep align``,
:mod:`prep.align`) can be trained and scored::

    TrackNNNNN/score/all_src.mid     every part, score timing
    TrackNNNNN/score/MIDI/Sxx.mid    one per rendered part, score timing
    TrackNNNNN/score/warp.json       the true warp and the distortion drawn

The Slakh files (``all_src.mid``, ``MIDI/``, ``stems/``, ``mix.flac``) are untouched and stay
byte-identical to a render without scores; ``metadata.yaml`` gains the top-level extra key
``scorecritic_score`` (the distortion, as in warp.json).

The distortion, drawn per track from ``default_rng([seed, track, SCORE_STREAM])`` (the corpus
seed, a stream of its own: the music and render draws are unchanged):

* **global tempo**: the score plays at ``tempo_factor`` times the performance's speed, drawn
  log-uniform with 1.05 <= factor <= 1.25 or its inverse (never the same tempo);
* **smooth tempo curve**: score seconds per performance second vary as
  ``exp(depth * sin(2 pi t / period + phase))`` around that, with depth 3-10 % and a period
  of 4-12 s (rubato);
* **onset jitter**: every distinct onset time (all notes struck together move together) is
  shifted by N(0, ``JITTER_S``) in score time, clipped to 40 % of the gap to its neighbours so
  that the order of onsets is kept;
* **a dropped or repeated bar** (only with ``--score-bar-edits``, off by default): one bar,
  neither the first nor the last, is left out of the score or played twice in it
  (:func:`apply_bar_edit`). The warp maps the second playing onto the bar's end in the
  performance (a flat stretch) and passes a dropped bar between the onsets around it.

The warp is the monotone piecewise-linear map through (score onset, performance onset) of
every distinct onset, read back from the written files (so tick rounding is in it), plus a
knot at the start and one past the end. ``np.interp(score_onsets, warp["score_s"],
warp["performance_s"])`` gives the performance onsets exactly. Every other event (note ends,
pedal, pitch bends) goes through the same map, so the score's notes are the performance's,
played by the distorted clock.

Example::

    >>> from prep.unaligned import read_warp, score_to_performance
    >>> warp = read_warp(Path("corpus/train/Track00001/score/warp.json"))
    >>> score_to_performance(np.array([0.0, 1.5]), warp)   # performance seconds
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

SCORE_STREAM = 2  # the distortion's generator: default_rng([seed, track, SCORE_STREAM])
SCORE_DIR = "score"  # under the track folder
WARP_FILE = "warp.json"
SCORE_KEY = "scorecritic_score"  # top-level extra key of metadata.yaml (not a Slakh field)
TEMPO_FACTOR_RANGE = (1.05, 1.25)  # |log factor| drawn uniform in log of this
CURVE_DEPTH_RANGE = (0.03, 0.10)
CURVE_PERIOD_RANGE_S = (4.0, 12.0)
JITTER_S = 0.015  # standard deviation of the onset jitter, seconds of score time
JITTER_GAP_SHARE = 0.4  # an onset moves at most this share of the gap to a neighbour
GRID_S = 0.001  # the smooth curve is integrated on this grid
TAIL_PAD_S = 10.0  # the warp's last knot lies this far past the last event
BAR_MARGIN_S = 1e-4  # a bar edit's span starts this long before the bar line


class ScoreError(ValueError):
    """A score or warp cannot be made or read; the message names the file."""


@dataclass(frozen=True)
class ScoreDistortion:
    """How a track's score timing differs from its performance (see the module docstring).

    ``tempo_factor`` > 1: the score is faster (shorter) than the performance.
    """

    tempo_factor: float
    curve_depth: float
    curve_period_s: float
    curve_phase: float
    jitter_s: float = JITTER_S

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def unaligned_settings(bar_edits: bool = False) -> dict[str, Any]:
    """The distortion's settings, for ``synth_slakh.json`` (a rerun with others is refused)."""
    return {"bar_edits": bar_edits, "seed_stream": SCORE_STREAM, "tempo_factor_range": list(TEMPO_FACTOR_RANGE),
            "curve_depth_range": list(CURVE_DEPTH_RANGE),
            "curve_period_range_s": list(CURVE_PERIOD_RANGE_S), "jitter_s": JITTER_S,
            "jitter_gap_share": JITTER_GAP_SHARE, "grid_s": GRID_S}


def draw_distortion(rng: np.random.Generator) -> ScoreDistortion:
    """Draw one track's distortion (tempo factor, tempo curve, jitter size)."""
    low, high = (math.log(x) for x in TEMPO_FACTOR_RANGE)
    log_factor = float(rng.uniform(low, high)) * (1 if rng.random() < 0.5 else -1)
    return ScoreDistortion(
        tempo_factor=math.exp(log_factor),
        curve_depth=float(rng.uniform(*CURVE_DEPTH_RANGE)),
        curve_period_s=float(rng.uniform(*CURVE_PERIOD_RANGE_S)),
        curve_phase=float(rng.uniform(0.0, 2 * math.pi)))


def smooth_map(times: np.ndarray, distortion: ScoreDistortion, end_s: float) -> np.ndarray:
    """Score seconds of performance ``times`` under the tempo factor and curve (no jitter).

    The rate ``(1 / tempo_factor) * exp(depth * sin(2 pi t / period + phase))`` is integrated
    with the trapezoid rule on a ``GRID_S`` grid up to ``end_s`` (0 maps to 0).
    """
    grid = np.arange(0.0, end_s + 2 * GRID_S, GRID_S)
    rate = np.exp(distortion.curve_depth * np.sin(
        2 * np.pi * grid / distortion.curve_period_s + distortion.curve_phase))
    rate /= distortion.tempo_factor
    integral = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * GRID_S)])
    return np.interp(times, grid, integral)


def _load(path: Path) -> pretty_midi.PrettyMIDI:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(str(path))
    except Exception as error:  # mido/pretty_midi raise many kinds
        raise ScoreError(f"{path}: unreadable MIDI ({type(error).__name__}: {error})") from error


def onset_times(midi: pretty_midi.PrettyMIDI) -> np.ndarray:
    """The distinct note-on times of every instrument, sorted (seconds)."""
    starts = [note.start for inst in midi.instruments for note in inst.notes]
    return np.unique(np.asarray(starts, dtype=np.float64))


def _jittered_knots(onsets: np.ndarray, smooth: np.ndarray, rng: np.random.Generator,
                    jitter_s: float) -> np.ndarray:
    """Score times of the onsets: their smooth-map times plus clipped jitter, kept in order."""
    jitter = rng.normal(0.0, jitter_s, size=onsets.size)
    gaps = np.diff(np.concatenate([[0.0], smooth, [np.inf]]))
    limit = JITTER_GAP_SHARE * np.minimum(gaps[:-1], gaps[1:])
    return smooth + np.clip(jitter, -limit, limit)


def warp_midi(midi: pretty_midi.PrettyMIDI, knots_from: np.ndarray, knots_to: np.ndarray,
              tempo: float) -> pretty_midi.PrettyMIDI:
    """A copy of ``midi`` with every event time t moved to ``interp(t, knots_from, knots_to)``,
    written at ``tempo`` (BPM) in 4/4, resolution 480, its key signatures moved too.

    ``knots_from`` must increase; ``knots_to`` must not decrease (a note keeps a length of at
    least 1 ms).
    """
    def move(t: float) -> float:
        return float(np.interp(t, knots_from, knots_to))

    out = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(tempo))
    out.time_signature_changes = [pretty_midi.TimeSignature(4, 4, 0.0)]
    out.key_signature_changes = [pretty_midi.KeySignature(k.key_number, move(k.time))
                                 for k in midi.key_signature_changes]
    for inst in midi.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        for note in inst.notes:
            start = move(note.start)
            new.notes.append(pretty_midi.Note(note.velocity, note.pitch, start,
                                              max(move(note.end), start + 0.001)))
        new.control_changes = [pretty_midi.ControlChange(c.number, c.value, move(c.time))
                               for c in inst.control_changes]
        new.pitch_bends = [pretty_midi.PitchBend(b.pitch, move(b.time)) for b in inst.pitch_bends]
        out.instruments.append(new)
    return out


@dataclass(frozen=True)
class BarEdit:
    """One bar of the performance left out of the score (``drop``) or played twice in it
    (``repeat``): bar number ``bar`` (0-based, 4/4 at the performance's tempo), spanning
    ``start_s``-``end_s`` of the performance (a 0.1 ms margin before each bar line, so that
    a note on the line belongs to its bar whatever the float rounding)."""

    kind: str
    bar: int
    start_s: float
    end_s: float


def draw_bar_edit(rng: np.random.Generator, onsets: np.ndarray, tempo: float) -> BarEdit | None:
    """Drop or repeat one bar, never the first or the last with notes; None when the
    performance has fewer than three bars."""
    bar_s = 240.0 / tempo
    n_bars = int(onsets[-1] // bar_s) + 1
    if n_bars < 3:
        return None
    bar = int(rng.integers(1, n_bars - 1))
    kind = "drop" if rng.random() < 0.5 else "repeat"
    return BarEdit(kind, bar, bar * bar_s - BAR_MARGIN_S, (bar + 1) * bar_s - BAR_MARGIN_S)


def apply_bar_edit(midi: pretty_midi.PrettyMIDI, edit: BarEdit | None
                   ) -> tuple[pretty_midi.PrettyMIDI, dict[float, float]]:
    """The performance with ``edit`` applied, in its own clock *u*, and, for every note
    start u, the performance time it stands for.

    ``drop``: notes starting in the bar are left out, later events move a bar earlier, a
    note held into the bar ends at its start (or a bar earlier, held past it). ``repeat``:
    the bar's events are played again right after it (its notes cut at the bar line; the
    second time they stand for the bar's end in the performance, which plays it once),
    later events move a bar later. Without an edit: ``midi`` itself, each start for itself.
    """
    if edit is None:
        return midi, {n.start: n.start for inst in midi.instruments for n in inst.notes}
    b0, b1 = edit.start_s, edit.end_s
    bar = b1 - b0
    out = copy.deepcopy(midi)
    truth: dict[float, float] = {}

    def times(t: float) -> list[float]:  # where one control event goes
        if t < b0:
            return [t]
        if edit.kind == "drop":
            return [b0] if t < b1 else [t - bar]
        return [t, t + bar] if t < b1 else [t + bar]

    for inst in out.instruments:
        notes: list[pretty_midi.Note] = []
        for n in inst.notes:
            spans: list[tuple[float, float, float]] = []  # (u start, u end, performance start)
            if edit.kind == "drop":
                if n.start < b0:
                    end = n.end if n.end <= b0 else (b0 if n.end < b1 else n.end - bar)
                    spans.append((n.start, end, n.start))
                elif n.start >= b1:
                    spans.append((n.start - bar, n.end - bar, n.start))
            elif n.start < b0:
                spans.append((n.start, n.end if n.end <= b1 else n.end + bar, n.start))
            elif n.start < b1:
                spans += [(n.start, min(n.end, b1), n.start), (n.start + bar, n.end + bar, b1)]
            else:
                spans.append((n.start + bar, n.end + bar, n.start))
            for start, end, performed in spans:
                notes.append(pretty_midi.Note(n.velocity, n.pitch, start, max(end, start + 0.001)))
                truth[start] = performed
        inst.notes = notes
        inst.control_changes = [pretty_midi.ControlChange(c.number, c.value, t)
                                for c in inst.control_changes for t in times(c.time)]
        inst.pitch_bends = [pretty_midi.PitchBend(b.pitch, t)
                            for b in inst.pitch_bends for t in times(b.time)]
    return out, truth


def write_unaligned_score(track: Path, rng: np.random.Generator, where: str | None = None,
                          bar_edits: bool = False) -> dict[str, Any]:
    """Write ``track/score/`` (all_src.mid, MIDI/Sxx.mid, warp.json) from the track's
    performance MIDI; return the distortion (for metadata.yaml's ``scorecritic_score``).

    Args:
        track: a rendered track folder (all_src.mid and MIDI/ read, never changed).
        rng: the distortion's generator (``default_rng([seed, track, SCORE_STREAM])``).
        where: how errors name the track (default: the folder).
        bar_edits: also drop or repeat one bar (:func:`draw_bar_edit`); the warp then maps
            the repeated bar's second playing onto the bar's end (flat) and jumps the
            dropped bar between the onsets around it.

    Raises:
        ScoreError: unreadable MIDI, no notes, or onsets that tick rounding merged.
    """
    where = where or str(track)
    performance = _load(track / "all_src.mid")
    if onset_times(performance).size == 0:
        raise ScoreError(f"{track / 'all_src.mid'}: no notes to make a score of")
    tempo = float(performance.get_tempo_changes()[1][0])
    distortion = draw_distortion(rng)
    edit = draw_bar_edit(rng, onset_times(performance), tempo) if bar_edits else None
    # u: the performance's clock with the bar edit applied (the performance's own without)
    virtual, performed = apply_bar_edit(performance, edit)
    onsets = onset_times(virtual)
    truth = np.array([performed[u] for u in onsets])
    end_s = max(float(virtual.get_end_time()), float(onsets[-1])) + TAIL_PAD_S
    shift = 0.0 if edit is None else (edit.end_s - edit.start_s) * (
        1 if edit.kind == "drop" else -1)
    smooth = smooth_map(onsets, distortion, end_s)
    score_onsets = _jittered_knots(onsets, smooth, rng, distortion.jitter_s)
    if onsets[0] == 0.0:
        score_onsets[0] = 0.0  # the first note stays on the downbeat
    end_score = float(smooth_map(np.array([end_s]), distortion, end_s)[0]) + (
        score_onsets[-1] - smooth[-1])
    u_knots = np.concatenate([[0.0] if onsets[0] > 0 else [], onsets, [end_s]])
    perf_knots = np.concatenate([[0.0] if onsets[0] > 0 else [], truth, [end_s + shift]])
    score_knots = np.concatenate([[0.0] if onsets[0] > 0 else [], score_onsets, [end_score]])
    score_tempo = tempo * distortion.tempo_factor

    folder = track / SCORE_DIR
    (folder / "MIDI").mkdir(parents=True, exist_ok=True)
    warp_midi(virtual, u_knots, score_knots, score_tempo).write(str(folder / "all_src.mid"))
    for stem in sorted((track / "MIDI").glob("*.mid")):
        warp_midi(apply_bar_edit(_load(stem), edit)[0], u_knots, score_knots,
                  score_tempo).write(str(folder / "MIDI" / stem.name))

    # The warp from what the files say: score onsets as read back (tick-rounded).
    written = onset_times(_load(folder / "all_src.mid"))
    if written.size != onsets.size:
        raise ScoreError(f"{folder / 'all_src.mid'}: {onsets.size} distinct onsets became "
                         f"{written.size} in the score ({where}; tick rounding merged some)")
    score_s = np.concatenate([[0.0] if onsets[0] > 0 else [], written, [end_score]])
    if not np.all(np.diff(score_s) > 0):
        raise ScoreError(f"{folder / 'all_src.mid'}: score onsets out of order ({where})")
    params = {**distortion.to_dict(), "seed_stream": SCORE_STREAM, "score_tempo": score_tempo,
              "performance_tempo": tempo}
    if bar_edits:  # the key only then: scores without edits keep their bytes
        params["bar_edit"] = asdict(edit) if edit is not None else None
    warp = {"what": "score time -> performance time (seconds), monotone piecewise-linear "
                    "through every distinct onset: np.interp(t, score_s, performance_s)",
            "distortion": params,
            "score_s": score_s.tolist(), "performance_s": perf_knots.tolist()}
    (folder / WARP_FILE).write_text(json.dumps(warp, indent=1, sort_keys=True) + "\n")
    return params


@dataclass(frozen=True)
class Warp:
    """A warp's knots: score seconds -> performance seconds, both increasing."""

    score_s: np.ndarray
    performance_s: np.ndarray


def read_warp(path: Path) -> Warp:
    """Read ``score/warp.json`` (see :func:`write_unaligned_score`).

    Raises:
        ScoreError: unreadable, or knots that are not increasing (named by file).
    """
    try:
        data = json.loads(Path(path).read_text())
        warp = Warp(np.asarray(data["score_s"], dtype=np.float64),
                    np.asarray(data["performance_s"], dtype=np.float64))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ScoreError(f"{path}: unreadable warp ({error})") from error
    if (warp.score_s.ndim != 1 or warp.score_s.shape != warp.performance_s.shape
            or warp.score_s.size < 2 or not np.all(np.diff(warp.score_s) > 0)
            or not np.all(np.diff(warp.performance_s) >= 0)):
        raise ScoreError(f"{path}: warp knots must be two equal-length increasing lists")
    return warp


def score_to_performance(times: np.ndarray, warp: Warp) -> np.ndarray:
    """Performance seconds of score ``times`` under the true ``warp`` (knots interpolated)."""
    return np.interp(np.asarray(times, dtype=np.float64), warp.score_s, warp.performance_s)
