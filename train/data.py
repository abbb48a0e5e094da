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

On a GPU the loader workers deliver the batch as stored instead (``decode_on_device``: float16
spec, bit-packed mask, time-major; a third of the bytes) and :func:`to_device` decodes it on the
device into exactly the batch above: a worker then reads ~15k windows per CPU-second, the rate
of a raw memory-mapped read (reports/bench/findings/34-window-loading.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from prep.features import N_BINS, WINDOW_FRAMES
from train.preemption import ignore_stop_signals

# Shard fields (time-major) -> batch keys (channel-major).
FRAME_FIELDS = {"spec": "X", "roll": "Y", "harmonic_mask": "A", "activity": "activity"}
SAMPLE_FIELDS = {"stems": "stems"}
# Frame fields as stored (time-major, spec float16, harmonic mask bit-packed) -> the key of a
# "stored" batch, which ``decode_batch`` turns into the batch keys above.
STORED_PREFIX = "stored_"
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


def stack_time_major(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Per-window arrays (frame fields time-major, ``[T, ...]``) stacked into one batch with time
    last (``[B, ..., T]``), float32 except boolean masks, ``Y`` as float BCE targets.

    Stacks time-major (contiguous copies), then moves time last in torch: one blocked transpose
    per batch instead of numpy's strided copy of every window (which was 43 % of a worker's
    time, benchmarks/perf/loading.py).
    """
    batch = {}
    for key in items[0]:
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
        decode_on_device: deliver stored batches (:meth:`read_stored`) and leave the decoding
            (float16 -> float32, mask unpacking, time axis last) to :func:`to_device`, on the
            training device: the same batch there, bit for bit, at a fraction of a loader
            worker's CPU time (the decoding is ~3/4 of it, and a third of the bytes to copy).
    """

    def __init__(
        self,
        shards,
        fields: Sequence[str],
        window_frames: int = WINDOW_FRAMES,
        decode_on_device: bool = False,
    ):
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
        self.decode_on_device = decode_on_device
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

    def _stored_buffer(self, windows: Sequence[Window], field: str) -> np.ndarray:
        """An uninitialised [B, T, ...] buffer in the stored dtype of ``field`` (the harmonic
        mask always bit-packed)."""
        tail, dtype = self.shards.stored_frame_field(windows[0].track_index, field)
        if field == "harmonic_mask":
            tail, dtype = tail[:-1] + ((N_BINS + 7) // 8,), np.dtype(np.uint8)
        return np.empty((len(windows), self.window_frames) + tuple(tail), dtype=dtype)

    def _read_stored_mask(self, window: Window, out: np.ndarray) -> None:
        """One window's harmonic mask bit-packed into ``out`` (packed in the shard or not)."""
        bins = self.shards.packed_bins(window.track_index)
        if bins is not None:
            if bins != N_BINS:
                raise ValueError(f"harmonic mask of {bins} bins; the models take {N_BINS}")
            self.shards.read_stored_frames(
                window.track_index, window.start, self.window_frames, "harmonic_mask", out
            )
            return
        tail, dtype = self.shards.stored_frame_field(window.track_index, "harmonic_mask")
        bools = np.empty((self.window_frames,) + tuple(tail), dtype=dtype)
        self.shards.read_stored_frames(
            window.track_index, window.start, self.window_frames, "harmonic_mask", bools
        )
        out[...] = np.packbits(bools, axis=-1)

    def read_stored(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        """A batch as stored, time-major: ``stored_spec`` float16 [B, T, F] (the shard's spec
        dtype), ``stored_roll`` bool [B, T, I, 88], ``stored_harmonic_mask`` uint8 [B, T, I,
        ceil(F/8)] (``np.packbits`` on the bins), ``stored_activity`` bool [B, T, I], and
        ``stems`` as in :meth:`__getitem__`. :func:`decode_batch` makes the model batch of it.

        One copy per window and field into preallocated batch buffers, through
        ``ShardSet.read_stored_frames`` (memory-mapped spec chunks, cached decompressed mask
        chunks), no per-window dtype conversion.
        """
        batch: dict[str, torch.Tensor] = {}
        for field in self.frame_fields:
            buffer = self._stored_buffer(windows, field)
            for row, window in zip(buffer, windows, strict=True):
                if field == "harmonic_mask":
                    self._read_stored_mask(window, row)
                else:
                    self.shards.read_stored_frames(
                        window.track_index, window.start, self.window_frames, field, row
                    )
            batch[STORED_PREFIX + field] = torch.from_numpy(buffer)
        if self.sample_fields:
            for key, value in self._read_samples(windows).items():
                batch[key] = value
        return batch

    def _read_samples(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        """The sample fields (stems) of a batch, float32 [B, I, L]."""
        out: dict[str, torch.Tensor] = {}
        for field in self.sample_fields:
            rows = [
                self.shards.read_samples(w.track_index, w.start, self.window_frames, (field,))
                for w in windows
            ]
            out[SAMPLE_FIELDS[field]] = torch.from_numpy(
                np.stack([np.asarray(r[field], dtype=np.float32) for r in rows])
            )
        return out

    def __getitem__(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        stored = self.read_stored(windows)
        return stored if self.decode_on_device else decode_batch(stored)

    def read_batch_reference(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        """The batch through ``ShardSet.read_frames`` window by window (the reader before
        :meth:`read_stored`; kept as the reference its output is tested against)."""
        return stack_time_major([self._read_time_major(w) for w in windows])

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


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """``np.unpackbits(packed, axis=-1, count=count).view(bool)`` in torch (any device)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :count].bool()


def _time_last(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, ...] -> contiguous [B, ..., T] of ``dtype``: one strided copy with the conversion
    (cheaper than converting, then transposing)."""
    moved = value.movedim(1, -1)
    return torch.empty(moved.shape, dtype=dtype, device=value.device).copy_(moved)


def decode_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model batch of a :meth:`WindowDataset.read_stored` batch, on the batch's device:
    ``X`` float32 [B, F, T], ``Y`` float32 [B, I, 88, T], ``A`` bool [B, I, F, T],
    ``activity`` bool [B, I, T], other keys as they are. Every conversion is exact (float16 ->
    float32, bits -> bools, transposes), so the batch is the same bit for bit wherever it runs.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if not key.startswith(STORED_PREFIX):
            out[key] = value
            continue
        field = key[len(STORED_PREFIX) :]
        if field == "spec":
            out["X"] = _time_last(value, torch.float32)
        elif field == "roll":
            out["Y"] = _time_last(value, torch.float32)
        elif field == "harmonic_mask":
            out["A"] = _time_last(unpack_bits(value, N_BINS), torch.bool)
        elif field == "activity":
            out["activity"] = _time_last(value, torch.bool)
        else:
            raise ValueError(f"unknown stored field {field!r}")
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` (non-blocking from pinned memory) and decode a stored batch
    there (:func:`decode_batch`); bool masks become float."""
    moved = decode_batch({key: value.to(device, non_blocking=True) for key, value in batch.items()})
    return {
        key: value.float() if value.dtype == torch.bool and key == "A" else value
        for key, value in moved.items()
    }
