"""Training throughput: 4-s windows per second and data-wait share of every training system.

Runs ``train.trainer.run`` for step1, step2, step3 (+AML +ATL), baseline and supervised with the
``tiny`` preset (TCN 3 x 8 blocks, B=64, H=128, batch 8) on a shard set: ``--shards`` (e.g. the
rendered demo corpus's shards) or, by default, a synthetic one (harmonic sinusoid notes, see
tests/test_data.py). The first epoch is a warm-up; the figures are those of the second
(``--steps`` optimiser steps). Data wait = time blocked in ``next(loader)`` / step time.

    .venv/bin/python benchmarks/train.py [--shards data/] [--steps 20] [--workers 1]
        [--device cpu] [--compare-threads 2] [--ddp] [--json runs/bench/train.json]

``--compare-threads N`` reruns every system with N torch threads forced in every process (what
torch does by default, one per core), to show the oversubscription the trainer now avoids
(``train.trainer.configure_cpu_threads``); ``--ddp`` times step 1 with 1 and 2 gloo processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

# Run as a script, this file's folder comes first on sys.path and its name shadows the `train`
# package: drop the folder before importing it.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
from train.config import loss_preset, model_preset, train_preset  # noqa: E402
from train.trainer import run  # noqa: E402

ROOT = HERE.parent
SYSTEMS = [  # (run name, trainer step, loss preset, extra LossConfig settings)
    ("step1", "step1", "step1", {}),
    ("step2", "step2", "step2", {}),
    ("step3", "step3", "step3", {"use_aml": True, "use_atl": True}),
    ("baseline", "baseline", "baseline", {}),
    ("supervised", "supervised", "supervised", {}),
]


def synthetic_shards(root: Path) -> Path:
    """4 training tracks x 20 s and 2 validation tracks, with stems."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import write_synthetic_shards

    return write_synthetic_shards(root, n_train=4, n_val=2, seconds=20.0)


def measure(shards: Path, runs: Path, steps: int, workers: int, device: str,
            batch_size: int, threads: int | None = None,
            systems: tuple[str, ...] | None = None) -> list[dict]:
    """Train every system for 2 epochs of ``steps`` steps; report the second epoch.

    ``threads``: force torch's intra-op threads (None: the trainer's own choice,
    ``train.trainer.configure_cpu_threads``); the systems run in this order so that step 2 and
    step 3 find the checkpoints of the earlier steps.
    """
    train_cfg = replace(train_preset("tiny"), steps_per_epoch=steps, max_epochs=2,
                        num_workers=workers, device=device, val_windows=8,
                        batch_size=batch_size)
    model_cfg = model_preset("tiny")
    rows = []
    for name, step, preset, extra in SYSTEMS:
        if systems is not None and name not in systems:
            continue
        loss_cfg = replace(loss_preset(preset), **extra)
        start, cpu = time.perf_counter(), time.process_time()
        if threads is not None:
            # what torch did before the trainer chose: the same count in every process
            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)
        metrics = run(step, shards, train_cfg, model_cfg, loss_cfg, runs / name, progress=False)
        os.environ.pop("OMP_NUM_THREADS", None)
        epoch = metrics["history"][-1]
        rows.append({"system": name, "windows_per_s": epoch["windows_per_s"],
                     "data_wait_fraction": epoch["data_wait_fraction"],
                     "threads": torch.get_num_threads(),
                     "wall_s": time.perf_counter() - start,
                     "cpu_s": time.process_time() - cpu})
    return rows


def measure_ddp(shards: Path, runs: Path, steps: int, batch_size: int) -> dict:
    """step1 windows/s with 1 process and with 2 gloo DDP processes (torchrun), same settings."""
    result = {}
    for procs in (1, 2):
        out = runs / f"ddp{procs}"
        command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node",
                   str(procs), "-m", "train", "step1", "--shards", str(shards), "--out",
                   str(out), "--preset", "tiny", "--max-epochs", "2", "--steps-per-epoch",
                   str(steps), "--batch-size", str(batch_size), "--val-windows", "8",
                   "--workers", "1", "--device", "cpu", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        metrics = json.loads((out / "metrics.json").read_text())
        epoch = metrics["history"][-1]
        # the trainer's windows_per_s already counts every rank (steps x batch x world / time)
        result[str(procs)] = {"windows_per_s": epoch["windows_per_s"],
                              "data_wait_fraction": epoch["data_wait_fraction"],
                              "wall_s": time.perf_counter() - start}
    result["speedup"] = result["2"]["windows_per_s"] / result["1"]["windows_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=Path, default=None, help="shard root (default: synthetic)")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per epoch")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare-threads", type=int, default=None,
                        help="also run every system with this many torch threads forced "
                             "(e.g. nproc, torch's default before the trainer chose)")
    parser.add_argument("--ddp", action="store_true", help="also time 2-process DDP step1")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/train.json"))
    args = parser.parse_args()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(),
                    "load": os.getloadavg(), "device": args.device, "workers": args.workers,
                    "batch_size": args.batch_size, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or synthetic_shards(Path(tmp) / "shards")
        result["rows"] = measure(shards, Path(tmp) / "runs", args.steps, args.workers,
                                 args.device, args.batch_size)
        if args.compare_threads:
            result["forced_threads"] = measure(shards, Path(tmp) / "runs-forced", args.steps,
                                               args.workers, args.device, args.batch_size,
                                               threads=args.compare_threads,
                                               systems=("step1", "step2", "step3"))
        if args.ddp:
            result["ddp"] = measure_ddp(shards, Path(tmp) / "runs-ddp", args.steps,
                                        args.batch_size)
    print(f"{result['date']}  nproc {result['nproc']}  load {result['load']}  torch "
          f"{torch.__version__}, device {args.device}, batch {args.batch_size}, "
          f"{args.workers} worker(s), tiny preset")
    tables = [("trainer's threads", result["rows"])]
    if "forced_threads" in result:
        tables.append((f"forced {args.compare_threads} threads", result["forced_threads"]))
    for title, rows in tables:
        print(f"{title}:")
        print(f"  {'system':<12}{'threads':>8}{'windows/s':>12}{'data wait':>12}"
              f"{'CPU-s/window':>14}")
        for row in rows:
            windows = 2 * args.steps * args.batch_size
            print(f"  {row['system']:<12}{row['threads']:>8}{row['windows_per_s']:>12.1f}"
                  f"{100 * row['data_wait_fraction']:>11.1f}%"
                  f"{row['cpu_s'] / windows:>14.3f}")
    if "ddp" in result:
        ddp = result["ddp"]
        print(f"DDP step1 (gloo, 1 worker each): 1 process {ddp['1']['windows_per_s']:.1f} "
              f"windows/s, 2 processes {ddp['2']['windows_per_s']:.1f} windows/s "
              f"({ddp['speedup']:.2f}x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
