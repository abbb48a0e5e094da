"""Headline figures of the quality benchmark (issue 9) from a ``train evaluate`` details.json.

Runs of the same system under several seeds are named ``<system>`` (seed 0) and
``<system>-seed<k>``; they are pooled here into a mean and a spread (min..max over seeds).
Prints, as markdown:

1. Table 1 (SI-SDR, dB) per system: seed mean, spread, number of seeds, the paper's value;
2. the gain ratio per instrument, (best step 3 - mixture) / (supervised - mixture), with the
   paper's (5.75 vs 8.16 vs -2.34 dB: 0.77 on average);
3. the paper's orderings, each checked on the seed means;
4. Table 2 (note F1 and false-positive rate) for the transcriptors.

Several files (evaluations of the same split in parts) are merged: each system is taken from the
first file that has it. Each is a report folder, its ``details.json``, or a ``metrics.json`` (its
sibling ``details.json`` is read; older full ``metrics.json`` files are read as they are):
:func:`train.evaluate.read_details`.

Usage:
    python -m benchmarks.diagnostics.quality_report reports/bench/metrics.json [more metrics.json ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import description

SEED = re.compile(r"^(?P<base>.+?)-seed(?P<seed>\d+)$")


def base_name(system: str) -> str:
    """``step3-seed1`` -> ``step3``; ``step3`` -> ``step3``."""
    match = SEED.match(system)
    return match["base"] if match else system


def pooled(systems: dict) -> dict[str, dict[str, list[float]]]:
    """base system -> column (instruments, avg) -> values over seeds."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, entry in systems.items():
        base = base_name(name)
        for inst, value in entry["si_sdr_db"].items():
            out[base][inst].append(value)
        out[base]["avg"].append(entry["avg_db"])
    return out


def fmt(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ({min(values):.2f}..{max(values):.2f})"


def merged(paths: list[Path]) -> dict:
    """One metrics dict from evaluations of the same shards and split; first file wins."""
    from train.evaluate import read_details

    parts = [read_details(path) for path in paths]
    metrics = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for key in ("shards", "split", "n_tracks", "protocol"):
            if part.get(key) != metrics.get(key):
                raise SystemExit(f"{path}: {key} {part.get(key)!r} differs from {paths[0]}'s")
        for name, entry in part["separation"]["systems"].items():
            metrics["separation"]["systems"].setdefault(name, entry)
        for name, entry in part.get("transcription", {}).items():
            metrics.setdefault("transcription", {}).setdefault(name, entry)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("metrics", type=Path, nargs="+")
    parser.add_argument(
        "--best", help="the step-3 system of the gain ratio and orderings [the best step3* by avg]"
    )
    parser.add_argument(
        "--supervised", default="supervised",
        help="the supervised system to compare with (give it the same update budget as --best)",
    )
    args = parser.parse_args()
    from train.evaluate import MIXTURE_SYSTEM, ORACLE_SYSTEM, PAPER_TABLE1

    metrics = merged(args.metrics)
    instruments = ["bass", "guitar", "piano"]
    table = pooled(metrics["separation"]["systems"])
    mean = {s: {c: float(np.mean(v)) for c, v in cols.items()} for s, cols in table.items()}
    out = sys.stdout.write

    out(f"Test split: {metrics['n_tracks']} tracks of `{metrics['shards']}`. "
        "Cells: mean over seeds (min..max over seeds when more than one).\n\n")
    out("| system | seeds | " + " | ".join(instruments) + " | avg | paper avg |\n")
    out("|---|---|" + "---|" * (len(instruments) + 2) + "\n")
    for system in sorted(table, key=lambda s: mean[s]["avg"]):
        cols = table[system]
        paper = PAPER_TABLE1.get(system, {}).get("avg")
        out(f"| {system} | {len(cols['avg'])} | "
            + " | ".join(fmt(cols[i]) for i in instruments)
            + f" | {fmt(cols['avg'])} | {'—' if paper is None else f'{paper:.2f}'} |\n")

    step3 = [s for s in mean if s.startswith("step3")]  # incl. other checkpoint selections
    sup = args.supervised
    for name in (args.best, sup):
        if name is not None and name not in mean:
            parser.error(f"no system {name!r} in the metrics (known: {sorted(mean)})")
    best = args.best or max(step3, key=lambda s: mean[s]["avg"], default=None)
    if best is not None and MIXTURE_SYSTEM in mean:
        how = "named by --best" if args.best else "the best by average SI-SDR"
        out(f"\nGain ratio (step 3 = `{best}`, {how}, - mixture) / "
            f"(`{sup}` - mixture), with the gains in dB:\n\n")
        out("| | " + " | ".join(instruments) + " | avg |\n|---|" + "---|" * 4 + "\n")
        cells, paper_cells = [], []
        for col in instruments + ["avg"]:
            gain = mean[best][col] - mean[MIXTURE_SYSTEM][col]
            full = mean[sup][col] - mean[MIXTURE_SYSTEM][col]
            cells.append(f"{gain / full:.2f} ({gain:+.2f} / {full:+.2f} dB)")
            p_gain = PAPER_TABLE1["step3-aml"][col] - PAPER_TABLE1[MIXTURE_SYSTEM][col]
            p_full = PAPER_TABLE1["supervised"][col] - PAPER_TABLE1[MIXTURE_SYSTEM][col]
            paper_cells.append(f"{p_gain / p_full:.2f}")
        out("| this benchmark | " + " | ".join(cells) + " |\n")
        out("| paper (step 3 + AML) | " + " | ".join(paper_cells) + " |\n")

    out("\nThe paper's orderings, on the seed means of the average SI-SDR:\n\n")
    best3 = mean[best]["avg"] if best is not None else float("nan")
    checks = [
        ("input mixture < classifier baseline", MIXTURE_SYSTEM, "baseline"),
        ("classifier baseline < step 2 (c-mix + h-mix)", "baseline", "step2"),
        ("step 2 (c-mix) < step 2 (c-mix + h-mix)", "step2-cmix", "step2"),
        ("step 2 (h-mix) < step 2 (c-mix + h-mix)", "step2-hmix", "step2"),
        ("step 2 < step 3", "step2", None),
        ("step 3 <= supervised", None, sup),
        ("supervised <= oracle IRM", sup, ORACLE_SYSTEM),
    ]
    for label, low, high in checks:
        lo = best3 if low is None else mean.get(low, {}).get("avg", float("nan"))
        hi = best3 if high is None else mean.get(high, {}).get("avg", float("nan"))
        ok = "holds" if lo <= hi else "**does not hold**"
        out(f"- {label}: {lo:.2f} vs {hi:.2f} dB: {ok}\n")

    trans = metrics.get("transcription", {})
    if trans:
        out("\n| transcriptor | on | " + " | ".join(f"F1 {i}" for i in instruments)
            + " | FP rate | frame acc. |\n|---|---|" + "---|" * (len(instruments) + 2) + "\n")
        for name in sorted(trans):
            for condition, entry in trans[name].items():
                f1 = " | ".join(f"{entry[i]['f1']:.2f}" for i in instruments)
                out(f"| {name} | {condition} | {f1} | {entry['all']['fp_rate']:.2f} | "
                    f"{entry['all']['frame_accuracy']:.2f} |\n")


if __name__ == "__main__":
    main()
