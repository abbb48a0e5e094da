"""train.selection: the stem-free judge criterion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_data import write_synthetic_shards

import train.selection as selection
from prep.shards import ShardSet
from train.config import ModelConfig
from train.model import build_model


def _roll(rng: np.random.Generator) -> np.ndarray:
    """[3, 88, 200]: a few notes per instrument, 20 frames long."""
    roll = np.zeros((3, 88, 200), dtype=bool)
    for i in range(3):
        for start in range(0, 180, 40):
            roll[i, rng.integers(20, 70), start : start + 20] = True
    return roll


def test_a_clean_source_scores_f1_one_and_no_crosstalk_a_mixture_full_crosstalk(monkeypatch):
    roll = _roll(np.random.default_rng(0))
    # a stand-in judge: source k of the "clean" candidate (filled with k) holds only
    # instrument k's notes; every source of the "mixture" candidate (filled with -1) holds all
    def judge_rolls(judge, magnitude):
        marker = int(magnitude[0, 0])
        prob = roll.astype(np.float32).copy()
        if marker >= 0:
            prob[np.arange(3) != marker] = 0.0
        return prob

    monkeypatch.setattr(selection, "transcription_probabilities", judge_rolls)
    clean = np.stack([np.full((4, 200), k, dtype=np.float32) for k in range(3)])
    f1, recall = selection.judge_magnitudes(None, clean, roll)
    assert f1 == pytest.approx([1.0, 1.0, 1.0])
    assert np.nanmax(recall) == 0.0 and np.isnan(np.diag(recall)).all()
    f1, recall = selection.judge_magnitudes(None, np.full((3, 4, 200), -1.0, np.float32), roll)
    assert f1 == pytest.approx([1.0, 1.0, 1.0])
    off = ~np.eye(3, dtype=bool)
    assert recall[off] == pytest.approx(np.ones(6))


def test_judging_reads_no_stems_and_scores_every_candidate(tmp_path):
    shards = ShardSet(write_synthetic_shards(tmp_path / "s", n_train=1, n_val=2, seconds=4.0),
                      "validation")
    assert not any(t.has_stems for t in shards.tracks)  # nothing to leak: it cannot read them
    torch.manual_seed(0)
    config = ModelConfig(bottleneck_channels=8, hidden_channels=16, blocks_per_repeat=2, repeats=1)
    judge = build_model("transcriptor", config)
    separator = build_model("separator", config)
    judged = selection.judge_separators({"sep": separator}, judge, shards)
    assert set(judged) == {selection.MIXTURE, "sep"}
    for entry in judged.values():
        assert entry.n_tracks == 2
        assert set(entry.own_f1) == set(shards.instruments) == set(entry.crosstalk)
        assert all(0.0 <= v <= 1.0 or np.isnan(v) for v in entry.own_f1.values())
        assert -1.0 <= entry.score <= 1.0 or np.isnan(entry.score)
