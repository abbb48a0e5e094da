"""Training throughput: 4-s windows per second and data-wait share of every training system.

Runs ``train.trainer.run`` for step1, step2, step3 (+AML +ATL), baseline and supervised with a
model preset (``--preset tiny``: TCN 3 x 8 blocks, B=64, H=128, batch 8; ``paper``: B=256,
H=512, batch 16) on a shard set: ``--shards`` (e.g. the rendered demo corpus's shards) or a
synthetic one (harmonic sinusoid notes, see tests/test_data.py), temporary or kept in
``--synthetic DIR`` (written there once, reused by later runs). The first epoch is a warm-up;
the figures are those of the second (``--steps`` optimiser steps). Data wait = time blocked in
``next(loader)`` / step time. On CUDA each row also gives the peak GPU memory, and
``--fp32`` trains without bf16 autocast.

    python -m benchmarks.perf.train_throughput [--shards data/] [--steps 20] [--workers 1]
        [--device cpu] [--compare-threads 2] [--ddp] [--json runs-bench/train.json]
    python -m benchmarks.perf.train_throughput --preset paper --device cuda --workers 6 --steps 80 \
        --synthetic /tmp/syn --train-tracks 32 --seconds 30 --no-dvclive [--fp32]

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

from benchmarks.common import (
    ROOT,
    add_json_option,
    description,
    machine,
    synthetic_track,
    test_data,
    write_json,
)

SYSTEMS = [  # (system = run folder, recipe (train/recipes.yaml), sections set on top)
    ("step1", "step1", {}),
    ("step2", "step2", {}),
    ("step3", "step3", {"loss": {"use_aml": True, "use_atl": True}}),  # every paper term
    ("scorecritic-step2", "scorecritic-step2", {}),
    ("scorecritic", "scorecritic", {}),  # the project's recipe: `train step3`
    ("baseline", "baseline", {}),
    ("supervised", "supervised", {}),
]


def synthetic_shards(root: Path, n_train: int = 4, seconds: float = 20.0) -> Path:
    """``n_train`` training tracks x ``seconds`` and 2 validation tracks without stems (what the
    weakly supervised steps accept), and the same tracks with stems in ``root/with-stems`` for
    the supervised reference (:func:`shards_for`); made on every core (tests/test_data.py's
    tracks and features). A set under ``root`` whose manifests exist (written last) is reused."""
    if (root / "manifest.json").is_file() and (root / "with-stems" / "manifest.json").is_file():
        return root
    from joblib import Parallel, delayed

    from prep.features import FeatureParams
    from prep.shards import ShardWriter, manifest_from_shards, write_manifest

    instruments = test_data().INSTRUMENTS
    for split_index, (split, count) in enumerate((("train", n_train), ("validation", 2))):
        tracks = Parallel(n_jobs=min(count, os.cpu_count() or 1))(
            delayed(synthetic_track)(split_index, k, seconds, f"Track{split[0]}{k:03d}")
            for k in range(count))
        for folder, stems in ((root, False), (root / "with-stems", True)):
            with ShardWriter(folder / split / f"{split}-00000.h5", split=split,
                             instruments=list(instruments), feature_params=FeatureParams(),
                             source={"source_corpus": "synthetic-bench", "split_scheme": "test",
                                     "stems_mode": "all" if stems else "none"}
                             ) as writer:
                for arrays in tracks:
                    writer.add_track(arrays if stems else replace(arrays, stems=None))
    for folder in (root / "with-stems", root):
        write_manifest(folder, manifest_from_shards(folder))
    return root


def shards_for(shards: Path, step: str) -> Path:
    """The supervised reference trains on the shards with stems, every other step on those
    without (``train.assemble.check_stem_access``): ``shards/with-stems`` when it exists."""
    with_stems = shards / "with-stems"
    return with_stems if step == "supervised" and with_stems.is_dir() else shards


def measure(shards: Path, runs: Path, steps: int, workers: int, device: str,
            batch_size: int, threads: int | None = None,
            systems: tuple[str, ...] | None = None, preset: str = "tiny",
            bf16: bool = True, dvclive: bool = True) -> list[dict]:
    """Train every system for 2 epochs of ``steps`` steps; report the second epoch.

    ``threads``: force torch's intra-op threads (None: the trainer's own choice,
    ``train.trainer.configure_cpu_threads``); the systems run in this order so that step 2 and
    step 3 find the checkpoints of the earlier steps (a system left out of ``systems`` still
    runs, untimed, when a later one needs its checkpoint). ``bf16``: autocast on CUDA.
    """
    import torch

    from train.pipeline import run
    from train.recipes import get_recipe, resolve
    from train.steps import SPECS

    budget = {"steps_per_epoch": steps, "max_epochs": 2, "num_workers": workers,
              "device": device, "val_windows": 8, "batch_size": batch_size, "bf16": bf16}
    cuda = torch.cuda.is_available() and device != "cpu"
    rows = []
    needed = set(systems or [name for name, *_ in SYSTEMS])
    for name, recipe, _ in reversed(SYSTEMS):  # what the needed systems start from
        if name in needed:
            needed |= set(get_recipe(recipe).starts_from.values())
    for name, recipe, sections in SYSTEMS:
        if name not in needed:
            continue
        resolved = resolve(get_recipe(recipe), preset, {**sections, "train": budget})
        step = resolved.recipe.step
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start, cpu = time.perf_counter(), time.process_time()
        if threads is not None:
            # what torch did before the trainer chose: the same count in every process
            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)
        metrics = run(resolved, shards_for(shards, step), runs / name, progress=False,
                      dvclive=dvclive)
        os.environ.pop("OMP_NUM_THREADS", None)
        if systems is not None and name not in systems:
            continue
        epoch = metrics["history"][-1]
        rows.append({"system": name, "windows_per_s": epoch["windows_per_s"],
                     "data_wait_fraction": epoch["data_wait_fraction"],
                     "threads": torch.get_num_threads(),
                     "wall_s": time.perf_counter() - start,
                     "cpu_s": time.process_time() - cpu,
                     "train_loss": epoch[f"train/{SPECS[step].objective}/total"],
                     "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})
    return rows


def measure_ddp(shards: Path, runs: Path, steps: int, batch_size: int) -> dict:
    """step1 windows/s with 1 process and with 2 gloo DDP processes (torchrun), same settings."""
    result = {}
    for procs in (1, 2):
        out = runs / f"ddp{procs}"
        command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node",
                   str(procs), "-m", "train", "step1", "--shards", str(shards), "--out",
                   str(out), "--preset", "tiny", "--set", "train.max_epochs=2", "--set",
                   f"train.steps_per_epoch={steps}", "--set", f"train.batch_size={batch_size}",
                   "--set", "train.val_windows=8", "--set", "train.num_workers=1",
                   "--device", "cpu", "--no-progress"]
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
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--shards", type=Path, default=None, help="shard root (default: synthetic)")
    parser.add_argument("--synthetic", type=Path, default=None,
                        help="keep the synthetic shard set here (written once, then reused)")
    parser.add_argument("--train-tracks", type=int, default=4, help="synthetic training tracks")
    parser.add_argument("--seconds", type=float, default=20.0, help="synthetic track length")
    parser.add_argument("--preset", choices=("tiny", "paper"), default="tiny",
                        help="model preset; also the default batch size (8 / 16)")
    parser.add_argument("--systems", default=",".join(name for name, *_ in SYSTEMS),
                        help="comma-separated systems to time")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per epoch")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-dvclive", action="store_true",
                        help="train without dvclive logging (for images without dvclive)")
    parser.add_argument("--fp32", action="store_true",
                        help="train without bf16 autocast (CUDA; on CPU there is none)")
    parser.add_argument("--compare-threads", type=int, default=None,
                        help="also run every system with this many torch threads forced "
                             "(e.g. nproc, torch's default before the trainer chose)")
    parser.add_argument("--ddp", action="store_true", help="also time 2-process DDP step1")
    add_json_option(parser, Path("runs-bench/train.json"))
    args = parser.parse_args()
    import torch

    from train.config import sized

    batch_size = args.batch_size or sized(args.preset).train.batch_size
    systems = tuple(args.systems.split(","))
    unknown = set(systems) - {name for name, *_ in SYSTEMS}
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    result: dict = {**machine(), "device": args.device,
                    "gpu": torch.cuda.get_device_name() if cuda else None,
                    "torch": torch.__version__, "preset": args.preset,
                    "bf16": not args.fp32, "workers": args.workers, "batch_size": batch_size,
                    "steps": args.steps}
    common = dict(systems=systems, preset=args.preset, dvclive=not args.no_dvclive,
                  bf16=not args.fp32)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or synthetic_shards(args.synthetic or Path(tmp) / "shards",
                                                 args.train_tracks, args.seconds)
        result["rows"] = measure(shards, Path(tmp) / "runs", args.steps, args.workers,
                                 args.device, batch_size, **common)
        if args.compare_threads:
            result["forced_threads"] = measure(
                shards, Path(tmp) / "runs-forced", args.steps, args.workers, args.device,
                batch_size, threads=args.compare_threads,
                **{**common, "systems": tuple(x for x in systems if x in ("step1", "step2",
                                                                           "step3"))})
        if args.ddp:
            result["ddp"] = measure_ddp(shards, Path(tmp) / "runs-ddp", args.steps, batch_size)
    print(f"{result['date']}  nproc {result['nproc']}  load {result['load']}  torch "
          f"{torch.__version__}, device {args.device} {result['gpu'] or ''}, batch {batch_size}, "
          f"{args.workers} worker(s), {args.preset} preset")
    precision = "fp32" if args.fp32 else "bf16 autocast"
    tables = [(precision if cuda else "trainer's threads", result["rows"])]
    if "forced_threads" in result:
        tables.append((f"forced {args.compare_threads} threads", result["forced_threads"]))
    for title, rows in tables:
        print(f"{title}:")
        print(f"  {'system':<12}{'threads':>8}{'windows/s':>12}{'data wait':>12}"
              f"{'CPU-s/window':>14}{'train loss':>12}{'peak GiB':>10}")
        for row in rows:
            windows = 2 * args.steps * batch_size
            peak = f"{row['peak_gpu_gib']:.2f}" if row["peak_gpu_gib"] is not None else "-"
            print(f"  {row['system']:<12}{row['threads']:>8}{row['windows_per_s']:>12.1f}"
                  f"{100 * row['data_wait_fraction']:>11.1f}%"
                  f"{row['cpu_s'] / windows:>14.3f}{row['train_loss']:>12.4g}{peak:>10}")
    if "ddp" in result:
        ddp = result["ddp"]
        print(f"DDP step1 (gloo, 1 worker each): 1 process {ddp['1']['windows_per_s']:.1f} "
              f"windows/s, 2 processes {ddp['2']['windows_per_s']:.1f} windows/s "
              f"({ddp['speedup']:.2f}x)")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
