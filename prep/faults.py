"""Fault injection for the reliability tests (``tests/test_reliability_*.py``,
``benchmarks/perf/soak.py``): inert unless ``SCORECRITIC_FAULT`` is set.

``SCORECRITIC_FAULT="point:n[,point:n...]"`` makes the process kill itself with SIGKILL (no
cleanup handlers, no ``finally`` blocks: what a power cut or the OOM killer does) the n-th time
(1-based) it reaches the named point. ``point:n:SIGNAL`` (e.g. ``train-step:4:SIGTERM``) sends
that signal to the process instead: what a cluster scheduler sends when it takes the node back
(tests/test_preemption.py). The points, in the order a run meets them:

======================  ======================================================================
``track-processed``     prep: a track is decoded and featurised, not yet written
``shard-write``         prep: inside ``ShardWriter.add_track``, the track half-written (.partial)
``shard-rename``        prep: a shard is complete and fsynced under its .partial name
``shard-renamed``       prep: a shard has its final name, its build record is not written yet
``record-write``        prep: a build record's temporary file is written, not yet renamed
``manifest-write``      prep: ``manifest.json``'s temporary file is written, not yet renamed
``train-step``          train: after an optimiser step
``checkpoint-write``    train: ``last.pt``'s temporary file is written, not yet renamed
``best-written``        train: best.pt of this epoch saved (if it improved), last.pt not yet
======================  ======================================================================
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "SCORECRITIC_FAULT"
POINTS = (
    "track-processed",
    "shard-write",
    "shard-rename",
    "shard-renamed",
    "record-write",
    "manifest-write",
    "train-step",
    "checkpoint-write",
    "best-written",
)
_hits: dict[str, int] = {}


def parse_faults(spec: str) -> dict[str, int]:
    """``"shard-write:2,manifest-write:1"`` -> ``{"shard-write": 2, "manifest-write": 1}``."""
    return {name: count for name, (count, _) in parse_fault_signals(spec).items()}


def parse_fault_signals(spec: str) -> dict[str, tuple[int, signal.Signals]]:
    """``"shard-write:2,train-step:3:SIGTERM"`` ->
    ``{"shard-write": (2, SIGKILL), "train-step": (3, SIGTERM)}``."""
    faults: dict[str, tuple[int, signal.Signals]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition(":")
        count, named, signame = rest.partition(":")
        sig = signal.Signals.__members__.get(signame) if named else signal.SIGKILL
        if name not in POINTS or not count.isdigit() or int(count) < 1 or sig is None:
            raise ValueError(
                f"${ENV_VAR}: {item!r} is not point:n or point:n:SIGNAL with a point of {POINTS}"
            )
        faults[name] = (int(count), sig)
    return faults


def fault_point(name: str) -> None:
    """Signal this process (SIGKILL unless another signal is named) if ``$SCORECRITIC_FAULT``
    asks for it at this hit of ``name``."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    count, sig = parse_fault_signals(spec).get(name, (0, signal.SIGKILL))
    if count == _hits[name]:
        os.kill(os.getpid(), sig)
