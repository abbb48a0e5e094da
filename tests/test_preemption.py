"""Preemption (train/preemption.py): SIGTERM or SIGUSR1 stops a run at the next step boundary
with its state saved and exit code 75; ``--resume`` then ends bit-equal to an uninterrupted run.
Also multi-node ``torchrun`` with a c10d rendezvous: two local "nodes" of one process each.

The signal comes from the run itself, at a chosen optimiser step (``SCORECRITIC_FAULT=
train-step:n:SIGTERM``, prep/faults.py), so where it stops is deterministic. The runs use tiny
networks with dropout (the RNG state must carry over) from a params file.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_data import write_synthetic_shards

from prep.faults import ENV_VAR, parse_fault_signals, parse_faults
from train.cli import main as train_cli
from train.data import (
    EpochBatchSampler,
    WindowDataset,
    make_loader,
    stop_workers,
    track_frame_counts,
)
from train.preemption import EXIT_PREEMPTED, MARKER, ignore_stop_signals, stop_signals

BIN = Path(sys.executable).parent
STEPS, EPOCHS = 4, 2
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1,
        dropout: 0.1}
train: {val_windows: 2, num_workers: 0, device: cpu, batch_size: 2, window_frames: 32}
"""
TIMING = {"windows_per_s", "data_wait_fraction"}  # measured, not computed: may differ


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread in this process and the runs it starts, so the same arithmetic (the
    trainer leaves an explicit OMP_NUM_THREADS alone, so this process is set here: torch read
    its thread count at import, before the variable was)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_args(step: str, shards: Path, out: Path, params: Path, *extra: str) -> list[str]:
    return [step, "--shards", str(shards), "--out", str(out), "--params", str(params),
            "--set", f"train.max_epochs={EPOCHS}", "--set", f"train.steps_per_epoch={STEPS}",
            "--seed", "3", "--no-progress", *extra]


def in_process(args: list[str]) -> None:
    result = CliRunner().invoke(train_cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)


def signalled(args: list[str], fault: str) -> subprocess.CompletedProcess:
    """Run ``train ARGS`` in a subprocess that sends itself a signal at ``fault``."""
    env = {**os.environ, ENV_VAR: fault}
    result = subprocess.run([str(BIN / "train"), *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == EXIT_PREEMPTED, (fault, result.stdout, result.stderr)
    return result


def assert_same_weights_and_adam(a: Path, b: Path) -> tuple[dict, dict]:
    """The two runs' last.pt: networks, weight averages and Adam state bit for bit; returns both
    states for further checks."""
    last_a = torch.load(a / "last.pt", weights_only=True)
    last_b = torch.load(b / "last.pt", weights_only=True)
    for part in ("nets", "averaged"):
        torch.testing.assert_close(last_a[part], last_b[part], rtol=0, atol=0, msg=part)
    torch.testing.assert_close(last_a["optimizer"]["state"], last_b["optimizer"]["state"],
                               rtol=0, atol=0)
    return last_a, last_b


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-equal results: best.pt (and transcriptor.pt), last.pt's networks, weight averages,
    Adam state and progress, and every metric but the measured timings."""
    last_a, last_b = assert_same_weights_and_adam(a, b)
    assert last_a["optimizer"]["param_groups"] == last_b["optimizer"]["param_groups"]
    assert last_a["scheduler"] == last_b["scheduler"]
    progress_a, progress_b = last_a["progress"], last_b["progress"]
    history_a, history_b = progress_a.pop("history"), progress_b.pop("history")
    assert progress_a == progress_b
    assert progress_a["epoch"] == EPOCHS and progress_a["step"] == 0
    assert len(history_a) == len(history_b) == EPOCHS
    for row_a, row_b in zip(history_a, history_b, strict=True):
        assert row_a.keys() == row_b.keys()
        assert {k: v for k, v in row_a.items() if k not in TIMING} == {
            k: v for k, v in row_b.items() if k not in TIMING}
    for name in ("best.pt", "transcriptor.pt"):
        if (a / name).exists():
            best_a = torch.load(a / name, weights_only=True)
            best_b = torch.load(b / name, weights_only=True)
            assert best_a["epoch"] == best_b["epoch"]
            torch.testing.assert_close(best_a["state_dict"], best_b["state_dict"], rtol=0,
                                       atol=0, msg=name)
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    for metrics in (metrics_a, metrics_b):
        del metrics["final"]
        for row in metrics["history"]:
            for key in TIMING:
                del row[key]
    assert metrics_a == metrics_b


def assert_stopped_at(out: Path, result: subprocess.CompletedProcess, signame: str,
                      epoch: int, step: int) -> None:
    """The run saved its state after ``step`` steps of ``epoch`` and said so."""
    state = torch.load(out / "last.pt", weights_only=True)["progress"]
    assert (state["epoch"], state["step"]) == (epoch, step)
    assert len(state["epoch_sums"]) > 0 and len(state["history"]) == epoch
    assert f"{signame}: stopped" in result.stdout
    assert f"at epoch {epoch} after step {step} of {STEPS}" in result.stdout
    assert "--resume" in result.stdout
    assert f"preempted by {signame}" in result.stderr and f"exit code {EXIT_PREEMPTED}" in (
        result.stderr)
    marker = json.loads((out / MARKER).read_text())
    assert marker["exit_code"] == EXIT_PREEMPTED and marker["signal"] == signame
    assert (marker["epoch"], marker["steps_taken"]) == (epoch, step)
    assert not (out / "metrics.json").exists()  # not mistaken for a finished run


def test_sigterm_during_step1_then_resume_is_bit_equal(shards, params, tmp_path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    in_process(train_args("step1", shards, straight, params))
    # the 6th step is epoch 1's second; the resumed run is stopped again after its first step
    result = signalled(train_args("step1", shards, resumed, params), "train-step:6:SIGTERM")
    assert_stopped_at(resumed, result, "SIGTERM", epoch=1, step=2)
    result = signalled(train_args("step1", shards, resumed, params, "--resume"),
                       "train-step:1:SIGTERM")
    assert_stopped_at(resumed, result, "SIGTERM", epoch=1, step=3)
    in_process(train_args("step1", shards, resumed, params, "--resume"))
    assert not (resumed / MARKER).exists()
    assert_same_run(straight, resumed)


def test_sigusr1_after_an_epochs_last_step_with_a_loader_worker(shards, params,
                                                               tmp_path) -> None:
    """Stopped after the last step of epoch 0, before its validation: the resumed run takes
    no step of epoch 0, validates it and goes on. A loader worker draws the batches."""
    worker = ["--set", "train.num_workers=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    in_process(train_args("step1", shards, straight, params, *worker))
    result = signalled(train_args("step1", shards, resumed, params, *worker),
                       f"train-step:{STEPS}:SIGUSR1")
    assert_stopped_at(resumed, result, "SIGUSR1", epoch=0, step=STEPS)
    assert not (resumed / "best.pt").exists()  # epoch 0 was not validated
    in_process(train_args("step1", shards, resumed, params, *worker, "--resume"))
    assert_same_run(straight, resumed)


def test_sigterm_during_step3_then_resume_is_bit_equal(shards, params, tmp_path) -> None:
    """The project's step 3 (scorecritic: weight averages, anchor, two trained networks),
    stopped within its first epoch, before any best.pt."""
    one_step = ["--set", "train.max_epochs=1", "--set", "train.steps_per_epoch=1"]
    in_process(train_args("step1", shards, tmp_path / "step1", params) + one_step)
    in_process(train_args("step2", shards, tmp_path / "step2", params, "--recipe",
                          "scorecritic-step2", "--transcriptor",
                          str(tmp_path / "step1" / "best.pt")) + one_step)
    starts = ["--transcriptor", str(tmp_path / "step1" / "best.pt"),
              "--separator", str(tmp_path / "step2" / "best.pt")]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    in_process(train_args("step3", shards, straight, params, *starts))
    result = signalled(train_args("step3", shards, resumed, params, *starts),
                       "train-step:2:SIGTERM")
    assert_stopped_at(resumed, result, "SIGTERM", epoch=0, step=2)
    assert not (resumed / "best.pt").exists()
    in_process(train_args("step3", shards, resumed, params, *starts, "--resume"))
    assert_same_run(straight, resumed)


def test_loader_workers_ignore_stop_signals_and_handlers_are_restored(shards) -> None:
    """A scheduler signals every process of a job: a loader worker must live on (its main
    process stops it), also one started before any handler was installed. The handlers are
    the caller's again after the block."""
    from prep.shards import ShardSet

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    train_set = ShardSet(shards, "train")
    sampler = EpochBatchSampler(track_frame_counts(train_set), 2, 6, seed=0)
    loader = make_loader(WindowDataset(train_set, ("spec",), 32), sampler, 1, False)
    others = set(multiprocessing.active_children())
    try:
        batches = iter(loader)
        next(batches)
        (worker,) = set(multiprocessing.active_children()) - others
        for sig in before:
            os.kill(worker.pid, sig)
        time.sleep(0.5)
        assert worker.is_alive()
        assert len(list(batches)) == 5  # the rest of the epoch arrives
    finally:
        stop_workers(loader)
    with stop_signals() as request, stop_signals() as inner:
        assert inner is request  # nested: the outer request
        os.kill(os.getpid(), signal.SIGUSR1)
        assert request.signum == signal.SIGUSR1
    assert {sig: signal.getsignal(sig) for sig in before} == before
    try:
        ignore_stop_signals()  # what each worker runs first
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in before)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_fault_spec_names_the_signal_sent() -> None:
    assert parse_fault_signals("train-step:6:SIGTERM,best-written:1") == {
        "train-step": (6, signal.SIGTERM), "best-written": (1, signal.SIGKILL)}
    assert parse_faults("train-step:6:SIGUSR1") == {"train-step": 6}
    for bad in ("train-step:6:TERM", "train-step:6:", "train-step:6:mro"):
        with pytest.raises(ValueError, match=ENV_VAR):
            parse_fault_signals(bad)


# --------------------------------------------------------------------------------------------
# Two "nodes" of one process each, c10d rendezvous
# --------------------------------------------------------------------------------------------

TORCHRUN = BIN / "torchrun"
DDP_PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 2, repeats: 1}
train: {val_windows: 4, num_workers: 0, batch_size: 2, window_frames: 64}
"""
# tests/test_ddp.py's run: 2 epochs of 3 steps, a weight average, the last epoch kept
DDP_SETTINGS = ["--device", "cpu", "--set", "train.max_epochs=2", "--set",
                "train.steps_per_epoch=3", "--set", "weight_average.decay=0.9", "--set",
                "train.keep_checkpoint=last", "--no-progress"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(shards, params file, the single-node 2-process run's folder)."""
    root = tmp_path_factory.mktemp("ddp")
    shards = write_synthetic_shards(root / "shards", n_train=2, n_val=1, seconds=6.0)
    params = root / "params.yaml"
    params.write_text(DDP_PARAMS)
    out = root / "single-node"
    # torchrun sets OMP_NUM_THREADS=1 itself with 2 processes per node, not with 1: set for all
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(TORCHRUN), "--nproc-per-node", "2", "-m", "train", "step1", "--shards",
         str(shards), "--out", str(out), "--params", str(params), *DDP_SETTINGS],
        capture_output=True, text=True, env=env, timeout=240, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return shards, params, out


def two_nodes(shards: Path, params: Path, out: Path, faults: tuple[str, str] = ("", ""),
              resume: bool = False) -> list[subprocess.CompletedProcess]:
    """Run step 1 as two concurrent ``torchrun --nnodes 2 --nproc-per-node 1`` launches that
    meet at a c10d rendezvous, as on two machines sharing the run folder; ``faults`` is each
    node's ``SCORECRITIC_FAULT``."""
    port = free_port()
    command = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
               "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}",
               "-m", "train", "step1", "--shards", str(shards), "--out", str(out),
               "--params", str(params), *DDP_SETTINGS, *(["--resume"] if resume else [])]
    nodes = []
    for fault in faults:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop(ENV_VAR, None)
        if fault:
            env[ENV_VAR] = fault
        nodes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env, cwd=out.parent))
    results = []
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=180)
            results.append(subprocess.CompletedProcess(command, node.returncode, stdout, stderr))
    finally:  # a hung rendezvous or collective: torchrun passes SIGTERM on, then SIGKILLs
        for node in nodes:
            if node.poll() is None:
                node.terminate()
                try:
                    node.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    node.kill()
    return results


def assert_same_weights(a: Path, b: Path) -> None:
    """best.pt (the weight average) and last.pt's network and Adam state, bit for bit."""
    best_a = torch.load(a / "best.pt", weights_only=True)["state_dict"]
    best_b = torch.load(b / "best.pt", weights_only=True)["state_dict"]
    torch.testing.assert_close(best_a, best_b, rtol=0, atol=0)
    last_a, _ = assert_same_weights_and_adam(a, b)
    assert last_a["averaged"]["transcriptor"]["n_averaged"] == 6


def test_c10d_two_nodes_train_as_one_node_with_two_processes(ddp, tmp_path) -> None:
    """Which launch becomes rank 0 is up to the rendezvous; the result cannot depend on it:
    rank r draws rank r's windows whichever process it is, and a sum of two ranks' gradients
    is the same both ways round."""
    shards, params, single = ddp
    out = tmp_path / "two-nodes"
    nodes = two_nodes(shards, params, out)
    for node in nodes:
        assert node.returncode == 0, node.stdout + node.stderr
    assert sum(node.stdout.count("[step1] epoch 0") for node in nodes) == 1  # rank 0 only
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert_same_weights(single, out)


def test_c10d_one_node_signalled_both_stop_at_its_step_and_resume(ddp, tmp_path) -> None:
    """Only the second node gets SIGTERM, after the 4th step (epoch 1's first); the other
    stops at the same step (the ranks agree after every step), rank 0 saves, and a resumed
    two-node run ends bit-equal to the uninterrupted single-node run."""
    shards, params, single = ddp
    out = tmp_path / "two-nodes"
    nodes = two_nodes(shards, params, out, faults=("", "train-step:4:SIGTERM"))
    for node in nodes:  # torchrun reports a failed worker as exit code 1, and its code
        assert node.returncode != 0 and f"exitcode  : {EXIT_PREEMPTED}" in node.stderr, (
            node.stdout + node.stderr)
    assert sum(node.stdout.count("SIGTERM: stopped step1 at epoch 1 after step 1 of 3")
               for node in nodes) == 1
    marker = json.loads((out / MARKER).read_text())
    assert (marker["signal"], marker["epoch"], marker["steps_taken"]) == ("SIGTERM", 1, 1)
    nodes = two_nodes(shards, params, out, resume=True)
    for node in nodes:
        assert node.returncode == 0, node.stdout + node.stderr
    assert not (out / MARKER).exists()
    assert_same_weights(single, out)
