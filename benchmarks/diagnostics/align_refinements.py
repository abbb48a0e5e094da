"""What brought ``prep align``'s onsets within 50 ms of the truth, and what did not.

Arms, each scored like ``benchmarks/perf/align_speed.py`` (onset error of every score note
against the true warp: median, 90th percentile, share within 50 ms, per instrument class and
overall): the DTW on chroma and DLNCO alone (synctoolbox's design, ``prep align``'s first
version), two refinements of that path, and ``prep align`` as it is (plus its broadband onset
row). The refinements:

* **snap**: each distinct score onset with pitched notes, once warped, moves to the audio
  onset (synctoolbox's per-pitch onset peaks, ``audio_to_pitch_onset_features``) within
  ``--window`` seconds that the most of its pitches agree on (peaks within ``--agree``
  seconds, each pitch's strongest peak summed); onsets that would break the order are
  dropped; every note is then moved by the map through the snapped onsets;
* **smooth**: the path resampled every 10 ms and averaged over a moving window (0.1 to
  1.6 s), kept monotone.

The corpus is the one ``align_speed`` renders (``prep synth-slakh --unaligned-scores``, 6 x
30 s, seed 0). The figures and what they mean: reports/bench/findings/36-alignment-accuracy.md.

    .venv/bin/python -m benchmarks.diagnostics.align_refinements [--corpus /tmp/bench/align6]
        [--window 0.06] [--agree 0.01] [--json runs-bench/align_refinements.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, add_json_option, description, machine, write_json

SMOOTH_WINDOWS_S = (0.1, 0.2, 0.4, 0.8, 1.6)
GRID_S = 0.01


def track_inputs(track: Path, with_onset_row: bool) -> dict[str, Any]:
    """A track's score notes, DTW knots (as prep align computes them, or without its
    broadband onset row), the audio's per-pitch onset peaks and every note's true onset."""
    from synctoolbox.feature.pitch_onset import audio_to_pitch_onset_features

    import prep.align as A
    from prep.unaligned import SCORE_DIR, WARP_FILE, read_warp, score_to_performance

    _, _, notes = A.read_score(track)
    audio, _ = A.read_mix(track / "mix.flac")
    with contextlib.redirect_stdout(io.StringIO()), A._shared_filtering():
        peaks = audio_to_pitch_onset_features(f_audio=audio, Fs=A.AUDIO_RATE,
                                              midi_min=A.MIDI_LOW, midi_max=A.MIDI_HIGH)
    chroma_a, onsets_a, chroma_s, onsets_s = A.dtw_features(audio, notes)
    if not with_onset_row:  # the first version of prep align: chroma and DLNCO only
        onsets_a, onsets_s = onsets_a[:12], onsets_s[:12]
    knots = A.path_knots(A.dtw_path(chroma_a, onsets_a, chroma_s, onsets_s))
    starts = np.array([n.start for n in notes])
    truth = score_to_performance(starts, read_warp(track / SCORE_DIR / WARP_FILE))
    return {"notes": notes, "starts": starts, "knots": knots, "peaks": peaks, "truth": truth}


def snapped(data: dict[str, Any], window: float, agree: float) -> np.ndarray:
    """Aligned onsets after snapping each distinct onset to the audio's pitch onsets."""
    import prep.align as A

    starts, knots, peaks = data["starts"], data["knots"], data["peaks"]
    rounded = np.round(starts, 4)
    pitches: dict[float, set[int]] = {}
    for note, onset in zip(data["notes"], rounded, strict=True):
        if not note.is_drum and A.MIDI_LOW <= note.pitch <= A.MIDI_HIGH:
            pitches.setdefault(float(onset), set()).add(note.pitch)
    score_x, audio_y = [], []
    for onset in np.unique(rounded):
        warped = float(np.interp(onset, *knots))
        times, values, owners = [], [], []
        for pitch in sorted(pitches.get(float(onset), ())):
            if pitch in peaks:
                t, v = peaks[pitch][0] / 1000.0, peaks[pitch][1]
                near = np.abs(t - warped) <= window
                times += t[near].tolist()
                values += v[near].tolist()
                owners += [pitch] * int(near.sum())
        if not times:
            continue
        t, v, p = np.array(times), np.array(values), np.array(owners)
        best, best_score = warped, -1.0
        for candidate in t:
            close = np.abs(t - candidate) <= agree
            score = sum(v[close & (p == q)].max() for q in set(p[close].tolist()))
            if score > best_score:
                best, best_score = float(candidate), score
        if not audio_y or best > audio_y[-1]:  # keep the onsets' order
            score_x.append(float(onset))
            audio_y.append(best)
    if len(score_x) < 2:
        return np.interp(starts, *knots)
    return np.interp(starts, score_x, audio_y)


def smoothed(data: dict[str, Any], seconds: float) -> np.ndarray:
    """Aligned onsets through the path averaged over ``seconds`` (kept monotone)."""
    score_s, audio_s = (k[:-1] for k in data["knots"])  # without the extrapolation knot
    grid = np.arange(score_s[0], score_s[-1], GRID_S)
    path = np.interp(grid, score_s, audio_s)
    width = int(seconds / GRID_S) | 1
    padded = np.pad(path, width // 2, mode="reflect", reflect_type="odd")
    path = np.maximum.accumulate(np.convolve(padded, np.ones(width) / width, mode="valid"))
    return np.interp(data["starts"], grid, path)


def stats(errors: np.ndarray) -> dict[str, float]:
    errors = np.abs(errors)
    return {"median_ms": 1000 * float(np.median(errors)),
            "p90_ms": 1000 * float(np.percentile(errors, 90)),
            "within_50ms": float(np.mean(errors <= 0.05))}


def score(tracks: list[dict[str, Any]], aligned: list[np.ndarray]) -> dict[str, dict]:
    """Pooled error figures per instrument class and overall."""
    pooled: dict[str, list[float]] = {}
    for data, onsets in zip(tracks, aligned, strict=True):
        errors = onsets - data["truth"]
        pooled.setdefault("overall", []).extend(errors.tolist())
        for note, error in zip(data["notes"], errors, strict=True):
            pooled.setdefault(note.instrument, []).append(float(error))
    return {name: stats(np.array(values)) for name, values in sorted(pooled.items())}


def main() -> None:
    parser = argparse.ArgumentParser(prog="align_refinements", description=description(__doc__))
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench/align6"),
                        help="corpus with unaligned scores, as benchmarks.perf.align_speed "
                             "renders it (run that first) [/tmp/bench/align6]")
    parser.add_argument("--window", type=float, default=0.06,
                        help="snap: search half-window, seconds [0.06]")
    parser.add_argument("--agree", type=float, default=0.01,
                        help="snap: pitch onsets within this many seconds agree [0.01]")
    add_json_option(parser, ROOT / "runs" / "bench" / "align_refinements.json")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        parser.error(f"{args.corpus}: no corpus; render it with "
                     "`python -m benchmarks.perf.align_speed --corpus {args.corpus}`")

    import prep.align as A
    from prep.slakh import find_tracks

    A.design_filters_once()
    found = find_tracks(args.corpus)
    base = [track_inputs(t.path, with_onset_row=False) for t in found]
    tracks = [track_inputs(t.path, with_onset_row=True) for t in found]
    arms = {"chroma+DLNCO": [np.interp(d["starts"], *d["knots"]) for d in base],
            f"  snap {args.window:g} s": [snapped(d, args.window, args.agree) for d in base]}
    for seconds in SMOOTH_WINDOWS_S:
        arms[f"  smooth {seconds:g} s"] = [smoothed(d, seconds) for d in base]
    arms["prep align"] = [np.interp(d["starts"], *d["knots"]) for d in tracks]
    figures = {name: score(base, aligned) for name, aligned in arms.items()}

    classes = list(figures["prep align"])
    print(f"{len(tracks)} tracks of {args.corpus}; share of onsets within 50 ms "
          "(overall: median ms / p90 ms / share)")
    print(f"{'arm':18s} {'overall':>18s} " + " ".join(f"{c[:8]:>8s}" for c in classes[:-1]))
    for name, table in figures.items():
        overall = table["overall"]
        cells = " ".join(f"{100 * table[c]['within_50ms']:7.0f}%" for c in classes
                         if c != "overall")
        print(f"{name:18s} {overall['median_ms']:5.0f} {overall['p90_ms']:5.0f} "
              f"{100 * overall['within_50ms']:5.0f}%  {cells}")
    write_json(args.json, {"machine": machine(), "corpus": str(args.corpus),
                           "window_s": args.window, "agree_s": args.agree, "arms": figures})


if __name__ == "__main__":
    main()
