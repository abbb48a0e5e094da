"""torch.compile against eager for one network's forward and backward, CPU-seconds per pass.

The network of a size preset (transcriptor or separator) on random input of ``--rows``
spectrogram windows (40 is step 3's transcriptor batch at batch 8: the mixture, the three
separated sources and the remix of each window), one intra-op thread unless ``--threads``;
prints eager and compiled CPU-seconds per forward+backward, the compile time and the largest
output difference. CPU-seconds rather than wall time, so that a shared machine's load moves the
figure less.

Usage:
    python -m benchmarks.perf.compile_speed --preset tiny --net transcriptor --rows 40
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import add_json_option, description, machine, write_json


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_pass(model, x, repeats: int) -> float:
    """CPU-seconds per forward+backward after two warm-up passes."""
    for _ in range(2):
        model(x).sum().backward()
    start = cpu_seconds()
    for _ in range(repeats):
        model(x).sum().backward()
    return (cpu_seconds() - start) / repeats


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """The network, input size, threads and repeats of a one-network timing."""
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--net", default="transcriptor", choices=("transcriptor", "separator"))
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--frames", type=int, default=129)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=6)


def network_and_input(args: argparse.Namespace) -> tuple[Any, Any]:
    """The ``--net`` of ``--preset`` (3 instruments, seed 0) and random input
    [rows, F, frames], with torch held to ``--threads`` intra-op threads."""
    import torch

    from prep.features import N_BINS
    from train.config import sized
    from train.model import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.net, replace(sized(args.preset).model, n_instruments=3))
    return model, torch.rand(args.rows, N_BINS, args.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_network_options(parser)
    add_json_option(parser, Path("runs-bench/compile-speed.json"))
    args = parser.parse_args()

    import torch

    model, x = network_and_input(args)
    n_bins = x.shape[1]
    eager = per_pass(model, x, args.repeats)
    start = time.time()
    compiled = torch.compile(model)
    compiled(x).sum().backward()
    compile_s = time.time() - start
    fast = per_pass(compiled, x, args.repeats)
    with torch.no_grad():
        diff = (model(x) - compiled(x)).abs().max().item()
    print(f"{args.net} ({args.preset}, {args.rows} x {n_bins} x {args.frames}, "
          f"{args.threads} thread(s)): eager {eager:.3f} CPU-s per forward+backward, compiled "
          f"{fast:.3f} ({eager / fast:.2f}x), compile {compile_s:.0f} s, max |diff| {diff:.2g}")
    write_json(args.json, {"machine": machine(), **vars(args), "json": str(args.json),
                           "eager_cpu_s": eager, "compiled_cpu_s": fast,
                           "speedup": eager / fast, "compile_s": compile_s, "max_abs_diff": diff})


if __name__ == "__main__":
    main()
