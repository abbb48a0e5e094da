"""Tests for train/metrics.py: SI-SDR against fast_bss_eval, note and frame scores on hand-made rolls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.metrics import (
    SI_SDR_CLIP_DB,
    frame_accuracy,
    roll_to_notes,
    si_sdr,
    transcription_scores,
)

fast_bss_eval = pytest.importorskip("fast_bss_eval")

FPS = 32.0  # frames per second of the project's grid (16 kHz, hop 500)


@pytest.mark.parametrize("zero_mean", [True, False])
def test_si_sdr_matches_fast_bss_eval(zero_mean: bool) -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((6, 4000)) + 0.3  # an offset, so zero_mean matters
    noise_levels = np.array([0.01, 0.1, 0.5, 1.0, 3.0, 10.0])[:, None]
    estimate = 0.7 * reference + noise_levels * rng.standard_normal((6, 4000))
    ours = si_sdr(estimate, reference, zero_mean=zero_mean)
    theirs = [
        fast_bss_eval.si_sdr(reference[k : k + 1], estimate[k : k + 1], zero_mean=zero_mean)[0]
        for k in range(len(reference))
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_si_sdr_scale_invariant_and_known_value() -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal(8000)
    n = rng.standard_normal(8000)
    # Make the noise exactly orthogonal to s and at 1/10 of its energy: SI-SDR = 10 dB.
    n -= (n @ s) / (s @ s) * s
    n *= math.sqrt(0.1 * (s @ s) / (n @ n))
    assert si_sdr(s + n, s, zero_mean=False) == pytest.approx(10.0, abs=1e-9)
    assert si_sdr(5.0 * (s + n), s, zero_mean=False) == pytest.approx(10.0, abs=1e-9)


def test_si_sdr_edge_cases() -> None:
    s = np.sin(np.linspace(0, 50, 1000))
    assert si_sdr(s, s) == SI_SDR_CLIP_DB
    assert si_sdr(np.zeros_like(s), s) == -SI_SDR_CLIP_DB
    assert math.isnan(si_sdr(s, np.zeros_like(s)))
    with pytest.raises(ValueError, match="shape"):
        si_sdr(s[:10], s)


def _roll(notes: list[tuple[int, int, int]], n_frames: int) -> np.ndarray:
    """[88, T] bool roll from (midi pitch, first frame, end frame exclusive)."""
    roll = np.zeros((88, n_frames), dtype=bool)
    for pitch, start, end in notes:
        roll[pitch - 21, start:end] = True
    return roll


def test_roll_to_notes_inverts_the_roll() -> None:
    roll = _roll([(60, 3, 10), (64, 3, 5), (60, 12, 20), (108, 95, 100), (21, 0, 1)], 100)
    intervals, hz = roll_to_notes(roll, min_duration_frames=1)
    expected = [(0, 1, 21), (3, 10, 60), (3, 5, 64), (12, 20, 60), (95, 100, 108)]
    np.testing.assert_allclose(intervals, [[a / FPS, b / FPS] for a, b, _ in expected])
    np.testing.assert_allclose(hz, [440.0 * 2 ** ((p - 69) / 12) for *_, p in expected])
    # The minimum duration removes the 1-frame and 2-frame notes only.
    intervals, hz = roll_to_notes(roll, min_duration_frames=3)
    assert len(hz) == 3
    # Time-major input and probabilities with a threshold give the same notes.
    probs = np.where(roll, 0.8, 0.3).T
    t_intervals, t_hz = roll_to_notes(probs, threshold=0.5, min_duration_frames=3, time_major=True)
    np.testing.assert_allclose(t_intervals, intervals)
    np.testing.assert_allclose(t_hz, hz)


def test_roll_to_notes_rejects_bad_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        roll_to_notes(np.zeros((100, 88)))


def test_transcription_scores_on_known_notes() -> None:
    n_frames = 200
    ref = _roll([(60, 10, 30), (62, 40, 60), (64, 70, 90), (65, 100, 120)], n_frames)
    # Estimates: note 1 exact; note 2 onset 1 frame (31 ms) late -> matched, offset off by 15
    # frames -> unmatched with offsets; note 3 onset 2 frames (62.5 ms) late -> unmatched;
    # note 4 missed; plus two false notes at other pitches.
    est = _roll(
        [(60, 10, 30), (62, 41, 75), (64, 72, 90), (70, 130, 140), (72, 150, 160)], n_frames
    )
    scores = transcription_scores(ref, est.astype(np.float32))
    assert scores.n_reference == 4 and scores.n_estimated == 5 and scores.n_matched == 2
    assert scores.precision == pytest.approx(2 / 5)
    assert scores.recall == pytest.approx(2 / 4)
    assert scores.f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert scores.false_positive_rate == pytest.approx(3 / 5)
    assert scores.f1_with_offsets == pytest.approx(2 * (1 / 5) * (1 / 4) / (1 / 5 + 1 / 4))
    # Frame accuracy from direct counting: TP / (TP + FP + FN) over (pitch, frame) cells.
    tp = np.sum(ref & est)
    expected = tp / (tp + np.sum(est & ~ref) + np.sum(ref & ~est))
    assert scores.frame_accuracy == pytest.approx(expected)
    assert frame_accuracy(ref, est) == pytest.approx(expected)


def test_transcription_scores_perfect_and_empty() -> None:
    ref = _roll([(50, 5, 20), (57, 5, 20)], 64)
    perfect = transcription_scores(ref, ref.astype(float))
    assert perfect.f1 == 1.0 and perfect.f1_with_offsets == 1.0 and perfect.frame_accuracy == 1.0
    assert perfect.false_positive_rate == 0.0
    silent = transcription_scores(ref, np.zeros((88, 64)))
    assert silent.recall == 0.0 and silent.f1 == 0.0 and math.isnan(silent.precision)
    nothing = transcription_scores(np.zeros((88, 64), bool), np.zeros((88, 64)))
    assert math.isnan(nothing.f1) and math.isnan(nothing.frame_accuracy)
