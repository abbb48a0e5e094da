"""Multi-process data-parallel training: 2 CPU processes with gloo, launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from test_data import write_synthetic_shards

from train.data import training_windows
from train.model import load_model

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_ranks_draw_different_windows():
    counts = np.array([400, 700, 300])
    rank0 = training_windows(counts, 8, seed=0, epoch=0, step=0, rank=0)
    rank1 = training_windows(counts, 8, seed=0, epoch=0, step=0, rank=1)
    assert rank0 != rank1


def test_two_process_gloo_run(tmp_path):
    shards = write_synthetic_shards(tmp_path / "shards", n_train=2, n_val=1, seconds=6.0)
    params = tmp_path / "params.yaml"
    params.write_text(
        "model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 2, repeats: 1}\n"
        "train: {val_windows: 4, num_workers: 0, batch_size: 2, window_frames: 64}\n")
    out = tmp_path / "runs" / "step1"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "-m", "train", "step1", "--shards", str(shards),
         "--out", str(out), "--params", str(params), "--device", "cpu",
         "--set", "train.max_epochs=2", "--set", "train.steps_per_epoch=3",
         "--set", "weight_average.decay=0.9", "--set", "train.keep_checkpoint=last",
         "--no-progress"],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # rank 0 alone logs and writes
    assert result.stdout.count("[step1] epoch 0") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["stopped"] == "max_epochs"
    model = load_model(out / "best.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    averaged = torch.load(out / "last.pt", weights_only=True)["averaged"]["transcriptor"]
    assert averaged["n_averaged"] == 6  # one update per optimiser step, 2 epochs x 3 steps
    for name, weights in model.state_dict().items():  # best.pt holds the average
        assert torch.equal(weights, averaged[f"module.{name}"]), name
