"""FLOPs per training window of every system, and what a measured throughput achieves of a
device's peak: achieved TFLOP/s = FLOPs per window x windows/s.

How the FLOPs are counted: ``torch.utils.flop_counter.FlopCounterMode`` around the trainer
(``train.pipeline.run``) for one epoch of 1 optimiser step, and again for 1 + ``--steps``
steps; the difference over ``--steps x batch`` windows is one window's forward, backward and
every extra critic pass the step makes (validation, set-up and checkpointing cancel). It counts
the matrix products and convolutions of aten ops (2 FLOPs per multiply-add: the TCN's 1x1 and
dilated depthwise convolutions, linear layers), not elementwise work, so it is the usual
"model FLOPs" figure, a lower bound of the arithmetic done. Counted on CPU (the count does not
depend on the device), on a synthetic shard set (tests/test_data.py's tracks).

    python -m benchmarks.perf.step_flops [--preset paper] [--batch-size 16] [--steps 1]
        [--systems step1,step3] [--throughput runs-bench/gpu/paper-w6.json ...]
        [--peak-tflops 989.5] [--json runs-bench/step_flops.json]

``--throughput`` takes ``benchmarks.perf.train_throughput`` JSON files (e.g. those
``benchmarks/perf/gpu.sh`` writes) and prints, per system, windows/s, achieved TFLOP/s and the
fraction of ``--peak-tflops`` (default: one H200's dense bf16 Tensor Core peak, 989.5 TFLOP/s,
half NVIDIA's 1,979 "with sparsity" datasheet figure).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import add_json_option, description, machine, write_json

H200_BF16_DENSE_TFLOPS = 989.5


def count_flops(shards: Path, runs: Path, system: str, recipe: str, sections: dict,
                preset: str, batch_size: int, steps: int) -> float:
    """Model FLOPs of one training window of ``system`` (see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    from train.pipeline import run
    from train.recipes import get_recipe, resolve

    totals = []
    for n_steps in (1, 1 + steps):
        budget = {"steps_per_epoch": n_steps, "max_epochs": 1, "num_workers": 0,
                  "device": "cpu", "val_windows": batch_size, "batch_size": batch_size}
        resolved = resolve(get_recipe(recipe), preset, {**sections, "train": budget})
        out = runs / f"{system}-{n_steps}"
        with FlopCounterMode(display=False) as counter:
            run(resolved, shards, out, progress=False, dvclive=False)
        totals.append(counter.get_total_flops())
    return (totals[1] - totals[0]) / (steps * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--preset", default="paper", choices=("tiny", "paper"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1, help="steps whose FLOPs are counted")
    parser.add_argument("--systems", default=None,
                        help="comma-separated systems of train_throughput (default: all)")
    parser.add_argument("--throughput", type=Path, nargs="*", default=[],
                        help="train_throughput JSON files to turn into TFLOP/s")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    add_json_option(parser, Path("runs-bench/step_flops.json"))
    args = parser.parse_args()

    from benchmarks.perf.train_throughput import SYSTEMS, synthetic_shards
    from train.recipes import get_recipe

    wanted = set(args.systems.split(",")) if args.systems else {name for name, *_ in SYSTEMS}
    needed = set(wanted)
    for name, recipe, _ in reversed(SYSTEMS):  # and the systems they start from
        if name in needed:
            needed |= set(get_recipe(recipe).starts_from.values())
    result: dict = {**machine(), "preset": args.preset, "batch_size": args.batch_size,
                    "gflop_per_window": {}, "peak_tflops": args.peak_tflops, "achieved": []}
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp) / "shards", n_train=2, seconds=10.0)
        runs = Path(tmp) / "runs"
        for name, recipe, sections in SYSTEMS:  # in order: later steps start from earlier ones
            if name not in needed:
                continue
            flops = count_flops(shards, runs, name, recipe, sections, args.preset,
                                args.batch_size, args.steps)
            # the folder a later step starts from (train.pipeline finds runs/<recipe>/best.pt)
            (runs / f"{name}-1").rename(runs / name)
            if name in wanted:
                result["gflop_per_window"][name] = flops / 1e9
                print(f"{name:<20}{flops / 1e9:10.2f} GFLOP per window (fwd + bwd)", flush=True)
    for path in args.throughput:
        measured = json.loads(path.read_text())
        for row in measured.get("rows", []):
            gflop = result["gflop_per_window"].get(row["system"])
            if gflop is None:
                continue
            tflops = gflop * row["windows_per_s"] / 1e3
            result["achieved"].append({"file": str(path), "system": row["system"],
                                       "windows_per_s": row["windows_per_s"],
                                       "tflops": tflops,
                                       "fraction_of_peak": tflops / args.peak_tflops})
            print(f"{path.name:<24}{row['system']:<20}{row['windows_per_s']:9.1f} windows/s "
                  f"{tflops:8.2f} TFLOP/s  {100 * tflops / args.peak_tflops:5.1f} % of "
                  f"{args.peak_tflops:g}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
