"""What several benchmarks share (not a benchmark itself).

* every script: ``ROOT`` (the repository root) and ``description`` (its ``--help`` text);
* the performance benchmarks: ``machine`` (date, cores, load of a run), ``add_json_option`` and
  ``write_json`` (the figures as JSON under ``runs/``), ``test_data`` and ``synthetic_track``
  (tests/test_data.py's synthetic tracks, here so that joblib workers import them by name: a
  script run with ``python -m`` is ``__main__``, which the workers cannot import);
* the diagnostics: ``stem_magnitudes`` (|STFT| of the stems), ``snr_sums`` and ``snr_db`` (the
  magnitude SNR per instrument, 10 log10(sum |S|^2 / sum (|S| - S_hat)^2)), ``snr_header`` and
  ``snr_cells`` (its markdown columns).

Nothing heavy is imported at module level (torch and ``prep`` load inside the functions), so
that a script's ``--help`` answers at once and a benchmark's child processes start as light as
the script itself.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from prep.shards import TrackArrays

ROOT = Path(__file__).resolve().parents[1]


def description(doc: str) -> str:
    """A script's ``--help`` description: the first paragraph of its module docstring."""
    return doc.split("\n\n")[0]


# --------------------------------------------------------------------------------------------
# Performance benchmarks
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """When and where a benchmark ran: date, CPU count and load averages (the machine is
    shared, so every result records the load it was measured under)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(),
            "load": os.getloadavg()}


def add_json_option(parser: argparse.ArgumentParser, default: Path) -> None:
    """``--json PATH``: where the benchmark writes its figures."""
    parser.add_argument("--json", type=Path, default=default,
                        help=f"write the figures here as JSON [{default}]")


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON to ``path`` (folders made as needed) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


@functools.cache
def test_data() -> ModuleType:
    """tests/test_data.py, whose synthetic tracks the tests train on, imported from its file
    (tests/ is not a package; importing it needs pytest)."""
    spec = importlib.util.spec_from_file_location("test_data", ROOT / "tests" / "test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_track(split_index: int, k: int, seconds: float, track_id: str) -> TrackArrays:
    """Track ``k`` of split ``split_index``, ``seconds`` long: tests/test_data.py's harmonic
    notes of three instruments with their real features, seeded by (split_index, k)."""
    import numpy as np

    rng = np.random.default_rng([split_index, k])
    return test_data().synthetic_track_arrays(rng, seconds, track_id)


# --------------------------------------------------------------------------------------------
# Diagnostics: stem magnitudes and magnitude SNR
# --------------------------------------------------------------------------------------------


def stem_magnitudes(stems: torch.Tensor, center: bool = False) -> torch.Tensor:
    """|STFT| of stems [..., I, n] -> [..., I, F, T]. ``center=False`` for windows read with
    their padding (the trainer's validation windows), ``center=True`` for whole tracks."""
    from prep.features import stft

    return stft(stems, center=center).abs()


def snr_sums(S: torch.Tensor, S_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sums of the magnitude SNR per instrument over a batch [B, I, F, T]:
    sum |S|^2 and sum (|S| - S_hat)^2 over windows, bins and frames, each [I]."""
    return S.square().sum(dim=(0, 2, 3)), (S - S_hat).square().sum(dim=(0, 2, 3))


def snr_db(signal: torch.Tensor | np.ndarray, error: torch.Tensor | np.ndarray):
    """Magnitude SNR in dB, 10 log10(signal / error), the error floored at 1e-12, from the sums
    of ``snr_sums`` (per instrument; torch tensors or numpy arrays, the type comes back)."""
    if hasattr(error, "clamp_min"):
        import torch

        return 10 * torch.log10(signal / error.clamp_min(1e-12))
    import numpy as np

    return 10 * np.log10(signal / np.maximum(error, 1e-12))


def snr_header(instruments: Iterable[str]) -> str:
    """Markdown header cells of ``snr_cells``: ``SNR piano | ... | SNR avg``."""
    return " | ".join(f"SNR {i}" for i in instruments) + " | SNR avg"


def snr_cells(snr: torch.Tensor | np.ndarray) -> str:
    """Markdown cells of an SNR per instrument [I] and its mean, in dB to 2 decimals."""
    return " | ".join(f"{v:.2f}" for v in snr.tolist()) + f" | {float(snr.mean()):.2f}"
