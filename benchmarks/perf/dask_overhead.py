"""Dask's overhead on a shard build: ``prep build-shards --backend dask`` on a local cluster of
``--workers`` processes against the joblib build with as many workers, same corpus, same
shards (the checksums are compared), as a ratio of wall time and of CPU time.

**Cold**: each build in a fresh child process, the workers started inside the timed region
(one ``prep build-shards --backend dask`` without ``--scheduler`` against a fresh joblib
pool); the backends alternate, ``--repeats`` times each, medians reported; CPU counts the
child and its reaped descendants (``RUSAGE_CHILDREN``: workers, scheduler, nannies). **Warm**:
one child holds a running local cluster (:func:`prep.cluster.local_cluster`) and a warm joblib
pool and alternates the two backends ``--repeats`` times: what a build costs on running
workers, under the same load for both. Aim: under 10 % over joblib; the overhead per shard is
printed too.

    .venv/bin/python -m benchmarks.perf.dask_overhead [--corpus /tmp/bench/corpus30]
        [--shard-mb 8] [--repeats 3] [--workers 2] [--json runs-bench/dask_overhead.json]

A missing corpus is rendered first (30 x 60 s, seed 0; about a minute).
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

INSTRUMENTS = "piano,guitar,bass"


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _import_build() -> int:
    """What a worker pays before its first shard: importing the build (torch included)."""
    import prep.build  # noqa: F401

    return 0


def _build(corpus: str, out: str, backend: str, shard_mb: float, workers: int,
           scheduler: str | None = None) -> tuple[float, list[str]]:
    """One build into a fresh ``out``: (wall seconds, sorted shard checksums)."""
    from prep.build import build_shards

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = build_shards(
        Path(corpus), Path(out), INSTRUMENTS, workers=workers, shard_size_mb=shard_mb,
        progress=False,
        backend="local" if backend == "joblib" else "dask", scheduler=scheduler,
        log=lambda line: None)
    return time.perf_counter() - start, sorted(s.sha256 for s in manifest.shards)


def child_cold(corpus: str, out: str, backend: str, shard_mb: float, workers: int) -> dict:
    """One build in this fresh process, its workers started inside the timed region."""
    wall, digests = _build(corpus, out, backend, shard_mb, workers)
    return {"wall_s": wall, "digests": digests}


def child_warm(corpus: str, out: str, shard_mb: float, repeats: int, workers: int) -> dict:
    """Both backends in one process against running workers (the cluster ``--backend dask``
    starts, and a joblib pool), alternating ``repeats`` times: what a build costs on a running
    cluster, with the same load on both."""
    import distributed
    from joblib import Parallel, delayed

    from prep.cluster import local_cluster

    Parallel(n_jobs=workers)(delayed(_import_build)() for _ in range(2 * workers))  # kept
    walls: dict[str, list[float]] = {"joblib": [], "dask": []}
    digests: dict[str, list[str]] = {}
    with local_cluster(workers) as cluster, distributed.Client(cluster) as client:
        client.run(_import_build)
        for _ in range(repeats):
            for backend in walls:
                scheduler = cluster.scheduler_address if backend == "dask" else None
                wall, digests[backend] = _build(corpus, f"{out}-{backend}", backend, shard_mb,
                                                workers, scheduler)
                walls[backend].append(wall)
    return {"walls": walls, "same_checksums": digests["joblib"] == digests["dask"],
            "shards": len(digests["joblib"])}


def run_child(kind: str, **kwargs) -> dict:
    """``child_<kind>`` in a fresh interpreter; adds its CPU seconds (workers included)."""
    before = _cpu_s(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "benchmarks.perf.dask_overhead", "--child",
                             kind, json.dumps(kwargs)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["cpu_s"] = _cpu_s(resource.RUSAGE_CHILDREN) - before
    return figures


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child = {"cold": child_cold, "warm": child_warm}[sys.argv[2]]
        print(json.dumps(child(**json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench/corpus30"))
    parser.add_argument("--shard-mb", type=float, default=8.0,
                        help="target shard size: small shards give the scheduler work to do")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of both backends (1 leaves a core of a 2-core "
                             "machine to the scheduler and the driver)")
    add_json_option(parser, Path("runs-bench/dask_overhead.json"))
    args = parser.parse_args()
    from benchmarks.perf.prep_throughput import ensure_corpus

    corpus = ensure_corpus(args.corpus, 30, 60.0)
    cold: dict[str, list[dict]] = {"joblib": [], "dask": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternating, so a change of load hits both
            for backend, runs in cold.items():
                runs.append(run_child("cold", corpus=str(corpus), out=f"{tmp}/{backend}",
                                      backend=backend, shard_mb=args.shard_mb,
                                      workers=args.workers))
        warm = run_child("warm", corpus=str(corpus), out=f"{tmp}/warm",
                         shard_mb=args.shard_mb, repeats=args.repeats, workers=args.workers)
    digests = {json.dumps(r[0]["digests"]) for r in cold.values()}
    result: dict = {**machine(), "repeats": args.repeats, "corpus": str(corpus),
                    "workers": args.workers,
                    "shards": warm["shards"],
                    "same_checksums": len(digests) == 1 and warm["same_checksums"]}
    result["cold"] = {b: {"wall_s": statistics.median(r["wall_s"] for r in runs),
                          "cpu_s": statistics.median(r["cpu_s"] for r in runs)}
                      for b, runs in cold.items()}
    result["warm"] = {b: {"wall_s": statistics.median(w), "walls": w}
                      for b, w in warm["walls"].items()}
    result["ratio"] = {
        "cold_wall": result["cold"]["dask"]["wall_s"] / result["cold"]["joblib"]["wall_s"],
        "cold_cpu": result["cold"]["dask"]["cpu_s"] / result["cold"]["joblib"]["cpu_s"],
        "warm_wall": result["warm"]["dask"]["wall_s"] / result["warm"]["joblib"]["wall_s"],
    }
    result["overhead_per_shard_s"] = {
        mode: (result[mode]["dask"]["wall_s"] - result[mode]["joblib"]["wall_s"])
        / result["shards"] for mode in ("cold", "warm")}
    print(f"{result['date']}  nproc {result['nproc']}  load {result['load']}  medians of "
          f"{args.repeats}; {result['shards']} shards; same checksums: "
          f"{result['same_checksums']}")
    print(f"{str(args.workers) + ' worker(s)':<16}{'wall s':>9}{'CPU s':>9}")
    for mode in ("cold", "warm"):
        for backend, figures in result[mode].items():
            cpu = f"{figures['cpu_s']:9.1f}" if "cpu_s" in figures else f"{'':>9}"
            print(f"{mode + ' ' + backend:<16}{figures['wall_s']:9.2f}{cpu}")
    for name, value in result["ratio"].items():
        print(f"  dask / joblib, {name:<12}{value:6.3f}")
    for mode, value in result["overhead_per_shard_s"].items():
        print(f"  dask overhead per shard, {mode}: {1000 * value:.0f} ms")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
