"""Does the stem-free judge criterion (:mod:`train.selection`) rank separators as the stems do?

Scores the same separators on one split twice: with the judge (a frozen transcriptor on the
separated sources; mixtures and scores only) and with SI-SDR against the stems (reported, never
used to choose). The input mixture is a candidate too. A criterion fit for model selection
orders the candidates as SI-SDR does.

Usage::

    python -m benchmarks.diagnostics.stem_free_selection --shards data-stems \
        --judge runs/step1/best.pt step2=runs/scorecritic-step2/best.pt ours=runs/scorecritic/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import description


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--shards", type=Path, required=True,
                        help="shard root whose split holds stems")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--judge", type=Path, required=True, help="transcriptor checkpoint")
    parser.add_argument("--limit", type=int, default=None, help="first N tracks only")
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    from benchmarks.diagnostics.context import measure
    from prep.shards import ShardSet
    from train.evaluate import parse_named_paths
    from train.model import load_model
    from train.selection import MIXTURE, judge_separators

    named = parse_named_paths(args.checkpoints)
    shards = ShardSet(args.shards, args.split)
    judge = load_model(args.judge, expected_kind="transcriptor")
    separators = {n: load_model(p, expected_kind="separator") for n, p in named.items()}
    judged = judge_separators(separators, judge, shards, limit=args.limit)
    sdr = measure(args.shards, args.split, named, args.limit, contexts=("whole",))
    mixture = measure_mixture(shards, args.limit)
    instruments = list(shards.instruments)
    print(f"{args.split} split, {next(iter(judged.values())).n_tracks} tracks; judge "
          f"{args.judge}\n")
    print("| candidate | judge score | own F1 " + " ".join(f"{i} |" for i in instruments)
          + " crosstalk avg | SI-SDR avg (stems, reported only) |")
    print("|---|---|" + "---|" * len(instruments) + "---|---|")
    for name, entry in sorted(judged.items(), key=lambda kv: kv[1].score):
        si_sdr = mixture if name == MIXTURE else sdr["systems"][name]["whole"]["mean"]["avg"]
        crosstalk = sum(entry.crosstalk.values()) / len(entry.crosstalk)
        print(f"| {name} | {entry.score:.3f} | "
              + " | ".join(f"{entry.own_f1[i]:.3f}" for i in instruments)
              + f" | {crosstalk:.3f} | {si_sdr:.2f} |")


def measure_mixture(shards, limit: int | None) -> float:
    """SI-SDR avg of the input mixture, as ``train evaluate`` computes it."""
    import numpy as np

    from prep.features import SAMPLE_RATE
    from train.evaluate import segment_bounds, segment_si_sdr, silent_segments

    pooled = []
    for index in range(min(len(shards), limit) if limit is not None else len(shards)):
        track = shards.read_track(index, fields=("mix", "stems"))
        mix, stems = np.asarray(track["mix"]), np.asarray(track["stems"])
        bounds = segment_bounds(len(mix), 4 * SAMPLE_RATE)
        silent = silent_segments(stems, bounds, -60.0)
        pooled.append(segment_si_sdr(np.broadcast_to(mix, stems.shape), stems, bounds, silent))
    scores = np.concatenate(pooled, axis=1)
    return float(np.mean(np.nanmean(scores, axis=1)))


if __name__ == "__main__":
    main()
