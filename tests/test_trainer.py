"""The training loop (train/trainer.py) and the training commands on a tiny synthetic shard set."""

from __future__ import annotations

import dataclasses
import gc
import json
import multiprocessing
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_data import write_synthetic_shards

import train.losses as L
from prep.shards import read_manifest
from train.assemble import TrainingError
from train.cli import main as cli
from train.config import ModelConfig, RunConfig, TrainConfig
from train.data import to_device
from train.model import load_model
from train.pipeline import run
from train.recipes import Resolved, get_recipe, resolve
from train.steps import SPECS
from train.trainer import Trainer, backward_each

# Very small nets keep every run to a few seconds on 2 cores.
MODEL = ModelConfig(bottleneck_channels=16, hidden_channels=32, blocks_per_repeat=4, repeats=1)
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1}
train: {val_windows: 8, num_workers: 0, device: cpu, batch_size: 4, window_frames: 64}
"""
TRAIN = dict(batch_size=4, steps_per_epoch=8, max_epochs=2, num_workers=0, val_windows=8,
             device="cpu", seed=0, window_frames=64)  # 2-s windows: half the compute


def _train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TRAIN, **kw})


def recipe_config(recipe: str, model: dict | None = None, **sections: dict) -> Resolved:
    """``recipe`` with the tests' tiny nets and budgets; ``sections`` override on top
    (``train={...}``, ``anchor={...}``)."""
    params = {
        "model": {**dataclasses.asdict(MODEL), **(model or {})},
        "train": {**TRAIN, **sections.pop("train", {})},
        **sections,
    }
    return resolve(get_recipe(recipe), "tiny", params)


def run_recipe(recipe: str, shards: Path, out: Path, model: dict | None = None,
               sections: dict | None = None, **kw):
    """Train ``recipe`` (tiny nets) into ``out`` without a progress bar."""
    kw.setdefault("progress", False)
    return run(recipe_config(recipe, model, **(sections or {})), shards, out, **kw)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n_train=3, n_val=2,
                                  seconds=8.0)


@pytest.fixture(scope="module")
def stem_shards(tmp_path_factory) -> Path:
    """The same kind of tracks with stems in every split: the supervised reference's shards."""
    return write_synthetic_shards(tmp_path_factory.mktemp("stem-shards"), n_train=3, n_val=2,
                                  seconds=8.0, stems=True)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> Path:
    """runs/step1, runs/step2 and runs/scorecritic-step2 trained briefly, as later steps
    expect them."""
    root = tmp_path_factory.mktemp("runs")
    budget = {"train": {"max_epochs": 1, "steps_per_epoch": 6}}
    for recipe in ("step1", "step2", "scorecritic-step2"):
        run_recipe(recipe, shards, root / recipe, sections=budget)
    return root


def _first_last(metrics: dict, key: str) -> tuple[float, float]:
    history = metrics["history"]
    return history[0][key], history[-1][key]


@pytest.mark.parametrize(
    ("step", "recipe"),
    [("step1", None), ("step2", "step2"), ("step3", "step3-aml"), ("step3", None),
     ("baseline", None), ("supervised", None)],
)
def test_each_command_trains_and_lowers_its_loss(step, recipe, shards, stem_shards, runs,
                                                 tmp_path):
    name = recipe or {"step3": "scorecritic"}.get(step, step)
    shards = stem_shards if step == "supervised" else shards
    out = runs.parent / f"cli-{step}-{tmp_path.name}" / name
    for needed in ("step1", "step2", "scorecritic-step2"):  # earlier checkpoints beside --out
        if needed != name:  # --out itself starts empty: a fresh run refuses a training state
            shutil.copytree(runs / needed, out.parent / needed)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    extra = ["--recipe", recipe] if recipe else []
    result = CliRunner().invoke(cli, [
        step, "--shards", str(shards), "--out", str(out), "--params", str(params),
        "--set", "train.max_epochs=3", "--set", "train.steps_per_epoch=6", "--seed", "1",
        "--no-progress", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    net = SPECS[step].objective
    val = [h[f"val/{net}/total"] for h in metrics["history"]]
    assert len(val) == 3
    if name not in ("scorecritic",):  # its weight average and moving critics need more steps
        assert val[2] < val[1] < val[0], val  # fixed windows: a clean signal
    if step not in ("step2", "step3"):  # a weak test critic leaves the score term little room
        assert val[-1] < 0.97 * val[0], val
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert (out / "dvclive" / "metrics.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["name"] == name and config["step"] == step
    assert config["config"]["train"]["seed"] == 1 and config["config"]["train"]["max_epochs"] == 3
    assert config["shards"]["content_sha256"] == read_manifest(shards).content_sha256()
    assert config["shards"]["feature_params"]["hop_length"] == 500
    model = load_model(out / "best.pt")
    assert model.kind == ("transcriptor" if step == "step1" else "separator")
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["recipe"] == name
    assert payload["paper_row"] == get_recipe(name).paper_row
    if step == "step3":
        assert load_model(out / "transcriptor.pt").kind == "transcriptor"
        assert config["starts_from"]["separator"]["recipe"] == get_recipe(name).starts_from[
            "separator"]
    if step == "baseline":
        assert load_model(out / "classifier" / "best.pt").kind == "classifier"


@pytest.mark.parametrize("step", ["step1", "step2", "step3", "baseline", "supervised"])
def test_weak_steps_refuse_stems_and_supervised_needs_them(step, shards, stem_shards, runs,
                                                           tmp_path):
    """No stem can reach a weakly supervised step: shards holding train or validation stems are
    refused before anything is trained or written, naming the folder, a track and the fix;
    the supervised reference refuses stemless shards the same way."""
    wrong = shards if step == "supervised" else stem_shards
    out = tmp_path / "runs" / step
    for needed in ("step1", "scorecritic-step2"):
        if needed != step:
            shutil.copytree(runs / needed, out.parent / needed)
    result = CliRunner().invoke(cli, [
        step, "--shards", str(wrong), "--out", str(out), "--set", "train.max_epochs=1",
        "--set", "train.steps_per_epoch=1", "--no-progress"])
    assert result.exit_code != 0
    assert str(wrong) in result.output and "Track" in result.output
    if step == "supervised":
        assert "holds no stems" in result.output and "--stems all" in result.output
    else:
        assert "weakly supervised" in result.output and "--stems test" in result.output
    assert not out.exists()


def test_default_step3_is_the_project_recipe_and_paper_step3_is_plain(shards, runs, tmp_path):
    """`train step3` trains scorecritic (every extension on), `--recipe step3` the paper's
    step 3 (every extension off)."""
    ours = recipe_config("scorecritic").config
    paper = recipe_config("step3").config
    assert ours.anchor.weight > 0 and ours.owned_remix.weight > 0 and ours.aml_positives.enabled
    assert ours.weight_average.decay > 0 and ours.critic_lr.scale > 1 and ours.loss.use_aml
    defaults = RunConfig()
    for section in ("aml_positives", "anchor", "owned_remix", "weight_average", "critic_lr"):
        assert getattr(paper, section) == getattr(defaults, section), section
    assert paper.loss == defaults.loss and paper.train.keep_checkpoint == "best"
    result = CliRunner().invoke(cli, ["step3", "--shards", str(shards), "--print-config"])
    assert result.exit_code == 0 and "# recipe scorecritic (step3)" in result.output
    result = CliRunner().invoke(cli, ["step3", "--shards", str(shards), "--recipe", "step2"])
    assert result.exit_code != 0 and "train step2" in result.output
    result = CliRunner().invoke(cli, ["step3", "--shards", str(shards), "--set", "loss.alpha9=1"])
    assert result.exit_code != 0 and "alpha9" in result.output


def test_same_recipe_and_seed_under_two_run_names_give_identical_checkpoints(shards, runs,
                                                                               tmp_path):
    budget = {"train": {"max_epochs": 1, "steps_per_epoch": 2}}
    for name in ("first-name", "another-name"):
        out = tmp_path / name / "run"
        run_recipe("scorecritic", shards, out, sections=budget,
                   transcriptor=runs / "step1" / "best.pt",
                   separator=runs / "scorecritic-step2" / "best.pt", dvclive=False)
    for file in ("best.pt", "transcriptor.pt"):
        a = (tmp_path / "first-name" / "run" / file).read_bytes()
        b = (tmp_path / "another-name" / "run" / file).read_bytes()
        assert a == b, file


def test_dvclive_off_trains_without_importing_it(shards, runs, tmp_path, monkeypatch):
    """The Python API runs where dvclive is not installed (a bare GPU image): metrics.json and
    config.json are written, nothing under dvclive/."""
    monkeypatch.setitem(sys.modules, "dvclive", None)  # any `import dvclive` now fails
    out = tmp_path / "s2"
    metrics = run_recipe("step2", shards, out,
                         sections={"train": {"max_epochs": 1, "steps_per_epoch": 2}},
                         transcriptor=runs / "step1" / "best.pt", dvclive=False)
    assert metrics["epochs"] == 1 and json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "config.json").is_file() and (out / "best.pt").is_file()
    assert not (out / "dvclive").exists()


def test_a_finished_run_leaves_no_loader_workers_alive(shards, runs, tmp_path):
    """Persistent workers stop when ``fit`` ends, not at some later garbage collection (where a
    later trainer's forked workers would inherit them)."""
    before = set(multiprocessing.active_children())  # other tests' pools (joblib) may live on
    gc.disable()  # the collector must not be what stops them
    try:
        run_recipe("step1", shards, tmp_path / "s1", dvclive=False, sections={
            "train": {"max_epochs": 1, "steps_per_epoch": 2, "num_workers": 2}})
        assert set(multiprocessing.active_children()) - before == set()
    finally:
        gc.enable()


def _trainer(step, shards, runs, out, recipe=None, **sections) -> Trainer:
    recipe = recipe or step
    init = {}
    if SPECS[step].critic == "transcriptor" or step == "step3":
        init["transcriptor"] = load_model(runs / "step1" / "best.pt")
    if step == "step3":
        init["separator"] = load_model(runs / "step2" / "best.pt")
    config = recipe_config(recipe, **sections).config
    return Trainer(SPECS[step], shards, config, out, init=init, progress=False)


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
    trainer = _trainer("step3", shards, runs, tmp_path / "s3", loss={"use_aml": True,
                                                                     "use_atl": True})
    batch = _one_batch(trainer)
    donors = []
    real_remix = L.remix
    monkeypatch.setattr(L, "remix", lambda S, Y, idx: donors.append(idx) or real_remix(S, Y, idx))

    def grads_of(backward):
        for module in trainer.modules.values():
            module.zero_grad(set_to_none=True)
        trainer.ctx.generator = torch.Generator().manual_seed(5)
        backward(trainer.spec.losses(trainer.ctx, batch))
        return {name: [None if p.grad is None else p.grad.clone() for p in m.parameters()]
                for name, m in trainer.modules.items()}

    def alone(net):  # one network's total into every parameter it reaches
        return lambda ls: ls[net][0].backward()

    both = grads_of(lambda ls: backward_each(ls, trainer.modules))
    sep_only = grads_of(alone("separator"))
    trans_only = grads_of(alone("transcriptor"))
    # The critic and L_ATL share the transcriptor's pass over S_hat, so each total alone
    # reaches both networks; the trainer's routed backward keeps each on its own network.
    assert any(g is not None for g in sep_only["transcriptor"])
    assert any(g is not None for g in trans_only["separator"])
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


def test_paper_aml_is_eq9_and_aml_positives_replaces_it(shards, runs, tmp_path):
    """`step3-aml` trains the transcriptor with eq. 9 as written (-L_score on the remixes);
    the `aml_positives` extension swaps in its bounded form, nothing else."""
    paper = _trainer("step3", shards, runs, tmp_path / "p", recipe="step3-aml")
    batch = _one_batch(paper)
    paper.ctx.generator = torch.Generator().manual_seed(3)
    terms = paper.spec.losses(paper.ctx, batch)["transcriptor"][1]
    ours = _trainer("step3", shards, runs, tmp_path / "o", recipe="step3-aml",
                    aml_positives={"enabled": True})
    ours.ctx.generator = torch.Generator().manual_seed(3)
    ours_terms = ours.spec.losses(ours.ctx, batch)["transcriptor"][1]
    assert terms["aml"] < 0 and ours_terms["aml"] < 0
    assert ours_terms["aml"] > terms["aml"]  # the notes only, clamped: less negative
    torch.testing.assert_close(ours_terms["score"], terms["score"])


def test_step3_anchor_is_a_frozen_copy_of_the_step1_transcriptor(shards, runs, tmp_path):
    sections = {"loss": {"use_aml": True}, "aml_positives": {"enabled": True},
                "anchor": {"weight": 1.0}}
    step1 = load_model(runs / "step1" / "best.pt")
    kw = dict(transcriptor=runs / "step1" / "best.pt", separator=runs / "step2" / "best.pt")
    metrics = run_recipe("step3", shards, tmp_path / "anchored", **kw, sections={
        **sections, "train": {"steps_per_epoch": 3, "max_epochs": 1}})
    assert metrics["final"]["train/separator/anchor"] > 0
    state = torch.load(tmp_path / "anchored" / "last.pt", weights_only=True)
    assert set(state["nets"]) == {"separator", "transcriptor"}  # the anchor is not trained
    moved = [not torch.equal(v, step1.state_dict()[k]) for k, v in state["nets"]["transcriptor"].items()]
    assert any(moved)  # the trained critic moved; the anchor's gradients are checked below
    trainer = _trainer("step3", shards, runs, tmp_path / "g", **sections)
    anchor = trainer.modules["anchor"]
    assert anchor is not trainer.modules["transcriptor"]
    for key, value in anchor.state_dict().items():
        assert torch.equal(value, step1.state_dict()[key])
    losses = trainer.spec.losses(trainer.ctx, _one_batch(trainer))
    losses["separator"][0].backward()
    assert all(p.grad is None and not p.requires_grad for p in trainer.modules["anchor"].parameters())
    assert any(p.grad is not None for p in trainer.modules["separator"].parameters())
    with pytest.raises(TrainingError, match="step 3"):
        run_recipe("step2", shards, tmp_path / "s2", sections={"anchor": {"weight": 1.0}}, **kw)


@pytest.mark.parametrize("step", ["step2", "step3"])
def test_owned_bin_remix_loss_trains_the_separator_on_a_second_pass(step, shards, runs, tmp_path):
    trainer = _trainer(step, shards, runs, tmp_path / "run", owned_remix={"weight": 2.0})
    batch = _one_batch(trainer)
    calls = []
    separator = trainer.modules["separator"]
    handle = separator.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    trainer.ctx.generator = torch.Generator().manual_seed(1)
    total, terms = trainer.spec.losses(trainer.ctx, batch)["separator"]
    handle.remove()
    assert len(calls) == 2  # the mixtures, then the owned-bin remixes
    assert terms["owned"] > 0
    trainer.ctx.config = recipe_config(step).config
    _, plain_terms = trainer.spec.losses(trainer.ctx, batch)["separator"]
    assert "owned" not in plain_terms
    assert total.item() == pytest.approx(plain_terms["total"].item() + terms["owned"].item(),
                                         rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in separator.parameters() if p.requires_grad)


@pytest.mark.parametrize(("recipe", "decay"), [("step1", 0.0), ("step3-aml", 0.0),
                                               ("step3-aml", 0.8)])
def test_resume_is_bit_equal_to_an_uninterrupted_run(recipe, decay, shards, runs, tmp_path):
    kw = dict(transcriptor=runs / "step1" / "best.pt", separator=runs / "step2" / "best.pt",
              model={"dropout": 0.1})  # dropout makes the RNG state matter
    sections = {"train": {"steps_per_epoch": 3, "max_epochs": 2},
                "weight_average": {"decay": decay}}
    one_epoch = {**sections, "train": {"steps_per_epoch": 3, "max_epochs": 1}}
    run_recipe(recipe, shards, tmp_path / "straight", sections=sections, **kw)
    run_recipe(recipe, shards, tmp_path / "resumed", sections=one_epoch, **kw)
    metrics = run_recipe(recipe, shards, tmp_path / "resumed", sections=sections, resume=True,
                         **kw)
    assert metrics["epochs"] == 2
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["nets"].keys() == b["nets"].keys()
    for net in a["nets"]:
        for key, value in a["nets"][net].items():
            assert torch.equal(value, b["nets"][net][key]), (net, key)
    assert a["progress"]["best"] == b["progress"]["best"]
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)
    assert len(a["averaged"]) == (2 if decay else 0)
    torch.testing.assert_close(a["averaged"], b["averaged"], rtol=0, atol=0)


def test_weight_average_validates_and_saves_the_moving_average_of_the_weights(
    shards, runs, tmp_path
):
    decay, out = 0.7, tmp_path / "ema"
    trainer = _trainer("step2", shards, runs, out, weight_average={"decay": decay},
                       train={"steps_per_epoch": 4, "max_epochs": 1})
    separator = trainer.modules["separator"]
    iterates, optimizer_step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        result = optimizer_step(*args, **kwargs)
        iterates.append([p.detach().clone() for p in separator.parameters()])
        return result

    trainer.optimizer.step = recording_step
    metrics = trainer.fit()
    # sum_s d^(t-s) w_s / sum_s d^(t-s) over the weights after each update (normalised_ema)
    mass = [decay ** (len(iterates) - 1 - s) for s in range(len(iterates))]
    expected = [sum(m * w[k] for m, w in zip(mass, iterates, strict=True)) / sum(mass)
                for k in range(len(iterates[0]))]
    saved = list(load_model(out / "best.pt").parameters())
    torch.testing.assert_close(saved, expected)
    assert not all(torch.equal(s, w) for s, w in zip(saved, iterates[-1], strict=True))
    val = metrics["history"][-1]["val/separator/total"]
    assert trainer.validate()["val/separator/total"] == pytest.approx(val)
    trainer.averaged = {}  # the live weights score differently: validation measured the average
    assert trainer.validate()["val/separator/total"] != pytest.approx(val)
    with pytest.raises(ValueError, match="weight_average.decay"):
        RunConfig().override({"weight_average": {"decay": 1.0}})


@pytest.mark.parametrize(("step", "scale"), [("step3", 0.1), ("step3", 2.0), ("step1", 0.1)])
def test_critic_lr_scales_the_transcriptor_trained_beside_a_separator(
    step, scale, shards, runs, tmp_path
):
    trainer = _trainer(step, shards, runs, tmp_path / "run", train={"steps_per_epoch": 1},
                       critic_lr={"scale": scale})
    before = {name: [p.detach().clone() for p in net.parameters()]
              for name, net in trainer.modules.items()}
    trainer.train_epoch(0)

    def largest_move(name: str) -> float:
        after = trainer.modules[name].parameters()
        return max((a - b).abs().max().item() for a, b in zip(after, before[name], strict=True))

    # Adam's first step moves each weight by lr * g / (|g| + eps): at most lr, about lr if |g| >> eps.
    # The tests' batch of 4 against the preset's reference 8: the sqrt rule halves lr's square.
    lr = trainer.cfg.scaled_lr()
    assert lr == pytest.approx(trainer.cfg.lr * 0.5**0.5)
    expected = {"separator": lr, "transcriptor": lr * (scale if step == "step3" else 1.0)}
    for name in SPECS[step].trained:
        assert expected[name] * 0.9 < largest_move(name) < expected[name] * 1.01, name  # float32 ulps
    with pytest.raises(ValueError, match="critic_lr.scale"):
        RunConfig().override({"critic_lr": {"scale": 0.0}})


@pytest.mark.parametrize(("rule", "power"), [("sqrt", 0.5), ("linear", 1.0), ("none", 0.0)])
def test_lr_follows_the_global_batch_by_the_rule(rule, power, shards, runs, tmp_path):
    trainer = _trainer("step1", shards, runs, tmp_path / "run",
                       train={"batch_size": 16, "lr_reference_batch": 4, "lr_batch_rule": rule})
    want = 1e-3 * 4.0**power
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(want)]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["lr_at_global_batch"]
    assert recorded == {"global_batch": 16, "lr": pytest.approx(want)}
    # Under DDP the rule sees the batch of all processes.
    assert trainer.cfg.scaled_lr(world_size=4) == pytest.approx(1e-3 * 16.0**power)
    with pytest.raises(ValueError, match="lr_batch_rule"):
        RunConfig().override({"train": {"lr_batch_rule": "cubic"}})


def test_step3_without_earlier_checkpoints_says_which_command_to_run(shards, tmp_path):
    result = CliRunner().invoke(cli, ["step3", "--shards", str(shards),
                                      "--out", str(tmp_path / "runs" / "scorecritic")])
    assert result.exit_code != 0
    assert "train step1 --recipe step1" in result.output and "step1/best.pt" in result.output
    with pytest.raises(TrainingError, match="train step2 --recipe scorecritic-step2"):
        run_recipe("scorecritic", shards, tmp_path / "runs" / "scorecritic",
                   transcriptor=_any_transcriptor(tmp_path))


def _any_transcriptor(tmp_path: Path) -> Path:
    from train.model import Transcriptor, save_checkpoint

    return save_checkpoint(tmp_path / "t.pt", Transcriptor(MODEL))


def test_non_finite_loss_stops_naming_step_and_term(shards, tmp_path, monkeypatch):
    budget = {"steps_per_epoch": 3, "max_epochs": 3}
    out = tmp_path / "nan"
    run_recipe("step1", shards, out, sections={"train": {**budget, "max_epochs": 1}})
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
        run_recipe("step1", shards, out, sections={"train": budget}, resume=True)
    assert (out / "last.pt").read_bytes() == good


def test_refuses_a_corrupt_shard_naming_the_file(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "train" / "train-00000.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match="train-00000.h5"):
        run_recipe("step1", copy, tmp_path / "o")


def test_keep_checkpoint_last_saves_the_last_epoch_when_validation_rises(
    shards, tmp_path, monkeypatch
):
    """Step 3's validation loss moves with its critic: keep_checkpoint="last" must not follow it."""
    val_losses = iter([1.0, 2.0, 3.0, 4.0])  # rising: the lowest is always epoch 0
    monkeypatch.setattr(Trainer, "validate", lambda self: {"val/transcriptor/total": next(val_losses)})
    for keep, expected_epoch in (("best", 0), ("last", 1)):
        out = tmp_path / keep
        metrics = run_recipe("step1", shards, out, sections={"train": {"keep_checkpoint": keep}})
        saved = torch.load(out / "best.pt", weights_only=True)
        assert saved["epoch"] == metrics["checkpoint_epoch"] == expected_epoch
        assert metrics["best_epoch"] == 0
    last_weights = torch.load(tmp_path / "last" / "last.pt", weights_only=True)["nets"]
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(value, last_weights["transcriptor"][key])
    with pytest.raises(ValueError, match="keep_checkpoint"):
        _train_cfg(keep_checkpoint="latest")
