"""GPU utilisation per pass of ``benchmarks/perf/gpu.sh``: its ``util.csv`` samples
(``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used -lms 500``) attributed to the
pass that was running, from the ``== NAME: ... (HH:MM:SS)`` start lines of its ``all.log``.

Per pass: samples, mean utilisation, the share of samples at 90 % or more (the issue's "GPU
busy at least 90 % of each epoch", read as samples), and the peak memory nvidia-smi saw. A pass
includes its set-up (shards check, model build, the warm-up epoch), so the figures are a lower
bound of the measured epoch's.

    python -m benchmarks.perf.gpu_util runs-bench/gpu [--json runs-bench/gpu/util.json]
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from datetime import datetime, time
from pathlib import Path

from benchmarks.common import description, write_json

START = re.compile(r"^== (?P<name>[\w.-]+): .*\((?P<time>\d\d:\d\d:\d\d)\)$")
DONE = re.compile(r"^done (?P<time>\d\d:\d\d:\d\d)$")


def pass_windows(log: Path) -> list[tuple[str, time, time | None]]:
    """(pass name, start, end) of every pass in ``all.log`` (end: the next start or "done")."""
    marks: list[tuple[str | None, time]] = []
    for line in log.read_text().splitlines():
        if match := START.match(line.strip()):
            marks.append((match["name"], time.fromisoformat(match["time"])))
        elif match := DONE.match(line.strip()):
            marks.append((None, time.fromisoformat(match["time"])))
    windows = []
    for (name, start), following in zip(marks, [*marks[1:], (None, None)], strict=True):
        if name is not None:
            windows.append((name, start, following[1]))
    return windows


def read_samples(path: Path) -> list[tuple[time, float, float]]:
    """(time of day, utilisation %, memory MiB) of every well-formed row of ``util.csv``."""
    samples = []
    with path.open() as handle:
        for row in csv.reader(handle):
            try:
                stamp = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").time()
                util = float(row[1].strip().rstrip(" %"))
                memory = float(row[2].strip().split()[0])
            except (ValueError, IndexError):
                continue  # the header, or a line nvidia-smi cut short
            samples.append((stamp, util, memory))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("out", type=Path, help="gpu.sh's output folder (all.log, util.csv)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the figures here [OUT/util.json]")
    args = parser.parse_args()
    samples = read_samples(args.out / "util.csv")
    result = {}
    print(f"{'pass':<20}{'samples':>8}{'mean util %':>13}{'>= 90 %':>9}{'peak MiB':>10}")
    for name, start, end in pass_windows(args.out / "all.log"):
        inside = [s for s in samples if start <= s[0] and (end is None or s[0] < end)]
        if not inside:
            continue
        utils = [s[1] for s in inside]
        figures = {"samples": len(inside), "mean_util": statistics.mean(utils),
                   "busy_90_share": sum(u >= 90 for u in utils) / len(utils),
                   "peak_memory_mib": max(s[2] for s in inside)}
        result[name] = figures
        print(f"{name:<20}{figures['samples']:>8}{figures['mean_util']:>13.1f}"
              f"{100 * figures['busy_90_share']:>8.0f}%{figures['peak_memory_mib']:>10.0f}")
    write_json(args.json or args.out / "util.json", result)


if __name__ == "__main__":
    main()
