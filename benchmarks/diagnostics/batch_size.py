"""Validation loss per window seen at several batch sizes and learning-rate rules.

Trains one step (default: step 1, the paper's transcriptor) once per arm ``BATCH:RULE``, each
with the same number of windows per epoch (``--windows-per-epoch``, so an arm at batch B takes
``windows / B`` optimiser steps an epoch) and the same epochs, seed and validation windows, and
prints the validation loss of every arm after every epoch: the figure that says whether a larger
batch, with the learning rate moved by ``train.lr_batch_rule``, learns as much from each window
as the reference batch. Wall time and windows/s are printed too, for the record only (on CPU a
larger batch is not much faster per window; on a GPU it is the point).

Usage:
    python -m benchmarks.diagnostics.batch_size --shards data --runs runs-batch \\
        --arm 8:none --arm 32:none --arm 32:sqrt --arm 32:linear
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, add_json_option, description, machine, write_json


def parse_arm(text: str) -> tuple[int, str]:
    """``"32:sqrt"`` -> ``(32, "sqrt")``."""
    from train.config import LR_BATCH_RULES  # torch-free

    batch, _, rule = text.partition(":")
    if not batch.isdigit() or rule not in LR_BATCH_RULES:
        raise argparse.ArgumentTypeError(
            f"an arm is BATCH:RULE (RULE {'|'.join(LR_BATCH_RULES)}), got {text!r}")
    return int(batch), rule


def train_arm(args: argparse.Namespace, batch: int, rule: str) -> dict:
    """Train one arm with ``train <step>`` into ``<runs>/b<batch>-<rule>`` (kept if finished)."""
    if args.windows_per_epoch % batch:
        raise SystemExit(f"--windows-per-epoch {args.windows_per_epoch} is not a multiple of {batch}")
    out = args.runs / f"b{batch}-{rule}"
    settings = {
        "train.batch_size": batch, "train.lr_batch_rule": rule,
        "train.lr_reference_batch": args.reference_batch,
        "train.steps_per_epoch": args.windows_per_epoch // batch,
        "train.max_epochs": args.epochs, "train.early_stop_patience": args.epochs,
        "train.val_windows": args.val_windows, "train.seed": args.seed,
    }
    command = [sys.executable, "-m", "train", args.step, "--shards", str(args.shards),
               "--out", str(out), "--preset", "tiny", "--no-progress", "--device", "cpu"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    start = time.time()
    if not (out / "metrics.json").exists():
        subprocess.run(command, check=True, cwd=ROOT)
    wall = time.time() - start
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    objective = next(k for k in history[0] if k.startswith("val/") and k.endswith("/total"))
    lr = json.loads((out / "config.json").read_text())["lr_at_global_batch"]["lr"]
    return {"batch": batch, "rule": rule, "lr": lr, "run": str(out), "objective": objective,
            "val": [row[objective] for row in history],
            "windows_per_s": [row["windows_per_s"] for row in history],
            "wall_s": round(wall, 1), "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/batch-size"))
    parser.add_argument("--arm", type=parse_arm, action="append", required=True,
                        help="BATCH:RULE, repeatable (e.g. 8:none 32:sqrt)")
    parser.add_argument("--step", default="step1", choices=("step1", "step2", "step3"))
    parser.add_argument("--reference-batch", type=int, default=8,
                        help="the batch at which the tiny preset's lr 0.001 holds [8]")
    parser.add_argument("--windows-per-epoch", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--val-windows", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser, Path("runs-bench/batch-size.json"))
    args = parser.parse_args()

    result = {"machine": machine(), "step": args.step, "windows_per_epoch": args.windows_per_epoch,
              "arms": [train_arm(args, batch, rule) for batch, rule in args.arm]}
    arms = result["arms"]
    print(f"\nvalidation {arms[0]['objective']} after each epoch of {args.windows_per_epoch} "
          f"windows ({args.step}, tiny preset, seed {args.seed})")
    labels = [f"b{a['batch']} {a['rule']}" for a in arms]
    print(f"{'windows seen':>12} " + " ".join(f"{label:>12}" for label in labels))
    for epoch in range(max(len(a["val"]) for a in arms)):
        cells = [f"{a['val'][epoch]:12.4f}" if epoch < len(a["val"]) else " " * 12 for a in arms]
        print(f"{(epoch + 1) * args.windows_per_epoch:>12} " + " ".join(cells))
    print(f"{'best':>12} " + " ".join(f"{min(a['val']):12.4f}" for a in arms))
    print(f"{'lr':>12} " + " ".join(f"{a['lr']:12.3g}" for a in arms))
    print(f"{'wall s':>12} " + " ".join(f"{a['wall_s']:12.0f}" for a in arms))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
