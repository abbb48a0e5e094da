"""train.intervals: bootstrap intervals of Table 1's cells and gain ratios."""

from __future__ import annotations

import numpy as np
import pytest

from train.intervals import TrackScores, bootstrap_table

INSTRUMENTS = ("piano", "guitar", "bass")


def scores(means: np.ndarray, counts: np.ndarray | None = None) -> TrackScores:
    counts = np.full(means.shape, 10) if counts is None else counts
    tracks = tuple(f"Track{k:05d}" for k in range(len(means)))
    return TrackScores(tracks, INSTRUMENTS, means.astype(float), counts.astype(int))


def test_point_estimates_pool_segments_and_average_seeds() -> None:
    a = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    counts = np.array([[1, 1, 1], [3, 1, 1]])  # piano: track 1 has 3 of the 4 segments
    rows = {"input mixture": [scores(np.zeros((2, 3)))],
            "supervised": [scores(np.full((2, 3), 10.0))],
            "sys": [scores(a, counts), scores(a + 2.0, counts)]}  # two seeds
    table = bootstrap_table(rows, "input mixture", "supervised", n_resamples=200)
    piano = (1 * 1 + 3 * 3) / 4 + 1.0  # pooled 2.5, seed mean +1
    assert table.cells["sys"]["piano"].point == pytest.approx(piano)
    assert table.cells["sys"]["guitar"].point == pytest.approx(4.0)
    avg = np.mean([piano, 4.0, 5.0])
    assert table.cells["sys"]["avg"].point == pytest.approx(avg)
    assert table.ratios["sys"]["avg"].point == pytest.approx(avg / 10.0)
    assert "supervised" not in table.ratios and "input mixture" not in table.ratios


def test_intervals_cover_the_truth_shrink_with_tracks_and_are_reproducible() -> None:
    rng = np.random.default_rng(1)

    def table(n_tracks: int, seed: int = 0):
        mix = rng.normal(0.0, 2.0, (n_tracks, 3))
        rows = {"input mixture": [scores(mix)],
                "supervised": [scores(mix + 8.0 + rng.normal(0, 1, (n_tracks, 3)))],
                "sys": [scores(mix + 6.0 + rng.normal(0, 1, (n_tracks, 3)))]}
        return bootstrap_table(rows, "input mixture", "supervised", n_resamples=2000, seed=seed)

    small, large = table(20), table(400)
    for t in (small, large):
        ratio = t.ratios["sys"]["avg"]
        assert ratio.low < ratio.point < ratio.high
        assert ratio.low < 0.75 < ratio.high or abs(ratio.point - 0.75) < 0.05
    width = {k: t.ratios["sys"]["avg"].high - t.ratios["sys"]["avg"].low
             for k, t in (("small", small), ("large", large))}
    assert width["large"] < width["small"] / 2
    rng = np.random.default_rng(1)
    again = table(20)
    assert again.ratios == small.ratios  # same data and resampler seed: same intervals


def test_paired_differences_cancel_what_the_two_rows_share() -> None:
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 5.0, size=(12, 3))  # track difficulty, the same for both rows
    rows = {"input mixture": [scores(np.zeros((12, 3)))],
            "supervised": [scores(np.full((12, 3), 10.0))],
            "a": [scores(shared + 1.0)], "b": [scores(shared)]}
    table = bootstrap_table(rows, "input mixture", "supervised", n_resamples=500,
                            differences=[("a", "b")])
    difference = table.differences["a − b"]["avg"]
    assert difference.point == pytest.approx(1.0)
    assert difference.high - difference.low < 1e-9  # a constant offset: no spread at all
    cell = table.cells["a"]["avg"]
    assert cell.high - cell.low > 1.0  # while each row alone varies with the tracks drawn
    with pytest.raises(ValueError, match="'c'"):
        bootstrap_table(rows, "input mixture", "supervised", n_resamples=10,
                        differences=[("a", "c")])


def test_rows_on_other_tracks_are_refused() -> None:
    rows = {"input mixture": [scores(np.zeros((3, 3)))],
            "supervised": [scores(np.ones((3, 3)))],
            "sys": [scores(np.ones((2, 3)))]}
    with pytest.raises(ValueError, match="other tracks"):
        bootstrap_table(rows, "input mixture", "supervised", n_resamples=10)
    with pytest.raises(ValueError, match="no 'reference'"):
        bootstrap_table(rows, "input mixture", "reference", n_resamples=10)


def test_reads_train_evaluate_metrics() -> None:
    metrics = {"instruments": list(INSTRUMENTS), "separation": {"systems": {"sys": {
        "per_track_db": {"T2": {"piano": 1.0, "guitar": None, "bass": 3.0},
                         "T1": {"piano": 2.0, "guitar": 5.0, "bass": 4.0}},
        "per_track_segments": {"T2": {"piano": 2, "guitar": 0, "bass": 1},
                               "T1": {"piano": 1, "guitar": 3, "bass": 1}}}}}}
    s = TrackScores.from_metrics(metrics, "sys")
    assert s.tracks == ("T1", "T2")
    assert s.means.tolist() == [[2.0, 5.0, 4.0], [1.0, 0.0, 3.0]]
    assert s.counts.tolist() == [[1, 3, 1], [2, 0, 1]]
    with pytest.raises(ValueError, match="no system 'other'"):
        TrackScores.from_metrics(metrics, "other")
