"""Prep throughput: audio-seconds of stems per CPU-second of ``prep build-shards``, by stage.

Runs the real ``prep.build.build_shards`` on a corpus rendered with ``prep synth-slakh``
(Slakh2100 layout, 44.1 kHz mono FLAC stems) and, side by side on the same tracks, the part a
build cannot avoid: decoding the selected stems and resampling them to 16 kHz (the build's own
``decode_stem`` + ``resample_to_16k`` on each class's summed stems). Every measurement runs in
a fresh child process (so peak RSS is per run and start-up costs count) and is repeated; the
medians are reported. CPU time = user + sys of the child (all its threads), which is the stable
figure on a shared machine.

Measured:

* ``cost``: whole build vs decode + resample alone, for the default resampler (``soxr_hq``,
  all tracks) and resampy ``kaiser_best`` (the previous default, on ``--kaiser-tracks`` tracks
  to keep the run short); the build's per-stage CPU (decode, resample, MIDI + piano roll,
  STFT, harmonic mask, write) from its build records.
* ``memory``: peak RSS of a one-worker build of the long track (``--long-corpus``, 6 min), and
  of a child that only imports the build's modules (the interpreter + torch floor).
* ``workers``: wall time and per-worker CPU with ``--workers 1`` and ``2`` (small shards so
  there is something to parallelise).

    .venv/bin/python -m benchmarks.perf.prep_throughput [--corpus /tmp/bench/corpus30]
        [--long-corpus /tmp/bench/corpus6min] [--repeats 3] [--json runs-bench/prep.json]

Missing corpora are rendered first (30 x 60 s and 1 x 360 s, seed 0; about a minute).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_json_option, description, machine, write_json

STAGES = ("decode", "resample", "midi_roll", "stft", "harmonic_mask", "write")
INSTRUMENTS = "piano,guitar,bass"


# --------------------------------------------------------------------------------------------
# Children (each measurement runs in its own process)
# --------------------------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_build(corpus: Path, out: Path, resample_filter: str, workers: int,
                shard_mb: float) -> dict:
    """One ``build_shards`` run; CPU of this process plus the workers' CPU from the records."""
    from prep.build import build_shards, read_build_records

    shutil.rmtree(out, ignore_errors=True)
    cpu, wall = _cpu_s(), time.perf_counter()
    build_shards(corpus, out, INSTRUMENTS, stems="eval", workers=workers, force=True,
                 shard_size_mb=shard_mb, resample_filter=resample_filter, progress=False,
                 log=lambda line: None)
    wall = time.perf_counter() - wall
    cpu = _cpu_s() - cpu
    records, _ = read_build_records(out)
    timing = [r["timing"] for r in records]
    stages = {s: sum(t.get(f"{s}_cpu_s", 0.0) for t in timing) for s in STAGES}
    worker_cpu = sum(t["total_cpu_s"] for t in timing)
    audio_s = sum(r["samples"] for r in records) / 16000
    stem_audio_s = _stem_seconds(corpus)
    size = sum(p.stat().st_size for p in out.rglob("*.h5"))
    return {"wall_s": wall, "cpu_s": cpu if workers == 1 else cpu + worker_cpu,
            "main_cpu_s": cpu, "worker_cpu_s": worker_cpu, "stages_cpu_s": stages,
            "audio_s": audio_s, "stem_audio_s": stem_audio_s, "bytes": size,
            "shards": len(records), "peak_rss_mb": _peak_rss_mb()}


def child_decode_resample(corpus: Path, resample_filter: str) -> dict:
    """Decode every selected stem and resample each class's sum: the build's audio path only."""
    import numpy as np

    from prep.build import (
        _add_into,
        decode_stem,
        plan_track,
        resample_to_16k,
        warm_resampler,
    )
    from prep.slakh import find_tracks, load_instrument_map, parse_instruments

    imap = load_instrument_map(None)
    names = parse_instruments(INSTRUMENTS, imap)
    plans = [plan_track(t, "split2", imap, names, "eval") for t in find_tracks(corpus)]
    warm_resampler(resample_filter)
    cpu, wall = _cpu_s(), time.perf_counter()
    samples = 0
    for plan in plans:
        for name in names:
            sums: dict[int, np.ndarray] = {}
            for key in plan.stems[name]:
                wave, rate = decode_stem(plan.path / plan.audio_files[key])
                sums[rate] = _add_into(sums.get(rate), wave)
            for rate, total in sums.items():
                samples += len(resample_to_16k(total, rate, resample_filter))
    return {"cpu_s": _cpu_s() - cpu, "wall_s": time.perf_counter() - wall,
            "stem_audio_s": _stem_seconds(corpus), "peak_rss_mb": _peak_rss_mb()}


def child_imports() -> dict:
    """Peak RSS of the interpreter with the build's modules imported (the floor)."""
    import soxr  # noqa: F401
    import torch  # noqa: F401

    import prep.build  # noqa: F401
    import prep.features  # noqa: F401

    return {"peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stem_seconds(corpus: Path) -> float:
    """Seconds of audio in the selected stems (the input the build decodes)."""
    import soundfile as sf

    from prep.build import plan_track
    from prep.slakh import find_tracks, load_instrument_map, parse_instruments

    imap = load_instrument_map(None)
    names = parse_instruments(INSTRUMENTS, imap)
    total = 0.0
    for track in find_tracks(corpus):
        plan = plan_track(track, "split2", imap, names, "eval")
        for rel in plan.audio_files.values():
            info = sf.info(str(plan.path / rel))
            total += info.frames / info.samplerate
    return total


def run_child(kind: str, **kwargs) -> dict:
    """Run ``child_<kind>(**kwargs)`` in a fresh interpreter (this module with ``--child``)."""
    result = subprocess.run(
        [sys.executable, "-m", __spec__.name, "--child", kind, json.dumps(kwargs)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def child_main(kind: str, kwargs_json: str) -> None:
    kwargs = {k: Path(v) if k in ("corpus", "out") else v
              for k, v in json.loads(kwargs_json).items()}
    print(json.dumps(CHILDREN[kind](**kwargs)))


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


def ensure_corpus(path: Path, tracks: int, seconds: float) -> Path:
    """Render ``tracks`` x ``seconds`` with ``prep synth-slakh`` (seed 0) unless present."""
    from prep.synth import synth_slakh

    if not any(path.glob("*/Track*/metadata.yaml")):
        print(f"rendering {tracks} x {seconds:g} s into {path} ...", flush=True)
        synth_slakh(path, tracks=tracks, seconds=seconds, seed=0, workers=1, progress=False)
    return path


def sub_corpus(corpus: Path, count: int, folder: Path) -> Path:
    """A copy of the first ``count`` tracks (by id) of ``corpus``, in the same split folders."""
    tracks = sorted(corpus.glob("*/Track*"), key=lambda p: p.name)[:count]
    for track in tracks:
        target = folder / track.parent.name / track.name
        if not target.exists():
            shutil.copytree(track, target)
    return folder


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure_cost(corpus: Path, tmp: Path, resample_filter: str, repeats: int) -> dict:
    """Build vs decode + resample alone, alternating, ``repeats`` times each."""
    builds, refs = [], []
    for _ in range(repeats):
        builds.append(run_child("build", corpus=str(corpus), out=str(tmp / "out"),
                                resample_filter=resample_filter, workers=1, shard_mb=256.0))
        refs.append(run_child("decode_resample", corpus=str(corpus),
                              resample_filter=resample_filter))
    stem_s = builds[0]["stem_audio_s"]
    build_cpu, ref_cpu = median_of(builds, "cpu_s"), median_of(refs, "cpu_s")
    stages = {s: statistics.median(b["stages_cpu_s"][s] for b in builds) for s in STAGES}
    stages["other (plan, manifest, start-up)"] = build_cpu - sum(stages.values())
    return {
        "resample_filter": resample_filter, "tracks": len(list(corpus.glob("*/Track*"))),
        "stem_audio_s": stem_s, "mix_audio_s": builds[0]["audio_s"],
        "build_cpu_s": build_cpu, "decode_resample_cpu_s": ref_cpu,
        "ratio": build_cpu / ref_cpu,
        "build_stem_s_per_cpu_s": stem_s / build_cpu,
        "decode_resample_stem_s_per_cpu_s": stem_s / ref_cpu,
        "stages_cpu_s": stages,
        "runs_build_cpu_s": [b["cpu_s"] for b in builds],
        "runs_decode_resample_cpu_s": [r["cpu_s"] for r in refs],
        "bytes": builds[0]["bytes"],
    }


CHILDREN = {"build": child_build, "decode_resample": child_decode_resample,
            "imports": child_imports}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench/corpus30"))
    parser.add_argument("--long-corpus", type=Path, default=Path("/tmp/bench/corpus6min"))
    parser.add_argument("--kaiser-tracks", type=int, default=6,
                        help="tracks for the resampy kaiser_best comparison (it is slow)")
    parser.add_argument("--repeats", type=int, default=3)
    add_json_option(parser, Path("runs-bench/prep.json"))
    args = parser.parse_args()
    corpus = ensure_corpus(args.corpus, 30, 60.0)
    long_corpus = ensure_corpus(args.long_corpus, 1, 360.0)
    result: dict = {**machine(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small = sub_corpus(corpus, args.kaiser_tracks, tmp / "sub")
        result["cost"] = [measure_cost(corpus, tmp, "soxr_hq", args.repeats),
                          measure_cost(small, tmp, "soxr_hq", args.repeats),
                          measure_cost(small, tmp, "kaiser_best", args.repeats)]
        floor = [run_child("imports")["peak_rss_mb"] for _ in range(args.repeats)]
        long_runs = [run_child("build", corpus=str(long_corpus), out=str(tmp / "long"),
                               resample_filter="soxr_hq", workers=1, shard_mb=256.0)
                     for _ in range(args.repeats)]
        result["memory"] = {"track_s": long_runs[0]["audio_s"],
                            "peak_rss_mb": median_of(long_runs, "peak_rss_mb"),
                            "imports_only_rss_mb": statistics.median(floor)}
        scaling = {}
        for workers in (1, 2, 1, 2, 1, 2)[: 2 * args.repeats]:
            run = run_child("build", corpus=str(corpus), out=str(tmp / "w"),
                            resample_filter="soxr_hq", workers=workers, shard_mb=8.0)
            scaling.setdefault(workers, []).append(run)
        result["workers"] = {
            str(w): {"wall_s": median_of(runs, "wall_s"), "cpu_s": median_of(runs, "cpu_s"),
                     "worker_cpu_s": median_of(runs, "worker_cpu_s"),
                     "shards": runs[0]["shards"],
                     "peak_rss_mb_main": median_of(runs, "peak_rss_mb")}
            for w, runs in scaling.items()}
        w1, w2 = result["workers"]["1"], result["workers"]["2"]
        result["workers"]["speedup_wall"] = w1["wall_s"] / w2["wall_s"]
        result["workers"]["cpu_2_over_1"] = w2["cpu_s"] / w1["cpu_s"]
    print_tables(result)
    write_json(args.json, result)


def print_tables(result: dict) -> None:
    print(f"{result['date']}  nproc {result['nproc']}  load {result['load']}  "
          f"medians of {result['repeats']}")
    print(f"{'resampler':<12}{'tracks':>7}{'stem-s':>8}{'build CPU-s':>13}{'dec+res CPU-s':>15}"
          f"{'ratio':>7}{'stem-s/CPU-s':>14}")
    for row in result["cost"]:
        print(f"{row['resample_filter']:<12}{row['tracks']:>7}{row['stem_audio_s']:>8.0f}"
              f"{row['build_cpu_s']:>13.2f}{row['decode_resample_cpu_s']:>15.2f}"
              f"{row['ratio']:>7.2f}{row['build_stem_s_per_cpu_s']:>14.0f}")
    for row in result["cost"][:1] + result["cost"][2:]:
        print(f"stages ({row['resample_filter']}, {row['tracks']} tracks), CPU-s: "
              + ", ".join(f"{k} {v:.2f}" for k, v in row["stages_cpu_s"].items()))
    mem = result["memory"]
    print(f"memory: {mem['track_s']:.0f}-s track, peak RSS {mem['peak_rss_mb']:.0f} MiB "
          f"(imports alone {mem['imports_only_rss_mb']:.0f} MiB)")
    work = result["workers"]
    for w in ("1", "2"):
        row = work[w]
        print(f"workers {w}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s "
              f"({row['shards']} shards)")
    print(f"2 workers: {work['speedup_wall']:.2f}x faster (wall), CPU x{work['cpu_2_over_1']:.2f}")


if __name__ == "__main__":
    main()
