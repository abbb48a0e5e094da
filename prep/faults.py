"""Fault injection for the reliability tests (``tests/test_reliability_*.py``,
``benchmarks/perf/soak.py``): inert unless ``SCORECRITIC_FAULT`` is set.

``SCORECRITIC_FAULT="point:n[,point:n...]"`` makes the process kill itself with SIGKILL (no
cleanup handlers, no ``finally`` blocks: what a power cut or the OOM killer does) the n-th time
(1-based) it reaches the named point. The points, in the order a run meets them:

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
    faults: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"${ENV_VAR}: {item!r} is not point:n with a point of {POINTS}")
        faults[name] = int(count)
    return faults


def fault_point(name: str) -> None:
    """SIGKILL this process if ``$SCORECRITIC_FAULT`` asks for it at this hit of ``name``."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if parse_faults(spec).get(name) == _hits[name]:
        os.kill(os.getpid(), signal.SIGKILL)
