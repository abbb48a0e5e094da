"""Tests for train/inference.py: chunked == whole-track inference, audio loading, files out, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile
import torch
from click.testing import CliRunner
from torch import nn

from prep.features import N_BINS, SAMPLE_RATE, istft, stft
from train.cli import main as train_cli
from train.config import ModelConfig
from train.inference import (
    AudioError,
    input_stft_size,
    load_audio,
    masks_on_grid,
    roll_to_pretty_midi,
    separate,
    separate_waveform,
    separation_masks,
    stems_at_input_rate,
    transcribe,
    transcribe_waveform,
)
from train.metrics import roll_to_notes
from train.model import Separator, Transcriptor, save_checkpoint

INSTRUMENTS = ["piano", "guitar", "bass"]
TINY = ModelConfig(bottleneck_channels=8, hidden_channels=16, blocks_per_repeat=3, repeats=2)


class FrameLocalTCN(nn.Module):
    """A stand-in with the models' interface and no normalisation over time: dilated convs with
    a receptive field of 1 + 2 * (1 + 2 + 4) = 15 frames, sigmoid outputs [B, I, K, T]."""

    receptive_field = 15

    def __init__(self, n_out: int, n_instruments: int = 3) -> None:
        super().__init__()
        self.shape = (n_instruments, n_out)
        layers: list[nn.Module] = [nn.Conv1d(N_BINS, 8, 1)]
        for dilation in (1, 2, 4):
            layers += [nn.Conv1d(8, 8, 3, padding=dilation, dilation=dilation), nn.PReLU()]
        layers.append(nn.Conv1d(8, n_instruments * n_out, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        z = self.net(torch.log1p(spec))
        return torch.sigmoid(z.unflatten(1, self.shape))


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_chunked_separation_equals_whole_track() -> None:
    torch.manual_seed(0)
    model = FrameLocalTCN(N_BINS).eval()
    wave = _noise(5.0)  # 161 frames
    whole = separate_waveform(model, wave, chunk_frames=10_000)
    assert whole.shape == (3, len(wave))
    for chunk in (1, 7, 40, 160):
        np.testing.assert_allclose(separate_waveform(model, wave, chunk), whole, atol=1e-5)
    # Too little context changes the result: the test can fail.
    short = separate_waveform(model, wave, chunk_frames=7, overlap_frames=2)
    assert np.abs(short - whole).max() > 1e-3


def test_chunked_transcription_equals_whole_track() -> None:
    torch.manual_seed(1)
    model = FrameLocalTCN(88).eval()
    wave = _noise(4.0, seed=3)
    whole = transcribe_waveform(model, wave, chunk_frames=10_000)
    assert whole.shape == (3, 88, 1 + len(wave) // 500)
    for chunk in (3, 50):
        np.testing.assert_allclose(transcribe_waveform(model, wave, chunk), whole, atol=1e-6)


def test_separation_matches_direct_computation() -> None:
    """Ŝ_i = istft(M_i ⊙ X) computed directly on the whole track, with the real Separator."""
    torch.manual_seed(2)
    model = Separator(TINY).eval()
    wave = _noise(3.0, seed=4)
    with torch.no_grad():
        spec = stft(torch.from_numpy(wave))
        masks = model(spec.abs()[None])[0]
        expected = istft(masks * spec[None], len(wave)).numpy()
    got = separate_waveform(model, wave, chunk_frames=10_000)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_real_model_chunked_equals_whole_track() -> None:
    torch.manual_seed(3)
    model = Transcriptor(TINY).eval()
    wave = _noise(6.0, seed=5)
    wave[: 2 * SAMPLE_RATE] *= 0.01  # a quiet start makes chunk statistics differ
    whole = transcribe_waveform(model, wave, chunk_frames=10_000)
    np.testing.assert_allclose(transcribe_waveform(model, wave, chunk_frames=40), whole, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Audio files
# ------------------------------------------------------------------------------------------


def _stereo_sine_wav(path: Path, sample_rate: int = 44100, seconds: float = 2.0) -> None:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = np.sin(2 * np.pi * 440.0 * t)
    soundfile.write(str(path), np.stack([0.6 * tone, 0.2 * tone], axis=1), sample_rate)


def test_load_audio_resamples_and_downmixes(tmp_path: Path) -> None:
    path = tmp_path / "song.wav"
    _stereo_sine_wav(path)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 2 * SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(wave) == pytest.approx(440.0, abs=1.0)
    # Downmix = mean of the channels: amplitude (0.6 + 0.2) / 2, away from the edges.
    assert np.abs(wave[4000:-4000]).max() == pytest.approx(0.4, abs=0.01)


def test_load_audio_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="missing.wav: no such audio file"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: not a readable audio file"):
        load_audio(empty)
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioError, match="notes.txt: not a readable audio file"):
        load_audio(text)
    no_samples = tmp_path / "zero.wav"
    soundfile.write(str(no_samples), np.zeros((0, 2)), 44100)
    with pytest.raises(AudioError, match="zero.wav: the audio file contains no samples"):
        load_audio(no_samples)


def test_roll_to_pretty_midi() -> None:
    prob = np.zeros((3, 88, 64), dtype=np.float32)
    prob[0, 60 - 21, 4:20] = 0.9  # piano C4
    prob[2, 28 - 21, 10:30] = 0.7  # bass E1
    prob[1, 64 - 21, 5:6] = 0.9  # one-frame guitar blip: below the minimum duration
    midi = roll_to_pretty_midi(prob, INSTRUMENTS)
    assert [(i.name, i.program) for i in midi.instruments] == [
        ("piano", 0),
        ("guitar", 30),
        ("bass", 33),
    ]
    piano, guitar, bass = midi.instruments
    assert [(n.pitch, n.start, n.end) for n in piano.notes] == [(60, 4 / 32, 20 / 32)]
    assert [(n.pitch, n.start, n.end) for n in bass.notes] == [(28, 10 / 32, 30 / 32)]
    assert guitar.notes == []


# ------------------------------------------------------------------------------------------
# Files in, files out (real tiny checkpoints)
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(4)
    extra = {"instruments": INSTRUMENTS}
    return {
        "separator": save_checkpoint(tmp_path / "sep.pt", Separator(TINY), extra),
        "transcriptor": save_checkpoint(tmp_path / "tr.pt", Transcriptor(TINY), extra),
    }


def test_separate_file(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    song = tmp_path / "song.wav"
    _stereo_sine_wav(song)
    paths = separate(checkpoints["separator"], song, tmp_path / "out", model_rate=True)
    assert [p.name for p in paths] == ["piano.wav", "guitar.wav", "bass.wav"]
    wave = load_audio(song)
    expected = separate_waveform(Separator.from_checkpoint(checkpoints["separator"]), wave)
    for path, source in zip(paths, expected, strict=True):
        data, rate = soundfile.read(str(path), dtype="float32")
        assert rate == SAMPLE_RATE
        np.testing.assert_allclose(data, source, atol=1e-6)


def _music(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo ``[2, n]`` test signal with content above 8 kHz: tones, a chirp and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * (500 + 3000 * t) * t)
    right = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.05 * np.sin(2 * np.pi * 12_000 * t)
    noise = 0.02 * rng.standard_normal((2, t.size))
    return (np.stack([left, right]) + noise).astype(np.float32)


def test_stems_at_input_rate_sum_to_the_input_where_the_masks_do() -> None:
    audio = _music(44100, 1.5)
    frames = 1 + int(1.5 * SAMPLE_RATE) // 500
    rng = np.random.default_rng(1)
    raw = rng.random((3, N_BINS, frames)).astype(np.float32)
    partition = raw / raw.sum(axis=0, keepdims=True)  # masks that sum to 1 everywhere
    stems = stems_at_input_rate(partition, audio, 44100)
    assert stems.shape == (3, *audio.shape) and stems.dtype == np.float32
    np.testing.assert_allclose(stems.sum(axis=0), audio, atol=1e-5)
    # masks of the 16 kHz grid carried over: constant masks stay constant, above 8 kHz too
    n_fft, hop = input_stft_size(44100)
    on_grid = masks_on_grid(np.full((2, N_BINS, 5), 0.25, np.float32), n_fft, hop, 44100, 9)
    assert on_grid.shape == (2, n_fft // 2 + 1, 9) and np.allclose(on_grid, 0.25)


def test_separate_writes_stems_at_the_input_rate_that_sum_back_to_it(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    song = tmp_path / "song.wav"
    audio = _music(44100, 2.0)
    soundfile.write(str(song), audio.T, 44100, subtype="FLOAT")
    paths = separate(checkpoints["separator"], song, tmp_path / "out")
    stems = []
    for path in paths:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        assert rate == 44100 and data.shape == (audio.shape[1], 2)
        stems.append(data.T)
    # The stems sum to iSTFT((Σ masks) X): the input, off by at most what the masks' sum
    # misses 1 by (the STFT is a tight frame, so a gain of at most g moves the energy at most g).
    separator = Separator.from_checkpoint(checkpoints["separator"])
    masks = separation_masks(separator, stft(torch.from_numpy(load_audio(song))).abs())
    n_fft, hop = input_stft_size(44100)
    frames = 1 + audio.shape[1] // hop
    mask_error = np.abs(masks_on_grid(masks, n_fft, hop, 44100, frames).sum(axis=0) - 1).max()
    residual = np.linalg.norm(np.sum(stems, axis=0) - audio)
    assert residual <= 1.01 * mask_error * np.linalg.norm(audio) + 1e-4
    # ... and the stems are those masks applied: a mask sum forced to 1 gives the input back
    partition = masks / np.maximum(masks.sum(axis=0, keepdims=True), 1e-8)
    np.testing.assert_allclose(stems_at_input_rate(partition, audio, 44100).sum(axis=0), audio,
                               atol=1e-4)
    # --model-rate: the 16 kHz mono estimates, as before
    model_paths = separate(checkpoints["separator"], song, tmp_path / "m", model_rate=True)
    data, rate = soundfile.read(str(model_paths[0]), dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE and data.shape[1] == 1


def test_transcribe_file(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    song = tmp_path / "song.flac"
    t = np.arange(22050 * 2) / 22050
    soundfile.write(str(song), 0.5 * np.sin(2 * np.pi * 220 * t), 22050)
    out = transcribe(checkpoints["transcriptor"], song, tmp_path / "midi" / "song.mid", 0.5)
    midi = pretty_midi.PrettyMIDI(str(out))
    assert [i.program for i in midi.instruments] == [0, 30, 33]
    prob = transcribe_waveform(
        Transcriptor.from_checkpoint(checkpoints["transcriptor"]), load_audio(song)
    )
    for track, roll in zip(midi.instruments, prob, strict=True):
        intervals, _ = roll_to_notes(roll, 0.5, 2)
        assert len(track.notes) == len(intervals)


def test_checkpoint_kind_is_checked(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    song = tmp_path / "song.wav"
    _stereo_sine_wav(song)
    with pytest.raises(ValueError, match="expected a 'separator'"):
        separate(checkpoints["transcriptor"], song, tmp_path / "out")


def test_cli_separate_and_errors(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    song = tmp_path / "song.wav"
    _stereo_sine_wav(song)
    runner = CliRunner()
    args = ["separate", "--checkpoint", str(checkpoints["separator"]), str(song)]
    result = runner.invoke(train_cli, [*args, "--out", str(tmp_path / "sep")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sep").iterdir()) == [
        "bass.wav",
        "guitar.wav",
        "piano.wav",
    ]
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    result = runner.invoke(
        train_cli,
        [
            "transcribe",
            "--checkpoint",
            str(checkpoints["transcriptor"]),
            str(bad),
            "--out",
            "x.mid",
        ],
    )
    assert result.exit_code != 0
    assert "bad.wav: not a readable audio file" in result.output
    result = runner.invoke(
        train_cli,
        ["separate", "--checkpoint", str(tmp_path / "none.pt"), str(song), "--out", "d"],
    )
    assert result.exit_code != 0 and "none.pt" in result.output
