"""The training loop (train/trainer.py) and the training commands on a tiny synthetic shard set."""

from __future__ import annotations

import gc
import json
import multiprocessing
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_data import write_synthetic_shards

import train.losses as L
from train.cli import main as cli
from train.config import ModelConfig, TrainConfig, loss_preset
from train.data import to_device
from train.model import load_model
from train.trainer import SPECS, Trainer, TrainingError, run

# Very small nets keep every run to a few seconds on 2 cores.
MODEL = ModelConfig(bottleneck_channels=16, hidden_channels=32, blocks_per_repeat=4, repeats=1)
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1}
train: {val_windows: 8, num_workers: 0, device: cpu, batch_size: 4, window_frames: 64}
"""


def _train_cfg(**kw) -> TrainConfig:
    base = dict(batch_size=4, steps_per_epoch=8, max_epochs=2, num_workers=0, val_windows=8,
                device="cpu", seed=0, window_frames=64)  # 2-s windows: half the compute
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n_train=3, n_val=2,
                                  seconds=8.0)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> Path:
    """runs/step1 and runs/step2 trained briefly, as later steps expect them."""
    root = tmp_path_factory.mktemp("runs")
    cfg = _train_cfg(max_epochs=1, steps_per_epoch=6)
    run("step1", shards, cfg, MODEL, loss_preset("step1"), root / "step1", progress=False)
    run("step2", shards, cfg, MODEL, loss_preset("step2"), root / "step2", progress=False)
    return root


def _first_last(metrics: dict, key: str) -> tuple[float, float]:
    history = metrics["history"]
    return history[0][key], history[-1][key]


@pytest.mark.parametrize("step", ["step1", "step2", "step3", "baseline", "supervised"])
def test_each_command_trains_and_lowers_its_loss(step, shards, runs, tmp_path):
    out = runs.parent / f"cli-{step}-{tmp_path.name}" / step
    for needed in ("step1", "step2"):  # later steps find earlier checkpoints next to --out
        if needed != step:  # --out itself starts empty: a fresh run refuses a training state
            shutil.copytree(runs / needed, out.parent / needed)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    extra = ["--aml"] if step == "step3" else []
    result = CliRunner().invoke(cli, [
        step, "--shards", str(shards), "--out", str(out), "--params", str(params),
        "--max-epochs", "3", "--steps-per-epoch", "6", "--seed", "1", "--no-progress", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    net = SPECS[step].objective
    val = [h[f"val/{net}/total"] for h in metrics["history"]]
    assert len(val) == 3 and val[2] < val[1] < val[0], val  # fixed windows: a clean signal
    if step != "step2":  # step 2's weak test critic leaves its score term little room
        assert val[-1] < 0.97 * val[0], val
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert (out / "config.json").is_file() and (out / "dvclive" / "metrics.json").is_file()
    model = load_model(out / "best.pt")
    assert model.kind == ("transcriptor" if step == "step1" else "separator")
    if step == "step3":
        assert load_model(out / "transcriptor.pt").kind == "transcriptor"
    if step == "baseline":
        assert load_model(out / "classifier" / "best.pt").kind == "classifier"


def test_dvclive_off_trains_without_importing_it(shards, runs, tmp_path, monkeypatch):
    """The Python API runs where dvclive is not installed (a bare GPU image): metrics.json and
    config.json are written, nothing under dvclive/."""
    monkeypatch.setitem(sys.modules, "dvclive", None)  # any `import dvclive` now fails
    out = tmp_path / "s2"
    metrics = run("step2", shards, _train_cfg(max_epochs=1, steps_per_epoch=2), MODEL,
                  loss_preset("step2"), out, transcriptor=runs / "step1" / "best.pt",
                  progress=False, dvclive=False)
    assert metrics["epochs"] == 1 and json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "config.json").is_file() and (out / "best.pt").is_file()
    assert not (out / "dvclive").exists()


def test_a_finished_run_leaves_no_loader_workers_alive(shards, runs, tmp_path):
    """Persistent workers stop when ``fit`` ends, not at some later garbage collection (where a
    later trainer's forked workers would inherit them)."""
    before = set(multiprocessing.active_children())  # other tests' pools (joblib) may live on
    gc.disable()  # the collector must not be what stops them
    try:
        run("step1", shards, _train_cfg(max_epochs=1, steps_per_epoch=2, num_workers=2), MODEL,
            loss_preset("step1"), tmp_path / "s1", progress=False, dvclive=False)
        assert set(multiprocessing.active_children()) - before == set()
    finally:
        gc.enable()


def _trainer(step, shards, runs, out, loss=None, **cfg) -> Trainer:
    init = {}
    if SPECS[step].critic == "transcriptor" or step == "step3":
        init["transcriptor"] = load_model(runs / "step1" / "best.pt")
    if step == "step3":
        init["separator"] = load_model(runs / "step2" / "best.pt")
    return Trainer(SPECS[step], shards, _train_cfg(**cfg), MODEL, loss or loss_preset(step), out,
                   init=init, progress=False)


def test_a_fresh_run_refuses_a_folder_that_holds_a_training_state(shards, runs):
    last = runs / "step2" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(TrainingError, match=r"last\.pt: this folder holds a training state"):
        _trainer("step2", shards, runs, runs / "step2")
    assert last.read_bytes() == before


def _one_batch(trainer: Trainer) -> dict:
    trainer.sampler.set_epoch(0)
    return to_device(next(iter(trainer.train_loader)), trainer.env.device)


def test_step2_gradients_reach_the_separator_not_the_transcriptor(shards, runs, tmp_path):
    trainer = _trainer("step2", shards, runs, tmp_path / "s2")
    transcriptor = trainer.modules["transcriptor"]
    assert not transcriptor.training
    assert not any(p.requires_grad for p in transcriptor.parameters())
    losses = trainer.spec.losses(trainer.ctx, _one_batch(trainer))
    assert set(losses) == {"separator"}
    losses["separator"][0].backward()
    assert all(p.grad is None for p in transcriptor.parameters())
    grads = [p.grad for p in trainer.modules["separator"].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_step3_routes_each_loss_to_its_own_network(shards, runs, tmp_path, monkeypatch):
    loss = replace(loss_preset("step3"), use_aml=True, use_atl=True)
    trainer = _trainer("step3", shards, runs, tmp_path / "s3", loss=loss)
    batch = _one_batch(trainer)
    donors = []
    real_remix = L.remix
    monkeypatch.setattr(L, "remix", lambda S, Y, idx: donors.append(idx) or real_remix(S, Y, idx))

    def grads_of(pick):
        for module in trainer.modules.values():
            module.zero_grad(set_to_none=True)
        trainer.ctx.generator = torch.Generator().manual_seed(5)
        losses = trainer.spec.losses(trainer.ctx, batch)
        pick(losses).backward()
        return {name: [None if p.grad is None else p.grad.clone() for p in m.parameters()]
                for name, m in trainer.modules.items()}

    both = grads_of(lambda ls: ls["separator"][0] + ls["transcriptor"][0])
    sep_only = grads_of(lambda ls: ls["separator"][0])
    trans_only = grads_of(lambda ls: ls["transcriptor"][0])
    # L_sep moves only the separator, L_TL-3 only the transcriptor; together = each alone.
    assert all(g is None for g in sep_only["transcriptor"])
    assert all(g is None for g in trans_only["separator"])
    for a, b in zip(both["separator"], sep_only["separator"], strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(both["transcriptor"], trans_only["transcriptor"], strict=True):
        torch.testing.assert_close(a, b)
    # AML remixes take each instrument from a different batch item (batch 4 >= I = 3)
    idx = donors[0]
    assert idx.shape == (4, 3)
    for row in idx.tolist():
        assert len(set(row)) == 3
    for column in idx.T.tolist():
        assert sorted(column) == [0, 1, 2, 3]


def test_step3_anchor_is_a_frozen_copy_of_the_step1_transcriptor(shards, runs, tmp_path):
    loss = replace(loss_preset("step3"), use_aml=True, aml_form="positives", anchor_weight=1.0)
    step1 = load_model(runs / "step1" / "best.pt")
    kw = dict(transcriptor=runs / "step1" / "best.pt", separator=runs / "step2" / "best.pt",
              progress=False)
    metrics = run("step3", shards, _train_cfg(steps_per_epoch=3, max_epochs=1), MODEL, loss,
                  tmp_path / "anchored", **kw)  # fmt: skip
    assert metrics["final"]["train/separator/anchor"] > 0
    state = torch.load(tmp_path / "anchored" / "last.pt", weights_only=True)
    assert set(state["nets"]) == {"separator", "transcriptor"}  # the anchor is not trained
    moved = [not torch.equal(v, step1.state_dict()[k]) for k, v in state["nets"]["transcriptor"].items()]
    assert any(moved)  # the trained critic moved; the anchor's gradients are checked below
    trainer = _trainer("step3", shards, runs, tmp_path / "g", loss=loss)
    anchor = trainer.modules["anchor"]
    assert anchor is not trainer.modules["transcriptor"]
    for key, value in anchor.state_dict().items():
        assert torch.equal(value, step1.state_dict()[key])
    losses = trainer.spec.losses(trainer.ctx, _one_batch(trainer))
    losses["separator"][0].backward()
    assert all(p.grad is None and not p.requires_grad for p in trainer.modules["anchor"].parameters())
    assert any(p.grad is not None for p in trainer.modules["separator"].parameters())
    with pytest.raises(TrainingError, match="needs a pretrained anchor"):
        Trainer(SPECS["step3"], shards, _train_cfg(), MODEL, loss, tmp_path / "none",
                init={"separator": load_model(runs / "step2" / "best.pt")}, progress=False)
    with pytest.raises(TrainingError, match="step 3"):
        run("step2", shards, _train_cfg(), MODEL, replace(loss_preset("step2"), anchor_weight=1.0),
            tmp_path / "s2", **kw)  # fmt: skip


@pytest.mark.parametrize(
    ("sources", "shift"),
    [("owned", 0), ("owned+separated", 0), ("owned+separated-unowned", 0), ("separated", 0),
     ("owned+separated", 6)],
)
def test_owned_bin_remix_loss_trains_the_separator_on_a_second_pass(
    sources, shift, shards, runs, tmp_path
):
    loss = replace(loss_preset("step2"), owned_remix_weight=2.0, owned_remix_sources=sources,
                   owned_remix_shift=shift)
    trainer = _trainer("step2", shards, runs, tmp_path / "run", loss=loss)
    batch = _one_batch(trainer)
    calls = []
    separator = trainer.modules["separator"]
    handle = separator.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    total, terms = trainer.spec.losses(trainer.ctx, batch)["separator"]
    handle.remove()
    assert len(calls) == 2  # the mixtures, then the owned-bin remixes
    assert terms["owned"] > 0
    plain = replace(loss, owned_remix_weight=0.0)
    trainer.ctx.loss_cfg = plain
    _, plain_terms = trainer.spec.losses(trainer.ctx, batch)["separator"]
    assert "owned" not in plain_terms
    assert total.item() == pytest.approx(
        plain_terms["total"].item() + 2.0 * terms["owned"].item(), rel=1e-5
    )
    total.backward()
    assert all(p.grad is not None for p in separator.parameters() if p.requires_grad)


@pytest.mark.parametrize(("step", "ema_decay"), [("step1", 0.0), ("step3", 0.0), ("step3", 0.8)])
def test_resume_is_bit_equal_to_an_uninterrupted_run(step, ema_decay, shards, runs, tmp_path):
    loss = replace(loss_preset(step), use_aml=True) if step == "step3" else loss_preset(step)
    model = replace(MODEL, dropout=0.1)  # dropout makes the RNG state matter
    kw = dict(transcriptor=runs / "step1" / "best.pt", separator=runs / "step2" / "best.pt",
              progress=False)
    cfg = _train_cfg(steps_per_epoch=3, max_epochs=2, ema_decay=ema_decay)
    run(step, shards, cfg, model, loss, tmp_path / "straight", **kw)
    run(step, shards, replace(cfg, max_epochs=1), model, loss, tmp_path / "resumed", **kw)
    metrics = run(step, shards, cfg, model, loss, tmp_path / "resumed", resume=True, **kw)
    assert metrics["epochs"] == 2
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["nets"].keys() == b["nets"].keys()
    for net in a["nets"]:
        for key, value in a["nets"][net].items():
            assert torch.equal(value, b["nets"][net][key]), (net, key)
    assert a["progress"]["best"] == b["progress"]["best"]
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)
    assert len(a["averaged"]) == (2 if ema_decay else 0)
    torch.testing.assert_close(a["averaged"], b["averaged"], rtol=0, atol=0)


def test_ema_decay_validates_and_saves_the_moving_average_of_the_weights(shards, runs, tmp_path):
    decay, out = 0.7, tmp_path / "ema"
    trainer = _trainer("step2", shards, runs, out, ema_decay=decay, steps_per_epoch=4, max_epochs=1)
    separator = trainer.modules["separator"]
    iterates, optimizer_step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        result = optimizer_step(*args, **kwargs)
        iterates.append([p.detach().clone() for p in separator.parameters()])
        return result

    trainer.optimizer.step = recording_step
    metrics = trainer.fit()
    expected = iterates[0]  # the average starts at the first update's weights
    for weights in iterates[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    saved = list(load_model(out / "best.pt").parameters())
    torch.testing.assert_close(saved, expected)
    assert not all(torch.equal(s, w) for s, w in zip(saved, iterates[-1], strict=True))
    val = metrics["history"][-1]["val/separator/total"]
    assert trainer.validate()["val/separator/total"] == pytest.approx(val)
    trainer.averaged = {}  # the live weights score differently: validation measured the average
    assert trainer.validate()["val/separator/total"] != pytest.approx(val)
    with pytest.raises(ValueError, match="ema_decay"):
        _train_cfg(ema_decay=1.0)


@pytest.mark.parametrize(("step", "scale"), [("step3", 0.1), ("step3", 2.0), ("step1", 0.1)])
def test_critic_lr_scale_scales_the_transcriptor_trained_beside_a_separator(
    step, scale, shards, runs, tmp_path
):
    trainer = _trainer(step, shards, runs, tmp_path / "run", steps_per_epoch=1,
                       critic_lr_scale=scale)
    before = {name: [p.detach().clone() for p in net.parameters()]
              for name, net in trainer.modules.items()}
    trainer.train_epoch(0)

    def largest_move(name: str) -> float:
        after = trainer.modules[name].parameters()
        return max((a - b).abs().max().item() for a, b in zip(after, before[name], strict=True))

    # Adam's first step moves each weight by lr * g / (|g| + eps): at most lr, about lr if |g| >> eps.
    lr = trainer.cfg.lr
    expected = {"separator": lr, "transcriptor": lr * (scale if step == "step3" else 1.0)}
    for name in SPECS[step].trained:
        assert expected[name] * 0.9 < largest_move(name) < expected[name] * 1.01, name  # float32 ulps
    with pytest.raises(ValueError, match="critic_lr_scale"):
        _train_cfg(critic_lr_scale=0.0)


def test_owned_remix_teacher_fills_the_remixes_from_the_averaged_separator(
    shards, runs, tmp_path
):
    loss = replace(loss_preset("step2"), owned_remix_weight=2.0,
                   owned_remix_sources="owned+separated", owned_remix_teacher=True)
    with pytest.raises(TrainingError, match="ema_decay"):
        _trainer("step2", shards, runs, tmp_path / "no-ema", loss=loss)
    with pytest.raises(ValueError, match="owned_remix_teacher"):
        replace(loss, owned_remix_sources="owned")
    trainer = _trainer("step2", shards, runs, tmp_path / "run", loss=loss, ema_decay=0.9)
    teacher = trainer.averaged["separator"].module
    calls = []
    handle = teacher.register_forward_hook(lambda m, args, out: calls.append(out.requires_grad))
    total, terms = trainer.spec.losses(trainer.ctx, _one_batch(trainer))["separator"]
    handle.remove()
    assert calls == [False] and not teacher.training  # one pass, no graph, eval mode
    assert terms["owned"] > 0
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in trainer.modules["separator"].parameters())


def test_averaged_critic_scores_the_separation_with_the_averaged_transcriptor(
    shards, runs, tmp_path
):
    loss = replace(loss_preset("step3"), averaged_critic=True)
    with pytest.raises(TrainingError, match="ema_decay"):
        _trainer("step3", shards, runs, tmp_path / "no-ema", loss=loss)
    with pytest.raises(TrainingError, match="averaged_critic"):  # step 2 trains no transcriptor
        _trainer("step2", shards, runs, tmp_path / "step2", ema_decay=0.9,
                 loss=replace(loss_preset("step2"), averaged_critic=True))
    trainer = _trainer("step3", shards, runs, tmp_path / "run", loss=loss, ema_decay=0.9)
    raw, average = trainer.modules["transcriptor"], trainer.averaged["transcriptor"].module
    with torch.no_grad():  # the trained transcriptor moves away from its average
        for p in raw.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = _one_batch(trainer)
    plain = replace(loss, averaged_critic=False)

    def separator_loss(ctx):
        return trainer.spec.losses(ctx, batch)["separator"][0]

    total = separator_loss(trainer.ctx)
    by_raw = separator_loss(replace(trainer.ctx, loss_cfg=plain))
    by_average = separator_loss(replace(
        trainer.ctx, loss_cfg=plain, modules={**trainer.modules, "transcriptor": average}))
    assert torch.allclose(total, by_average) and not torch.allclose(total, by_raw)
    total.backward()
    assert all(p.grad is None for p in average.parameters())
    assert all(p.grad is None for p in raw.parameters())
    assert all(p.grad is not None for p in trainer.modules["separator"].parameters())


def test_step3_without_earlier_checkpoints_says_which_command_to_run(shards, tmp_path):
    result = CliRunner().invoke(cli, ["step3", "--shards", str(shards),
                                      "--out", str(tmp_path / "runs" / "step3")])
    assert result.exit_code != 0
    assert "train step1" in result.output and "step1/best.pt" in result.output
    with pytest.raises(TrainingError, match="train step2"):
        run("step3", shards, _train_cfg(), MODEL, loss_preset("step3"),
            tmp_path / "runs" / "step3",
            transcriptor=_any_transcriptor(tmp_path), progress=False)


def _any_transcriptor(tmp_path: Path) -> Path:
    from train.model import Transcriptor, save_checkpoint

    return save_checkpoint(tmp_path / "t.pt", Transcriptor(MODEL))


def test_non_finite_loss_stops_naming_step_and_term(shards, tmp_path, monkeypatch):
    cfg = _train_cfg(steps_per_epoch=3, max_epochs=3)
    out = tmp_path / "nan"
    run("step1", shards, replace(cfg, max_epochs=1), MODEL, loss_preset("step1"), out,
        progress=False)
    good = (out / "last.pt").read_bytes()
    real = L.transcription_loss_step1
    calls = {"n": 0}

    def poisoned(z, Y, w, config):
        calls["n"] += 1
        total, terms = real(z, Y, w, config)
        if calls["n"] == 2:
            terms["pitch"] = torch.tensor(float("nan"))
            total = total + float("nan")
        return total, terms

    monkeypatch.setattr(L, "transcription_loss_step1", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 1 step 1 .*transcriptor/pitch = nan"):
        run("step1", shards, cfg, MODEL, loss_preset("step1"), out, resume=True, progress=False)
    assert (out / "last.pt").read_bytes() == good


def test_refuses_a_corrupt_shard_naming_the_file(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "train" / "train-00000.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match="train-00000.h5"):
        run("step1", copy, _train_cfg(), MODEL, loss_preset("step1"), tmp_path / "o",
            progress=False)


def test_keep_checkpoint_last_saves_the_last_epoch_when_validation_rises(
    shards, tmp_path, monkeypatch
):
    """Step 3's validation loss moves with its critic: keep_checkpoint="last" must not follow it."""
    val_losses = iter([1.0, 2.0, 3.0, 4.0])  # rising: the lowest is always epoch 0
    monkeypatch.setattr(Trainer, "validate", lambda self: {"val/transcriptor/total": next(val_losses)})
    for keep, expected_epoch in (("best", 0), ("last", 1)):
        out = tmp_path / keep
        metrics = run("step1", shards, _train_cfg(keep_checkpoint=keep), MODEL,
                      loss_preset("step1"), out, progress=False)  # fmt: skip
        saved = torch.load(out / "best.pt", weights_only=True)
        assert saved["epoch"] == metrics["checkpoint_epoch"] == expected_epoch
        assert metrics["best_epoch"] == 0
    last_weights = torch.load(tmp_path / "last" / "last.pt", weights_only=True)["nets"]
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(value, last_weights["transcriptor"][key])
    with pytest.raises(ValueError, match="keep_checkpoint"):
        _train_cfg(keep_checkpoint="latest")
