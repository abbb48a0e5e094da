"""The training reader (``ShardSet.read_stored_frames``, ``WindowDataset.read_stored``, the
decoding in ``train.data.decode_batch`` / ``to_device``) delivers the same batches, bit for bit,
as the reader it replaced, whose code is kept here as the reference, on every storage layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import INSTRUMENTS, synthetic_track_arrays

from prep.features import FeatureParams
from prep.shards import (
    DEFAULT_LAYOUT,
    ShardSet,
    ShardWriter,
    StorageLayout,
    manifest_from_shards,
    write_manifest,
)
from train.data import (
    FRAME_FIELDS,
    EpochBatchSampler,
    Window,
    WindowDataset,
    decode_batch,
    make_loader,
    stack_time_major,
    stop_workers,
    to_device,
    track_frame_counts,
    unpack_bits,
)

ALL_FIELDS = ("spec", "roll", "harmonic_mask", "activity", "stems")
# Track lengths in seconds: one shorter than a window (zero-padded), others several chunks long.
SECONDS = (2.0, 5.0, 9.0)


def reference_batch(
    shards: ShardSet, windows: list[Window], fields=ALL_FIELDS
) -> dict[str, torch.Tensor]:
    """The batch as ``WindowDataset.__getitem__`` built it before the stored reader: per window
    ``ShardSet.read_frames`` / ``read_samples``, stacked time-major, time moved last in torch."""
    items = []
    for w in windows:
        item = {}
        frame_fields = [f for f in FRAME_FIELDS if f in fields]
        if frame_fields:
            frames = shards.read_frames(w.track_index, w.start, 129, frame_fields)
            for field in frame_fields:
                item[FRAME_FIELDS[field]] = np.asarray(frames[field])
        if "stems" in fields:
            samples = shards.read_samples(w.track_index, w.start, 129, fields=("stems",))
            item["stems"] = np.asarray(samples["stems"], dtype=np.float32)
        items.append(item)
    return stack_time_major(items)


def write_shards(root: Path, layout: StorageLayout) -> Path:
    """A train split of three tracks (2, 5 and 9 s) with stems, written with ``layout``."""
    rng = np.random.default_rng(7)
    with ShardWriter(
        root / "train" / "train-00000.h5",
        split="train",
        instruments=list(INSTRUMENTS),
        feature_params=FeatureParams(),
        source={"source_corpus": "synthetic-test", "split_scheme": "test", "stems_mode": "all"},
        layout=layout,
    ) as writer:
        for k, seconds in enumerate(SECONDS):
            writer.add_track(synthetic_track_arrays(rng, seconds, f"Track{k:03d}", stems=True))
    write_manifest(root, manifest_from_shards(root))
    return root


def edge_windows(shards: ShardSet) -> list[Window]:
    """Windows at the start, end, past the end, across chunk borders, and random ones."""
    windows = []
    for index, track in enumerate(shards.tracks):
        last = max(track.n_frames - 129, 0)
        windows += [Window(index, s) for s in {0, 1, 63, 64, 65, last, max(last - 1, 0)}]
        windows.append(Window(index, track.n_frames - 5))  # mostly past the end
    rng = np.random.default_rng(3)
    counts = track_frame_counts(shards)
    for _ in range(16):
        index = int(rng.integers(len(counts)))
        windows.append(Window(index, int(rng.integers(max(counts[index] - 129, 0) + 1))))
    return windows


def assert_batches_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        assert got[key].is_contiguous(), key
        assert torch.equal(got[key], want[key]), key


LAYOUTS = {
    "default": DEFAULT_LAYOUT,
    # h5py fallback (lzf), float32 spec with shuffle+gzip, bool mask, other chunk lengths
    "lzf, chunk 32": StorageLayout(
        chunk_frames=32,
        compression={"spec": "lzf", "roll": "lzf", "harmonic_mask": "lzf", "activity": "lzf"},
    ),
    "f32 spec shuffle+gzip, bool mask, chunk 100": StorageLayout(
        chunk_frames=100,
        spec_dtype="float32",
        bitpack_mask=False,
        compression={
            "spec": "shuffle+gzip1",
            "roll": "none",
            "harmonic_mask": "gzip1",
            "activity": "none",
        },
    ),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout_shards(request, tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("layout"), LAYOUTS[request.param])


@pytest.mark.parametrize("chunk_cache_bytes", [64 * 2**20, 0])
def test_stored_reader_gives_the_reference_batches(layout_shards, chunk_cache_bytes):
    shards = ShardSet(layout_shards, "train", chunk_cache_bytes=chunk_cache_bytes)
    reference = ShardSet(layout_shards, "train")
    windows = edge_windows(shards)
    worker = WindowDataset(shards, ALL_FIELDS)
    stored = WindowDataset(shards, ALL_FIELDS, decode_on_device=True)
    for first in range(0, len(windows), 5):
        batch = windows[first : first + 5]
        want = reference_batch(reference, batch)
        assert_batches_equal(worker[batch], want)
        assert_batches_equal(decode_batch(stored[batch]), want)
        cpu = torch.device("cpu")
        assert_batches_equal(to_device(stored[batch], cpu), to_device(want, cpu))
        assert_batches_equal(worker.read_batch_reference(batch), want)
    assert shards._chunk_cache.bytes <= chunk_cache_bytes


def test_stored_batch_is_the_stored_bytes(tmp_path):
    shards = ShardSet(write_shards(tmp_path / "s", DEFAULT_LAYOUT), "train")
    batch = WindowDataset(shards, ALL_FIELDS, decode_on_device=True)[[Window(1, 20)]]
    assert batch["stored_spec"].dtype == torch.float16
    assert batch["stored_harmonic_mask"].shape == (1, 129, 3, 129)
    assert batch["stored_harmonic_mask"].dtype == torch.uint8
    track = shards.read_track(1, ("spec", "harmonic_mask"))
    np.testing.assert_array_equal(
        batch["stored_harmonic_mask"][0].numpy(),
        np.packbits(track["harmonic_mask"][20:149], axis=-1),
    )
    assert batch["stored_harmonic_mask"].any()  # a test on an empty mask would prove nothing


def test_only_plain_chunks_bypass_h5py(tmp_path):
    shards = ShardSet(write_shards(tmp_path / "s", DEFAULT_LAYOUT), "train")
    modes = {name: shards._frame_reader(2, name).mode for name in FRAME_FIELDS}
    assert modes == {
        "spec": "mmap",
        "roll": "deflate",
        "harmonic_mask": "deflate",
        "activity": "deflate",
    }
    lzf = StorageLayout(compression={"spec": "lzf", "roll": "lzf"})
    other = ShardSet(write_shards(tmp_path / "lzf", lzf), "train")
    assert other._frame_reader(2, "spec").mode == "h5py"
    out = np.ones((129, 1025), np.float16)
    with pytest.raises(ValueError, match="shape"):
        shards.read_stored_frames(2, 0, 128, "spec", out)


def test_unpack_bits_matches_numpy():
    packed = np.random.default_rng(0).integers(0, 256, (4, 3, 129), dtype=np.uint8)
    for count in (1025, 1032, 9):
        want = np.unpackbits(packed, axis=-1, count=count).view(bool)
        np.testing.assert_array_equal(unpack_bits(torch.from_numpy(packed), count).numpy(), want)


def test_stored_batches_through_forked_workers(tmp_path):
    shards = ShardSet(write_shards(tmp_path / "s", DEFAULT_LAYOUT), "train")
    dataset = WindowDataset(shards, ALL_FIELDS, decode_on_device=True)
    sampler = EpochBatchSampler(track_frame_counts(shards), batch_size=3, steps=4, seed=2)
    sampler.set_epoch(1)
    direct = [dataset[w] for w in sampler]  # the parent opens handles and maps before forking
    copy = pickle.loads(pickle.dumps(shards))
    assert copy._readers == {} and copy._maps == {}
    loader = make_loader(dataset, sampler, workers=2, pin_memory=False)
    try:
        got = list(loader)
    finally:
        stop_workers(loader)  # they ignore SIGTERM: a failed test must not leave them running
    assert len(got) == 4
    for a, b in zip(direct, got, strict=True):
        assert_batches_equal(b, a)
    for windows, batch in zip(sampler, got, strict=True):
        assert_batches_equal(decode_batch(batch), reference_batch(shards, windows))


@pytest.mark.parametrize("start", [-20, 150, 10_000])
def test_frames_outside_the_track_are_zeros_whatever_the_buffer_held(tmp_path, start):
    shards = ShardSet(write_shards(tmp_path / "s", DEFAULT_LAYOUT), "train")
    n_frames = shards.tracks[1].n_frames  # 5 s: 161 frames
    for name in FRAME_FIELDS:
        tail, dtype = shards.stored_frame_field(1, name)
        out = np.ones((129,) + tail, dtype)
        shards.read_stored_frames(1, start, 129, name, out)
        track = shards.read_track(1, (name,))[name]
        if name == "harmonic_mask":
            track = np.packbits(track, axis=-1)
        want = np.zeros_like(out)
        lo, hi = max(start, 0), min(start + 129, n_frames)
        if hi > lo:
            want[lo - start : hi - start] = track[lo:hi]
        np.testing.assert_array_equal(out, want)
