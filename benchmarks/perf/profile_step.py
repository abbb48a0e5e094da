"""Where one training step's time goes: torch.profiler over the trainer's own steps.

Builds the trainer of a recipe (``--recipe``, default: the paper's recipe of ``--step``) with a
size preset on a shard set (``--shards``, or the synthetic set of
``benchmarks.perf.train_throughput``), every network it starts from freshly initialised (the
cost of a step does not depend on the weights). One warm-up epoch of ``--steps`` optimiser
steps, then a profiled epoch of as many steps (``Trainer.train_epoch``: loading, the loss
assembly, the non-finite check, backward, the optimiser). Prints the top ops by self CPU time
(and self CUDA time on a GPU) per step, and the forward calls per step of every network with
the rows they saw (a critic run once per separated source shows up here). ``--trace`` writes a
Chrome trace (chrome://tracing, https://ui.perfetto.dev).

    python -m benchmarks.perf.profile_step --step step3 [--recipe scorecritic] [--preset tiny]
        [--device cpu] [--steps 5] [--top 25] [--trace runs-bench/step3.trace.json]
        [--set loss.use_aml=true] [--json runs-bench/profile_step3.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import add_json_option, description, machine, write_json

STEPS = ("step1", "step2", "step3", "baseline", "supervised")


def count_forwards(modules: dict[str, Any]) -> tuple[dict[str, list[int]], list[Any]]:
    """Hook every network's TCN: {network: [rows of each forward call]} and the hook handles.

    The TCN is the one submodule every method (``logits``, ``logits_of_sources``, ``forward``)
    calls through ``__call__``, so a hook there sees each network pass once."""
    calls: dict[str, list[int]] = defaultdict(list)
    handles = []
    for name, module in modules.items():
        tcn = getattr(module, "tcn", None)
        if tcn is None:
            continue
        handles.append(tcn.register_forward_hook(
            lambda _m, args, _out, name=name: calls[name].append(int(args[0].shape[0]))))
    return calls, handles


def build_trainer(step: str, recipe_name: str, preset: str, shards: Path, out: Path,
                  device: str, steps: int, workers: int, batch_size: int | None,
                  assignments: list[str]) -> Any:
    """A :class:`train.trainer.Trainer` of ``recipe_name``, its starting networks fresh."""
    from prep.shards import ShardSet
    from train.config import parse_assignment
    from train.model import build_model
    from train.recipes import get_recipe, resolve
    from train.steps import SPECS
    from train.trainer import Trainer

    recipe = get_recipe(recipe_name)
    if recipe.step != step:
        raise SystemExit(f"recipe {recipe_name!r} trains {recipe.step}, not {step}")
    train = {"steps_per_epoch": steps, "max_epochs": 2, "num_workers": workers,
             "device": device, "val_windows": 8}
    if batch_size:
        train["batch_size"] = batch_size
    sections: dict[str, dict[str, Any]] = {"train": train}
    for text in assignments:
        section, key, value = parse_assignment(text)
        sections.setdefault(section, {})[key] = value
    config = resolve(recipe, preset, sections).config
    instruments = list(ShardSet(shards, "train", verify_checksums=False).instruments)
    model = replace(config.model, n_instruments=len(instruments))
    init = {net: build_model(net, model) for net in recipe.starts_from}
    return Trainer(SPECS[step], shards, config, out, init=init, progress=False, dvclive=False,
                   record={"recipe": {"name": recipe_name}})


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--step", choices=STEPS, default="step3")
    parser.add_argument("--recipe", default=None,
                        help="recipe name (train/recipes.yaml; default: the step's paper recipe)")
    parser.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="profiled optimiser steps")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--set", dest="assignments", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="a setting on top of the recipe")
    parser.add_argument("--top", type=int, default=25, help="ops listed")
    parser.add_argument("--shards", type=Path, default=None,
                        help="shard root (default: synthetic, see train_throughput)")
    parser.add_argument("--synthetic", type=Path, default=None,
                        help="keep the synthetic shards here (reused by later runs)")
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace here")
    add_json_option(parser, Path("runs-bench/profile_step.json"))
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.perf.train_throughput import shards_for, synthetic_shards

    cuda = args.device != "cpu" and torch.cuda.is_available()
    recipe = args.recipe or args.step
    with tempfile.TemporaryDirectory() as tmp:
        root = args.shards or synthetic_shards(args.synthetic or Path(tmp) / "shards")
        shards = shards_for(root, args.step) if args.shards is None else root
        trainer = build_trainer(args.step, recipe, args.preset, shards, Path(tmp) / "run",
                                args.device, args.steps, args.workers, args.batch_size,
                                args.assignments)
        trainer.train_epoch(0)  # warm-up: allocator, loader workers, first-call costs
        calls, handles = count_forwards(trainer.modules)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        start, cpu = time.perf_counter(), time.process_time()
        with profile(activities=activities, record_shapes=False) as prof:
            stats = trainer.train_epoch(1)
        wall, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        for handle in handles:
            handle.remove()
    if args.trace:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(args.trace))
    n = args.steps
    windows = n * trainer.cfg.batch_size
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    rows = []
    for event in sorted(prof.key_averages(), key=lambda e: -getattr(e, sort))[: args.top]:
        rows.append({"op": event.key, "calls_per_step": event.count / n,
                     "self_cpu_ms_per_step": event.self_cpu_time_total / 1e3 / n,
                     "self_cuda_ms_per_step": (event.self_device_time_total / 1e3 / n
                                               if cuda else None)})
    forwards = {name: {"calls_per_step": len(rows_) / n, "rows": rows_[: len(rows_) // n]}
                for name, rows_ in calls.items()}
    result = {**machine(), "step": args.step, "recipe": recipe, "preset": args.preset,
              "device": args.device, "torch": torch.__version__, "steps": n,
              "batch_size": trainer.cfg.batch_size, "threads": torch.get_num_threads(),
              "windows_per_s": windows / wall, "cpu_s_per_window": cpu_s / windows,
              "trainer_windows_per_s": stats["windows_per_s"], "forwards": forwards,
              "ops": rows}
    print(f"{result['date']}  nproc {result['nproc']}  load {result['load']}  torch "
          f"{torch.__version__}, {args.device}, {recipe} ({args.step}), {args.preset} preset, "
          f"batch {trainer.cfg.batch_size}, {n} profiled steps, {result['threads']} threads")
    print(f"windows/s {result['windows_per_s']:.2f} under the profiler, "
          f"CPU-s/window {result['cpu_s_per_window']:.3f}")
    print("network passes per step (rows of each call):")
    for name, entry in forwards.items():
        print(f"  {name:<14}{entry['calls_per_step']:>5.1f}  {entry['rows']}")
    cuda_head = f"{'self CUDA ms':>14}" if cuda else ""
    print(f"top {args.top} ops by self {'CUDA' if cuda else 'CPU'} time, per step:")
    print(f"  {'op':<44}{'calls':>8}{'self CPU ms':>13}{cuda_head}")
    for row in rows:
        cuda_cell = f"{row['self_cuda_ms_per_step']:>14.2f}" if cuda else ""
        print(f"  {row['op'][:43]:<44}{row['calls_per_step']:>8.1f}"
              f"{row['self_cpu_ms_per_step']:>13.2f}{cuda_cell}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
