"""Fault injection on the training side: killed runs, corrupted shards, a full disk, unsafe
checkpoints and YAML, checkpoints of another format version.

Kills use ``SCORECRITIC_FAULT=point:n`` (prep/faults.py): ``train`` SIGKILLs itself after the
n-th optimiser step, while ``last.pt`` is written, or between ``best.pt`` and ``last.pt``. The
runs use tiny networks from a params file, as tests/test_trainer.py does; that file already
checks an in-process resume (clean stop after an epoch) and a flipped byte in a shard.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from test_trainer import MODEL, run_recipe

import prep.shards as S
from prep.faults import ENV_VAR
from train.assemble import TrainingError
from train.cli import main as train_cli
from train.model import CheckpointError, Transcriptor, load_model, save_checkpoint

BIN = Path(sys.executable).parent
STEPS, EPOCHS = 3, 2
# Smaller than tests/test_trainer.py's PARAMS (2-s windows there): every killed run is a fresh
# process, so each one must be quick.
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1}
train: {val_windows: 2, num_workers: 0, device: cpu, batch_size: 2, window_frames: 32}
"""


def train_args(step: str, shards: Path, out: Path, params: Path, *extra: str) -> list[str]:
    return [step, "--shards", str(shards), "--out", str(out), "--params", str(params),
            "--set", f"train.max_epochs={EPOCHS}", "--set", f"train.steps_per_epoch={STEPS}",
            "--seed", "3",
            "--no-progress", *extra]


def killed(args: list[str], fault: str) -> None:
    """Run ``train ARGS`` in a subprocess that SIGKILLs itself at ``fault``."""
    env = {**os.environ, ENV_VAR: fault}
    result = subprocess.run([str(BIN / "train"), *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == -9, (fault, result.stdout, result.stderr)


def in_process(args: list[str]) -> None:
    result = CliRunner().invoke(train_cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)


def assert_same_weights(a: Path, b: Path) -> None:
    """Bit-equal final networks (last.pt: trained nets and Adam state; best.pt: weights)."""
    last_a = torch.load(a / "last.pt", weights_only=True)
    last_b = torch.load(b / "last.pt", weights_only=True)
    assert last_a["progress"]["epoch"] == last_b["progress"]["epoch"] == EPOCHS
    for net, weights in last_a["nets"].items():
        assert weights.keys() == last_b["nets"][net].keys()
        for key, value in weights.items():
            assert torch.equal(value, last_b["nets"][net][key]), (net, key)
    torch.testing.assert_close(last_a["optimizer"]["state"], last_b["optimizer"]["state"],
                               rtol=0, atol=0)
    best_a = torch.load(a / "best.pt", weights_only=True)["state_dict"]
    best_b = torch.load(b / "best.pt", weights_only=True)["state_dict"]
    for key, value in best_a.items():
        assert torch.equal(value, best_b[key]), key
    assert [h["epoch"] for h in last_a["progress"]["history"]] == list(range(EPOCHS))


@pytest.mark.parametrize(
    ("step", "faults"),
    [
        # mid-epoch 1; between epoch 1's best.pt and last.pt (last.pt of epoch 0 stays)
        ("step1", [f"train-step:{STEPS + 2}", "best-written:1"]),
        # while writing epoch 0's last.pt (none in place yet); mid-epoch 1
        ("step2", ["checkpoint-write:1", f"train-step:{STEPS + 2}"]),
    ],
)
def test_killed_training_resumes_bit_equal(step, faults, shards, params, tmp_path) -> None:
    extra: list[str] = []
    if step == "step2":
        in_process(train_args("step1", shards, tmp_path / "step1", params))
        extra = ["--transcriptor", str(tmp_path / "step1" / "best.pt")]
    straight, resumed = tmp_path / "straight" / step, tmp_path / "resumed" / step
    in_process(train_args(step, shards, straight, params, *extra))

    for index, fault in enumerate(faults):
        resume = ["--resume"] if (resumed / "last.pt").exists() else []
        killed(train_args(step, shards, resumed, params, *extra, *resume), fault)
        if index == 0 and fault.startswith("checkpoint-write"):
            # killed before the first last.pt was in place: --resume says so and how to go on
            refused = CliRunner().invoke(
                train_cli, train_args(step, shards, resumed, params, *extra, "--resume"))
            assert refused.exit_code != 0 and "start without --resume" in refused.output
            assert not (resumed / "last.pt").exists()
        else:
            # what is there is whole: the previous epoch's state, loadable
            torch.load(resumed / "last.pt", weights_only=True)
        assert not (resumed / "metrics.json").exists()  # not mistaken for a finished run
    in_process(train_args(step, shards, resumed, params, *extra, "--resume"))
    assert_same_weights(straight, resumed)
    assert not list(resumed.glob(".*.partial"))


# --------------------------------------------------------------------------------------------
# Corrupted shards
# --------------------------------------------------------------------------------------------


def test_shards_are_hashed_once_at_start_not_per_step(shards, tmp_path, monkeypatch) -> None:
    hashed: list[Path] = []
    real = S.sha256_file
    monkeypatch.setattr(S, "sha256_file", lambda path, *a: hashed.append(Path(path)) or real(
        path, *a))
    run_recipe("step1", shards, tmp_path / "run",
               sections={"train": dict(steps_per_epoch=2, max_epochs=2)})
    listed = sorted(shards / s.path for s in S.read_manifest(shards).shards)
    assert sorted(hashed) == listed  # 4 steps and 2 validations, each shard hashed once


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_trainer_refuses_a_damaged_shard_naming_it(damage, shards, tmp_path, params) -> None:
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "validation" / "validation-00000.h5"
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size - 1)
    else:
        path.unlink()
    result = CliRunner().invoke(train_cli, train_args("step1", copy, tmp_path / "o", params))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{path}:" in result.output
    expected = {"flip": "SHA-256 does not match", "truncate": "bytes, manifest says",
                "delete": "missing"}[damage]
    assert expected in result.output
    assert not (tmp_path / "o" / "last.pt").exists()


# --------------------------------------------------------------------------------------------
# Disk full while saving
# --------------------------------------------------------------------------------------------


def test_disk_full_while_saving_last_pt_keeps_the_previous_one(shards, tmp_path,
                                                               monkeypatch) -> None:
    out = tmp_path / "run"
    cfg = dict(steps_per_epoch=1, max_epochs=1)
    run_recipe("step1", shards, out, sections={"train": cfg})
    before = hashlib.sha256((out / "last.pt").read_bytes()).hexdigest()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if str(getattr(f, "name", "")).endswith(".last.pt.partial"):
            f.write(b"\0" * 100)  # some bytes made it before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError, match=rf"{out / 'last.pt'}: cannot save checkpoint: disk full"):
        run_recipe("step1", shards, out, sections={"train": dict(steps_per_epoch=1, max_epochs=2)},
                   resume=True)
    assert hashlib.sha256((out / "last.pt").read_bytes()).hexdigest() == before
    assert not list(out.glob(".*.partial"))


# --------------------------------------------------------------------------------------------
# Unsafe inputs and other format versions
# --------------------------------------------------------------------------------------------


class Malicious:
    """Unpickling this calls os.mkdir(target): what a booby-trapped checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _checkpoint_variants(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """{case: (checkpoint file, text the refusal must contain)}."""
    good = save_checkpoint(tmp_path / "good.pt", Transcriptor(MODEL), {"instruments":
                                                                        ["piano", "guitar",
                                                                         "bass"]})
    payload = torch.load(good, weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({**payload, "hook": Malicious(tmp_path / "pwned")}, evil)
    future = tmp_path / "future.pt"
    torch.save({**payload, "format_version": 99}, future)
    return {"pickle": (evil, "not a readable scorecritic checkpoint"),
            "version": (future, "format_version 99 is not supported (expected 1)")}


@pytest.mark.parametrize("case", ["pickle", "version"])
def test_bad_checkpoints_are_refused_by_every_entry_point(case, shards, params,
                                                          tmp_path) -> None:
    path, text = _checkpoint_variants(tmp_path)[case]
    wav = tmp_path / "song.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(CheckpointError, match=re.escape(text)):
        load_model(path)
    commands = {
        "train step2": train_args("step2", shards, tmp_path / "s2", params, "--transcriptor",
                                  str(path)),
        "train evaluate": ["evaluate", "--shards", str(shards), "--split", "validation",
                           "--checkpoint", f"x={path}", "--out", str(tmp_path / "rep"),
                           "--device", "cpu"],
        "train separate": ["separate", "--checkpoint", str(path), str(wav), "--out",
                           str(tmp_path / "sep")],
        "train transcribe": ["transcribe", "--checkpoint", str(path), str(wav), "--out",
                             str(tmp_path / "t.mid")],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(train_cli, args)
        assert result.exit_code == 1, (name, result.output, result.exception)
        assert f"{path}: " in result.output and text in result.output, (name, result.output)
    assert not (tmp_path / "pwned").exists()  # the payload never ran


def test_resume_refuses_unsafe_or_foreign_training_state(shards, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = dict(steps_per_epoch=1, max_epochs=1)
    run_recipe("step1", shards, out, sections={"train": cfg})
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["format_version"] == 1
    more = dict(steps_per_epoch=1, max_epochs=2)

    torch.save({**state, "hook": Malicious(tmp_path / "pwned")}, out / "last.pt")
    with pytest.raises(TrainingError, match=rf"{out / 'last.pt'}: cannot resume, not a readable"):
        run_recipe("step1", shards, out, sections={"train": more}, resume=True)
    assert not (tmp_path / "pwned").exists()

    torch.save({**state, "format_version": 5}, out / "last.pt")
    with pytest.raises(TrainingError, match=r"last.pt: training state format_version 5 found, "
                                            r"expected 1"):
        run_recipe("step1", shards, out, sections={"train": more}, resume=True)

    (out / "last.pt").write_bytes((out / "best.pt").read_bytes()[:1000])  # truncated
    with pytest.raises(TrainingError, match=r"last.pt: cannot resume"):
        run_recipe("step1", shards, out, sections={"train": more}, resume=True)


def test_python_tag_in_params_file_is_refused_naming_it(shards, tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"train: !!python/object/apply:os.mkdir [{tmp_path / 'pwned'}]\n")
    result = CliRunner().invoke(train_cli, train_args("step1", shards, tmp_path / "o", params))
    assert result.exit_code == 1
    assert f"{params}: invalid or unsafe YAML" in result.output
    assert "python/object" in result.output
    assert not (tmp_path / "pwned").exists()
