"""Training throughput: 4-s windows per second and data-wait share of every training system.

Runs ``train.trainer.run`` for step1, step2, step3 (+AML +ATL), baseline and supervised with the
``tiny`` preset (TCN 3 x 8 blocks, B=64, H=128, batch 8) on a shard set: ``--shards`` (e.g. the
rendered demo corpus's shards) or, by default, a synthetic one (harmonic sinusoid notes, see
tests/test_data.py). The first epoch is a warm-up; the figures are those of the second
(``--steps`` optimiser steps). Data wait = time blocked in ``next(loader)`` / step time.

    .venv/bin/python benchmarks/train.py [--shards data/] [--steps 20] [--workers 1]
        [--device cpu] [--json runs/bench/train.json]
"""

from __future__ import annotations

import argparse
import json
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
            batch_size: int) -> list[dict]:
    """Train every system for 2 epochs of ``steps`` steps; report the second epoch."""
    train_cfg = replace(train_preset("tiny"), steps_per_epoch=steps, max_epochs=2,
                        num_workers=workers, device=device, val_windows=8,
                        batch_size=batch_size)
    model_cfg = model_preset("tiny")
    rows = []
    for name, step, preset, extra in SYSTEMS:
        loss_cfg = replace(loss_preset(preset), **extra)
        start = time.perf_counter()
        metrics = run(step, shards, train_cfg, model_cfg, loss_cfg, runs / name, progress=False)
        epoch = metrics["history"][-1]
        rows.append({"system": name, "windows_per_s": epoch["windows_per_s"],
                     "data_wait_fraction": epoch["data_wait_fraction"],
                     "wall_s": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=Path, default=None, help="shard root (default: synthetic)")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per epoch")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/train.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or synthetic_shards(Path(tmp) / "shards")
        rows = measure(shards, Path(tmp) / "runs", args.steps, args.workers, args.device,
                       args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch_size}, {args.workers} worker(s), tiny preset")
    print(f"{'system':<12}{'windows/s':>12}{'data wait':>12}")
    for row in rows:
        print(f"{row['system']:<12}{row['windows_per_s']:>12.1f}"
              f"{100 * row['data_wait_fraction']:>11.1f}%")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "device": args.device, "threads": torch.get_num_threads(), "workers": args.workers,
        "batch_size": args.batch_size, "steps": args.steps, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
