"""prep/shards.py: the HDF5 shard format, its writer, reader, manifest and verify."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from prep import features as F
from prep import shards as S
from prep.cli import main as prep_cli

INSTRUMENTS = ["piano", "guitar", "bass"]
SOURCE = {"source_corpus": "unit-test", "split_scheme": "split2", "instrument_map": {"a": [1]}}


def make_track(track_id: str, n_samples: int, seed: int, stems: bool = True) -> S.TrackArrays:
    """A small track whose features are computed with prep.features (as the builder does)."""
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((3, n_samples))).astype(np.float32)
    mix = audio.sum(axis=0)
    frames = F.n_frames(n_samples)
    duration = n_samples / F.SAMPLE_RATE
    roll = np.stack(
        [
            F.piano_roll([(40 + 12 * i, 0.1 * (i + 1), 0.6 * duration), (70, 0.0, 0.25)], frames)
            for i in range(3)
        ],
        axis=1,
    )
    return S.TrackArrays(
        track_id=track_id,
        mix=mix,
        stems=audio if stems else None,
        spec=F.magnitude_spectrogram(mix),
        roll=roll,
        harmonic_mask=F.harmonic_mask(roll),
        activity=F.frame_activity(roll),
        attrs={"stems": {"piano": ["S01"], "guitar": ["S00"], "bass": ["S03"]}, "dropped": 2},
    )


def write_shard(out: Path, split: str, index: int, tracks: list[S.TrackArrays]) -> S.ShardRecord:
    with S.ShardWriter(
        S.shard_path(out, split, index),
        split=split,
        instruments=INSTRUMENTS,
        feature_params=F.FeatureParams(),
        source=SOURCE,
    ) as writer:
        for track in tracks:
            writer.add_track(track)
    return writer.record


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT with two train shards and one test shard, plus its manifest."""
    out = tmp_path_factory.mktemp("out")
    write_shard(out, "train", 0, [make_track("Track00001", 3 * 16000 + 123, 1)])
    write_shard(out, "train", 1, [make_track("Track00002", 2 * 16000, 2, stems=False)])
    write_shard(out, "test", 0, [make_track("Track01900", 16000 + 7, 3)])
    S.write_manifest(out, S.manifest_from_shards(out))
    return out


def test_stored_spec_matches_torch_stft_of_stored_mix(built: Path) -> None:
    with h5py.File(built / "train" / "train-00000.h5", "r") as handle:
        group = handle["tracks"]["Track00001"]
        mix = group["mix"][()]
        spec = group["spec"][()].astype(np.float64)
        assert group["spec"].dtype == np.float16
        assert group["spec"].attrs["units"] == "linear magnitude"
    window = torch.hann_window(2048, periodic=True, dtype=torch.float64).sqrt()
    reference = torch.stft(
        torch.from_numpy(mix.astype(np.float64)), 2048, 500, window=window, center=True,
        pad_mode="constant", return_complex=True,
    ).abs().T.numpy()  # fmt: skip
    interior = slice(3, -3)
    error = np.linalg.norm(spec[interior] - reference[interior]) / np.linalg.norm(reference)
    assert error <= 1e-3


def test_layout_attrs_and_dtypes_as_documented(built: Path) -> None:
    with h5py.File(built / "train" / "train-00000.h5", "r") as handle:
        attrs = handle.attrs
        assert attrs["format_version"] == S.FORMAT_VERSION and attrs["split"] == "train"
        assert (attrs["sample_rate"], attrs["n_fft"], attrs["hop_length"]) == (16000, 2048, 500)
        assert attrs["window"] == "sqrt_hann" and list(attrs["instruments"]) == INSTRUMENTS
        assert (attrs["midi_min"], attrs["midi_max"], attrs["n_harmonics"]) == (21, 108, 15)
        group = handle["tracks"]["Track00001"]
        frames = F.n_frames(3 * 16000 + 123)
        assert group["roll"].shape == (frames, 3, 88) and group["roll"].dtype == bool
        assert group["harmonic_mask"].shape == (frames, 3, 129)
        assert group["harmonic_mask"].attrs["bitpacked"]
        assert group["activity"].dtype == bool and group["stems"].shape == (3, 3 * 16000 + 123)
        assert json.loads(group.attrs["stems"])["bass"] == ["S03"]
        assert group["spec"].chunks[0] == S.DEFAULT_LAYOUT.chunk_frames
    assert S.read_attrs(handle_attrs := h5py.File(built / "test" / "test-00000.h5", "r"))[
        "instrument_map"
    ] == {"a": [1]}
    handle_attrs.close()


def test_manifest_contents(built: Path) -> None:
    manifest = S.read_manifest(built)
    assert [s.path for s in manifest.shards] == [
        "test/test-00000.h5",
        "train/train-00000.h5",
        "train/train-00001.h5",
    ]
    assert manifest.hours["train"] == pytest.approx((5 * 16000 + 123) / 16000 / 3600, 1e-4)
    # Activity rates recomputed from the train tracks' rolls, independently here.
    tracks = [make_track("a", 3 * 16000 + 123, 1), make_track("b", 2 * 16000, 2)]
    activity = np.concatenate([t.roll.any(axis=-1) for t in tracks])
    rate = activity.mean(axis=0)
    assert list(manifest.activity_rate.values()) == pytest.approx(rate.tolist())
    inverse = 1 / rate
    expected_weights = inverse / inverse.mean()
    assert list(manifest.class_weight.values()) == pytest.approx(expected_weights.tolist())
    assert manifest.instrument_map == {"a": [1]}
    shards = S.ShardSet(built, "train")
    np.testing.assert_allclose(shards.class_weights, expected_weights, rtol=1e-6)
    assert shards.feature_params == F.FeatureParams()


def test_reader_window_is_slice_of_track_with_zero_padding(built: Path) -> None:
    shards = S.ShardSet(built, "train")
    assert [t.track_id for t in shards.tracks] == ["Track00001", "Track00002"]
    assert len(shards) == 2 and shards.tracks[0].has_stems and not shards.tracks[1].has_stems
    full = shards.read_track(0, S.FRAME_FIELDS)
    frames = shards.tracks[0].n_frames
    original = make_track("x", 3 * 16000 + 123, 1)
    np.testing.assert_array_equal(full["roll"], original.roll)
    np.testing.assert_array_equal(full["harmonic_mask"], original.harmonic_mask)
    np.testing.assert_array_equal(full["spec"], original.spec.astype(np.float16).astype(np.float32))
    for start in (-20, 0, 17, frames - 50):
        window = shards.read_frames(0, start, 129)
        for name, value in window.items():
            assert value.shape[0] == 129
            inside = np.arange(start, start + 129)
            valid = (inside >= 0) & (inside < frames)
            np.testing.assert_array_equal(value[valid], full[name][inside[valid]])
            assert not value[~valid].any()
        assert window["spec"].dtype == np.float32 and window["harmonic_mask"].dtype == bool


def test_read_samples_then_stft_reproduces_stored_spec(built: Path) -> None:
    shards = S.ShardSet(built, "train")
    frames = shards.tracks[0].n_frames
    for start in (0, 40, frames - 60):
        samples = shards.read_samples(0, start, 129)
        assert samples["mix"].shape == (500 * 128 + 2048,)
        assert samples["stems"].shape == (3, 500 * 128 + 2048)
        spec = F.stft(torch.from_numpy(samples["mix"]), center=False).abs().T.numpy()
        stored = shards.read_frames(0, start, 129, ["spec"])["spec"]
        # Frames past the track end are zeros in read_frames; the STFT of the zero-padded audio
        # is not (its windows still reach into the track), so compare the track's frames only.
        valid = min(129, frames - start)
        spec, stored = spec[:valid], stored[:valid]
        error = np.linalg.norm(spec - stored) / np.linalg.norm(stored)
        assert error <= 1e-3
        np.testing.assert_allclose(samples["stems"].sum(axis=0), samples["mix"], atol=1e-5)
    with pytest.raises(S.ShardError, match="Track00002 has no stems"):
        shards.read_samples(1, 0, 10)


def test_reader_pickles_and_reopens(built: Path) -> None:
    shards = S.ShardSet(built, "test", verify_checksums=False)
    before = shards.read_frames(0, 5, 20)
    clone = pickle.loads(pickle.dumps(shards))
    after = clone.read_frames(0, 5, 20)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    shards.close()
    clone.close()


def _read_in_child(shards: S.ShardSet) -> tuple[int, np.ndarray]:
    return os.getpid(), shards.read_frames(0, 3, 10, ["spec"])["spec"]


def test_reader_in_forked_worker_opens_its_own_handles(built: Path) -> None:
    shards = S.ShardSet(built, "train", verify_checksums=False)
    expected = shards.read_frames(0, 3, 10, ["spec"])["spec"]  # parent holds an open handle
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child_pid, child_spec = pool.apply(_read_in_child, (shards,))
    assert child_pid != os.getpid()
    np.testing.assert_array_equal(child_spec, expected)
    _INHERITED[:] = [shards]  # a forked worker inheriting the object, not a pickled copy
    with context.Pool(1) as pool:
        reopened, child_spec = pool.apply(_read_inherited, ())
    assert reopened  # the child never uses the parent's HDF5 handle
    np.testing.assert_array_equal(child_spec, expected)
    _INHERITED.clear()
    shards.close()


_INHERITED: list[S.ShardSet] = []


def _read_inherited() -> tuple[bool, np.ndarray]:
    shards = _INHERITED[0]
    parent_handles = dict(shards._handles)
    spec = shards.read_frames(0, 3, 10, ["spec"])["spec"]
    path = shards.tracks[0].shard_path
    return shards._handles[path] is not parent_handles.get(path), spec


def test_writer_is_deterministic(tmp_path: Path) -> None:
    first = write_shard(tmp_path / "a", "train", 0, [make_track("Track00001", 20000, 5)])
    time.sleep(1.1)  # HDF5 timestamps have 1-s resolution: a later time must not change bytes
    second = write_shard(tmp_path / "b", "train", 0, [make_track("Track00001", 20000, 5)])
    assert first.sha256 == second.sha256 == S.sha256_file(tmp_path / "b" / first.path)
    assert first.bytes == (tmp_path / "a" / first.path).stat().st_size


def test_writer_places_chunks_in_the_order_they_are_written(tmp_path: Path) -> None:
    # With HDF5's chunk cache, dirty chunks of several datasets were placed at flush in an
    # order that depended on memory addresses: the same content at other offsets, about 1
    # build in 40 (seen as a Dask build differing from a local one). The writer keeps no
    # chunk cache, so the layout follows the writes.
    final = S.shard_path(tmp_path, "train", 0)
    tracks = [make_track(f"Track0000{i}", 48000, i) for i in (1, 2)]
    with S.ShardWriter(final, split="train", instruments=INSTRUMENTS,
                       feature_params=F.FeatureParams(), source=SOURCE) as writer:
        assert writer._file.id.get_access_plist().get_cache()[1:3] == (0, 0)
        for track in tracks:
            writer.add_track(track)
    offsets = []
    with h5py.File(final) as handle:
        for track in tracks:
            group = handle["tracks"][track.track_id]
            for name in ("mix", "stems", "spec"):  # the large ones (small gzip chunks share
                dataset = group[name]  # HDF5's small-data block, in write order within it)
                offsets += [dataset.id.get_chunk_info(i).byte_offset
                            for i in range(dataset.id.get_num_chunks())]
    assert len(offsets) == 12 and offsets == sorted(offsets)


def _write_alongside(out: Path, tracks: list[S.TrackArrays],
                     barrier: multiprocessing.synchronize.Barrier,
                     results: multiprocessing.Queue) -> None:
    """Open the shard, wait until the other writer has opened it too, then write it whole."""
    try:
        with S.ShardWriter(S.shard_path(out, "train", 0), split="train", instruments=INSTRUMENTS,
                           feature_params=F.FeatureParams(), source=SOURCE) as writer:
            barrier.wait(timeout=60)
            for track in tracks:
                writer.add_track(track)
        results.put(writer.record.sha256)
    except Exception as error:  # reported to the test, which names it
        barrier.abort()
        results.put(f"failed: {type(error).__name__}: {error}")


def test_two_writers_of_one_shard_at_once_each_write_it_whole(tmp_path: Path) -> None:
    # A Dask task whose worker was declared dead can still be running when its retry starts:
    # both write the same shard. Each has its own temporary file; the shard is whole.
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(2), context.Queue()
    # features computed here: torch's thread pool does not survive a fork
    tracks = [make_track(f"Track0000{k + 1}", 48000, k) for k in range(3)]
    writers = [context.Process(target=_write_alongside, args=(tmp_path, tracks, barrier, queue))
               for _ in range(2)]
    for process in writers:
        process.start()
    results = [queue.get(timeout=120) for _ in writers]
    for process in writers:
        process.join(timeout=60)
    final = S.shard_path(tmp_path, "train", 0)
    assert results[0] == results[1] == S.sha256_file(final), results
    assert not list(tmp_path.rglob("*.partial"))


def test_writer_atomicity_on_exception(tmp_path: Path) -> None:
    final = S.shard_path(tmp_path, "train", 0)
    with pytest.raises(RuntimeError, match="boom"):
        with S.ShardWriter(
            final, split="train", instruments=INSTRUMENTS, feature_params=F.FeatureParams(),
            source=SOURCE,
        ) as writer:  # fmt: skip
            writer.add_track(make_track("Track00001", 16000, 0))
            assert writer._temp.exists() and not final.exists()
            assert writer._temp.name.startswith(".train-00000.") and writer._temp.name.endswith(
                ".h5.partial")
            raise RuntimeError("boom")
    assert not final.exists() and not writer._temp.exists()
    assert list((tmp_path / "train").iterdir()) == []


def test_writer_rejects_bad_tracks_naming_them(tmp_path: Path) -> None:
    good = make_track("Track00007", 16000, 0)
    bad_frames = S.TrackArrays(**{**good.__dict__, "spec": good.spec[:-1]})
    bad_activity = S.TrackArrays(**{**good.__dict__, "activity": ~good.activity})
    with S.ShardWriter(
        S.shard_path(tmp_path, "train", 0), split="train", instruments=INSTRUMENTS,
        feature_params=F.FeatureParams(), source=SOURCE,
    ) as writer:  # fmt: skip
        with pytest.raises(S.ShardError, match=r"Track00007: spec has shape \(32, 1025\)"):
            writer.add_track(bad_frames)
        with pytest.raises(S.ShardError, match="Track00007: activity disagrees"):
            writer.add_track(bad_activity)
        writer.add_track(good)
        with pytest.raises(S.ShardError, match="added twice"):
            writer.add_track(good)
    assert [t.track_id for t in writer.record.tracks] == ["Track00007"]


def _copy_out(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dst


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checksum_mismatch_is_refused_naming_the_file(built: Path, tmp_path: Path) -> None:
    out = _copy_out(built, tmp_path / "out")
    shard = out / "train" / "train-00001.h5"
    _flip_byte(shard, shard.stat().st_size // 2)
    with pytest.raises(S.ShardError, match="train-00001.h5: SHA-256 does not match"):
        S.ShardSet(out, "train")
    assert S.ShardSet(out, "test").tracks  # other splits still open


def test_format_version_mismatch_says_found_and_expected(built: Path, tmp_path: Path) -> None:
    out = _copy_out(built, tmp_path / "out")
    manifest = json.loads((out / S.MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (out / S.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(S.ShardError, match="format_version 99 found.*format_version 1"):
        S.ShardSet(out, "train")
    manifest["format_version"] = S.FORMAT_VERSION
    (out / S.MANIFEST_NAME).write_text(json.dumps(manifest))
    with h5py.File(out / "test" / "test-00000.h5", "r+") as handle:
        handle.attrs["format_version"] = 2
    S.write_manifest(out, _reindexed_checksums(out))
    shards = S.ShardSet(out, "test")
    with pytest.raises(S.ShardError, match=r"test-00000.h5: format_version 2 found, expected 1"):
        shards.read_frames(0, 0, 4)


def test_verify_detects_damage(built: Path, tmp_path: Path) -> None:
    assert S.verify(built) == []
    cases = {
        "flipped": lambda p: _flip_byte(p, p.stat().st_size - 100),
        "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
        "deleted": lambda p: p.unlink(),
    }
    messages = {"flipped": "SHA-256", "truncated": "bytes, manifest says", "deleted": "missing"}
    for case, damage in cases.items():
        out = _copy_out(built, tmp_path / case)
        damage(out / "train" / "train-00000.h5")
        problems = S.verify(out)
        assert len(problems) == 1, problems
        assert "train-00000.h5" in problems[0] and messages[case] in problems[0]
    out = _copy_out(built, tmp_path / "extra")
    (out / "test" / "test-00009.h5").write_bytes(b"not a shard")
    assert any("test-00009.h5: shard file not listed" in p for p in S.verify(out))


def test_verify_checks_schema_beyond_checksums(built: Path, tmp_path: Path) -> None:
    out = _copy_out(built, tmp_path / "schema")
    with h5py.File(out / "test" / "test-00000.h5", "r+") as handle:
        del handle["tracks"]["Track01900"]["activity"]
    S.write_manifest(out, _reindexed_checksums(out))
    problems = S.verify(out)
    assert problems == [f"{out / 'test' / 'test-00000.h5'}: track Track01900: missing datasets "
                        "['activity']"]  # fmt: skip


def _reindexed_checksums(out: Path) -> S.Manifest:
    """The manifest with each shard's checksum and size of the file as it is now."""
    manifest = S.read_manifest(out)
    return replace(manifest, shards=[
        replace(e, sha256=S.sha256_file(out / e.path), bytes=(out / e.path).stat().st_size)
        for e in manifest.shards])


def test_manifest_is_typed_and_checked_on_load(built: Path, tmp_path: Path) -> None:
    manifest = S.read_manifest(built)
    assert isinstance(manifest.shards[0], S.ShardRecord)
    assert isinstance(manifest.shards[0].tracks[0], S.TrackEntry)
    assert [t.track_id for t in manifest.tracks("train")] == ["Track00001", "Track00002"]
    assert manifest.splits == ["train", "test"]
    assert S.Manifest.from_dict(manifest.to_dict()) == manifest  # round trip
    moved = replace(manifest, provenance={"corpus_root": "/elsewhere"})
    assert moved == manifest and moved.content_sha256() == manifest.content_sha256()
    path = tmp_path / "out" / S.MANIFEST_NAME
    cases = {
        "unknown": (lambda m: m.update(colour="red"), r"unknown field\(s\) \['colour'\]"),
        "missing": (lambda m: m.pop("instruments"), r"missing field\(s\) \['instruments'\]"),
        "type": (lambda m: m.update(hours=[1]), r"\.hours: expected dict"),
        "track": (lambda m: m["shards"][1]["tracks"][0].pop("n_frames"),
                  r"shards\[1\]\.tracks\[0\]: missing field\(s\) \['n_frames'\]"),
        "schema": (lambda m: m.pop("schema_version"), r"schema_version None found.*prep index"),
        "weights": (lambda m: m["class_weight"].pop("bass"), r"class_weight is keyed by"),
        "shards": (lambda m: m.update(shards=5), r"\.shards: expected list"),
        "entry": (lambda m: m["shards"].append(7), r"shards\[3\]: expected an object"),
    }
    for case, (edit, message) in cases.items():
        data = manifest.to_dict()
        edit(data)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data))
        with pytest.raises(S.ShardError, match=message) as error:
            S.read_manifest(path.parent)
        assert str(path) in str(error.value), case


def test_cli_verify_and_inspect(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(prep_cli, ["verify", str(built)])
    assert result.exit_code == 0 and "OK" in result.output
    out = _copy_out(built, tmp_path / "bad")
    (out / "train" / "train-00001.h5").unlink()
    result = runner.invoke(prep_cli, ["verify", str(out)])
    assert result.exit_code == 1 and "train-00001.h5: listed in manifest.json but missing" in (
        result.output
    )
    png = tmp_path / "window.png"
    shard = str(built / "train" / "train-00000.h5")
    result = runner.invoke(
        prep_cli, ["inspect", shard, "--track", "Track00001", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "harmonic_mask" in result.output and "bitpacked" in result.output
    assert png.stat().st_size > 1000
    assert "Track00001" in S.inspect_shard(built / "train" / "train-00000.h5")
