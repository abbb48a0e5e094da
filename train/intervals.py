"""95 % intervals for Table 1: a percentile bootstrap over test tracks, seeds averaged inside.

A Table 1 cell is a system's SI-SDR pooled over every scored 4-s segment of the test tracks
(``train evaluate``), averaged over the system's seeds. Its uncertainty is mostly *which tracks
were drawn* (a few tracks dominate an instrument's errors), so the interval resamples tracks:
each resample draws the test tracks with replacement, recomputes every cell of every system on
the same drawn tracks (per-track means weighted by their scored segments, which pools back to
the segment mean exactly), and averages over seeds. The gain ratio

    r_i = (SI-SDR_i(system) - SI-SDR_i(mixture)) / (SI-SDR_i(reference) - SI-SDR_i(mixture))

is computed inside each resample from those paired cells, so its interval carries the
correlation between system, mixture and reference. "avg" is the mean over instruments (as in
``train evaluate``); the avg ratio is the ratio of the avg gains.

Example::

    runs = {"scorecritic": [load("s0/metrics.json"), load("s1/metrics.json")], ...}
    table = bootstrap_table({name: [TrackScores.from_metrics(m, name) for m in ms]
                             for name, ms in runs.items()},
                            mixture="input mixture", reference="supervised")
    table.cells["scorecritic"]["avg"]   # Interval(point=6.68, low=6.1, high=7.2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

AVG = "avg"


@dataclass(frozen=True)
class TrackScores:
    """One evaluated system (one seed): per-track SI-SDR means and scored-segment counts.

    Attributes:
        tracks: test track ids, sorted.
        instruments: instrument order of the columns.
        means: float ``[n_tracks, I]``, the mean SI-SDR (dB) of a track's scored segments
            (0 where none was scored).
        counts: int ``[n_tracks, I]``, the track's scored segments.
    """

    tracks: tuple[str, ...]
    instruments: tuple[str, ...]
    means: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_metrics(cls, metrics: Mapping, system: str) -> TrackScores:
        """Read ``system`` from a ``train evaluate`` ``metrics.json`` (its separation part).

        Raises:
            ValueError: the system is missing, or the file predates per-track segment counts.
        """
        systems = metrics["separation"]["systems"]
        if system not in systems:
            raise ValueError(f"no system {system!r} in the metrics (has {sorted(systems)})")
        entry = systems[system]
        if "per_track_segments" not in entry:
            raise ValueError(f"{system!r}: the metrics hold no per-track segment counts; "
                             "re-run `train evaluate` to get them")
        instruments = tuple(metrics["instruments"])
        tracks = tuple(sorted(entry["per_track_db"]))
        means = np.array([[entry["per_track_db"][t][i] for i in instruments] for t in tracks],
                         dtype=np.float64)
        counts = np.array([[entry["per_track_segments"][t][i] for i in instruments]
                           for t in tracks], dtype=np.int64)
        return cls(tracks, instruments, np.nan_to_num(np.where(counts > 0, means, 0.0)), counts)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.point:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class IntervalTable:
    """Cells (dB) and gain ratios with intervals, ``{row: {instrument | "avg": Interval}}``."""

    instruments: tuple[str, ...]
    cells: dict[str, dict[str, Interval]]
    ratios: dict[str, dict[str, Interval]]
    n_tracks: int
    n_resamples: int
    level: float
    differences: dict[str, dict[str, Interval]] = field(default_factory=dict)  # "a − b": cells


def _cells(seeds: Sequence[TrackScores], weights: np.ndarray) -> np.ndarray:
    """Seed-mean pooled SI-SDR ``[n_weightings, I]`` for track weights ``[n_weightings, n]``."""
    per_seed = []
    for scores in seeds:
        total = weights @ (scores.means * scores.counts)  # [W, I]
        n = weights @ scores.counts  # [W, I]
        per_seed.append(np.divide(total, n, out=np.full_like(total, np.nan), where=n > 0))
    return np.mean(per_seed, axis=0)


def bootstrap_table(
    rows: Mapping[str, Sequence[TrackScores]],
    mixture: str,
    reference: str,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    differences: Sequence[tuple[str, str]] = (),
) -> IntervalTable:
    """Every row's cells and gain ratio, each with a percentile-bootstrap interval.

    Args:
        rows: row name -> its seeds' scores (the mixture and the reference among them).
        mixture: the row whose cells are the gain's zero (the input mixture).
        reference: the row whose gain is 1 (the supervised reference).
        n_resamples: bootstrap resamples of the test tracks.
        seed: seeds the resampler, so the intervals are reproducible.
        level: coverage of the intervals.
        differences: pairs (a, b) of rows whose paired difference a − b (dB, per instrument
            and avg) gets its own interval, e.g. one recipe trained on two kinds of scores.

    Raises:
        ValueError: a row without seeds, rows scored on different tracks or instruments, or a
            missing mixture/reference row or difference row.
    """
    for needed in (mixture, reference, *(name for pair in differences for name in pair)):
        if needed not in rows:
            raise ValueError(f"no {needed!r} row among {sorted(rows)}")
    first = next(iter(rows.values()))[0]
    for name, seeds in rows.items():
        if not seeds:
            raise ValueError(f"row {name!r} has no scored seed")
        for scores in seeds:
            if scores.tracks != first.tracks or scores.instruments != first.instruments:
                raise ValueError(f"row {name!r} was scored on other tracks or instruments than "
                                 f"{next(iter(rows))!r}: intervals need the same test tracks")
    n_tracks = len(first.tracks)
    draws = np.random.default_rng(seed).integers(0, n_tracks, size=(n_resamples, n_tracks))
    weights = np.stack([np.bincount(d, minlength=n_tracks) for d in draws]).astype(np.float64)
    weights = np.concatenate([np.ones((1, n_tracks)), weights])  # row 0: the point estimate
    values = {}
    for name, seeds in rows.items():
        cells = _cells(seeds, weights)  # [1 + R, I]
        values[name] = np.concatenate([cells, np.nanmean(cells, axis=1, keepdims=True)], axis=1)
    gain_ref = values[reference] - values[mixture]
    tail = (1 - level) / 2 * 100
    columns = (*first.instruments, AVG)

    def interval(samples: np.ndarray) -> dict[str, Interval]:
        low, high = np.nanpercentile(samples[1:], [tail, 100 - tail], axis=0)
        return {col: Interval(float(samples[0, k]), float(low[k]), float(high[k]))
                for k, col in enumerate(columns)}

    cells = {name: interval(v) for name, v in values.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {name: interval((v - values[mixture]) / gain_ref)
                  for name, v in values.items() if name not in (mixture, reference)}
    diffs = {f"{a} − {b}": interval(values[a] - values[b]) for a, b in differences}
    return IntervalTable(first.instruments, cells, ratios, n_tracks, n_resamples, level, diffs)


def markdown(table: IntervalTable) -> str:
    """Two markdown tables: SI-SDR cells, then gain ratios, each ``point [low, high]``."""
    columns = (*table.instruments, AVG)
    head = "| " + " | ".join(columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    pct = f"{table.level:.0%}"
    lines = [f"SI-SDR (dB), {table.n_tracks} tracks, seed means; {pct} percentile bootstrap over "
             f"tracks ({table.n_resamples} resamples).", "", "| system " + head, rule]
    lines += [f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |"
              for name, row in table.cells.items()]
    lines += ["", "Gain ratio (system − mixture) / (reference − mixture), paired resamples.", "",
              "| system " + head, rule]
    lines += [f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |"
              for name, row in table.ratios.items()]
    if table.differences:
        lines += ["", "Paired differences (dB), the same resamples.", "",
                  "| difference " + head, rule]
        lines += [f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |"
                  for name, row in table.differences.items()]
    return "\n".join(lines) + "\n"
