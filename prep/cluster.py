"""``prep build-shards --backend dask``: one Dask task per shard, on any Dask cluster.

The build's unit of work is a shard (:class:`prep.build.ShardJob`): a pure function of the
corpus files and the settings, written atomically (``.partial`` file, fsync, rename) with its
build record. That makes the cluster's job easy to state:

- **Where**: every worker needs this package installed and the corpus and OUT at the same
  paths (shared storage: NFS, Lustre, GPFS). The driver checks each finished shard is visible.
- **Failures**: a task that raises is retried ``retries`` times (``Client.submit(retries=)``);
  a task whose worker dies (pre-emption, OOM, ``kill -9``) is rescheduled on another worker by
  the scheduler (``distributed.scheduler.allowed-failures`` times). A rerun of the same task
  truncates the dead attempt's ``.partial`` file and writes the same bytes.
- **Resume**: as for a local build, shards whose build record matches the plan are kept, so
  a build interrupted as a whole (the driver killed) continues where it stopped.
- **Same bytes**: a shard built on a Dask worker is byte-identical to one built locally
  (single-threaded torch in both; ``tests/test_cluster.py`` checks it).

Scheduler, as ``--scheduler``: an address (``tcp://10.0.0.5:8786``), a scheduler file written
by ``dask scheduler --scheduler-file FILE`` (the usual way on SLURM), or nothing, which starts
a :class:`distributed.LocalCluster` of ``--workers`` single-threaded processes on this machine
(:func:`local_cluster`). On a cluster of your own, start workers with ``--nthreads 1`` (a
shard is one single-threaded task) and, unless you watch the dashboard's profiles,
``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``.

Example (a SLURM allocation with a shared file system)::

    dask scheduler --scheduler-file $HOME/dask.json &
    srun dask worker --scheduler-file $HOME/dask.json --nthreads 1 &
    prep build-shards --backend dask --scheduler $HOME/dask.json \\
        --slakh-root /shared/slakh2100_flac_redux --out /shared/data
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

    from prep.build import ShardJob, ShardOutcome

#: Retries of a task that raised (the build's own errors are per track and never raise; what
#: raises is the storage: a full disk, a vanished mount).
TASK_RETRIES = 2
CONNECT_TIMEOUT_S = 30


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached or used (the message names the scheduler)."""


def local_cluster(workers: int) -> LocalCluster:
    """A cluster of ``workers`` single-threaded worker processes on this machine, without the
    workers' statistical profiler (a dashboard aid that samples every task's stack every 10 ms:
    ``benchmarks/perf/dask_overhead.py`` measured it at about 7 % of a build's CPU)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0")


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A connected :class:`distributed.Client`: to ``scheduler`` (address or scheduler file),
    or to a new local cluster of ``workers`` single-threaded worker processes."""
    try:
        from distributed import Client
    except ImportError as error:
        raise ClusterError("--backend dask needs Dask's distributed package: "
                           "pip install 'scorecritic[dask]'") from error
    if scheduler is None:
        with local_cluster(workers) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        if Path(scheduler).is_file():
            client = Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT_S)
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(f"cannot reach the Dask scheduler {scheduler!r} within "
                           f"{CONNECT_TIMEOUT_S} s ({error})") from error
    with client:
        yield client


def task_key(job: ShardJob) -> str:
    """The task's name on the dashboard: the shard and its plan key (which fixes its bytes)."""
    return f"build-shard-{job.shard.name}-{job.plan_key[:16]}"


def run_on_dask(
    jobs: Sequence[ShardJob], scheduler: str | None, workers: int, retries: int = TASK_RETRIES,
) -> Iterator[ShardOutcome]:
    """Submit one task per shard and yield each build record as its task finishes.

    Raises :class:`ClusterError` when the scheduler cannot be reached or a task fails after
    its retries (finished shards are kept: rerun to resume).
    """
    from distributed import as_completed

    from prep.build import build_one_shard

    if not jobs:
        return
    with dask_client(scheduler, workers) as client:
        futures = [client.submit(build_one_shard, job, True, key=task_key(job), pure=False,
                                 retries=retries) for job in jobs]
        names = {future.key: job.shard.name for future, job in zip(futures, jobs, strict=True)}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as error:  # KilledWorker, a storage error after retries
                    raise ClusterError(
                        f"shard {names[future.key]}: the task failed on the Dask cluster "
                        f"({type(error).__name__}: {error}); finished shards are kept, rerun "
                        "to resume") from error
        finally:
            client.cancel([f for f in futures if not f.done()])
