"""Evaluation metrics: SI-SDR for separation (Table 1) and mir_eval scores for transcription (Table 2).

SI-SDR follows Le Roux, Wisdom, Erdogan & Hershey, "SDR - half-baked or well done?" (ICASSP 2019),
the paper's reference [33]. Note scores follow mir_eval (reference [34]); the paper reports
"note accuracy by mir_eval" without more detail, which we read as the note-level F-measure with a
50 ms onset tolerance and offsets ignored (the usual "note" or "onset-only" F1).

Frame convention (prep/features.py): frame ``t`` is centred on sample ``HOP_LENGTH * t``, i.e. on
time ``t * HOP_LENGTH / SAMPLE_RATE`` seconds, and a note is active at frame ``t`` iff
``start <= t * HOP / SR < end`` (pretty_midi's rule). ``roll_to_notes`` inverts that rule.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import mir_eval
import numpy as np

from prep.features import HOP_LENGTH, MIDI_MIN, N_PITCHES, SAMPLE_RATE, frame_times

#: SI-SDR values are clipped to +-SI_SDR_CLIP_DB so a perfect (or all-zero) estimate gives a finite
#: number that can still be averaged.
SI_SDR_CLIP_DB = 100.0

#: mir_eval's conventional onset tolerance, 50 ms.
ONSET_TOLERANCE_S = 0.05


def si_sdr(
    estimate: np.ndarray, reference: np.ndarray, zero_mean: bool = True
) -> np.ndarray | float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019, eq. 3-4).

    With s the reference and ŝ the estimate (both along the last axis),
    ``alpha = <ŝ, s> / ||s||^2``, ``e_target = alpha s``, ``e_res = ŝ - e_target`` and
    ``SI-SDR = 10 log10(||e_target||^2 / ||e_res||^2)``.

    Mean removal: with ``zero_mean=True`` (our default) the mean of each signal is subtracted
    first, as Le Roux et al. assume zero-mean signals; the ICASSP 2021 paper does not say, and
    torchmetrics / fast_bss_eval default to ``zero_mean=False``. For audio from an iSTFT the mean is
    essentially zero, so the two choices differ by a negligible amount on real segments.

    Computed in float64, without epsilon fudges. A reference with zero energy gives NaN (SI-SDR is
    undefined; evaluate.py skips silent references before calling this). A perfect estimate gives
    +SI_SDR_CLIP_DB, an estimate orthogonal to the reference (e.g. all zeros) -SI_SDR_CLIP_DB.

    Args:
        estimate: ŝ, shape [..., n].
        reference: s, same shape as ``estimate``.
        zero_mean: subtract each signal's mean first.

    Returns:
        SI-SDR in dB, shape [...] (a Python float for 1-D input).
    """
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"si_sdr: estimate shape {est.shape} != reference shape {ref.shape}")
    if est.shape[-1] == 0:
        raise ValueError("si_sdr: signals are empty")
    if zero_mean:
        est = est - est.mean(axis=-1, keepdims=True)
        ref = ref - ref.mean(axis=-1, keepdims=True)
    ref_energy = np.sum(ref * ref, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.sum(est * ref, axis=-1) / ref_energy
        target = alpha[..., None] * ref
        residual = est - target
        ratio = np.sum(target * target, axis=-1) / np.sum(residual * residual, axis=-1)
        value = 10.0 * np.log10(ratio)
    value = np.clip(value, -SI_SDR_CLIP_DB, SI_SDR_CLIP_DB)
    # An all-zero estimate (0 / 0 above) carries none of the reference: the floor value.
    value = np.where(np.sum(est * est, axis=-1) > 0, value, -SI_SDR_CLIP_DB)
    value = np.where(ref_energy > 0, value, np.nan)
    return float(value) if value.ndim == 0 else value


def _pitch_major(roll: np.ndarray, time_major: bool) -> np.ndarray:
    """Return ``roll`` as [88, T], checking that the pitch axis has 88 entries."""
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"expected a 2-D piano roll [88, T] or [T, 88], got shape {roll.shape}")
    if time_major:
        roll = roll.T
    if roll.shape[0] != N_PITCHES:
        layout = "[T, 88]" if time_major else "[88, T]"
        raise ValueError(f"piano roll shape {roll.shape} does not match layout {layout}")
    return roll


def roll_to_notes(
    prob_roll: np.ndarray,
    threshold: float = 0.5,
    min_duration_frames: int = 2,
    time_major: bool = False,
    hop_length: int = HOP_LENGTH,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a (probability) piano roll into notes for mir_eval.

    The roll is binarised with ``prob >= threshold``. A note starts at a frame where a pitch turns
    on and ends at the first frame where it is off again (or at the end of the roll), so the frames
    ``[a, b)`` give the interval ``[a * hop / sr, b * hop / sr)`` seconds: the exact inverse of
    pretty_midi's piano-roll rule. Runs shorter than ``min_duration_frames`` frames are dropped
    (default 2 frames = 62.5 ms, which removes single-frame flickers of a probability roll; use 1
    for ground-truth rolls). Two notes of the same pitch that touch with no gap in between cannot be
    told apart in a roll and come out as one note.

    Args:
        prob_roll: p[n, t] for one instrument, [88, T] (or [T, 88] with ``time_major=True``);
            row n is MIDI pitch ``21 + n``.
        threshold: activation threshold on the probabilities.
        min_duration_frames: shortest note kept, in frames.
        time_major: the roll is [T, 88] (the shards' layout) instead of [88, T].
        hop_length, sample_rate: the frame grid.

    Returns:
        ``(intervals [N, 2] seconds, pitches_hz [N])``, sorted by onset then pitch.
    """
    if min_duration_frames < 1:
        raise ValueError(f"min_duration_frames must be >= 1, got {min_duration_frames}")
    active = _pitch_major(prob_roll, time_major) >= threshold
    n_frames = active.shape[1]
    # Pad one off-frame on each side so every run has both a rising and a falling edge.
    padded = np.zeros((N_PITCHES, n_frames + 2), dtype=np.int8)
    padded[:, 1:-1] = active
    edges = np.diff(padded, axis=1)
    on_pitch, on_frame = np.nonzero(edges == 1)
    off_pitch, off_frame = np.nonzero(edges == -1)
    # np.nonzero scans row-major, so the k-th rising and falling edges belong to the same run.
    assert np.array_equal(on_pitch, off_pitch)
    keep = (off_frame - on_frame) >= min_duration_frames
    on_pitch, on_frame, off_frame = on_pitch[keep], on_frame[keep], off_frame[keep]
    order = np.lexsort((on_pitch, on_frame))
    seconds_per_frame = hop_length / sample_rate
    intervals = np.stack([on_frame[order], off_frame[order]], axis=1) * seconds_per_frame
    pitches_hz = mir_eval.util.midi_to_hz(on_pitch[order] + MIDI_MIN)
    return intervals.astype(np.float64).reshape(-1, 2), np.asarray(pitches_hz, dtype=np.float64)


def roll_to_frame_freqs(
    roll: np.ndarray, threshold: float = 0.5, time_major: bool = False
) -> list[np.ndarray]:
    """Per-frame lists of active pitches in Hz, the input format of ``mir_eval.multipitch``."""
    active = _pitch_major(roll, time_major) >= threshold
    hz = mir_eval.util.midi_to_hz(np.arange(N_PITCHES) + MIDI_MIN)
    return [hz[active[:, t]] for t in range(active.shape[1])]


@dataclass
class TranscriptionScores:
    """mir_eval scores of one instrument's estimated roll against its reference roll.

    ``precision``, ``recall``, ``f1``: note level, onset within 50 ms and same pitch (within
    50 cents), offsets ignored (``offset_ratio=None``): the paper's "note accuracy" is ``f1``.
    ``f1_with_offsets``: the same with mir_eval's default offset rule (offset within 20 % of the
    reference note's duration or 50 ms, whichever is larger), for completeness.
    ``false_positive_rate``: share of estimated notes that match no reference note,
    ``1 - precision`` (the paper's "false positive rate of detected notes").
    ``frame_accuracy``: ``mir_eval.multipitch`` Accuracy, TP / (TP + FP + FN) over all frames.
    ``n_matched``, ``n_reference``, ``n_estimated``: note counts, so callers can pool over tracks.
    Metrics that are undefined (no reference or no estimated notes) are NaN.
    """

    precision: float
    recall: float
    f1: float
    f1_with_offsets: float
    false_positive_rate: float
    frame_accuracy: float
    n_matched: int
    n_reference: int
    n_estimated: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (for JSON)."""
        return asdict(self)


def _note_scores(
    ref: tuple[np.ndarray, np.ndarray],
    est: tuple[np.ndarray, np.ndarray],
    offset_ratio: float | None,
) -> tuple[float, float, float, int]:
    """mir_eval note precision / recall / F1 and the number of matched notes."""
    (ref_iv, ref_hz), (est_iv, est_hz) = ref, est
    if len(ref_hz) == 0 or len(est_hz) == 0:
        precision = 0.0 if len(est_hz) else float("nan")
        recall = 0.0 if len(ref_hz) else float("nan")
        f1 = 0.0 if (len(ref_hz) or len(est_hz)) else float("nan")
        return precision, recall, f1, 0
    matching = mir_eval.transcription.match_notes(
        ref_iv, ref_hz, est_iv, est_hz, onset_tolerance=ONSET_TOLERANCE_S, offset_ratio=offset_ratio
    )
    n_matched = len(matching)
    precision = n_matched / len(est_hz)
    recall = n_matched / len(ref_hz)
    f1 = mir_eval.util.f_measure(precision, recall)
    return precision, recall, f1, n_matched


def frame_accuracy(
    ref_roll: np.ndarray, est_roll: np.ndarray, time_major: bool = False, threshold: float = 0.5
) -> float:
    """``mir_eval.multipitch`` frame Accuracy of an estimated roll against a reference roll.

    Both rolls share the project's frame grid. NaN when neither roll has any active frame.
    """
    ref_freqs = roll_to_frame_freqs(ref_roll, 0.5, time_major)
    est_freqs = roll_to_frame_freqs(est_roll, threshold, time_major)
    if not any(len(f) for f in ref_freqs) and not any(len(f) for f in est_freqs):
        return float("nan")
    times = frame_times(len(ref_freqs))
    with warnings.catch_warnings():
        # mir_eval warns about empty reference/estimate frames; those are legitimate here.
        warnings.simplefilter("ignore")
        scores = mir_eval.multipitch.evaluate(times, ref_freqs, times, est_freqs)
    return float(scores["Accuracy"])


def transcription_scores(
    ref_roll: np.ndarray,
    est_prob_roll: np.ndarray,
    threshold: float = 0.5,
    min_duration_frames: int = 2,
    time_major: bool = False,
) -> TranscriptionScores:
    """Score one instrument's estimated probability roll against its reference roll.

    Args:
        ref_roll: reference roll Y[i] of one instrument, bool or {0, 1}, [88, T] (or [T, 88]).
        est_prob_roll: transcriptor output p[i], same shape, probabilities.
        threshold: activation threshold on ``est_prob_roll``.
        min_duration_frames: shortest estimated note kept (reference notes: 1 frame).
        time_major: both rolls are [T, 88].
    """
    ref_roll = np.asarray(ref_roll)
    est_prob_roll = np.asarray(est_prob_roll)
    if ref_roll.shape != est_prob_roll.shape:
        raise ValueError(
            f"reference roll shape {ref_roll.shape} != estimated roll shape {est_prob_roll.shape}"
        )
    ref_notes = roll_to_notes(ref_roll, 0.5, 1, time_major)
    est_notes = roll_to_notes(est_prob_roll, threshold, min_duration_frames, time_major)
    precision, recall, f1, n_matched = _note_scores(ref_notes, est_notes, offset_ratio=None)
    _, _, f1_offsets, _ = _note_scores(ref_notes, est_notes, offset_ratio=0.2)
    return TranscriptionScores(
        precision=precision,
        recall=recall,
        f1=f1,
        f1_with_offsets=f1_offsets,
        false_positive_rate=1.0 - precision,
        frame_accuracy=frame_accuracy(ref_roll, est_prob_roll, time_major, threshold),
        n_matched=n_matched,
        n_reference=len(ref_notes[1]),
        n_estimated=len(est_notes[1]),
    )
