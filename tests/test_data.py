"""Training windows from shards (train/data.py) on a tiny synthetic shard set.

``write_synthetic_shards`` is also used by tests/test_trainer.py, tests/test_ddp.py and
benchmarks/perf/train_throughput.py: a few tracks of harmonic sinusoid notes for three instruments with their
real features (prep.features), written with prep.shards.ShardWriter.
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from prep.features import (
    HOP_LENGTH,
    N_BINS,
    N_FFT,
    SAMPLE_RATE,
    FeatureParams,
    harmonic_mask,
    magnitude_spectrogram,
    midi_to_hz,
    n_frames,
    piano_roll,
    stft,
)
from prep.shards import ShardSet, ShardWriter, TrackArrays, manifest_from_shards, write_manifest
from train.data import (
    EpochBatchSampler,
    FixedBatchSampler,
    Window,
    WindowDataset,
    draw_windows,
    make_loader,
    track_frame_counts,
    training_windows,
    validation_batches,
    validation_windows,
)

INSTRUMENTS = ("piano", "guitar", "bass")
# (lowest, highest MIDI pitch, harmonic amplitude decay exponent) per instrument: distinct
# registers and timbres, so a transcriptor can tell them apart.
_VOICES = {"piano": (55, 79, 1.5), "guitar": (52, 76, 0.6), "bass": (28, 47, 1.0)}


def synthetic_track(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, list]:
    """Stems [I, n] of random harmonic notes, and the notes per instrument."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    stems = np.zeros((len(INSTRUMENTS), n), dtype=np.float64)
    notes_per_inst = []
    for i, name in enumerate(INSTRUMENTS):
        low, high, decay = _VOICES[name]
        notes, onset = [], float(rng.uniform(0, 0.5))
        while onset < seconds - 0.3:
            length = float(rng.uniform(0.25, 0.9))
            if rng.random() < 0.8:  # sometimes a rest
                pitch = int(rng.integers(low, high + 1))
                end = min(onset + length, seconds)
                notes.append((pitch, onset, end))
                sel = (t >= onset) & (t < end)
                f0 = midi_to_hz(pitch)
                for h in range(1, 9):
                    if f0 * h < SAMPLE_RATE / 2:
                        stems[i, sel] += np.sin(2 * np.pi * f0 * h * t[sel]) / h**decay
            onset += length + float(rng.uniform(0, 0.3))
        notes_per_inst.append(notes)
    return (0.1 * stems).astype(np.float32), notes_per_inst


def write_synthetic_shards(
    root: Path,
    n_train: int = 3,
    n_val: int = 2,
    seconds: float = 10.0,
    seed: int = 0,
    stems: bool = False,
) -> Path:
    """A shard folder with ``train`` and ``validation`` splits of synthetic tracks; with
    ``stems`` every track stores its stems (the supervised reference's shards), else none (what
    the weakly supervised steps accept)."""
    rng = np.random.default_rng(seed)
    params = FeatureParams()
    source = {"source_corpus": "synthetic-test", "split_scheme": "test",
              "stems_mode": "all" if stems else "none"}
    for split, count in (("train", n_train), ("validation", n_val)):
        with ShardWriter(
            root / split / f"{split}-00000.h5",
            split=split,
            instruments=list(INSTRUMENTS),
            feature_params=params,
            source=source,
        ) as writer:
            for k in range(count):
                writer.add_track(
                    synthetic_track_arrays(rng, seconds, f"Track{split[0]}{k:03d}", stems)
                )
    write_manifest(root, manifest_from_shards(root))
    return root


def synthetic_track_arrays(
    rng: np.random.Generator, seconds: float, track_id: str, stems: bool = True
) -> TrackArrays:
    """One synthetic track with its real features, ready for ``ShardWriter.add_track``."""
    stem_audio, notes = synthetic_track(rng, seconds)
    mix = stem_audio.sum(0)
    frames = n_frames(len(mix))
    roll = np.stack([piano_roll(nt, frames) for nt in notes], axis=1)  # [T, I, 88]
    return TrackArrays(
        track_id=track_id,
        mix=mix,
        stems=stem_audio if stems else None,
        spec=magnitude_spectrogram(mix),
        roll=roll,
        harmonic_mask=harmonic_mask(roll),
        activity=roll.any(-1),
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_synthetic_shards(
        tmp_path_factory.mktemp("shards"), n_train=3, n_val=2, seconds=6.0, stems=True
    )


def test_windows_depend_only_on_seed_epoch_step_rank():
    counts = np.array([300, 1000, 129, 50])
    a = training_windows(counts, 16, seed=3, epoch=2, step=5, rank=0)
    assert a == training_windows(counts, 16, seed=3, epoch=2, step=5, rank=0)
    for other in [
        dict(seed=4, epoch=2, step=5, rank=0),
        dict(seed=3, epoch=1, step=5, rank=0),
        dict(seed=3, epoch=2, step=6, rank=0),
        dict(seed=3, epoch=2, step=5, rank=1),
    ]:
        assert a != training_windows(counts, 16, **other)


def test_windows_in_range_and_proportional_to_length():
    counts = np.array([1000, 3000, 129, 60])
    gen = torch.Generator().manual_seed(0)
    windows = draw_windows(counts, 20000, gen)
    for w in windows:
        assert 0 <= w.start <= max(counts[w.track_index] - 129, 0)
    freq = Counter(w.track_index for w in windows)
    expected = counts / counts.sum() * len(windows)
    for track, exp in enumerate(expected):
        assert abs(freq[track] - exp) < 5 * np.sqrt(exp) + 1
    # starts cover the whole admissible range of the long track
    starts = [w.start for w in windows if w.track_index == 1]
    assert min(starts) < 50 and max(starts) > 3000 - 129 - 50
    assert {w.start for w in windows if w.track_index == 3} == {0}


def test_window_batch_matches_shard_arrays_transposed(shards):
    train = ShardSet(shards, "train")
    dataset = WindowDataset(train, ("spec", "roll", "harmonic_mask", "activity", "stems"))
    windows = [Window(0, 17), Window(2, 40)]
    batch = dataset[windows]
    assert batch["X"].shape == (2, N_BINS, 129) and batch["X"].dtype == torch.float32
    assert batch["Y"].shape == (2, 3, 88, 129) and batch["Y"].dtype == torch.float32
    assert batch["A"].shape == (2, 3, N_BINS, 129) and batch["A"].dtype == torch.bool
    assert batch["activity"].shape == (2, 3, 129)
    track = train.read_track(2, ("spec", "roll", "harmonic_mask", "mix", "stems"))
    np.testing.assert_array_equal(batch["X"][1].numpy(), track["spec"][40:169].T)
    np.testing.assert_array_equal(batch["Y"][1].numpy(), track["roll"][40:169].transpose(1, 2, 0))
    np.testing.assert_array_equal(
        batch["A"][1].numpy(), track["harmonic_mask"][40:169].transpose(1, 2, 0)
    )
    # stems: stft(center=False) of the window's samples gives exactly the window's frames
    stems = batch["stems"][1]
    assert stems.shape == (3, HOP_LENGTH * 128 + N_FFT)
    mag = stft(stems.sum(0), center=False).abs()
    assert mag.shape == (N_BINS, 129)
    np.testing.assert_allclose(mag.numpy(), track["spec"][40:169].T, rtol=2e-3, atol=2e-3)


def test_supervised_without_stems_is_a_clear_error(tmp_path):
    root = write_synthetic_shards(tmp_path / "s", n_train=1, n_val=1, seconds=3.0)
    with pytest.raises(ValueError, match="--stems all"):
        WindowDataset(ShardSet(root, "train"), ("spec", "stems"))


def test_loader_workers_give_the_same_batches_in_order(shards):
    train = ShardSet(shards, "train")
    dataset = WindowDataset(train, ("spec", "roll"))
    frames = track_frame_counts(train)
    sampler = EpochBatchSampler(frames, batch_size=4, steps=5, seed=1)
    sampler.set_epoch(3)
    direct = [dataset[w] for w in sampler]
    pickle.loads(pickle.dumps(train))  # ShardSet travels to workers
    loader = make_loader(dataset, sampler, workers=2, pin_memory=False)
    for epoch in (3, 3):
        sampler.set_epoch(epoch)
        got = list(loader)
        assert len(got) == 5
        for a, b in zip(direct, got, strict=True):
            assert torch.equal(a["X"], b["X"]) and torch.equal(a["Y"], b["Y"])
    sampler.set_epoch(3, start_step=2)  # resume mid-epoch
    assert list(sampler) == [training_windows(frames, 4, 1, 3, step) for step in (2, 3, 4)]


def test_validation_windows_fixed_and_batched(shards):
    val = ShardSet(shards, "validation")
    a, b = validation_windows(val, 10, seed=0), validation_windows(val, 10, seed=0)
    assert a == b and a != validation_windows(val, 10, seed=1)
    batches = list(FixedBatchSampler(a, 4))
    assert [len(x) for x in batches] == [4, 4, 2] and sum(batches, []) == a
    # The diagnostics' reader: the same windows, read in the same batches.
    dataset = WindowDataset(val, ("spec",))
    read = list(validation_batches(val, ("spec",), 10, seed=0, batch_size=4))
    assert [x["X"].shape[0] for x in read] == [4, 4, 2]
    for got, windows in zip(read, batches, strict=True):
        assert torch.equal(got["X"], dataset[windows]["X"])
