"""Alignment speed and accuracy: ``prep align``'s real-time factor per track on one core, and
its onset errors against the true warp, on a corpus rendered with unaligned scores.

The corpus (``prep synth-slakh --unaligned-scores``: a global tempo change, a smooth tempo
curve and onset jitter per track, the true score-to-audio warp saved) is rendered first when
missing. One child process, pinned to one CPU (``sched_setaffinity``) with one BLAS/OpenMP
thread, aligns every track with ``prep.align.align_track``; the first track is aligned once
before the timed runs, so that numba's compilation (paid once per process) is reported on its
own and not charged to a track. Per track: audio seconds, wall and CPU seconds, real-time
factor (audio seconds / wall seconds; the goal is >= 50x), normalised chroma cost, and the
median onset error before and after. Then the onset errors of all notes pooled: median, 90th
percentile and share within 50 ms, per instrument class and overall, before and after.

    .venv/bin/python -m benchmarks.perf.align_speed [--corpus /tmp/bench/align6]
        [--tracks 6] [--seconds 30] [--bar-edits] [--json runs-bench/align_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, add_json_option, description, machine, write_json


def child(corpus: Path, out: Path) -> dict:
    """Align every track of ``corpus`` into ``out`` on one CPU; the figures as a dict."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from prep.align import align_track, pooled_onset_report
    from prep.slakh import find_tracks

    tracks = find_tracks(corpus)
    warm = time.perf_counter()
    align_track(tracks[0].path, out / "warmup" / tracks[0].track_id, max_cost=1.0)
    warm = time.perf_counter() - warm
    rows, errors = [], []
    for track in tracks:
        report = align_track(track.path, out / str(track.folder_split) / track.track_id,
                             max_cost=1.0)
        if "_errors" in report:
            errors.append(report.pop("_errors"))
        onset = report.get("onset_error", {}).get("overall", {})
        rows.append({"track": report["track"], "audio_s": report["seconds"],
                     "wall_s": report["runtime_s"], "cpu_s": report["cpu_s"],
                     "real_time_factor": report["real_time_factor"],
                     "normalised_cost": report["normalised_cost"],
                     "median_before_s": onset.get("before", {}).get("median_s"),
                     "median_after_s": onset.get("after", {}).get("median_s")})
    return {"first_call_s": warm, "tracks": rows,
            "onset_error": pooled_onset_report(errors) if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(prog="align_speed", description=description(__doc__))
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench/align6"),
                        help="corpus with unaligned scores (rendered when missing) "
                             "[/tmp/bench/align6]")
    parser.add_argument("--tracks", type=int, default=6, help="tracks to render [6]")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per track [30]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the render [0]")
    parser.add_argument("--bar-edits", action="store_true",
                        help="render scores that also drop or repeat a bar "
                             "(synth-slakh --score-bar-edits)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    add_json_option(parser, Path("runs-bench/align_speed.json"))
    args = parser.parse_args()

    if args.child is not None:  # the measured process
        with tempfile.TemporaryDirectory() as tmp:
            result = child(args.corpus, Path(tmp))
        args.child.write_text(json.dumps(result))
        return
    if not args.corpus.is_dir():
        from prep.synth import synth_slakh

        print(f"rendering {args.tracks} x {args.seconds:g} s with unaligned scores"
              f"{' and bar edits' if args.bar_edits else ''} into {args.corpus}")
        synth_slakh(args.corpus, args.tracks, args.seconds, args.seed, workers=2,
                    progress=False, unaligned_scores=True, score_bar_edits=args.bar_edits)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.json"
        subprocess.run([sys.executable, "-m", "benchmarks.perf.align_speed", "--corpus",
                        str(args.corpus), "--child", str(figures)], check=True, cwd=ROOT,
                       env=env)
        result = json.loads(figures.read_text())

    print(f"first call (numba compilation + first track): {result['first_call_s']:.1f} s")
    print("track       audio_s  wall_s   cpu_s  x_real_time  norm_cost  median_before_ms  "
          "median_after_ms")
    for row in result["tracks"]:
        before = row["median_before_s"]
        after = row["median_after_s"]
        print(f"{row['track']}  {row['audio_s']:7.1f} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} "
              f"{row['real_time_factor']:12.1f} {row['normalised_cost']:10.3f} "
              f"{'' if before is None else f'{before * 1000:17.0f}'} "
              f"{'' if after is None else f'{after * 1000:16.0f}'}")
    total = sum(r["audio_s"] for r in result["tracks"]) / sum(
        r["wall_s"] for r in result["tracks"])
    print(f"all tracks: {total:.1f}x real time on one core")
    if result["onset_error"]:
        print("onset error (all notes pooled)   before: median  p90  <=50ms |  after: median  "
              "p90  <=50ms")
        for name, phases in result["onset_error"].items():
            b, a = phases["before"], phases["after"]
            print(f"{name:32s} {b['median_s'] * 1000:8.0f} {b['p90_s'] * 1000:5.0f} "
                  f"{b['within_50ms']:6.0%} | {a['median_s'] * 1000:13.0f} "
                  f"{a['p90_s'] * 1000:5.0f} {a['within_50ms']:6.0%}   ({a['notes']} notes)")
    write_json(args.json, {"machine": machine(), "corpus": str(args.corpus),
                           "real_time_factor": total, **result})


if __name__ == "__main__":
    main()
