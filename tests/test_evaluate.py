"""Tests for train/evaluate.py: oracle and mixture references, silent segments, end-to-end report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from prep.features import (
    SAMPLE_RATE,
    FeatureParams,
    harmonic_mask,
    magnitude_spectrogram,
    n_frames,
    piano_roll,
    stft,
)
from prep.shards import ShardWriter, TrackArrays, manifest_from_shards, write_manifest
from train.config import ModelConfig
from train.evaluate import (
    MIXTURE_SYSTEM,
    ORACLE_SYSTEM,
    PAPER_TABLE1,
    SeparationTally,
    discover_checkpoints,
    evaluate,
    gain_ratios,
    headline_metrics,
    load_named_models,
    oracle_ratio_masks,
    paper_row,
    parse_named_paths,
    plot_rows,
    read_details,
    segment_bounds,
    segment_si_sdr,
    silent_segments,
)
from train.inference import masks_to_waveforms
from train.model import Separator, Transcriptor, save_checkpoint

fast_bss_eval = pytest.importorskip("fast_bss_eval")

INSTRUMENTS = ["piano", "guitar", "bass"]
TINY = ModelConfig(bottleneck_channels=8, hidden_channels=16, blocks_per_repeat=2, repeats=1)


def _harmonic_source(notes: list[tuple[int, float, float]], n_samples: int) -> np.ndarray:
    """Sum of 4 harmonics per note with short fades, like a plucked synthetic instrument."""
    t = np.arange(n_samples) / SAMPLE_RATE
    out = np.zeros(n_samples)
    for pitch, start, end in notes:
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        envelope = np.clip(np.minimum(t - start, end - t) / 0.01, 0.0, 1.0)
        for k in range(1, 5):
            out += envelope * np.sin(2 * np.pi * k * f0 * t) / k
    return (0.2 * out).astype(np.float32)


def test_oracle_mask_far_above_mixture() -> None:
    n = 4 * SAMPLE_RATE
    sources = np.stack(
        [
            _harmonic_source([(60, 0.0, 2.0), (64, 2.0, 4.0)], n),
            _harmonic_source([(40, 0.0, 4.0)], n),
        ]
    )
    mix = sources.sum(axis=0)
    mix_spec = stft(torch.from_numpy(mix))
    stem_mag = stft(torch.from_numpy(sources)).abs().numpy()
    oracle = masks_to_waveforms(oracle_ratio_masks(stem_mag), mix_spec, n)
    bounds = segment_bounds(n, 2 * SAMPLE_RATE)
    silent = silent_segments(sources, bounds, -60.0)
    oracle_db = segment_si_sdr(oracle, sources, bounds, silent)
    mixture_db = segment_si_sdr(np.broadcast_to(mix, sources.shape), sources, bounds, silent)
    assert np.all(oracle_db > 15.0)
    assert np.all(oracle_db - mixture_db > 15.0)


def test_oracle_masks_sum_to_one() -> None:
    magnitudes = np.abs(np.random.default_rng(0).standard_normal((3, 5, 7))).astype(np.float32)
    magnitudes[:, 0, 0] = 0.0
    masks = oracle_ratio_masks(magnitudes)
    total = masks.sum(axis=0)
    assert total[0, 0] == 0.0
    np.testing.assert_allclose(np.delete(total.ravel(), 0), 1.0, rtol=1e-6)


def test_segments_and_silent_references_are_skipped_and_counted() -> None:
    assert segment_bounds(9, 4) == [(0, 4), (4, 8)]  # last sample < half a segment
    assert segment_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert segment_bounds(3, 4) == [(0, 3)]
    rng = np.random.default_rng(1)
    references = 0.1 * rng.standard_normal((2, 3000))
    references[1, 1000:2000] = 1e-5  # -100 dBFS: silent
    references[0, 2000:] = 0.0
    bounds = segment_bounds(3000, 1000)
    silent = silent_segments(references, bounds, -60.0)
    assert silent.tolist() == [[False, False, True], [False, True, False]]
    estimates = references + 0.01 * rng.standard_normal((2, 3000))
    scores = segment_si_sdr(estimates, references, bounds, silent)
    assert np.isnan(scores[0, 2]) and np.isnan(scores[1, 1])
    assert np.all(scores[~silent] > 15.0)
    tally = SeparationTally(["a", "b"])
    tally.count_segments(silent)
    tally.add_track("T1", "sys", scores)
    summary = tally.summary()
    assert summary["segments"]["a"] == {"total": 3, "skipped_silent": 1, "scored": 2}
    assert summary["systems"]["sys"]["n_segments"] == {"a": 2, "b": 2}
    expected_a = np.mean(scores[0, :2])
    assert summary["systems"]["sys"]["si_sdr_db"]["a"] == pytest.approx(expected_a)


def test_paper_row_comes_from_the_record_not_the_name() -> None:
    rows = {"seed1": "step3-aml", "step3-aml": ""}
    assert paper_row("seed1", rows) == "step3-aml"
    assert paper_row("step3-aml", rows) is None
    assert paper_row(MIXTURE_SYSTEM, {}) == MIXTURE_SYSTEM


def test_parse_named_paths_splits_at_the_first_equals_and_names_a_bad_value() -> None:
    named = parse_named_paths(["a=runs/a/best.pt", "b/transcriptor=x=y.pt"])
    assert named == {"a": Path("runs/a/best.pt"), "b/transcriptor": Path("x=y.pt")}
    for bad in ("runs/a/best.pt", "=runs/a/best.pt", "a="):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_named_paths(["ok=p.pt", bad])


def test_load_named_models_loads_each_and_refuses_a_wrong_kind(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "sep.pt", Separator(TINY), {"instruments": INSTRUMENTS})
    save_checkpoint(tmp_path / "tr.pt", Transcriptor(TINY), {"instruments": INSTRUMENTS})
    models = load_named_models([f"a={tmp_path / 'sep.pt'}"], Separator.kind)
    assert list(models) == ["a"] and isinstance(models["a"], Separator)
    assert not models["a"].training
    with pytest.raises(ValueError, match="tr.pt"):
        load_named_models([f"a={tmp_path / 'sep.pt'}", f"b={tmp_path / 'tr.pt'}"], Separator.kind)
    with pytest.raises(ValueError, match="NAME=PATH"):
        load_named_models(["sep.pt"], Separator.kind)


# ------------------------------------------------------------------------------------------
# End to end on a tiny shard set
# ------------------------------------------------------------------------------------------


def _track(track_id: str, seconds: float, seed: int) -> TrackArrays:
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    frames = n_frames(n)
    notes = {
        "piano": [
            (int(p), s, s + 0.5) for p, s in zip(rng.integers(55, 75, 8), range(8), strict=True)
        ],
        "guitar": [(64, 0.2, 3.0), (67, 1.0, 3.5)],  # silent after 3.5 s
        "bass": [
            (int(p), s, s + 0.9) for p, s in zip(rng.integers(30, 45, 8), range(8), strict=True)
        ],
    }
    stems = np.stack([_harmonic_source(notes[name], n) for name in INSTRUMENTS])
    mix = stems.sum(axis=0)
    roll = np.stack([piano_roll(notes[name], frames) for name in INSTRUMENTS], axis=1)
    return TrackArrays(
        track_id=track_id,
        mix=mix,
        stems=stems,
        spec=magnitude_spectrogram(mix),
        roll=roll,
        harmonic_mask=harmonic_mask(roll),
        activity=roll.any(axis=-1),
    )


@pytest.fixture()
def shard_root(tmp_path: Path) -> Path:
    root = tmp_path / "shards"
    with ShardWriter(
        root / "test" / "test-00000.h5",
        split="test",
        instruments=INSTRUMENTS,
        feature_params=FeatureParams(),
        source={"source_corpus": "synthetic", "split_scheme": "test"},
    ) as writer:
        writer.add_track(_track("Track01876", 8.0, 0))
        writer.add_track(_track("Track01877", 9.0, 1))
    write_manifest(root, manifest_from_shards(root))
    return root


def test_evaluate_end_to_end(tmp_path: Path, shard_root: Path) -> None:
    torch.manual_seed(0)
    runs = tmp_path / "runs"
    extra = {"instruments": INSTRUMENTS}
    aml = {**extra, "recipe": "step3-aml", "paper_row": "step3-aml"}
    save_checkpoint(runs / "step1" / "best.pt", Transcriptor(TINY),
                    {**extra, "recipe": "step1", "paper_row": "step1"})
    save_checkpoint(runs / "my-run" / "best.pt", Separator(TINY), aml)
    save_checkpoint(runs / "my-run" / "transcriptor.pt", Transcriptor(TINY), aml)
    # named like a paper row, but trained by no recipe of the paper: no published figures
    save_checkpoint(runs / "step2-cmix" / "best.pt", Separator(TINY), extra)
    assert set(discover_checkpoints(runs)) == {"step1", "my-run", "my-run/transcriptor",
                                               "step2-cmix"}

    # my-run as the trainer leaves it: 4 epochs of 25 steps of 8 windows; step2-cmix has no run
    (runs / "my-run" / "config.json").write_text(json.dumps(
        {"config": {"train": {"batch_size": 8, "steps_per_epoch": 25}}, "world_size": 1}))
    (runs / "my-run" / "metrics.json").write_text(json.dumps({"history": [{}] * 4}))

    out = tmp_path / "reports"
    metrics = evaluate(shard_root, "test", {}, out, runs=runs, figure_tracks=1, device="cpu")

    assert metrics["training_windows"] == {"my-run": 800}
    sep = metrics["separation"]
    assert set(sep["systems"]) == {MIXTURE_SYSTEM, ORACLE_SYSTEM, "my-run", "step2-cmix"}
    # Guitar is silent after 3.5 s: of the 2 + 2 four-second segments, 2 are skipped.
    assert sep["segments"]["guitar"] == {"total": 4, "skipped_silent": 2, "scored": 2}
    assert sep["segments"]["piano"]["skipped_silent"] == 0
    # The input-mixture row against an independent SI-SDR (fast_bss_eval, zero mean).
    from prep.shards import ShardSet

    shard_set = ShardSet(shard_root, "test")
    values = {name: [] for name in INSTRUMENTS}
    for index in range(len(shard_set)):
        track = shard_set.read_track(index, fields=("mix", "stems"))
        for i, name in enumerate(INSTRUMENTS):
            for start in range(0, 8 * SAMPLE_RATE, 4 * SAMPLE_RATE):
                ref = track["stems"][i, start : start + 4 * SAMPLE_RATE]
                if np.mean(ref.astype(np.float64) ** 2) < 1e-6:
                    continue
                est = track["mix"][start : start + 4 * SAMPLE_RATE]
                values[name].append(
                    float(fast_bss_eval.si_sdr(ref[None], est[None], zero_mean=True)[0])
                )
    for name in INSTRUMENTS:
        mixture_db = sep["systems"][MIXTURE_SYSTEM]["si_sdr_db"][name]
        assert mixture_db == pytest.approx(np.mean(values[name]), abs=1e-3)
        assert sep["systems"][ORACLE_SYSTEM]["si_sdr_db"][name] > mixture_db + 10.0
    # Per-track means weighted by their scored segments pool back to every cell exactly, and
    # the bootstrap's point estimate is that cell (train.intervals).
    from train.intervals import TrackScores, bootstrap_table

    rows = {system: [TrackScores.from_metrics(metrics, system)] for system in sep["systems"]}
    table = bootstrap_table(rows, MIXTURE_SYSTEM, ORACLE_SYSTEM, n_resamples=50)
    for system, entry in sep["systems"].items():
        for name in INSTRUMENTS:
            assert table.cells[system][name].point == pytest.approx(entry["si_sdr_db"][name])

    trans = metrics["transcription"]
    assert set(trans) == {"step1", "my-run/transcriptor"}
    entry = trans["step1"]["mixture"]["bass"]
    assert entry["n_tracks"] == 2 and entry["n_reference"] == 16
    assert set(trans["step1"]) == {"mixture", "iso tracks"}

    saved = json.loads((out / "details.json").read_text())
    assert saved["n_tracks"] == 2
    report = (out / "results.md").read_text()
    # rows are matched to the paper's by the recorded recipe, never by the run's name
    assert "| my-run (step 3, + AML) |" in report and "9.07" in report  # paper beside ours
    assert "| step2-cmix |" in report and "7.48" not in report
    assert saved["recipes"]["my-run"] == "step3-aml" and saved["paper_rows"]["step2-cmix"] == ""
    assert "oracle ideal ratio mask" in report and "0.86" in report
    scale = next(line for line in report.splitlines() if line.startswith("Training scale:"))
    assert "my-run 800." in scale and "4,800,000 per step" in scale
    assert "cannot show what the method reaches" in scale and "2 test tracks" in scale
    assert "reports/bench/README.md" in scale
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "si_sdr.png" in figures
    assert "Track01876_my-run_spectrograms.png" in figures
    assert "Track01876_step1_rolls.png" in figures
    assert not any(name.startswith("Track01877") for name in figures)

    # The headline (the DVC metric) is a few numbers; the details stay in details.json, which
    # read_details finds from the folder, the file or its headline sibling.
    headline = json.loads((out / "metrics.json").read_text())
    assert set(headline) == {"si_sdr", "note_f1", "fp_rate"}  # no supervised row: no ratio
    assert headline["si_sdr"]["my-run"] == pytest.approx(sep["systems"]["my-run"]["avg_db"])
    assert set(headline["note_f1"]) == set(headline["fp_rate"]) == {"step1", "my-run"}
    assert headline["note_f1"]["step1"] == pytest.approx(trans["step1"]["mixture"]["all"]["f1"])
    assert sum(len(values) for values in headline.values()) == 4 + 2 + 2
    assert read_details(out) == read_details(out / "metrics.json") == saved
    # Table 1 rows for `dvc plots show`: ours beside the paper's, matched by the record
    table1 = json.loads((out / "table1.json").read_text())
    assert {"system": "my-run", "instrument": "bass", "source": "paper",
            "si_sdr_db": 9.07} in table1
    assert not [r for r in table1 if r["system"] == "step2-cmix" and r["source"] == "paper"]
    gain = json.loads((out / "gain.json").read_text())  # no supervised row: the paper's only
    assert {r["source"] for r in gain} == {"paper"} and {r["system"] for r in gain} == {"my-run"}


def _details(cells: dict[str, dict[str, float]], rows: dict[str, str]) -> dict:
    """A hand-made details dict: system -> {bass, guitar, piano, avg} dB."""
    systems = {s: {"si_sdr_db": {i: c[i] for i in INSTRUMENTS}, "avg_db": c["avg"]}
               for s, c in cells.items()}
    return {"instruments": INSTRUMENTS, "paper_rows": rows,
            "separation": {"systems": systems}, "transcription": {}}


def test_headline_gain_ratio_and_plot_rows_against_the_papers_own_figures() -> None:
    # Our cells set to the paper's: the ratio must be the paper's 0.77 (5.75 vs 8.16 vs -2.34).
    cells = {MIXTURE_SYSTEM: PAPER_TABLE1[MIXTURE_SYSTEM], "sup": PAPER_TABLE1["supervised"],
             "mine": PAPER_TABLE1["step3-aml"]}
    details = _details(cells, {"sup": "supervised", "mine": "step3-aml"})
    headline = headline_metrics(details)
    assert set(headline) == {"si_sdr", "gain_ratio"}
    assert headline["gain_ratio"] == {"mine": pytest.approx((5.75 + 2.34) / (8.16 + 2.34))}
    assert headline["si_sdr"]["sup"] == 8.16
    rows = plot_rows(details)
    gain = {(r["system"], r["instrument"], r["source"]): r["gain_ratio"] for r in rows["gain.json"]}
    assert gain[("mine", "avg", "ours")] == pytest.approx(gain[("mine", "avg", "paper")])
    assert gain[("mine", "bass", "paper")] == pytest.approx((9.07 - 1.15) / (11.13 - 1.15))
    assert ("sup", "avg", "ours") not in gain  # the reference itself gets no ratio
    table1 = rows["table1.json"]
    assert len(table1) == 3 * 4 * 2  # three systems, four columns, ours and the paper's
    assert [r["system"] for r in table1][::8] == ["sup", "mine", MIXTURE_SYSTEM]  # paper order
    assert gain_ratios(cells, MIXTURE_SYSTEM, None) == {}
