"""Shards built on a real Dask cluster (``distributed.LocalCluster``, worker processes) and in
other folders are the bytes of a local build; a worker killed mid-build loses nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest
from test_build import _shard_digests, _split_corpus, build

from prep.build import BuildError
from prep.shards import verify

distributed = pytest.importorskip("distributed")

PREP = Path(sys.executable).parent / "prep"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "corpus"
    _split_corpus(root, seconds=2.0)
    return root


@pytest.fixture(scope="module")
def local_build(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: this process's build, one small shard per track (8 tasks)."""
    return build(corpus, tmp_path_factory.mktemp("local") / "out", shard_size_mb=0.01)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as running:
        yield running


def test_two_copies_of_a_corpus_build_identical_shards(corpus: Path, local_build: dict,
                                                        tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "another-name"
    shutil.copytree(corpus, copy)
    moved = build(copy, tmp_path / "out", shard_size_mb=0.01)
    assert _shard_digests(moved) == _shard_digests(local_build)
    assert moved.provenance["corpus_root"] == str(copy.resolve())
    assert local_build.provenance["corpus_root"] == str(corpus.resolve())
    with h5py.File(tmp_path / "out" / moved.shards[0].path) as handle:
        assert handle.attrs["source_corpus"] == "slakh2100"  # what, not where
        assert str(tmp_path) not in str(dict(handle.attrs))


def test_dask_build_equals_local_build(corpus: Path, local_build: dict, cluster,
                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = build(corpus, out, shard_size_mb=0.01, backend="dask",
                     scheduler=cluster.scheduler_address)
    assert _shard_digests(manifest) == _shard_digests(local_build)
    assert manifest == local_build  # provenance aside
    assert verify(out) == []
    with distributed.Client(cluster) as client:  # the shards were built by the workers
        worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids and len(worker_pids) == 2


def test_killed_worker_mid_build_loses_no_track(corpus: Path, local_build: dict,
                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed: list[tuple[str, tuple]] = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as own, \
            distributed.Client(own) as client:

        def kill_a_busy_worker() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = {w: keys for w, keys in client.processing().items()
                        if any(str(k).startswith("build-shard-") for k in keys)}
                if busy:
                    worker = sorted(busy)[0]
                    pids = client.run(os.getpid, workers=[worker])
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append((worker, tuple(busy[worker])))
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        manifest = build(corpus, out, shard_size_mb=0.01, backend="dask",
                         scheduler=own.scheduler_address)
        killer.join()
    assert killed, "no worker was busy with a shard: the kill did not happen mid-build"
    assert _shard_digests(manifest) == _shard_digests(local_build)
    tracks = sorted(t.track_id for s in manifest.shards for t in s.tracks)
    assert tracks == sorted(t.track_id for s in local_build.shards for t in s.tracks)
    assert manifest.skipped == local_build.skipped
    assert verify(out) == []


def test_unreachable_scheduler_is_a_clear_error(corpus: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import prep.cluster

    monkeypatch.setattr(prep.cluster, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(BuildError, match=r"cannot reach the Dask scheduler 'tcp://127.0.0.1:9'"):
        build(corpus, tmp_path / "out", backend="dask", scheduler="tcp://127.0.0.1:9")
    with pytest.raises(BuildError, match="needs backend 'dask'"):
        build(corpus, tmp_path / "out", scheduler="tcp://127.0.0.1:9")
