"""prep/features.py against independent computations (numpy FFT framing, pretty_midi, by hand)."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import torch

from prep import features as F


def _numpy_magnitude(wave: np.ndarray) -> np.ndarray:
    """|STFT| by explicit framing: zero-pad N_FFT/2, periodic sqrt-Hann, rfft per frame."""
    n = np.arange(2048)
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / 2048))
    padded = np.pad(wave.astype(np.float64), (1024, 1024))
    count = 1 + len(wave) // 500
    frames = np.stack([padded[500 * t : 500 * t + 2048] for t in range(count)])
    return np.abs(np.fft.rfft(frames * window, axis=-1))


def test_constants_and_frame_count() -> None:
    assert (F.N_BINS, F.N_PITCHES, F.FRAMES_PER_SECOND) == (1025, 88, 32.0)
    assert F.n_frames(0) == 1 and F.n_frames(499) == 1 and F.n_frames(500) == 2
    assert F.n_frames(64000) == F.WINDOW_FRAMES == 129


def test_magnitude_spectrogram_matches_numpy_framing() -> None:
    wave = np.random.default_rng(0).standard_normal(16000 + 321).astype(np.float32)
    ours = F.magnitude_spectrogram(wave)
    reference = _numpy_magnitude(wave)
    assert ours.shape == (F.n_frames(len(wave)), 1025) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)


def test_window_is_periodic_sqrt_hann() -> None:
    n = np.arange(2048)
    expected = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / 2048))
    np.testing.assert_allclose(
        F.sqrt_hann_window(dtype=torch.float64).numpy(), expected, atol=1e-12
    )
    np.testing.assert_allclose(F.sqrt_hann_window().numpy() ** 2, expected**2, atol=1e-6)


def test_istft_inverts_stft_batched() -> None:
    wave = torch.randn(2, 3, 12345, dtype=torch.float64)
    spec = F.stft(wave)
    assert spec.shape == (2, 3, 1025, F.n_frames(12345))
    np.testing.assert_allclose(F.istft(spec, 12345).numpy(), wave.numpy(), atol=1e-9)


def test_stft_center_false_on_prepadded_audio_gives_the_same_frames() -> None:
    wave = torch.randn(20000, dtype=torch.float64)
    full = F.stft(wave)
    start, count = 7, 10
    padded = torch.nn.functional.pad(wave, (1024, 1024))  # index i of padded = sample i - 1024
    first = 500 * start - 1024
    segment = padded[first + 1024 : first + 1024 + 500 * (count - 1) + 2048]
    part = F.stft(segment, center=False)
    assert part.shape[-1] == count
    np.testing.assert_allclose(part.numpy(), full[:, start : start + count].numpy(), atol=1e-9)


def _pm_notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, float, float]]:
    return [(n.pitch, n.start, n.end) for n in pm.instruments[0].notes]


def _pretty_midi_with(notes: list[tuple[int, float, float]]) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(100, p, s, e) for p, s, e in notes]
    pm.instruments.append(inst)
    return pm


def test_piano_roll_equals_pretty_midi_for_frame_aligned_notes() -> None:
    # On the 1/32 s frame grid pretty_midi's time-bin roll and our frame-time rule coincide.
    notes = [
        (60, 0.0, 0.5),
        (64, 5 / 32, 40 / 32),
        (21, 1.0, 1.25),
        (108, 2.0, 3.0),
        (60, 1.0, 2.5),
    ]
    pm = _pretty_midi_with(notes)
    frames = 100
    expected = pm.get_piano_roll(fs=32)[21:109].T > 0
    expected = np.pad(expected, ((0, frames - expected.shape[0]), (0, 0)))[:frames]
    np.testing.assert_array_equal(F.piano_roll(_pm_notes(pm), frames), expected)


def test_piano_roll_samples_pretty_midi_at_frame_times_for_unaligned_notes() -> None:
    # pretty_midi at 100x the frame rate, sampled at the frame times. The onsets/offsets are
    # not on the 1/32 s grid and are not within 1/3200 s before a frame time, where pretty_midi's
    # int(start * fs) bin edge would differ from the exact comparison.
    notes = [(60, 0.0123, 0.4567), (62, 0.2, 0.9011), (72, 1.0009, 1.0301), (40, 0.3, 1.7777)]
    for _, start, end in notes:
        for edge in (start, end):
            assert (np.ceil(edge * 32) / 32 - edge) > 1 / 3200 or (edge * 32) % 1 == 0
    pm = _pretty_midi_with(notes)
    frames = 64
    dense = pm.get_piano_roll(fs=3200)[21:109] > 0
    dense = np.pad(dense, ((0, 0), (0, 100 * frames - dense.shape[1])))
    expected = dense[:, ::100][:, :frames].T
    ours = F.piano_roll(_pm_notes(pm), frames)
    np.testing.assert_array_equal(ours, expected)
    # The same rule written out per frame with pretty_midi's Note objects.
    times = F.frame_times(frames)
    naive = np.zeros((frames, 88), dtype=bool)
    for note in pm.instruments[0].notes:
        naive[:, note.pitch - 21] |= (note.start <= times) & (times < note.end)
    np.testing.assert_array_equal(ours, naive)
    # pretty_midi's own fs=32 roll floors the onset: a note starting at 0.0123 s is in bin 0.
    assert pm.get_piano_roll(fs=32)[60, 0] > 0 and not ours[0, 60 - 21] and ours[1, 60 - 21]


def test_piano_roll_edges_and_out_of_range_pitches() -> None:
    notes = [(20, 0.0, 1.0), (109, 0.0, 1.0), (60, 0.5, 0.5), (61, 0.9, 10.0)]
    roll = F.piano_roll(notes, 33)
    assert roll.sum() == 33 - 29 and roll[29:, 61 - 21].all()  # 0.9 s -> first frame 29
    assert F.count_out_of_range(notes) == 2
    assert F.piano_roll([], 5).shape == (5, 88)


def test_harmonic_mask_single_note_by_hand() -> None:
    roll = np.zeros((4, 2, 88), dtype=bool)
    roll[1, 1, 69 - 21] = True  # A4 = 440 Hz, bin width 16000 / 2048 = 7.8125 Hz
    mask = F.harmonic_mask(roll, n_harmonics=3, tolerance_bins=1)
    # 440 / 7.8125 = 56.32 -> 56; 880 -> 112.64 -> 113; 1320 -> 168.96 -> 169
    expected_bins = [55, 56, 57, 112, 113, 114, 168, 169, 170]
    assert mask.shape == (4, 2, 1025) and mask.dtype == bool
    assert np.flatnonzero(mask[1, 1]).tolist() == expected_bins
    assert mask.sum() == len(expected_bins)


def test_harmonic_mask_drops_harmonics_above_nyquist_and_tuning() -> None:
    roll = np.zeros((1, 1, 88), dtype=bool)
    roll[0, 0, 108 - 21] = True  # C8 = 4186.01 Hz: the 2nd harmonic is above 8 kHz
    assert np.flatnonzero(F.harmonic_mask(roll, n_harmonics=15)[0, 0]).tolist() == [535, 536, 537]
    roll[0, 0] = False
    roll[0, 0, 69 - 21] = True  # A4 tuned to 432 Hz: 432 / 7.8125 = 55.296 -> 55
    bins = np.flatnonzero(F.harmonic_mask(roll, 1, tolerance_bins=0, tuning_hz=432.0)[0, 0])
    assert bins.tolist() == [55]


def test_harmonic_mask_is_union_over_notes() -> None:
    rng = np.random.default_rng(1)
    roll = rng.random((6, 3, 88)) < 0.05
    mask = F.harmonic_mask(roll, n_harmonics=5)
    table = F.harmonic_bins_table(5)
    for t in range(6):
        for i in range(3):
            expected = table[roll[t, i]].any(axis=0) if roll[t, i].any() else np.zeros(1025, bool)
            np.testing.assert_array_equal(mask[t, i], expected)


def test_frame_activity_and_class_weights_from_a_known_roll() -> None:
    roll = np.zeros((8, 3, 88), dtype=bool)
    roll[:4, 0, 10] = True  # instrument 0 active in 1/2 of the frames
    roll[:2, 1, 20] = True  # instrument 1 in 1/4
    roll[:, 2, 30] = True  # instrument 2 always
    activity = F.frame_activity(roll)
    rate = F.activity_rate(activity)
    np.testing.assert_allclose(rate, [0.5, 0.25, 1.0])
    # inverse rates 2, 4, 1 with mean 7/3
    np.testing.assert_allclose(F.class_weights(rate), [6 / 7, 12 / 7, 3 / 7], rtol=1e-6)
    np.testing.assert_allclose(
        F.class_weights(np.array([0.41, 0.14, 0.67])), [0.6607, 1.9350, 0.4043], atol=1e-3
    )
    assert np.isfinite(F.class_weights(np.array([0.0, 0.5]))).all()
    with pytest.raises(ValueError):
        F.class_weights(np.array([1.5]))


def test_feature_params_attrs_round_trip() -> None:
    params = F.FeatureParams(n_harmonics=10, tuning_hz=442.0)
    attrs = params.to_attrs()
    assert attrs["window"] == "sqrt_hann" and attrs["harmonic_tolerance_bins"] == 1
    assert F.FeatureParams.from_attrs(attrs) == params
    with pytest.raises(ValueError, match="hop_length"):
        F.FeatureParams(hop_length=512)
