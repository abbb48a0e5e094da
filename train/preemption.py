"""Preemption: SIGTERM or SIGUSR1 asks a training run to stop at its next step boundary.

Clusters take nodes back with a signal and a grace period: SLURM sends SIGTERM when a job's
time is up (SIGKILL follows after ``KillWait``), or ``#SBATCH --signal=USR1@120`` sends SIGUSR1
that many seconds before. The handlers installed here only record which signal came; the
trainer reads the record after every optimiser step, where weights, optimiser and RNG states
agree with each other, saves them with the step reached (``last.pt``, also within an epoch) and
leaves the process with :data:`EXIT_PREEMPTED`. ``--resume`` then ends bit-equal to a run that
was never stopped. Under ``torchrun`` the ranks take the largest signal of all
(:func:`agreed_signal`) after every step, so all stop at the same step and none waits alone
in a collective.

Exit code 75 is ``EX_TEMPFAIL`` of sysexits.h, "a temporary failure; the user is invited to
retry later": not 0 (the run has not finished), not 1 (an error, which a retry would repeat),
not 128+N (what a shell reports for a process killed by signal N, which saved nothing). A job
script can requeue on it alone. ``torchrun`` reports any failed worker as its own exit code 1,
so the run folder also records the stop in :data:`MARKER` (:func:`write_marker`), which a job
script can test for whatever launched the run.

Example::

    with stop_signals() as stop:
        for step in range(steps):
            train_one_step()
            if stop.signum:
                save_state()
                raise Preempted(...)
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist

from prep.atomic import atomic_write_text, discard

__all__ = [
    "EXIT_PREEMPTED",
    "STOP_SIGNALS",
    "MARKER",
    "StopRequest",
    "Preempted",
    "stop_signals",
    "agreed_signal",
    "ignore_stop_signals",
    "write_marker",
    "clear_marker",
]

EXIT_PREEMPTED = 75  # EX_TEMPFAIL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
MARKER = "preempted.json"


class StopRequest:
    """What the handlers record: the number of the last stop signal received, 0 for none."""

    def __init__(self) -> None:
        self.signum = 0

    def record(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: it sets the number and does nothing else, so it can run between
        any two bytecodes of the training loop without disturbing it."""
        self.signum = signum


_active: StopRequest | None = None


@contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Record ``signals`` into the yielded :class:`StopRequest` instead of dying of them, for
    the duration of the block; the previous handlers are back afterwards.

    Nested blocks share the outermost request, so a signal that arrives between two trainers
    of one run (the baseline's two phases) stops the second. Interrupted system calls restart
    (``siginterrupt(False)``), as they would without a handler: libraries that do not retry on
    ``EINTR`` (HDF5, collectives) see nothing. Python delivers signals to the main thread
    only; elsewhere nothing is installed and the request stays empty.
    """
    global _active
    if _active is not None:
        yield _active
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}
    _active = request
    try:
        for sig in signals:
            signal.signal(sig, request.record)
            signal.siginterrupt(sig, False)
        yield request
    finally:
        for sig, handler in previous.items():
            # None: a handler not set from Python (none is, in a fresh process): the default
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _active = None


def agreed_signal(request: StopRequest, world: int, device: torch.device) -> int:
    """The largest signal number any rank has received (0: none), the same on every rank.

    One all-reduce of one integer (under DDP a step already all-reduces every gradient); with a
    single process, the request's own number.
    """
    if world <= 1:
        return request.signum
    flag = torch.tensor([request.signum], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: loader workers ignore the stop signals.

    A scheduler signals every process of a job, loader workers included; the main process
    stops them itself once it has saved, and one that died of the signal first would fail the
    step being finished. Workers still stop when their main process dies (torch's watchdog).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Preempted(SystemExit):
    """Raised once the training state is saved: it leaves the process with
    :data:`EXIT_PREEMPTED` unless caught. A ``SystemExit``: ``except Exception`` does not catch
    it, so no caller mistakes a stop for an error, or carries on to a next step.

    Args:
        signal_name: the signal agreed on, e.g. "SIGTERM".
        step_name: the training step (``step1``, ..., ``classifier``).
        epoch: the epoch it stopped in.
        step: the optimiser steps of that epoch that were taken and saved.
        steps_per_epoch: of how many.
        checkpoint: the ``last.pt`` written.
    """

    def __init__(
        self,
        signal_name: str,
        step_name: str,
        epoch: int,
        step: int,
        steps_per_epoch: int,
        checkpoint: Path,
    ) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.signal_name, self.step_name = signal_name, step_name
        self.epoch, self.step, self.steps_per_epoch = epoch, step, steps_per_epoch
        self.checkpoint = Path(checkpoint)

    def __str__(self) -> str:
        return (
            f"{self.signal_name}: stopped {self.step_name} at epoch {self.epoch} after step "
            f"{self.step} of {self.steps_per_epoch}; its training state is in "
            f"{self.checkpoint}: rerun the same command with --resume to continue "
            f"(exit code {EXIT_PREEMPTED})"
        )


def write_marker(folder: Path, stopped: Preempted) -> Path:
    """Write ``folder/preempted.json``: where the run stopped, for a job script to requeue on."""
    record = {
        "exit_code": EXIT_PREEMPTED,
        "signal": stopped.signal_name,
        "step": stopped.step_name,
        "epoch": stopped.epoch,
        "steps_taken": stopped.step,
        "steps_per_epoch": stopped.steps_per_epoch,
        "checkpoint": str(stopped.checkpoint),
    }
    return atomic_write_text(Path(folder) / MARKER, json.dumps(record, indent=2))


def clear_marker(folder: Path) -> None:
    """Remove ``folder/preempted.json`` (a resumed run is under way again)."""
    discard(Path(folder) / MARKER)
