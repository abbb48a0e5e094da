"""Separation and transcription of any audio file with trained checkpoints, in bounded memory.

Arrays in, arrays out (``separate_waveform``, ``transcribe_waveform``) plus file-level wrappers
(``separate``, ``transcribe``) used by ``train separate`` / ``train transcribe``.

Chunking: the TCN is non-causal with a finite receptive field of ``R`` frames (1531 frames for
3 repeats x 8 blocks, kernel 3: ``ModelConfig.receptive_field``), so output frame t depends only on
input frames ``t - (R-1)/2 .. t + (R-1)/2``. A long spectrogram is cut into chunks of
``chunk_frames`` centre frames, each run with ``overlap_frames`` extra context frames on each side
(clipped at the track's ends, where the model sees exactly the borders it sees on the whole track),
and only the centre frames are kept. With ``overlap_frames >= (R-1)/2`` (the default) the result
equals whole-track inference up to float rounding, whatever ``chunk_frames`` is. This holds because
the model has no normalisation over time (per-frame channel norm only); see ``tests/test_inference.py``.

The STFT and iSTFT of the whole track are computed at once: they cost O(track length) memory
(about 8 MB per minute and instrument in complex64), while the model's activations, which are
the large part, stay bounded by the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pretty_midi
import resampy
import soundfile
import torch
from tqdm import tqdm

from prep.atomic import atomic_write
from prep.features import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE, istft, stft
from train.metrics import roll_to_notes
from train.model import CheckpointError, ScoreCriticModel, load_model
from train.model import load_checkpoint as read_checkpoint

#: Centre frames per chunk (2048 frames = 64 s at 32 frames per second).
DEFAULT_CHUNK_FRAMES = 2048

#: Instrument names used when a checkpoint does not store its own list.
DEFAULT_INSTRUMENTS = ("piano", "guitar", "bass")

#: General MIDI programs (0-based) for the paper's instrument classes: acoustic grand piano,
#: distortion guitar, electric bass (finger).
GM_PROGRAMS = {"piano": 0, "guitar": 30, "bass": 33}

#: Velocity written for every transcribed note (the transcriptor predicts no dynamics).
NOTE_VELOCITY = 100


class AudioError(ValueError):
    """An audio file is missing, unreadable or empty."""


# --------------------------------------------------------------------------------------------
# Audio input
# --------------------------------------------------------------------------------------------


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any file libsndfile reads as it is: float32 ``[channels, n]`` and its sample rate.

    Raises:
        AudioError: the file does not exist, is not audio libsndfile can read, has no samples,
            or holds NaN or infinite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({error})") from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the audio file contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: the audio contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sample_rate)


def to_model_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[channels, n]`` at ``sample_rate`` -> 16 kHz mono float32 ``[n']``, what the models take.

    Channels are averaged; other sample rates are resampled with resampy (its default Kaiser
    "best" filter).
    """
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    if sample_rate != SAMPLE_RATE:
        mono = resampy.resample(mono, sample_rate, SAMPLE_RATE, axis=-1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """Read any file libsndfile reads as 16 kHz mono float32 ``[n]`` (:func:`read_audio`, then
    :func:`to_model_rate`).

    Raises:
        AudioError: the file does not exist, is not audio libsndfile can read, or has no samples.
    """
    return to_model_rate(*read_audio(path))


# --------------------------------------------------------------------------------------------
# Chunked model application
# --------------------------------------------------------------------------------------------


def context_frames(model: torch.nn.Module) -> int:
    """Frames of context needed on each side of a chunk for exact chunked inference.

    ``(R - 1) // 2`` for a receptive field of R frames, read from ``model.receptive_field`` or
    ``model.config.receptive_field``.
    """
    receptive_field = getattr(model, "receptive_field", None)
    if receptive_field is None and hasattr(model, "config"):
        receptive_field = getattr(model.config, "receptive_field", None)
    if receptive_field is None:
        raise TypeError(
            f"{type(model).__name__} exposes no receptive_field; pass overlap_frames explicitly"
        )
    return (int(receptive_field) - 1) // 2


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def apply_chunked(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    magnitude: torch.Tensor,
    chunk_frames: int,
    overlap_frames: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Run a frame-wise model on ``magnitude [N_BINS, T]`` chunk by chunk.

    Args:
        model_fn: maps ``X [1, N_BINS, T_chunk]`` to ``[1, ..., T_chunk]`` (same frame count).
        magnitude: X, the mixture magnitude STFT (channel-major).
        chunk_frames: centre frames per chunk (> 0).
        overlap_frames: context frames on each side of a chunk (>= 0), clipped at the track ends.
        device: where the model runs; results come back to the CPU.
        progress: a tqdm bar over the chunks (stderr), shown only when there are several.

    Returns:
        float32 array ``[..., T]``: the model's output for every frame.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    if overlap_frames < 0:
        raise ValueError(f"overlap_frames must be >= 0, got {overlap_frames}")
    total = magnitude.shape[-1]
    output: np.ndarray | None = None
    starts = range(0, total, chunk_frames)
    for start in tqdm(starts, desc="model", unit="chunk", disable=not progress or len(starts) < 2,
                      dynamic_ncols=True):
        stop = min(start + chunk_frames, total)
        low, high = max(0, start - overlap_frames), min(total, stop + overlap_frames)
        chunk = magnitude[None, :, low:high].to(device=device, dtype=torch.float32)
        result = model_fn(chunk)
        if result.shape[0] != 1 or result.shape[-1] != high - low:
            raise ValueError(
                f"model output shape {tuple(result.shape)} does not keep the batch of 1 and the "
                f"{high - low} input frames"
            )
        if output is None:
            output = np.empty((*result.shape[1:-1], total), dtype=np.float32)
        output[..., start:stop] = result[0, ..., start - low : stop - low].float().cpu().numpy()
    if output is None:
        raise ValueError("cannot run a model on a spectrogram with 0 frames")
    return output


def _wave_tensor(wave: np.ndarray) -> torch.Tensor:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [n], got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("expected a non-empty waveform")
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def separation_masks(
    separator: torch.nn.Module,
    magnitude: torch.Tensor,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The separator's masks M ``[I, N_BINS, T]`` for a magnitude spectrogram X ``[N_BINS, T]``."""
    overlap = context_frames(separator) if overlap_frames is None else overlap_frames
    separator.eval()
    return apply_chunked(
        separator, magnitude, chunk_frames, overlap, _model_device(separator), progress
    )


def transcription_probabilities(
    transcriptor: torch.nn.Module,
    magnitude: torch.Tensor,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int | None = None,
) -> np.ndarray:
    """The transcriptor's piano rolls p ``[I, 88, T]`` for X ``[N_BINS, T]``."""
    overlap = context_frames(transcriptor) if overlap_frames is None else overlap_frames
    transcriptor.eval()
    return apply_chunked(
        transcriptor, magnitude, chunk_frames, overlap, _model_device(transcriptor)
    )


def masks_to_waveforms(masks: np.ndarray, mixture_spec: torch.Tensor, length: int) -> np.ndarray:
    """Ŝ_i = M_i ⊙ X with the mixture phase, then the sqrt-Hann iSTFT: ``[I, length]`` float32.

    Multiplying the complex mixture STFT by a real mask scales its magnitude and keeps its phase.
    """
    spec = torch.from_numpy(masks).to(torch.float32) * mixture_spec[None]
    with torch.no_grad():
        return istft(spec, length).numpy().astype(np.float32, copy=False)


def separate_waveform(
    separator: torch.nn.Module,
    wave: np.ndarray,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int | None = None,
) -> np.ndarray:
    """Separate a 16 kHz mono mixture into ``[I, n]`` source waveforms.

    Args:
        separator: a ``train.model.Separator`` (X ``[B, N_BINS, T]`` -> M ``[B, I, N_BINS, T]``).
        wave: the mixture, ``[n]`` at 16 kHz.
        chunk_frames: centre frames per chunk.
        overlap_frames: context frames per side; default: the model's half receptive field, which
            makes the result independent of ``chunk_frames``.
    """
    wave_t = _wave_tensor(wave)
    with torch.no_grad():
        mixture_spec = stft(wave_t)
    masks = separation_masks(separator, mixture_spec.abs(), chunk_frames, overlap_frames)
    return masks_to_waveforms(masks, mixture_spec, len(wave_t))


def transcribe_waveform(
    transcriptor: torch.nn.Module,
    wave: np.ndarray,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int | None = None,
) -> np.ndarray:
    """Piano-roll probabilities ``[I, 88, T]`` of a 16 kHz mono recording (T = 1 + n // 500)."""
    with torch.no_grad():
        magnitude = stft(_wave_tensor(wave)).abs()
    return transcription_probabilities(transcriptor, magnitude, chunk_frames, overlap_frames)


# --------------------------------------------------------------------------------------------
# Stems at the input's sample rate and channels
# --------------------------------------------------------------------------------------------


def input_stft_size(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the input-rate STFT: the models' window length in seconds
    (``N_FFT`` samples at 16 kHz, 128 ms; an even count), hop a quarter of it (a Hann window at
    75 % overlap reconstructs exactly)."""
    n_fft = 2 * max(1, round(N_FFT * sample_rate / SAMPLE_RATE / 2))
    return n_fft, n_fft // 4


def masks_on_grid(masks: np.ndarray, n_fft: int, hop: int, sample_rate: int,
                  n_frames: int) -> np.ndarray:
    """The model's masks ``[I, N_BINS, T]`` (16 kHz grid: bins of 16000 / N_FFT Hz, frames every
    HOP_LENGTH / 16000 s) on another STFT grid, ``[I, n_fft // 2 + 1, n_frames]``, by linear
    interpolation in frequency and time. Above 8 kHz, where the model sees nothing, each
    instrument keeps the mask of the highest band it was given (its 8 kHz bin)."""
    masks = np.asarray(masks, dtype=np.float32)
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    model_bins = np.minimum(freqs / (SAMPLE_RATE / N_FFT), N_BINS - 1)
    times = np.arange(n_frames) * (hop / sample_rate)
    model_frames = np.minimum(times * (SAMPLE_RATE / HOP_LENGTH), masks.shape[-1] - 1)

    def interp(array: np.ndarray, position: np.ndarray, axis: int) -> np.ndarray:
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, array.shape[axis] - 1)
        weight = (position - low).astype(np.float32)
        shape = [1] * array.ndim
        shape[axis] = -1
        weight = weight.reshape(shape)
        return (np.take(array, low, axis=axis) * (1 - weight)
                + np.take(array, high, axis=axis) * weight)

    return interp(interp(masks, model_bins, axis=1), model_frames, axis=2).astype(np.float32)


def stems_at_input_rate(masks: np.ndarray, audio: np.ndarray, sample_rate: int,
                        progress: bool = False) -> np.ndarray:
    """Stems ``[I, channels, n]`` of ``audio [channels, n]`` at its own rate and channels:
    each channel's STFT (:func:`input_stft_size`) times each instrument's mask on that grid
    (:func:`masks_on_grid`), inverted with the input's phase.

    The STFT reconstructs exactly, so the stems sum to ``iSTFT((Σ_i M_i) ⊙ X)``: the input
    itself wherever the masks sum to 1, and otherwise off by exactly what the masks leave out
    or add (the separator's masks are per-instrument sigmoids, not a partition), the same
    deviation its 16 kHz estimates have from the 16 kHz mixture.
    """
    audio_t = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    n_fft, hop = input_stft_size(sample_rate)
    window = torch.hann_window(n_fft)
    with torch.no_grad():
        spec = torch.stft(audio_t, n_fft, hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)
    on_grid = masks_on_grid(masks, n_fft, hop, sample_rate, spec.shape[-1])
    stems = np.empty((on_grid.shape[0], *audio.shape), dtype=np.float32)
    for i in tqdm(range(on_grid.shape[0]), desc="stems", unit="stem", disable=not progress,
                  dynamic_ncols=True):
        with torch.no_grad():
            masked = spec * torch.from_numpy(on_grid[i])[None]
            stems[i] = torch.istft(masked, n_fft, hop, window=window, center=True,
                                   length=audio.shape[-1]).numpy()
    return stems


# --------------------------------------------------------------------------------------------
# MIDI output
# --------------------------------------------------------------------------------------------


def gm_program(instrument: str) -> int:
    """General MIDI program (0-based) for an instrument class name; unknown names get piano (0)."""
    return GM_PROGRAMS.get(instrument.lower(), 0)


def roll_to_pretty_midi(
    prob: np.ndarray,
    instruments: Sequence[str],
    threshold: float = 0.5,
    min_duration_frames: int = 2,
) -> pretty_midi.PrettyMIDI:
    """Turn piano-roll probabilities ``[I, 88, T]`` into a MIDI file, one instrument per class.

    Notes come from :func:`train.metrics.roll_to_notes` (threshold, minimum duration in frames);
    every note gets velocity ``NOTE_VELOCITY``. Programs follow ``GM_PROGRAMS``.
    """
    prob = np.asarray(prob)
    if prob.ndim != 3 or prob.shape[0] != len(instruments):
        raise ValueError(
            f"expected probabilities [I={len(instruments)}, 88, T], got shape {prob.shape}"
        )
    midi = pretty_midi.PrettyMIDI()
    for name, roll in zip(instruments, prob, strict=True):
        track = pretty_midi.Instrument(program=gm_program(name), name=name)
        intervals, pitches_hz = roll_to_notes(roll, threshold, min_duration_frames)
        for (start, end), hz in zip(intervals, pitches_hz, strict=True):
            pitch = int(round(pretty_midi.hz_to_note_number(hz)))
            track.notes.append(pretty_midi.Note(NOTE_VELOCITY, pitch, float(start), float(end)))
        midi.instruments.append(track)
    return midi


# --------------------------------------------------------------------------------------------
# Files in, files out
# --------------------------------------------------------------------------------------------


def load_model_and_instruments(
    path: str | Path, kind: str, device: str | torch.device = "cpu"
) -> tuple[ScoreCriticModel, list[str]]:
    """Load a ``kind`` model ("separator" or "transcriptor") and its instrument names.

    The names come from the checkpoint's ``instruments`` entry, or ``DEFAULT_INSTRUMENTS`` when the
    checkpoint has none.

    Raises:
        CheckpointError: missing or unreadable file, or a checkpoint of another kind.
    """
    payload = read_checkpoint(path)
    model = load_model(path, expected_kind=kind)
    instruments = [str(name) for name in (payload.get("instruments") or DEFAULT_INSTRUMENTS)]
    if len(instruments) != model.n_instruments:
        raise CheckpointError(
            f"{path}: the model has {model.n_instruments} instruments but the checkpoint names "
            f"{len(instruments)}: {instruments}"
        )
    return model.to(device).eval(), instruments


class OutputError(ValueError):
    """An output path :func:`separate` or :func:`transcribe` cannot write to (checked before
    any work is done)."""


def check_output(path: Path, folder: bool) -> None:
    """Refuse an output ``path`` of the wrong kind: a file where a folder is wanted, a folder
    where a file is, or a parent that is a file.

    Raises:
        OutputError: naming the path.
    """
    wanted = "a folder" if folder else "a file"
    if path.exists() and path.is_dir() != folder:
        found = "a folder" if path.is_dir() else "a file"
        raise OutputError(f"{path}: is {found}; --out must name {wanted}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: {parent} is a file, not a folder")
            break


def separate(
    checkpoint: str | Path,
    audio_path: str | Path,
    out_dir: str | Path,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    device: str | torch.device = "cpu",
    model_rate: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Separate an audio file with a separator checkpoint into ``out_dir/<instrument>.wav``.

    The model separates the 16 kHz mono downmix (:func:`load_audio`). By default each stem is
    then written at the input's sample rate and channel count: the instrument's mask, carried
    to the input's STFT grid, applied to every input channel (:func:`stems_at_input_rate`), so
    the stems sum back to the input wherever the masks sum to 1. With ``model_rate`` the stems
    are the model's own 16 kHz mono estimates (what ``train evaluate`` scores). WAVs are 32-bit
    float (no clipping of loud estimates). ``progress``: tqdm bars for long files (more than
    one chunk of ``chunk_frames`` frames).
    """
    out_dir = Path(out_dir)
    check_output(out_dir, folder=True)
    separator, instruments = load_model_and_instruments(checkpoint, "separator", device)
    audio, sample_rate = read_audio(audio_path)
    wave = to_model_rate(audio, sample_rate)
    wave_t = _wave_tensor(wave)
    with torch.no_grad():
        mixture_spec = stft(wave_t)
    masks = separation_masks(separator, mixture_spec.abs(), chunk_frames, progress=progress)
    if model_rate or (sample_rate == SAMPLE_RATE and audio.shape[0] == 1):
        sources = masks_to_waveforms(masks, mixture_spec, len(wave))[:, None]  # [I, 1, n]
        rate = SAMPLE_RATE
    else:
        long = mixture_spec.shape[-1] > chunk_frames
        sources = stems_at_input_rate(masks, audio, sample_rate, progress and long)
        rate = sample_rate
    written = []
    for name, source in zip(instruments, sources, strict=True):
        path = out_dir / f"{name}.wav"
        atomic_write(
            path,
            lambda f, source=source: soundfile.write(
                f, source.T, rate, subtype="FLOAT", format="WAV"
            ),
        )
        written.append(path)
    return written


def transcribe(
    checkpoint: str | Path,
    audio_path: str | Path,
    out_mid: str | Path,
    threshold: float = 0.5,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    device: str | torch.device = "cpu",
) -> Path:
    """Transcribe an audio file with a transcriptor checkpoint into a multi-instrument MIDI file."""
    out_mid = Path(out_mid)
    check_output(out_mid, folder=False)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    transcriptor, instruments = load_model_and_instruments(checkpoint, "transcriptor", device)
    wave = load_audio(audio_path)
    prob = transcribe_waveform(transcriptor, wave, chunk_frames)
    midi = roll_to_pretty_midi(prob, instruments, threshold)
    return atomic_write(out_mid, midi.write)


__all__ = [
    "AudioError",
    "OutputError",
    "check_output",
    "DEFAULT_CHUNK_FRAMES",
    "apply_chunked",
    "context_frames",
    "gm_program",
    "input_stft_size",
    "load_audio",
    "load_model_and_instruments",
    "masks_on_grid",
    "read_audio",
    "stems_at_input_rate",
    "to_model_rate",
    "masks_to_waveforms",
    "roll_to_pretty_midi",
    "separate",
    "separate_waveform",
    "separation_masks",
    "transcribe",
    "transcribe_waveform",
    "transcription_probabilities",
]
