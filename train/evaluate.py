"""Table 1 (separation, SI-SDR) and Table 2 (transcription, mir_eval) on whole test tracks.

``evaluate(shards, split, checkpoints, out)`` reads every track of a shard split
(``ShardSet.read_track``: ``mix``, ``stems``, ``roll``), runs every separator and transcriptor
checkpoint on it (chunked, see :mod:`train.inference`) and writes into ``out/``:

* ``metrics.json``: the headline, a few dozen numbers (:func:`headline_metrics`: average SI-SDR
  per system, its ratio to the supervised gain, Table 2 note F1 and false-positive rate per
  transcriptor). It is the pipeline's DVC metric, so ``dvc metrics show``, ``dvc metrics diff``
  and ``dvc exp show`` print it whole and fit a terminal.
* ``details.json``: everything (per instrument, per track, segment counts, protocol, the
  checkpoints scored): what :mod:`train.intervals` and ``benchmarks/diagnostics`` read
  (:func:`read_details`). DVC does not print it.
* ``table1.json`` and ``gain.json``: Table 1 per system and instrument, and the gain ratio, each
  beside the paper's, as rows for ``dvc plots show`` (:func:`plot_rows`).
* ``results.md`` (our numbers beside the paper's) and ``figures/*.png``.

Separation protocol (Table 1):

* Estimates are waveforms at 16 kHz from the sqrt-Hann iSTFT of M_i ⊙ X with the mixture phase.
  Two reference systems come from the test stems S_i: the **input mixture** (the mixture is the
  estimate of every source) and the **oracle ideal ratio mask** M_i = |S_i| / Σ_j |S_j|.
* SI-SDR (:func:`train.metrics.si_sdr`, zero-mean) is computed on consecutive non-overlapping
  segments of ``segment_seconds`` (4 s by default, the paper's clip length); a last partial segment
  is kept when it is at least half a segment long. A segment whose reference stem has an RMS below
  ``silence_db`` dBFS (-60 dB by default) is skipped for that instrument and counted: SI-SDR is
  undefined or meaningless for a silent reference.
* Per system and instrument: the mean over all scored segments of all tracks; "avg" is the mean of
  the per-instrument means (the paper's Avg column).

Transcription protocol (Table 2): each transcriptor runs on the mixture and on every isolated stem
(instrument i's output channel on stem i). Per instrument, note precision/recall/F1 (onset 50 ms,
offsets ignored: the paper's "note accuracy"), F1 with offsets and multipitch frame accuracy are
averaged over the tracks whose reference has notes of that instrument; the false-positive rate of
detected notes is pooled over all tracks: 1 - Σ matched / Σ estimated notes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from tqdm import tqdm

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from prep.atomic import atomic_write_text  # noqa: E402
from prep.features import SAMPLE_RATE, frame_times, stft  # noqa: E402
from prep.shards import ShardSet  # noqa: E402
from train.inference import (  # noqa: E402
    DEFAULT_CHUNK_FRAMES,
    masks_to_waveforms,
    separation_masks,
    transcription_probabilities,
)
from train.metrics import si_sdr, transcription_scores  # noqa: E402
from train.model import ScoreCriticModel, load_checkpoint, load_model  # noqa: E402

#: Default segment length for SI-SDR, seconds (the paper's 4-s clips).
DEFAULT_SEGMENT_SECONDS = 4.0
#: A reference segment with an RMS below this level (dB re full scale 1.0) counts as silent.
DEFAULT_SILENCE_DB = -60.0
#: Test tracks that get figures.
DEFAULT_FIGURE_TRACKS = 4
#: Seconds shown in the per-track figures.
FIGURE_SECONDS = 12.0

MIXTURE_SYSTEM = "input mixture"
ORACLE_SYSTEM = "oracle IRM"
#: The row whose gain over the mixture is 1 in the gain ratio (the paper's upper bound).
SUPERVISED_ROW = "supervised"

#: The files of a report folder (``train evaluate --out``).
HEADLINE_FILE = "metrics.json"
DETAILS_FILE = "details.json"
TABLE1_PLOT_FILE = "table1.json"
GAIN_PLOT_FILE = "gain.json"
RESULTS_FILE = "results.md"
FIGURES_DIR = "figures"

# Published numbers (Hung et al. 2021, Tables 1 and 2), keyed by the recipes' ``paper_row``
# (train/recipes.yaml), which every checkpoint records.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "supervised": {"bass": 11.13, "guitar": 5.66, "piano": 7.68, "avg": 8.16},
    "step2-cmix": {"bass": 7.48, "guitar": 1.15, "piano": 4.19, "avg": 4.27},
    "step2-hmix": {"bass": 7.82, "guitar": 0.42, "piano": 4.14, "avg": 4.13},
    "step2": {"bass": 8.40, "guitar": 1.60, "piano": 4.97, "avg": 4.99},
    "step3": {"bass": 8.96, "guitar": 2.68, "piano": 5.27, "avg": 5.64},
    "step3-aml": {"bass": 9.07, "guitar": 2.80, "piano": 5.38, "avg": 5.75},
    "step3-atl": {"bass": 8.96, "guitar": 2.51, "piano": 5.65, "avg": 5.71},
    MIXTURE_SYSTEM: {"bass": 1.15, "guitar": -5.83, "piano": -2.34, "avg": -2.34},
    "baseline": {"bass": 7.32, "guitar": 0.49, "piano": 3.53, "avg": 3.78},
}
PAPER_TABLE1_LABELS = {
    "supervised": "supervised",
    "step2-cmix": "step 2, c-mix",
    "step2-hmix": "step 2, h-mix",
    "step2": "step 2, c-mix + h-mix",
    "step3": "step 3, no adversarial",
    "step3-aml": "step 3, + AML",
    "step3-atl": "step 3, + ATL",
    MIXTURE_SYSTEM: "input mixture",
    "baseline": "classifier baseline",
    ORACLE_SYSTEM: "oracle ideal ratio mask",
}
# Table 2: note accuracy per (run, evaluated on); FP rates were published for step 3 only.
PAPER_TABLE2: dict[tuple[str, str], dict[str, float]] = {
    ("step1", "mixture"): {"bass": 0.85, "guitar": 0.44, "piano": 0.58},
    ("step3", "mixture"): {"bass": 0.84, "guitar": 0.42, "piano": 0.54, "fp_rate": 0.37},
    ("step3-aml", "mixture"): {"bass": 0.86, "guitar": 0.51, "piano": 0.61, "fp_rate": 0.17},
    ("step3-atl", "mixture"): {"bass": 0.85, "guitar": 0.50, "piano": 0.60, "fp_rate": 0.19},
    ("step1", "iso tracks"): {"bass": 0.91, "guitar": 0.52, "piano": 0.66},
    ("step3", "iso tracks"): {"bass": 0.90, "guitar": 0.53, "piano": 0.63},
    ("step3-aml", "iso tracks"): {"bass": 0.91, "guitar": 0.58, "piano": 0.68},
    ("step3-atl", "iso tracks"): {"bass": 0.91, "guitar": 0.57, "piano": 0.66},
}
PAPER_INSTRUMENT_ORDER = ("bass", "guitar", "piano")
TRANSCRIPTION_CONDITIONS = ("mixture", "iso tracks")


class EvaluationError(ValueError):
    """The evaluation cannot run (no checkpoints, no stems, mismatching instruments, ...)."""


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def parse_named_paths(values: Iterable[str]) -> dict[str, Path]:
    """``NAME=PATH`` strings into ``{NAME: PATH}`` (split at the first ``=``).

    >>> parse_named_paths(["mine=runs/step3/best.pt"])
    {'mine': PosixPath('runs/step3/best.pt')}

    Raises:
        ValueError: naming the first value without a name, an ``=`` or a path.
    """
    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=PATH, got {value!r}")
        named[name] = Path(path)
    return named


def load_named_models(
    values: Iterable[str], expected_kind: str | None = None
) -> dict[str, ScoreCriticModel]:
    """``NAME=PATH`` strings into ``{NAME: model}`` (:func:`parse_named_paths`, then
    :func:`train.model.load_model`, in eval mode on the CPU).

    Raises:
        ValueError: a malformed value (named), or a checkpoint that does not load or is not of
            ``expected_kind`` (:class:`train.model.CheckpointError`, naming the file).
    """
    named = parse_named_paths(values)
    return {name: load_model(path, expected_kind=expected_kind) for name, path in named.items()}


# Windows in the paper preset's schedule per step (300 epochs x 1000 steps x batch 16), and the
# scale below which the results page says a run shows the pipeline, not the method.
PAPER_SCHEDULE_WINDOWS = 300 * 1000 * 16
DEMO_SCALE_WINDOWS = 50_000


def training_windows(checkpoint: Path) -> int | None:
    """Windows a checkpoint's run trained on: global batch x steps per epoch x epochs run, from
    the ``config.json`` and ``metrics.json`` beside it; None when they are not there (a
    checkpoint outside a run folder, or a run that has not finished)."""
    run = Path(checkpoint).parent
    try:
        config = json.loads((run / "config.json").read_text())
        history = json.loads((run / "metrics.json").read_text())["history"]
        train = config["config"]["train"]
        return (int(train["batch_size"]) * int(config.get("world_size", 1))
                * int(train["steps_per_epoch"]) * len(history))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def discover_checkpoints(runs: Path) -> dict[str, Path]:
    """Checkpoints in a runs folder: ``runs/<name>/best.pt`` as ``<name>`` and
    ``runs/<name>/transcriptor.pt`` (step-3 runs) as ``<name>/transcriptor``."""
    runs = Path(runs)
    if not runs.is_dir():
        raise EvaluationError(f"{runs}: runs folder not found")
    found: dict[str, Path] = {}
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        if (run / "best.pt").is_file():
            found[run.name] = run / "best.pt"
        if (run / "transcriptor.pt").is_file():
            found[f"{run.name}/transcriptor"] = run / "transcriptor.pt"
    return found


def paper_row(system: str, rows: Mapping[str, str]) -> str | None:
    """The published row a scored system reproduces: the ``paper_row`` its checkpoint recorded
    (``rows``, from :func:`load_models`), or the mixture/oracle rows by their system names.
    Names are labels only: a run called ``step3-aml-seed1`` is matched by its record, never
    by its name."""
    if system in (MIXTURE_SYSTEM, ORACLE_SYSTEM):
        return system
    return rows.get(system) or None


@dataclass
class LoadedModels:
    """The checkpoints to evaluate, loaded, split by kind (classifiers are not scored)."""

    separators: dict[str, ScoreCriticModel] = field(default_factory=dict)
    transcriptors: dict[str, ScoreCriticModel] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    recipes: dict[str, str] = field(default_factory=dict)  # system -> recorded recipe
    paper_rows: dict[str, str] = field(default_factory=dict)  # system -> recorded paper row


def load_models(
    checkpoints: dict[str, Path], instruments: Sequence[str], device: torch.device
) -> LoadedModels:
    """Load every checkpoint, check its instruments against the shards', sort by kind."""
    loaded = LoadedModels()
    for name, path in checkpoints.items():
        payload = load_checkpoint(path)
        stored = payload.get("instruments")
        if stored is not None and [str(s) for s in stored] != list(instruments):
            raise EvaluationError(
                f"{path}: checkpoint instruments {list(stored)} differ from the shards' "
                f"{list(instruments)}"
            )
        model = load_model(path).to(device).eval()
        if model.n_instruments != len(instruments):
            raise EvaluationError(
                f"{path}: model has {model.n_instruments} instruments, the shards "
                f"{len(instruments)}"
            )
        loaded.recipes[name] = str(payload.get("recipe", ""))
        loaded.paper_rows[name] = str(payload.get("paper_row", ""))
        if payload["kind"] == "separator":
            loaded.separators[name] = model
        elif payload["kind"] == "transcriptor":
            loaded.transcriptors[name] = model
        else:
            loaded.ignored[name] = f"a {payload['kind']} checkpoint is not scored"
    return loaded


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# Separation
# --------------------------------------------------------------------------------------------


def oracle_ratio_masks(stem_magnitudes: np.ndarray) -> np.ndarray:
    """Ideal ratio masks M_i = |S_i| / Σ_j |S_j| from ``[I, F, T]`` stem magnitudes.

    Bins where every stem is exactly zero get mask 0 (nothing to distribute).
    """
    total = stem_magnitudes.sum(axis=0, keepdims=True)
    return np.divide(
        stem_magnitudes, total, out=np.zeros_like(stem_magnitudes), where=total > 0
    ).astype(np.float32)


def segment_bounds(n_samples: int, segment_samples: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping ``[start, stop)`` segments; a last partial segment is kept
    when it is at least half a segment long (a track shorter than that gives one segment)."""
    if segment_samples < 1:
        raise ValueError(f"segment length must be >= 1 sample, got {segment_samples}")
    bounds = [
        (start, min(start + segment_samples, n_samples))
        for start in range(0, n_samples, segment_samples)
    ]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < segment_samples / 2:
        bounds.pop()
    return bounds


def silent_segments(
    references: np.ndarray, bounds: Sequence[tuple[int, int]], silence_db: float
) -> np.ndarray:
    """``[I, n_segments]`` bool: the reference's RMS in the segment is below ``silence_db`` dBFS."""
    threshold = 10.0 ** (silence_db / 10.0)  # mean-square power
    silent = np.empty((references.shape[0], len(bounds)), dtype=bool)
    for k, (start, stop) in enumerate(bounds):
        power = np.mean(np.square(references[:, start:stop], dtype=np.float64), axis=-1)
        silent[:, k] = power < threshold
    return silent


def segment_si_sdr(
    estimates: np.ndarray,
    references: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    silent: np.ndarray,
) -> np.ndarray:
    """``[I, n_segments]`` SI-SDR in dB of ``estimates [I, n]`` against ``references [I, n]``,
    NaN where the reference is silent."""
    scores = np.full(silent.shape, np.nan)
    for k, (start, stop) in enumerate(bounds):
        values = si_sdr(estimates[:, start:stop], references[:, start:stop])
        scores[:, k] = np.where(silent[:, k], np.nan, values)
    return scores


# --------------------------------------------------------------------------------------------
# Accumulators
# --------------------------------------------------------------------------------------------


@dataclass
class SeparationTally:
    """SI-SDR values per system and instrument, pooled over the segments of all tracks."""

    instruments: list[str]
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    per_track: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_track_segments: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    segments_total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    segments_silent: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add_track(self, track_id: str, system: str, scores: np.ndarray) -> None:
        """Record one track's ``[I, n_segments]`` scores (NaN = skipped) for ``system``."""
        by_instrument = self.values.setdefault(system, {name: [] for name in self.instruments})
        track_means = self.per_track.setdefault(system, {})
        track_counts = self.per_track_segments.setdefault(system, {})
        track_means[track_id], track_counts[track_id] = {}, {}
        for name, row in zip(self.instruments, scores, strict=True):
            kept = row[~np.isnan(row)]
            by_instrument[name].extend(float(v) for v in kept)
            track_means[track_id][name] = float(kept.mean()) if kept.size else float("nan")
            track_counts[track_id][name] = int(kept.size)

    def count_segments(self, silent: np.ndarray) -> None:
        """Record which segments of one track are scored and which are skipped as silent."""
        for name, row in zip(self.instruments, silent, strict=True):
            self.segments_total[name] += int(row.size)
            self.segments_silent[name] += int(row.sum())

    def summary(self) -> dict[str, Any]:
        """Per system: mean and count per instrument, and the average over instruments."""
        systems = {}
        for system, by_instrument in self.values.items():
            means = {
                name: (float(np.mean(v)) if v else float("nan"))
                for name, v in by_instrument.items()
            }
            systems[system] = {
                "si_sdr_db": means,
                "avg_db": _nanmean(means.values()),
                "n_segments": {name: len(v) for name, v in by_instrument.items()},
                "per_track_db": self.per_track.get(system, {}),
                # scored segments per track: the weights that make per-track means pool back
                # to the system's mean (train.intervals resamples tracks with them)
                "per_track_segments": self.per_track_segments.get(system, {}),
            }
        return {
            "systems": systems,
            "segments": {
                name: {
                    "total": self.segments_total[name],
                    "skipped_silent": self.segments_silent[name],
                    "scored": self.segments_total[name] - self.segments_silent[name],
                }
                for name in self.instruments
            },
        }


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class TranscriptionTally:
    """Per (transcriptor, condition, instrument): per-track scores and pooled note counts."""

    instruments: list[str]
    scores: dict[tuple[str, str, str], list[dict[str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    counts: dict[tuple[str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0])
    )

    def add(
        self,
        system: str,
        condition: str,
        instrument: str,
        ref_roll: np.ndarray,
        prob: np.ndarray,
        threshold: float,
    ) -> None:
        """Score one instrument's ``prob [88, T]`` against ``ref_roll [88, T]`` on one track."""
        result = transcription_scores(ref_roll, prob, threshold=threshold)
        key = (system, condition, instrument)
        matched_ref_est = self.counts[key]
        matched_ref_est[0] += result.n_matched
        matched_ref_est[1] += result.n_reference
        matched_ref_est[2] += result.n_estimated
        if result.n_reference > 0:
            self.scores[key].append(result.as_dict())

    def summary(self) -> dict[str, Any]:
        """Nested ``{system: {condition: {instrument | "all": {...}}}}`` of means and counts."""
        out: dict[str, Any] = {}
        metrics = ("precision", "recall", "f1", "f1_with_offsets", "frame_accuracy")
        for (system, condition, instrument), (matched, n_ref, n_est) in self.counts.items():
            rows = self.scores.get((system, condition, instrument), [])
            entry: dict[str, Any] = {m: _nanmean(row[m] for row in rows) for m in metrics}
            entry["n_tracks"] = len(rows)
            entry["n_matched"], entry["n_reference"], entry["n_estimated"] = matched, n_ref, n_est
            entry["fp_rate"] = 1.0 - matched / n_est if n_est else float("nan")
            out.setdefault(system, {}).setdefault(condition, {})[instrument] = entry
        for conditions in out.values():
            for by_instrument in conditions.values():
                matched = sum(e["n_matched"] for e in by_instrument.values())
                n_est = sum(e["n_estimated"] for e in by_instrument.values())
                by_instrument["all"] = {
                    "f1": _nanmean(
                        by_instrument[i]["f1"] for i in self.instruments if i in by_instrument
                    ),
                    "frame_accuracy": _nanmean(
                        by_instrument[i]["frame_accuracy"]
                        for i in self.instruments
                        if i in by_instrument
                    ),
                    "f1_with_offsets": _nanmean(
                        by_instrument[i]["f1_with_offsets"]
                        for i in self.instruments
                        if i in by_instrument
                    ),
                    "fp_rate": 1.0 - matched / n_est if n_est else float("nan"),
                }
        return out


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    shards: Path,
    split: str = "test",
    checkpoints: dict[str, Path] | None = None,
    out: Path = Path("reports"),
    runs: Path | None = None,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    silence_db: float = DEFAULT_SILENCE_DB,
    threshold: float = 0.5,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    max_tracks: int | None = None,
    figure_tracks: int = DEFAULT_FIGURE_TRACKS,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Score separators (Table 1) and transcriptors (Table 2) on the whole tracks of a split.

    Args:
        shards: shard root (``ShardSet(shards, split)``).
        split: which split to score ("test").
        checkpoints: system name -> checkpoint path; merged over those found in ``runs``.
        out: report folder: ``metrics.json``, ``results.md``, ``figures/``.
        runs: a runs folder scanned with :func:`discover_checkpoints`.
        segment_seconds: SI-SDR segment length.
        silence_db: RMS level (dBFS) under which a reference segment is skipped.
        threshold: note activation threshold on transcriptor probabilities.
        chunk_frames: model chunk size (results do not depend on it, see train.inference).
        max_tracks: score only the first tracks (None: all).
        figure_tracks: number of tracks that get figures.
        device: "auto", "cpu", "cuda", ...
        progress: a tqdm bar per scored track on stderr.

    Returns:
        The full metrics dict, written to ``out/details.json`` (the headline of it to
        ``out/metrics.json``, see the module docstring).

    Raises:
        EvaluationError: a bad setting, an ``out`` that is not a folder, nothing to score, or
            checkpoints that do not fit the shards; checked before anything is written. A
            report folder this call created is removed again when the evaluation fails.
    """
    out = Path(out)
    check_settings(out, segment_seconds, threshold, max_tracks, figure_tracks)
    systems = dict(discover_checkpoints(runs)) if runs is not None else {}
    systems.update({name: Path(path) for name, path in (checkpoints or {}).items()})
    if not systems:
        where = f"{runs}: no checkpoints to score" if runs is not None else "no checkpoints given"
        raise EvaluationError(
            f"{where} (no <run>/best.pt or <run>/transcriptor.pt); train some first, or give "
            "--checkpoint NAME=PATH"
        )
    shard_set = ShardSet(Path(shards), split)
    instruments = list(shard_set.instruments)
    models = load_models(systems, instruments, resolve_device(device))
    if not models.separators and not models.transcriptors:
        raise EvaluationError(
            f"no separator or transcriptor among {', '.join(map(str, systems.values()))} "
            f"({'; '.join(models.ignored.values())}): nothing to score"
        )
    n_tracks = len(shard_set) if max_tracks is None else min(max_tracks, len(shard_set))
    if n_tracks == 0:
        raise EvaluationError(f"{shards}: split {split!r} has no tracks")
    created = not out.exists()
    try:
        return _evaluate_into(
            out, shards, split, shard_set, systems, models, n_tracks, segment_seconds,
            silence_db, threshold, chunk_frames, figure_tracks, progress,
        )
    except BaseException:
        if created:  # nothing half-written is left to be mistaken for a report
            shutil.rmtree(out, ignore_errors=True)
        raise


def check_settings(
    out: Path,
    segment_seconds: float,
    threshold: float,
    max_tracks: int | None,
    figure_tracks: int,
) -> None:
    """Refuse settings :func:`evaluate` cannot honour, naming the setting (or the path).

    Raises:
        EvaluationError: one line.
    """
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"{out}: exists and is not a folder; --out names the report folder")
    if not (math.isfinite(segment_seconds) and segment_seconds * SAMPLE_RATE >= 1):
        raise EvaluationError(f"segment_seconds must be > 0, got {segment_seconds}")
    if not 0.0 <= threshold <= 1.0:
        raise EvaluationError(f"threshold must be in [0, 1], got {threshold}")
    if max_tracks is not None and max_tracks < 1:
        raise EvaluationError(f"max_tracks must be >= 1, got {max_tracks}")
    if figure_tracks < 0:
        raise EvaluationError(f"figure_tracks must be >= 0, got {figure_tracks}")


def _evaluate_into(
    out: Path,
    shards: Path,
    split: str,
    shard_set: ShardSet,
    systems: dict[str, Path],
    models: LoadedModels,
    n_tracks: int,
    segment_seconds: float,
    silence_db: float,
    threshold: float,
    chunk_frames: int,
    figure_tracks: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``n_tracks`` tracks into ``out`` (:func:`evaluate`, after its checks); the
    figures first, the JSON files and ``results.md`` last, each written whole, the headline
    ``metrics.json`` the very last (its presence marks a finished report)."""
    instruments = list(shard_set.instruments)
    figures_dir = out / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)

    separation = SeparationTally(instruments)
    transcription = TranscriptionTally(instruments)
    segment_samples = int(round(segment_seconds * SAMPLE_RATE))
    tracks_without_stems: list[str] = []
    for index in tqdm(range(n_tracks), desc=f"evaluate {split}", unit="track",
                      disable=not progress, dynamic_ncols=True):
        info = shard_set.tracks[index]
        has_stems = bool(info.has_stems)
        fields = ("mix", "stems", "roll") if has_stems else ("mix", "roll")
        track = shard_set.read_track(index, fields=fields)
        if not has_stems:
            tracks_without_stems.append(info.track_id)
        result = evaluate_track(
            track,
            models,
            instruments,
            separation,
            transcription,
            info.track_id,
            segment_samples,
            silence_db,
            threshold,
            chunk_frames,
        )
        if index < figure_tracks:
            plot_track(figures_dir, info.track_id, track, result, instruments)

    metrics = {
        "shards": str(shards),
        "split": split,
        "n_tracks": n_tracks,
        "instruments": instruments,
        "checkpoints": {name: str(path) for name, path in systems.items()},
        "ignored_checkpoints": models.ignored,
        "recipes": models.recipes,
        "paper_rows": models.paper_rows,
        "training_windows": {name: n for name, path in systems.items()
                             if name in models.separators
                             and (n := training_windows(path)) is not None},
        "tracks_without_stems": tracks_without_stems,
        "protocol": {
            "segment_seconds": segment_seconds,
            "silence_db": silence_db,
            "si_sdr_zero_mean": True,
            "note_onset_tolerance_s": 0.05,
            "threshold": threshold,
            "chunk_frames": chunk_frames,
        },
        "separation": separation.summary(),
        "transcription": transcription.summary(),
    }
    plot_si_sdr_bars(figures_dir / "si_sdr.png", metrics)
    atomic_write_text(out / DETAILS_FILE, json.dumps(_json_safe(metrics), indent=2) + "\n")
    for name, rows in plot_rows(metrics).items():
        atomic_write_text(out / name, json.dumps(_json_safe(rows), indent=1) + "\n")
    atomic_write_text(out / RESULTS_FILE, results_markdown(metrics))
    atomic_write_text(
        out / HEADLINE_FILE, json.dumps(_json_safe(headline_metrics(metrics)), indent=2) + "\n"
    )
    return metrics


@dataclass
class TrackOutputs:
    """What the figures of one track need: magnitudes and rolls of the first models."""

    mix_magnitude: np.ndarray
    stem_magnitudes: np.ndarray | None
    separated_magnitudes: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    ref_roll: np.ndarray


def evaluate_track(
    track: dict[str, np.ndarray],
    models: LoadedModels,
    instruments: list[str],
    separation: SeparationTally,
    transcription: TranscriptionTally,
    track_id: str,
    segment_samples: int,
    silence_db: float,
    threshold: float,
    chunk_frames: int,
) -> TrackOutputs:
    """Score every model on one track, adding to the tallies."""
    mix = np.asarray(track["mix"], dtype=np.float32)
    ref_roll = np.transpose(np.asarray(track["roll"], dtype=bool), (1, 2, 0))  # [I, 88, T]
    with torch.no_grad():
        mix_spec = stft(torch.from_numpy(mix))  # [F, T] complex
    magnitude = mix_spec.abs()
    if magnitude.shape[-1] != ref_roll.shape[-1]:
        raise EvaluationError(
            f"track {track_id}: roll has {ref_roll.shape[-1]} frames, the mixture STFT "
            f"{magnitude.shape[-1]}"
        )
    outputs = TrackOutputs(magnitude.numpy(), None, {}, {}, ref_roll)

    if "stems" in track:
        stems = np.asarray(track["stems"], dtype=np.float32)  # [I, n]
        with torch.no_grad():
            stem_magnitudes = stft(torch.from_numpy(stems)).abs().numpy()  # [I, F, T]
        outputs.stem_magnitudes = stem_magnitudes
        bounds = segment_bounds(len(mix), segment_samples)
        silent = silent_segments(stems, bounds, silence_db)
        separation.count_segments(silent)
        estimates = {
            MIXTURE_SYSTEM: np.broadcast_to(mix, stems.shape),
            ORACLE_SYSTEM: masks_to_waveforms(
                oracle_ratio_masks(stem_magnitudes), mix_spec, len(mix)
            ),
        }
        for name, separator in models.separators.items():
            masks = separation_masks(separator, magnitude, chunk_frames)
            estimates[name] = masks_to_waveforms(masks, mix_spec, len(mix))
            outputs.separated_magnitudes[name] = masks * outputs.mix_magnitude[None]
        for name, estimate in estimates.items():
            separation.add_track(track_id, name, segment_si_sdr(estimate, stems, bounds, silent))
    else:
        stem_magnitudes = None

    for name, transcriptor in models.transcriptors.items():
        prob = transcription_probabilities(transcriptor, magnitude, chunk_frames)
        outputs.probabilities[name] = prob
        for i, instrument in enumerate(instruments):
            transcription.add(name, "mixture", instrument, ref_roll[i], prob[i], threshold)
        if stem_magnitudes is not None:
            for i, instrument in enumerate(instruments):
                iso = transcription_probabilities(
                    transcriptor, torch.from_numpy(stem_magnitudes[i]), chunk_frames
                )
                transcription.add(name, "iso tracks", instrument, ref_roll[i], iso[i], threshold)
    return outputs


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN -> None (JSON has no NaN), tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}".replace("-", "−")


def column_order(instruments: Sequence[str]) -> list[str]:
    """Instruments in the paper's column order (bass, guitar, piano), others after."""
    known = [name for name in PAPER_INSTRUMENT_ORDER if name in instruments]
    return known + [name for name in instruments if name not in known]


def _system_order(
    names: Iterable[str], table: Sequence[str], rows: Mapping[str, str]
) -> list[str]:
    rank = {key: k for k, key in enumerate(table)}

    def sort_key(name: str) -> tuple[int, str]:
        key = paper_row(name, rows)
        return (rank.get(key or "", len(rank)), name)

    return sorted(names, key=sort_key)


def _scale_lines(windows: Mapping[str, int], n_tracks: int) -> list[str]:
    """The results page's training-scale paragraph: windows each separator trained on, against
    the paper's schedule, and, below :data:`DEMO_SCALE_WINDOWS`, what such a small scale can and
    cannot show."""
    if not windows:
        return []
    runs = ", ".join(f"{name} {n:,}" for name, n in sorted(windows.items()))
    lines = [f"Training scale: windows each separator trained on (its own step; batch x steps "
             f"x epochs): {runs}. The paper preset's schedule allows up to "
             f"{PAPER_SCHEDULE_WINDOWS:,} per step."]
    if max(windows.values()) < DEMO_SCALE_WINDOWS:
        lines.append(
            f"This is a demo's scale: minutes of training on a small corpus, one seed, "
            f"{n_tracks} test tracks. It can show that the pipeline runs end to end and whether a "
            "separator trained without stems moves above the input mixture on this corpus. It "
            "cannot show what the method reaches, how close systems rank (one seed and no "
            "intervals: differences of a dB or two are within the spread between seeds at this "
            "scale), or anything about real recordings. The bench results "
            "(reports/bench/README.md) train the paper's systems, our recipe and its ablations "
            "for hours, with 3 seeds, 95 % intervals and a held-out corpus "
            "(params/bench.yaml).")
    return [" ".join(lines), ""]


def results_markdown(metrics: dict[str, Any]) -> str:
    """``results.md``: Table 1 and Table 2 in the paper's layout, published numbers beside ours."""
    instruments = column_order(metrics["instruments"])
    protocol = metrics["protocol"]
    sep = metrics["separation"]
    lines = [
        "# Evaluation results",
        "",
        f"Shards `{metrics['shards']}`, split `{metrics['split']}`, {metrics['n_tracks']} tracks. "
        "Paper columns: Hung, Wichern & Le Roux (ICASSP 2021), Slakh2100-split2.",
        "",
        *_scale_lines(metrics.get("training_windows") or {}, metrics["n_tracks"]),
        "## Table 1: separation, SI-SDR (dB)",
        "",
        f"Zero-mean SI-SDR on non-overlapping {protocol['segment_seconds']:g}-s segments of whole "
        f"tracks; segments whose reference stem is below {protocol['silence_db']:g} dBFS RMS are "
        "skipped. Mean over segments per instrument; avg = mean over instruments.",
        "",
        "| system | "
        + " | ".join(instruments)
        + " | avg | "
        + " | ".join(f"paper {i}" for i in instruments)
        + " | paper avg |",
        "|---|" + "---|" * (2 * len(instruments) + 2),
    ]
    order = list(PAPER_TABLE1_LABELS)
    rows = metrics.get("paper_rows", {})
    for system in _system_order(sep["systems"], order, rows):
        entry = sep["systems"][system]
        key = paper_row(system, rows)
        paper = PAPER_TABLE1.get(key or "", {})
        if system in (MIXTURE_SYSTEM, ORACLE_SYSTEM):
            label = PAPER_TABLE1_LABELS[system]
        elif key is None:
            label = system
        else:
            label = f"{system} ({PAPER_TABLE1_LABELS.get(key, key)})"
        cells = [_fmt(entry["si_sdr_db"].get(i), 2) for i in instruments]
        cells.append(_fmt(entry["avg_db"], 2))
        cells += [_fmt(paper.get(i), 2) for i in instruments] + [_fmt(paper.get("avg"), 2)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Segments per instrument: "
        + ", ".join(
            f"{name} {c['scored']} scored / {c['skipped_silent']} silent skipped"
            for name, c in sep["segments"].items()
        )
        + ".",
    ]
    if metrics["tracks_without_stems"]:
        lines.append(
            f"Tracks without stems (not in Table 1): {len(metrics['tracks_without_stems'])}."
        )

    lines += [
        "",
        "## Table 2: transcription, note accuracy",
        "",
        "Note F1 by mir_eval (onset within 50 ms, same pitch, offsets ignored), mean over tracks "
        "with notes of the instrument. FP rate: share of estimated notes matching no reference "
        "note (1 − precision, pooled over all tracks and instruments). Frame acc.: "
        "mir_eval.multipitch Accuracy. F1 w/ off.: offsets within 20 % / 50 ms, mean over "
        "instruments.",
        "",
        "| transcriptor | evaluated on | "
        + " | ".join(instruments)
        + " | FP rate | frame acc. | F1 w/ off. | "
        + " | ".join(f"paper {i}" for i in instruments)
        + " | paper FP rate |",
        "|---|---|" + "---|" * (2 * len(instruments) + 4),
    ]
    paper_runs = ["step1", "step3", "step3-aml", "step3-atl"]
    trans = metrics["transcription"]
    for system in _system_order(trans, paper_runs, rows):
        key = paper_row(system, rows)
        for condition in TRANSCRIPTION_CONDITIONS:
            if condition not in trans[system]:
                continue
            entry = trans[system][condition]
            paper = PAPER_TABLE2.get((key or "", condition), {})
            cells = [_fmt(entry.get(i, {}).get("f1"), 2) for i in instruments]
            cells += [
                _fmt(entry["all"][m], 2) for m in ("fp_rate", "frame_accuracy", "f1_with_offsets")
            ]
            cells += [_fmt(paper.get(i), 2) for i in instruments] + [_fmt(paper.get("fp_rate"), 2)]
            lines.append(f"| {system} | {condition} | " + " | ".join(cells) + " |")
    if metrics["ignored_checkpoints"]:
        lines += [
            "",
            "Not scored: "
            + "; ".join(f"{name} ({why})" for name, why in metrics["ignored_checkpoints"].items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Headline, details, plot rows
# --------------------------------------------------------------------------------------------


def _transcriptor_run(system: str) -> str:
    """``"step3/transcriptor"`` -> ``"step3"``: a headline key per run (only transcriptors
    have note scores, so the suffix distinguishes nothing there)."""
    return system.removesuffix("/transcriptor")


def gain_ratios(si_sdr: Mapping[str, Mapping[str, float | None]], mixture: str,
                supervised: str | None) -> dict[str, dict[str, float]]:
    """The share of the supervised gain each system recovers, per column (instruments, avg):
    ``(system - mixture) / (supervised - mixture)``, the definition of :mod:`train.intervals`
    and of the paper's 5.75 vs 8.16 vs -2.34 dB (0.77). ``si_sdr``: system -> column -> dB
    (``avg`` included). Empty when the mixture or the supervised row is missing; NaN where a
    cell is missing or the supervised gain is 0. The mixture, supervised and oracle rows get
    no ratio (0, 1 and a ceiling by construction)."""
    if mixture not in si_sdr or supervised is None or supervised not in si_sdr:
        return {}
    ratios: dict[str, dict[str, float]] = {}
    for system, cells in si_sdr.items():
        if system in (mixture, supervised, ORACLE_SYSTEM):
            continue
        ratios[system] = {}
        for column, value in cells.items():
            base, top = si_sdr[mixture].get(column), si_sdr[supervised].get(column)
            if value is None or base is None or top is None or top == base:
                ratios[system][column] = float("nan")
            else:
                ratios[system][column] = (value - base) / (top - base)
    return ratios


def _table1_cells(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """system -> instrument | "avg" -> our SI-SDR (dB), from a details dict."""
    return {
        system: {**entry["si_sdr_db"], "avg": entry["avg_db"]}
        for system, entry in metrics["separation"]["systems"].items()
    }


def _supervised_system(metrics: Mapping[str, Any]) -> str | None:
    """The scored system that is the supervised reference: the one whose checkpoint records
    the paper's supervised row (the first by name when several do)."""
    rows = metrics.get("paper_rows", {})
    found = sorted(s for s in metrics["separation"]["systems"] if rows.get(s) == SUPERVISED_ROW)
    return found[0] if found else None


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The few numbers a researcher compares between runs, from a details dict: the pipeline's
    DVC metric (``out/metrics.json``).

    * ``si_sdr``: per system, the average SI-SDR over instruments (dB; Table 1's Avg column);
    * ``gain_ratio``: per trained system, its share of the supervised gain over the mixture
      (:func:`gain_ratios`, avg column);
    * ``note_f1`` and ``fp_rate``: per transcriptor (keyed by run), note F1 averaged over
      instruments and the pooled false-positive rate on mixtures (Table 2).

    Per instrument, per track and per segment figures stay in ``details.json``, the plots
    (``table1.json``, ``gain.json``) and ``results.md``: one value per system and column
    here would make ``dvc exp show`` hundreds of columns wide.
    """
    cells = _table1_cells(metrics)
    ratios = gain_ratios(cells, MIXTURE_SYSTEM, _supervised_system(metrics))
    transcription = metrics.get("transcription", {})
    headline: dict[str, dict[str, float]] = {
        "si_sdr": {system: row["avg"] for system, row in cells.items()},
        "gain_ratio": {system: row["avg"] for system, row in ratios.items()},
        "note_f1": {}, "fp_rate": {},
    }
    for system, conditions in transcription.items():
        if "mixture" in conditions:
            run = _transcriptor_run(system)
            headline["note_f1"][run] = conditions["mixture"]["all"]["f1"]
            headline["fp_rate"][run] = conditions["mixture"]["all"]["fp_rate"]
    return {key: value for key, value in headline.items() if value}


def plot_rows(metrics: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for ``dvc plots show``: ``table1.json`` (SI-SDR per system and instrument, ours and
    the paper's) and ``gain.json`` (the gain ratio likewise), keyed by file name.

    Each row is ``{"system", "instrument", "source": "ours" | "paper", <value>}``; the paper's
    rows come from :data:`PAPER_TABLE1` through the row each checkpoint records, the paper's
    gain ratio from its Table 1 cells by the same definition (:func:`gain_ratios`).
    """
    rows_by_system = metrics.get("paper_rows", {})
    columns = [*column_order(metrics["instruments"]), "avg"]
    ours = _table1_cells(metrics)
    order = _system_order(ours, list(PAPER_TABLE1_LABELS), rows_by_system)
    paper = {s: PAPER_TABLE1[k] for s in order if (k := paper_row(s, rows_by_system) or "")
             in PAPER_TABLE1}
    ratios = {"ours": gain_ratios(ours, MIXTURE_SYSTEM, _supervised_system(metrics)),
              "paper": gain_ratios({**paper, SUPERVISED_ROW: PAPER_TABLE1[SUPERVISED_ROW],
                                    MIXTURE_SYSTEM: PAPER_TABLE1[MIXTURE_SYSTEM]},
                                   MIXTURE_SYSTEM, SUPERVISED_ROW)}
    table1: list[dict[str, Any]] = []
    gain: list[dict[str, Any]] = []
    for system in order:
        for column in columns:
            for source, cells in (("ours", ours), ("paper", paper)):
                value = cells.get(system, {}).get(column)
                if value is not None and not math.isnan(value):
                    table1.append({"system": system, "instrument": column, "source": source,
                                   "si_sdr_db": value})
                ratio = ratios[source].get(system, {}).get(column)
                if ratio is not None and not math.isnan(ratio):
                    gain.append({"system": system, "instrument": column, "source": source,
                                 "gain_ratio": ratio})
    return {TABLE1_PLOT_FILE: table1, GAIN_PLOT_FILE: gain}


def read_details(path: str | Path) -> dict[str, Any]:
    """The full evaluation dict from a report folder, its ``details.json``, or its
    ``metrics.json`` (whose sibling ``details.json`` is read; a ``metrics.json`` written before
    the headline split, such as those under ``reports/bench/evals/``, is the full dict itself).

    Raises:
        EvaluationError: no details there (naming the path).
    """
    path = Path(path)
    if path.is_dir():
        path = path / DETAILS_FILE
    if not path.is_file():
        raise EvaluationError(f"{path}: no such evaluation file")
    data = json.loads(path.read_text())
    if "separation" in data:
        return data
    sibling = path.with_name(DETAILS_FILE)
    if sibling != path and sibling.is_file():
        return json.loads(sibling.read_text())
    raise EvaluationError(
        f"{path}: a headline metrics file without a {DETAILS_FILE} beside it; the per-track "
        f"figures are in the report folder's {DETAILS_FILE}"
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _db(magnitude: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(magnitude, 1e-5))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_track(
    figures_dir: Path,
    track_id: str,
    track: dict[str, np.ndarray],
    outputs: TrackOutputs,
    instruments: list[str],
) -> list[Path]:
    """Per separator: mixture, separated and true spectrograms; per transcriptor: predicted vs.
    true piano rolls. The first ``FIGURE_SECONDS`` of the track are shown."""
    del track  # everything needed is in outputs
    n_show = min(outputs.mix_magnitude.shape[-1], int(FIGURE_SECONDS * SAMPLE_RATE / 500) + 1)
    seconds = frame_times(n_show)[-1] if n_show > 1 else 1.0
    extent_spec = (0.0, seconds, 0.0, SAMPLE_RATE / 2000.0)
    written = []
    vmax = float(_db(outputs.mix_magnitude[:, :n_show]).max())
    style = {"origin": "lower", "aspect": "auto", "cmap": "magma", "vmin": vmax - 80, "vmax": vmax}
    for system, separated in outputs.separated_magnitudes.items():
        n_rows = len(instruments) + 1
        fig, axes = plt.subplots(n_rows, 2, figsize=(11, 2.2 * n_rows), squeeze=False)
        axes[0, 0].imshow(_db(outputs.mix_magnitude[:, :n_show]), extent=extent_spec, **style)
        axes[0, 0].set_title(f"{track_id}: mixture |X|")
        axes[0, 1].axis("off")
        for i, name in enumerate(instruments, start=1):
            axes[i, 0].imshow(_db(separated[i - 1][:, :n_show]), extent=extent_spec, **style)
            axes[i, 0].set_title(f"{system}: separated {name}")
            if outputs.stem_magnitudes is not None:
                axes[i, 1].imshow(
                    _db(outputs.stem_magnitudes[i - 1][:, :n_show]), extent=extent_spec, **style
                )
                axes[i, 1].set_title(f"true {name}")
            for ax in axes[i]:
                ax.set_ylabel("kHz")
        for ax in axes[-1]:
            ax.set_xlabel("s")
        fig.tight_layout()
        path = figures_dir / f"{_safe_name(track_id)}_{_safe_name(system)}_spectrograms.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    extent_roll = (0.0, seconds, 20.5, 108.5)
    for system, prob in outputs.probabilities.items():
        fig, axes = plt.subplots(
            len(instruments), 2, figsize=(11, 2.2 * len(instruments)), squeeze=False
        )
        roll_style = dict(
            origin="lower", aspect="auto", cmap="Greys", vmin=0, vmax=1, extent=extent_roll
        )
        for i, name in enumerate(instruments):
            axes[i, 0].imshow(prob[i][:, :n_show], **roll_style)
            axes[i, 0].set_title(f"{system}: predicted {name}")
            axes[i, 1].imshow(outputs.ref_roll[i][:, :n_show], **roll_style)
            axes[i, 1].set_title(f"true {name}")
            axes[i, 0].set_ylabel("MIDI")
        for ax in axes[-1]:
            ax.set_xlabel("s")
        fig.tight_layout()
        path = figures_dir / f"{_safe_name(track_id)}_{_safe_name(system)}_rolls.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def plot_si_sdr_bars(path: Path, metrics: dict[str, Any]) -> Path | None:
    """Grouped bar chart of SI-SDR per system (groups) and instrument (bars)."""
    systems = metrics["separation"]["systems"]
    if not systems:
        return None
    instruments = column_order(metrics["instruments"])
    names = _system_order(systems, list(PAPER_TABLE1_LABELS), metrics.get("paper_rows", {}))
    width = 0.8 / len(instruments)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4))
    x = np.arange(len(names))
    for k, instrument in enumerate(instruments):
        heights = [systems[s]["si_sdr_db"].get(instrument) for s in names]
        heights = [np.nan if h is None else h for h in heights]
        ax.bar(x + (k - (len(instruments) - 1) / 2) * width, heights, width, label=instrument)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("SI-SDR (dB)")
    ax.set_title(f"Separation on {metrics['split']} ({metrics['n_tracks']} tracks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
