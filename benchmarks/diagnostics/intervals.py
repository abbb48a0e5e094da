"""Table 1 with 95 % intervals: ``train evaluate`` results of several seeds, one file per seed,
pooled by system name, with percentile-bootstrap intervals over test tracks for every cell and
gain ratio (:mod:`train.intervals`).

Usage::

    python -m benchmarks.diagnostics.intervals --reference supervised \
        seed0/details.json seed1/details.json seed2/details.json

Each argument is a report folder, its ``details.json``, or a ``metrics.json`` (its sibling
``details.json`` is read; older full ``metrics.json`` files are read as they are):
:func:`train.evaluate.read_details`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import description


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("metrics", nargs="+", type=Path, help="details.json (or report folder), one per seed")
    parser.add_argument("--reference", required=True, help="the supervised reference's system")
    parser.add_argument("--mixture", default="input mixture", help="the gain's zero")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="the resampler's seed")
    parser.add_argument("--difference", nargs=2, action="append", default=[],
                        metavar=("A", "B"), help="also the paired difference A − B of two "
                        "systems, with its interval (repeatable)")
    args = parser.parse_args()
    from train.evaluate import read_details
    from train.intervals import TrackScores, bootstrap_table, markdown

    rows: dict[str, list[TrackScores]] = {}
    for path in args.metrics:
        metrics = read_details(path)
        for system in metrics["separation"]["systems"]:
            scores = TrackScores.from_metrics(metrics, system)
            deterministic = system in (args.mixture, "oracle IRM")
            if not (deterministic and system in rows):
                rows.setdefault(system, []).append(scores)
    table = bootstrap_table(rows, args.mixture, args.reference, args.resamples, args.seed,
                            differences=[tuple(pair) for pair in args.difference])
    print(markdown(table), end="")


if __name__ == "__main__":
    main()
