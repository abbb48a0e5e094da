"""Signal features shared by prep, training and evaluation.

Everything here follows the paper's feature definitions (Hung, Wichern & Le Roux 2021, sec. 3):

* X: magnitude STFT of the 16 kHz mixture, square-root (periodic) Hann window of N_FFT = 2048
  samples, hop 500 samples, so 1025 bins and 32 frames per second. Frame ``t`` is centred on
  sample ``HOP_LENGTH * t`` (``center=True``, zero padding of ``N_FFT // 2`` on each side), so a
  track of ``n`` samples has ``n_frames(n) = 1 + n // HOP_LENGTH`` frames.
* Y[i, n, t]: piano roll per instrument i over the 88 piano keys n (MIDI 21..108) sampled at the
  frame times ``t * HOP_LENGTH / SAMPLE_RATE``.
* A[f, t]: harmonic activity, instrument i is expected at bin f and frame t when one of its
  active notes has a harmonic within ``tolerance_bins`` of f.

A note "sounds" from its MIDI note-on to its note-off, extended by the sustain pedal when the
build applies it (:func:`apply_sustain`, on by default in ``prep build-shards``): MIDI 1.0
control change 64 with value >= 64 holds every note released while it is down until it is
lifted, or until the same key is struck again. Pitch bends are not applied: a bent note keeps
its nominal MIDI pitch in Y and A (the build reads note numbers only).

Arrays are time-major (``[frames, ...]``), as they are stored in the shards; the models use
channel-major tensors and transpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 2048
HOP_LENGTH = 500
N_BINS = N_FFT // 2 + 1  # 1025
MIDI_MIN = 21
MIDI_MAX = 108
SUSTAIN_CONTROL = 64  # MIDI control change number of the sustain (damper) pedal
SUSTAIN_DOWN_MIN_VALUE = 64  # CC64 values 64-127 mean pedal down, 0-63 pedal up (MIDI 1.0)
N_PITCHES = MIDI_MAX - MIDI_MIN + 1  # 88
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 32.0
WINDOW_FRAMES = 129  # 4 s: 1 + 4 * 16000 // 500
TUNING_HZ = 440.0

# The paper does not give the number of harmonics L. 15 harmonics of the lowest piano key
# (27.5 Hz) reach 412 Hz, and of A4 6.6 kHz, which covers the partials of piano, distorted
# guitar and bass that carry most energy in a 16 kHz signal; the project's early CPU
# calibration runs used 15 as well.
DEFAULT_N_HARMONICS = 15
DEFAULT_TOLERANCE_BINS = 1
# Activity rates below this floor are clamped before inverting them in class_weights.
ACTIVITY_RATE_FLOOR = 1e-3
_MASK_BLOCK_ROWS = 8192  # rows of [T*I, 88] per matrix product in harmonic_mask
_STFT_BLOCK_FRAMES = 2048  # frames per FFT block in magnitude_spectrogram


@dataclass(frozen=True)
class FeatureParams:
    """The feature settings a shard was built with (stored as its root attributes)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_harmonics: int = DEFAULT_N_HARMONICS
    tolerance_bins: int = DEFAULT_TOLERANCE_BINS
    tuning_hz: float = TUNING_HZ
    midi_min: int = MIDI_MIN
    midi_max: int = MIDI_MAX

    def __post_init__(self) -> None:
        fixed = {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "midi_min": MIDI_MIN,
            "midi_max": MIDI_MAX,
        }
        for name, expected in fixed.items():
            if getattr(self, name) != expected:
                raise ValueError(
                    f"FeatureParams.{name}={getattr(self, name)} is not supported: the feature "
                    f"code is fixed to {name}={expected} (the paper's setting)"
                )
        if self.n_harmonics < 1:
            raise ValueError(f"n_harmonics must be >= 1, got {self.n_harmonics}")
        if self.tolerance_bins < 0:
            raise ValueError(f"tolerance_bins must be >= 0, got {self.tolerance_bins}")
        if not self.tuning_hz > 0:
            raise ValueError(f"tuning_hz must be > 0, got {self.tuning_hz}")

    def to_dict(self) -> dict[str, int | float]:
        """Plain dict of the settings (JSON-serialisable)."""
        return asdict(self)

    def to_attrs(self) -> dict[str, int | float | str]:
        """HDF5 root attributes of a shard, with the shard format's attribute names."""
        return {
            "sample_rate": int(self.sample_rate),
            "n_fft": int(self.n_fft),
            "hop_length": int(self.hop_length),
            "window": "sqrt_hann",
            "midi_min": int(self.midi_min),
            "midi_max": int(self.midi_max),
            "tuning_hz": float(self.tuning_hz),
            "n_harmonics": int(self.n_harmonics),
            "harmonic_tolerance_bins": int(self.tolerance_bins),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> FeatureParams:
        """Inverse of :meth:`to_attrs` (extra keys are ignored)."""
        return cls(
            sample_rate=int(attrs["sample_rate"]),
            n_fft=int(attrs["n_fft"]),
            hop_length=int(attrs["hop_length"]),
            n_harmonics=int(attrs["n_harmonics"]),
            tolerance_bins=int(attrs["harmonic_tolerance_bins"]),
            tuning_hz=float(attrs["tuning_hz"]),
            midi_min=int(attrs["midi_min"]),
            midi_max=int(attrs["midi_max"]),
        )


def n_frames(n_samples: int) -> int:
    """Number of STFT frames of a signal of ``n_samples`` samples (``center=True``)."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return 1 + int(n_samples) // HOP_LENGTH


def frame_times(count: int) -> np.ndarray:
    """Times in seconds of the centres of frames ``0..count-1`` (``t * HOP / SR``)."""
    return np.arange(count, dtype=np.float64) * (HOP_LENGTH / SAMPLE_RATE)


# --------------------------------------------------------------------------------------------
# STFT (torch)
# --------------------------------------------------------------------------------------------


def sqrt_hann_window(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Square root of the periodic Hann window of ``N_FFT`` samples (analysis and synthesis)."""
    return torch.hann_window(N_FFT, periodic=True, dtype=dtype, device=device).sqrt()


def stft(wave: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Complex STFT of ``wave [..., n]`` -> ``[..., N_BINS, frames]``.

    With ``center=True`` the signal is zero-padded by ``N_FFT // 2`` on each side, so frame t is
    centred on sample ``HOP_LENGTH * t`` and there are ``n_frames(n)`` frames. With
    ``center=False`` the caller supplies already padded audio: samples
    ``[HOP*s - N_FFT//2, HOP*(s+T-1) + N_FFT//2)`` of the track give exactly frames s..s+T-1
    (see ``ShardSet.read_samples``).
    """
    if not torch.is_tensor(wave):
        raise TypeError(f"stft expects a torch.Tensor, got {type(wave).__name__}")
    lead = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1])
    real_dtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
    spec = torch.stft(
        flat.to(real_dtype),
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=N_FFT,
        window=sqrt_hann_window(flat.device, real_dtype),
        center=center,
        pad_mode="constant",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*lead, N_BINS, spec.shape[-1])


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`stft` (``center=True``): ``[..., N_BINS, frames]`` -> ``[..., length]``.

    Weighted overlap-add with the sqrt-Hann synthesis window, normalised by the summed squared
    window, so ``istft(stft(x), len(x)) == x`` up to float rounding.
    """
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, N_BINS, spec.shape[-1])
    real_dtype = torch.float64 if flat.dtype == torch.complex128 else torch.float32
    wave = torch.istft(
        flat,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=N_FFT,
        window=sqrt_hann_window(flat.device, real_dtype),
        center=True,
        normalized=False,
        onesided=True,
        length=int(length),
    )
    return wave.reshape(*lead, wave.shape[-1])


def magnitude_spectrogram(wave: np.ndarray) -> np.ndarray:
    """X = |STFT(wave)| as ``[n_frames(len(wave)), N_BINS] float32`` (time-major).

    The same frames as :func:`stft` (``center=True``: zero padding of ``N_FFT // 2`` each side,
    sqrt-Hann window), computed as windowed frames -> real FFT directly in time-major order,
    which gives identical values to ``stft(...).abs().T`` at less than half its CPU cost
    (no padding copy inside ``torch.stft``, no complex transpose; benchmarks/perf/prep_throughput.py).
    Frames are processed in blocks to bound the temporaries on long tracks.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"magnitude_spectrogram expects a mono 1-D signal, got shape {wave.shape}")
    count = n_frames(wave.shape[0])
    padded = np.zeros(wave.shape[0] + 2 * (N_FFT // 2), dtype=np.float32)
    padded[N_FFT // 2 : N_FFT // 2 + wave.shape[0]] = wave
    out = np.empty((count, N_BINS), dtype=np.float32)
    window = sqrt_hann_window()
    with torch.no_grad():
        frames = torch.from_numpy(padded).unfold(0, N_FFT, HOP_LENGTH)  # [count, N_FFT] view
        target = torch.from_numpy(out)
        for first in range(0, count, _STFT_BLOCK_FRAMES):
            block = frames[first : first + _STFT_BLOCK_FRAMES] * window
            torch.abs(torch.fft.rfft(block, dim=1), out=target[first : first + _STFT_BLOCK_FRAMES])
    return out


# --------------------------------------------------------------------------------------------
# Scores: piano roll, harmonic mask, activity, class weights
# --------------------------------------------------------------------------------------------


def _first_frame_at_or_after(times_s: np.ndarray) -> np.ndarray:
    """Smallest frame index t with ``t * HOP / SR >= time`` (exact for float frame times)."""
    frame_period = HOP_LENGTH / SAMPLE_RATE
    index = np.ceil(times_s * FRAMES_PER_SECOND).astype(np.int64)
    # ceil(time * fps) can be off by one through float rounding; fix it against the exact
    # comparison the rule is stated in.
    index -= ((index - 1) * frame_period >= times_s).astype(np.int64)
    index += (index * frame_period < times_s).astype(np.int64)
    return np.maximum(index, 0)


def piano_roll(notes: Iterable[tuple[int, float, float]], n_frames: int) -> np.ndarray:
    """Y for one instrument: ``[n_frames, 88] bool`` from ``(pitch, start_s, end_s)`` notes.

    Rule (``pretty_midi`` note semantics, sampled at the frame times): note n is active at frame
    t iff ``start <= t * HOP_LENGTH / SAMPLE_RATE < end``. This is what a note "sounding at the
    frame centre" means and does not depend on the frame rate's bin edges. Note that
    ``pretty_midi.PrettyMIDI.get_piano_roll(fs=32)`` instead marks the time bins
    ``int(start*32) .. int(end*32) - 1`` (it floors the onset), so the two agree exactly for notes
    on the 1/32 s grid and differ by one frame at onsets/offsets between grid points.

    Column k is MIDI pitch ``MIDI_MIN + k``. Notes outside MIDI 21..108 and notes with
    ``end <= start`` are ignored (callers count them; see :func:`count_out_of_range`).
    """
    roll = np.zeros((n_frames, N_PITCHES), dtype=bool)
    note_array = np.asarray(list(notes), dtype=np.float64).reshape(-1, 3)
    if note_array.size == 0 or n_frames == 0:
        return roll
    pitch = np.rint(note_array[:, 0]).astype(np.int64)
    start, end = note_array[:, 1], note_array[:, 2]
    keep = (pitch >= MIDI_MIN) & (pitch <= MIDI_MAX) & (end > start)
    pitch, start, end = pitch[keep], start[keep], end[keep]
    first = np.minimum(_first_frame_at_or_after(start), n_frames)
    stop = np.minimum(_first_frame_at_or_after(end), n_frames)
    # Interval painting without a per-frame loop: +1 at onset, -1 at offset, cumulative sum.
    delta = np.zeros((n_frames + 1, N_PITCHES), dtype=np.int32)
    column = pitch - MIDI_MIN
    np.add.at(delta, (first, column), 1)
    np.add.at(delta, (stop, column), -1)
    return np.cumsum(delta[:-1], axis=0) > 0


def pedal_intervals(
    control_changes: Iterable[tuple[float, int]], end_s: float
) -> list[tuple[float, float]]:
    """Sustain-pedal-down intervals ``[down, up)`` from CC64 events ``(time_s, value)``.

    Value >= :data:`SUSTAIN_DOWN_MIN_VALUE` presses the pedal, a lower value lifts it; a press
    while it is down and a lift while it is up change nothing (controllers send many values
    on the way down). Events are taken in time order (stable: the file order decides between
    events at the same time). A pedal still down at the last event is lifted at ``end_s``,
    the end of the track; events at or after ``end_s`` are ignored.

    Returns:
        Disjoint, sorted intervals of positive length.
    """
    intervals: list[tuple[float, float]] = []
    down: float | None = None
    for time, value in sorted(control_changes, key=lambda event: event[0]):
        if time >= end_s:
            break
        if value >= SUSTAIN_DOWN_MIN_VALUE:
            if down is None:
                down = float(time)
        elif down is not None:
            if time > down:
                intervals.append((down, float(time)))
            down = None
    if down is not None and end_s > down:
        intervals.append((down, float(end_s)))
    return intervals


def apply_sustain(
    notes: Sequence[tuple[int, float, float]], pedal: Sequence[tuple[float, float]]
) -> tuple[list[tuple[int, float, float]], int]:
    """Note ends extended by the sustain pedal (standard MIDI sustain semantics).

    A note whose note-off falls while the pedal is down (``down <= end < up``, one of the
    ``pedal`` intervals from :func:`pedal_intervals`) keeps sounding until the pedal is
    lifted, or until the next note-on of the same pitch, whichever comes first. A note-off at
    the very moment the pedal goes down is caught by it; one at the moment it is lifted is
    not extended. Notes released with the pedal up, notes with ``end <= start`` and all
    note starts are unchanged, and a note is never shortened. This is the rule of Magenta's
    ``note_seq.sequences_lib.apply_sustain_control_changes`` (used for MAESTRO and Onsets
    and Frames) and of the Onsets-and-Frames PyTorch reader (``onsets_and_frames/midi.py``),
    applied per MIDI instrument by the caller, since a pedal acts on its own channel only.

    Returns:
        (notes in the input order with their new ends, number of notes extended).
    """
    if not notes or not pedal:
        return [(int(p), float(s), float(e)) for p, s, e in notes], 0
    downs = np.array([d for d, _ in pedal], dtype=np.float64)
    ups = np.array([u for _, u in pedal], dtype=np.float64)
    onsets: dict[int, list[float]] = {}
    for pitch, start, _ in notes:
        onsets.setdefault(int(pitch), []).append(float(start))
    sorted_onsets = {p: np.sort(np.asarray(v, dtype=np.float64)) for p, v in onsets.items()}
    out: list[tuple[int, float, float]] = []
    extended = 0
    for pitch, start, end in notes:
        pitch, start, end = int(pitch), float(start), float(end)
        index = int(np.searchsorted(downs, end, side="right")) - 1
        if end > start and index >= 0 and end < ups[index]:
            new_end = float(ups[index])
            same = sorted_onsets[pitch]
            nxt = int(np.searchsorted(same, end, side="left"))  # first re-strike at or after
            if nxt < len(same):
                new_end = min(new_end, float(same[nxt]))
            if new_end > end:
                end = new_end
                extended += 1
        out.append((pitch, start, end))
    return out, extended


def count_out_of_range(notes: Iterable[tuple[int, float, float]]) -> int:
    """Number of notes :func:`piano_roll` ignores because their pitch is outside 21..108."""
    return sum(1 for pitch, _, _ in notes if not MIDI_MIN <= round(pitch) <= MIDI_MAX)


@lru_cache(maxsize=16)
def _harmonic_bins_table(n_harmonics: int, tolerance_bins: int, tuning_hz: float) -> np.ndarray:
    """``[88, N_BINS] bool``: bins covered by the harmonics of each piano key (read-only)."""
    bin_hz = SAMPLE_RATE / N_FFT
    nyquist = SAMPLE_RATE / 2
    midi = np.arange(MIDI_MIN, MIDI_MAX + 1, dtype=np.float64)
    f0 = tuning_hz * 2.0 ** ((midi - 69.0) / 12.0)  # [88]
    harmonics = f0[:, None] * np.arange(1, n_harmonics + 1, dtype=np.float64)[None, :]  # [88, L]
    table = np.zeros((N_PITCHES, N_BINS), dtype=bool)
    pitch_idx, harm_idx = np.nonzero(harmonics <= nyquist)  # harmonics above Nyquist dropped
    centre = np.rint(harmonics[pitch_idx, harm_idx] / bin_hz).astype(np.int64)
    for offset in range(-tolerance_bins, tolerance_bins + 1):
        bins = centre + offset
        inside = (bins >= 0) & (bins < N_BINS)
        table[pitch_idx[inside], bins[inside]] = True
    table.setflags(write=False)
    return table


def harmonic_bins_table(
    n_harmonics: int = DEFAULT_N_HARMONICS,
    tolerance_bins: int = DEFAULT_TOLERANCE_BINS,
    tuning_hz: float = TUNING_HZ,
) -> np.ndarray:
    """``[88, N_BINS] bool`` table: row k marks the bins of MIDI pitch ``MIDI_MIN + k``.

    f0 = tuning_hz * 2**((n - 69) / 12); harmonics f_l = f0 * (l + 1), l = 0..L-1; harmonic
    l covers bins ``round(f_l / (SR / N_FFT)) + d`` for ``|d| <= tolerance_bins``, clipped to
    the 1025 bins; harmonics above Nyquist are dropped.
    """
    return _harmonic_bins_table(int(n_harmonics), int(tolerance_bins), float(tuning_hz))


def harmonic_mask(
    roll: np.ndarray,
    n_harmonics: int = DEFAULT_N_HARMONICS,
    tolerance_bins: int = DEFAULT_TOLERANCE_BINS,
    tuning_hz: float = TUNING_HZ,
) -> np.ndarray:
    """The paper's harmonic activity A: ``roll [T, I, 88] -> [T, I, N_BINS] bool``.

    ``mask[t, i, f]`` is True iff some note active in ``roll[t, i]`` has a harmonic within
    ``tolerance_bins`` of bin f (see :func:`harmonic_bins_table`). Computed as a matrix
    product of the distinct roll rows with the pitch->bins table (any-reduction over active
    pitches), then gathered back: music holds the same chord over many frames, so a track has
    far fewer distinct rows than frames (benchmarks/perf/prep_throughput.py: 20-30x cheaper than a product
    over every row).
    """
    roll = np.asarray(roll)
    if roll.ndim < 1 or roll.shape[-1] != N_PITCHES:
        raise ValueError(f"harmonic_mask expects a roll [..., {N_PITCHES}], got {roll.shape}")
    table = harmonic_bins_table(n_harmonics, tolerance_bins, tuning_hz).astype(np.float32)
    flat = roll.reshape(-1, N_PITCHES)
    if flat.shape[0] == 0:
        return np.zeros((*roll.shape[:-1], N_BINS), dtype=bool)
    # Distinct rows: 88 bools packed into 11 bytes, compared as one opaque value each.
    packed = np.ascontiguousarray(np.packbits(flat.astype(bool, copy=False), axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    distinct, inverse = np.unique(keys, return_inverse=True)
    rows = np.unpackbits(distinct.view(np.uint8).reshape(len(distinct), -1), axis=1,
                         count=N_PITCHES)
    distinct_mask = np.zeros((rows.shape[0], N_BINS), dtype=bool)
    # Blocks of rows bound the float32 temporary; each product entry counts the active
    # pitches covering the bin (exact).
    for first in range(0, rows.shape[0], _MASK_BLOCK_ROWS):
        block = rows[first : first + _MASK_BLOCK_ROWS].astype(np.float32)
        np.greater(block @ table, 0.5, out=distinct_mask[first : first + _MASK_BLOCK_ROWS])
    return distinct_mask[inverse.ravel()].reshape(*roll.shape[:-1], N_BINS)


def frame_activity(roll: np.ndarray) -> np.ndarray:
    """Whether each instrument plays any note at each frame: ``[T, I, 88] -> [T, I] bool``."""
    return np.asarray(roll).any(axis=-1)


def class_weights(activity_rate: np.ndarray, floor: float = ACTIVITY_RATE_FLOOR) -> np.ndarray:
    """Per-instrument weights on the transcription loss from frame activity rates r_i.

    The paper turns the training-set activity rates (piano 0.41, guitar 0.14, bass 0.67) into
    loss weights without giving the formula. We use inverse-rate weights normalised to mean 1:

        w_i = (1 / r_i) / mean_j (1 / r_j),   with r_i clamped to [floor, 1],

    so a rarely active instrument counts as much as a frequent one in total while the average
    weight (hence the loss scale) is unchanged. Paper rates give w = (0.66, 1.94, 0.40).
    """
    rate = np.asarray(activity_rate, dtype=np.float64)
    if rate.ndim != 1 or rate.size == 0:
        raise ValueError(f"activity_rate must be a non-empty 1-D array, got shape {rate.shape}")
    if not np.all(np.isfinite(rate)) or np.any(rate < 0) or np.any(rate > 1):
        raise ValueError(f"activity rates must lie in [0, 1], got {rate.tolist()}")
    inverse = 1.0 / np.clip(rate, floor, 1.0)
    return (inverse / inverse.mean()).astype(np.float32)


def activity_rate(activity: np.ndarray) -> np.ndarray:
    """Fraction of frames in which each instrument is active: ``[T, I] -> [I] float64``."""
    activity = np.asarray(activity)
    if activity.shape[0] == 0:
        return np.zeros(activity.shape[1:], dtype=np.float64)
    return activity.mean(axis=0, dtype=np.float64)


def midi_to_hz(pitch: float, tuning_hz: float = TUNING_HZ) -> float:
    """Equal-tempered frequency of MIDI ``pitch`` with A4 (69) at ``tuning_hz``."""
    return tuning_hz * math.pow(2.0, (pitch - 69.0) / 12.0)
