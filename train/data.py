"""Training windows read straight from the shards.

Every training example is a 4-second window (``WINDOW_FRAMES`` = 129 frames) of one track. The
features were computed offline (``prep build-shards``), so a window is a slice of HDF5 datasets:
no STFT or piano-roll work happens on the CPU per step (the supervised target's STFT of the
stems is taken on the training device, see ``train.trainer``).

Sampling is a pure function of ``(seed, epoch, step, rank)``: the windows of a given step are the
same whether the run was interrupted and resumed or not, and each DDP rank draws its own. Tracks
are drawn in proportion to their length in frames (so every frame of the training split is
equally likely to be seen), then a start frame uniformly within the track.

Batches are channel-major, as the models expect (see docs/ARCHITECTURE.md):

* ``X`` float32 ``[B, N_BINS, T]``: mixture magnitude STFT,
* ``Y`` float32 ``[B, I, 88, T]``: piano roll per instrument,
* ``A`` bool ``[B, I, N_BINS, T]``: harmonic activity (eq. 7's A[f, t]),
* ``activity`` bool ``[B, I, T]``: frame-level instrument activity,
* ``stems`` float32 ``[B, I, L]``: padded stem audio whose ``stft(center=False)`` gives exactly
  the window's frames (only when asked for, for the supervised system).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from prep.features import WINDOW_FRAMES
from train.preemption import ignore_stop_signals

# Shard fields (time-major) -> batch keys (channel-major).
FRAME_FIELDS = {"spec": "X", "roll": "Y", "harmonic_mask": "A", "activity": "activity"}
SAMPLE_FIELDS = {"stems": "stems"}
# Seed-sequence tag that keeps validation windows independent of every training step.
_VALIDATION_TAG = 0x7A11D


@dataclass(frozen=True)
class Window:
    """One training example: ``n_frames`` frames of track ``track_index`` from ``start``."""

    track_index: int
    start: int


def _generator(*key: int) -> torch.Generator:
    """A torch generator seeded from a tuple of non-negative integers (e.g. seed, epoch, step)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def track_frame_counts(shards) -> np.ndarray:
    """Number of frames of every track of a ``ShardSet`` (the sampling weights)."""
    return np.asarray([int(track.n_frames) for track in shards.tracks], dtype=np.int64)


def draw_windows(
    frame_counts: np.ndarray,
    count: int,
    generator: torch.Generator,
    window_frames: int = WINDOW_FRAMES,
) -> list[Window]:
    """Draw ``count`` windows: track in proportion to its frames, start uniform within the track.

    A track shorter than a window starts at 0 (the reader zero-pads past the end).
    """
    if len(frame_counts) == 0:
        raise ValueError("cannot draw training windows: the shard split holds no tracks")
    weights = torch.as_tensor(frame_counts, dtype=torch.float64)
    tracks = torch.multinomial(weights, count, replacement=True, generator=generator)
    last_start = torch.clamp(torch.as_tensor(frame_counts)[tracks] - window_frames, min=0)
    # uniform integer in [0, last_start] from a uniform float (one draw per window)
    unit = torch.rand(count, generator=generator, dtype=torch.float64)
    starts = torch.minimum((unit * (last_start + 1)).long(), last_start)
    return [Window(int(t), int(s)) for t, s in zip(tracks.tolist(), starts.tolist(), strict=True)]


def training_windows(
    frame_counts: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    step: int,
    rank: int = 0,
) -> list[Window]:
    """The windows of one training batch, determined by ``(seed, epoch, step, rank)`` alone."""
    return draw_windows(frame_counts, batch_size, _generator(seed, epoch, step, rank))


def validation_windows(shards, count: int, seed: int) -> list[Window]:
    """A fixed, seeded set of ``count`` windows of the (validation) split ``shards``."""
    return draw_windows(track_frame_counts(shards), count, _generator(_VALIDATION_TAG, seed))


def validation_batches(
    shards, fields: Sequence[str], count: int, seed: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """The :func:`validation_windows` of ``shards`` read in batches of ``batch_size``, in order:
    the fixed windows the trainer validates on, for diagnostics outside the trainer.

    Example::

        for batch in validation_batches(ShardSet("data", "validation"), ("spec",), 64, 0, 8):
            X = batch["X"]  # [8, F, T]
    """
    dataset = WindowDataset(shards, fields)
    for windows in FixedBatchSampler(validation_windows(shards, count, seed), batch_size):
        yield dataset[windows]


class WindowDataset(Dataset):
    """Map-style dataset: a list of :class:`Window` in, one batch dict out.

    Indexed by a whole batch of windows (used with :class:`EpochBatchSampler` as the DataLoader's
    ``sampler`` and ``batch_size=None``), so a worker reads and stacks a full batch and the main
    process receives ready tensors. ``ShardSet`` opens its HDF5 files lazily, so every worker gets
    its own handles.

    Args:
        shards: a ``prep.shards.ShardSet``.
        fields: shard fields to read: any of ``spec``, ``roll``, ``harmonic_mask``, ``activity``
            (frame fields) and ``stems`` (audio, for the supervised target).
        window_frames: frames per window (129 = 4 s).
    """

    def __init__(self, shards, fields: Sequence[str], window_frames: int = WINDOW_FRAMES):
        unknown = set(fields) - set(FRAME_FIELDS) - set(SAMPLE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown shard fields {sorted(unknown)}; "
                f"known: {sorted(FRAME_FIELDS) + sorted(SAMPLE_FIELDS)}"
            )
        self.shards = shards
        self.frame_fields = tuple(f for f in FRAME_FIELDS if f in fields)
        self.sample_fields = tuple(f for f in SAMPLE_FIELDS if f in fields)
        self.window_frames = window_frames
        if self.sample_fields:
            missing = [t.track_id for t in shards.tracks if not t.has_stems]
            if missing:
                raise ValueError(
                    f"the shards under {shards.root} ({len(missing)} tracks, e.g. {missing[0]}) "
                    "hold no stems, which supervised training needs: rebuild them with "
                    "`prep build-shards --stems all`"
                )

    def _read_time_major(self, window: Window) -> dict[str, np.ndarray]:
        """One window as stored: frame fields time-major ``[T, C...]``, stems ``[I, L]``."""
        item: dict[str, np.ndarray] = {}
        if self.frame_fields:
            frames = self.shards.read_frames(
                window.track_index, window.start, self.window_frames, self.frame_fields
            )
            for field in self.frame_fields:
                item[FRAME_FIELDS[field]] = np.asarray(frames[field])
        if self.sample_fields:
            samples = self.shards.read_samples(
                window.track_index, window.start, self.window_frames, fields=self.sample_fields
            )
            for field in self.sample_fields:
                item[SAMPLE_FIELDS[field]] = np.asarray(samples[field], dtype=np.float32)
        return item

    def read_window(self, window: Window) -> dict[str, np.ndarray]:
        """Read one window, channel-major (``[C..., T]``) numpy arrays keyed by batch name."""
        item = self._read_time_major(window)
        for key in FRAME_FIELDS.values():
            if key in item:
                # time axis first in the shard -> last for the models
                item[key] = np.moveaxis(item[key], 0, -1)
        return item

    def __getitem__(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        items = [self._read_time_major(w) for w in windows]
        batch = {}
        for key in items[0]:
            # Stack time-major (contiguous copies), then move time last in torch: one blocked
            # transpose per batch instead of numpy's strided copy of every window (which was
            # 43% of a worker's time, benchmarks/perf/loading.py).
            stacked = np.stack([item[key] for item in items])
            if stacked.dtype != np.bool_:
                stacked = stacked.astype(np.float32, copy=False)
            tensor = torch.from_numpy(stacked)
            if key in FRAME_FIELDS.values():
                tensor = tensor.movedim(1, -1)
            batch[key] = tensor.contiguous()
        if "Y" in batch:
            batch["Y"] = batch["Y"].float()  # BCE targets
        return batch

    def __len__(self) -> int:  # not meaningful for window lists; DataLoader never calls it
        raise TypeError("WindowDataset is indexed by window lists from a batch sampler")


class EpochBatchSampler(Sampler):
    """Yields the window lists of steps ``start_step .. steps-1`` of one epoch for one rank."""

    def __init__(
        self, frame_counts: np.ndarray, batch_size: int, steps: int, seed: int, rank: int = 0
    ):
        self.frame_counts = frame_counts
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (and the step to start from, for a resumed run)."""
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[list[Window]]:
        for step in range(self.start_step, self.steps):
            yield training_windows(
                self.frame_counts, self.batch_size, self.seed, self.epoch, step, self.rank
            )

    def __len__(self) -> int:
        return self.steps - self.start_step


class FixedBatchSampler(Sampler):
    """Yields a fixed window list in batches (validation)."""

    def __init__(self, windows: list[Window], batch_size: int):
        self.windows, self.batch_size = windows, batch_size

    def __iter__(self) -> Iterator[list[Window]]:
        for i in range(0, len(self.windows), self.batch_size):
            yield self.windows[i : i + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)


def make_loader(
    dataset: WindowDataset, sampler: Sampler, workers: int, pin_memory: bool
) -> DataLoader:
    """DataLoader whose workers read whole batches (``batch_size=None``), kept alive across epochs.

    Workers are forked/spawned with a pickled copy of the ``ShardSet``, which reopens the HDF5
    files in each worker. Batches arrive in sampler order, so training is deterministic whatever
    the number of workers. Workers ignore SIGTERM and SIGUSR1 (:mod:`train.preemption`).
    """
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        # its own generator: creating an iterator must not draw from the global torch RNG,
        # which dropout uses (a resumed run would otherwise diverge)
        generator=torch.Generator().manual_seed(0),
        # a scheduler's stop signal reaches workers too; the main process stops them once saved
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )


def stop_workers(loader: DataLoader) -> None:
    """Stop a ``make_loader`` loader's persistent workers now (the next epoch would fork new ones).

    Left to the garbage collector, they outlive training: processes forked later (another
    loader's workers) inherit the live iterator, and its shutdown runs at an arbitrary moment,
    in whichever process collects it. torch has no public call for this; ``_iterator`` is where
    a DataLoader keeps its persistent workers' iterator.
    """
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` (non-blocking from pinned memory); bool masks become float."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        out[key] = value.float() if value.dtype == torch.bool and key == "A" else value
    return out
