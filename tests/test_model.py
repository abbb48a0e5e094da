"""The TCN models, their checkpoints and the configuration dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from train.config import (
    ConfigError,
    LossConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    sized,
    to_dict,
)
from train.model import (
    CHECKPOINT_FORMAT_VERSION,
    TCN,
    BinAffine,
    ChannelNorm,
    CheckpointError,
    Classifier,
    ScoreCriticModel,
    Separator,
    Transcriptor,
    average_checkpoints,
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

TINY = sized("tiny").model


@pytest.fixture(scope="module")
def spec() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 1025, 20) * 3.0


def test_transcriptor_shape_and_range(spec: torch.Tensor) -> None:
    model = Transcriptor(TINY)
    p = model(spec)
    assert p.shape == (2, 3, 88, 20)
    assert ((p > 0) & (p < 1)).all()
    assert torch.allclose(torch.sigmoid(model.logits(spec)), p)


def test_separator_shape_range_and_separate(spec: torch.Tensor) -> None:
    model = Separator(TINY)
    masks = model(spec)
    assert masks.shape == (2, 3, 1025, 20)
    assert ((masks >= 0) & (masks <= 1)).all()
    S_hat = model.separate(spec)
    assert torch.allclose(S_hat, masks * spec[:, None])
    assert (S_hat <= spec[:, None] + 1e-6).all()


def test_classifier_shape_and_range(spec: torch.Tensor) -> None:
    model = Classifier(TINY)
    q = model(spec)
    assert q.shape == (2, 3, 20)
    assert ((q > 0) & (q < 1)).all()


def test_logits_of_sources_match_per_source_calls(spec: torch.Tensor) -> None:
    transcriptor, classifier = Transcriptor(TINY).eval(), Classifier(TINY).eval()
    sources = torch.stack([spec * 0.5, spec * 0.2, spec], dim=1)  # [2, 3, F, T]
    z_each = transcriptor.logits_of_sources(sources)
    assert z_each.shape == (2, 3, 3, 88, 20)
    assert torch.allclose(z_each[:, 1], transcriptor.logits(sources[:, 1]), atol=1e-5)
    q_each = classifier.logits_of_sources(sources)
    assert q_each.shape == (2, 3, 3, 20)
    assert torch.allclose(q_each[:, 2], classifier.logits(sources[:, 2]), atol=1e-5)


def test_any_number_of_frames_and_bad_input_refused() -> None:
    model = Transcriptor(TINY)
    assert model(torch.rand(1, 1025, 1)).shape == (1, 3, 88, 1)
    assert model(torch.rand(1, 1025, 301)).shape == (1, 3, 88, 301)
    with pytest.raises(ValueError, match="1025"):
        model(torch.rand(1, 513, 10))
    with pytest.raises(ValueError, match="1025"):
        model(torch.rand(1025, 10))


def test_dilations_and_receptive_field_as_documented() -> None:
    tcn = TCN(TINY, out_channels=4)
    assert tcn.dilations == [1, 2, 4, 8, 16, 32, 64, 128] * 3
    assert TINY.receptive_field == 1 + 3 * 2 * 255 == 1531
    assert len(tcn.blocks) == 24
    assert all(b.conv_layers[3].kernel_size == (3,) for b in tcn.blocks)
    assert tcn.blocks[-1].res_out is None and tcn.blocks[0].res_out is not None


def _strip_norms(module: nn.Module) -> None:
    """Replace every normalisation by Identity to expose the conv topology."""
    for name, child in module.named_children():
        if isinstance(child, (ChannelNorm, BinAffine)):
            setattr(module, name, nn.Identity())
        else:
            _strip_norms(child)


def test_receptive_field_is_centred_and_matches_formula() -> None:
    config = ModelConfig(
        n_bins=4, n_instruments=1, n_pitches=1, bottleneck_channels=4, hidden_channels=8,
        blocks_per_repeat=3, repeats=2,
    )  # fmt: skip
    assert config.receptive_field == 1 + 2 * 2 * 7
    torch.manual_seed(0)
    tcn = TCN(config, out_channels=1).double()
    _strip_norms(tcn)
    frames, t0 = 81, 40
    spec = torch.rand(1, 4, frames, dtype=torch.float64, requires_grad=True)
    tcn(spec)[0, 0, t0].backward()
    support = (spec.grad[0].abs().sum(0) > 0).nonzero().flatten()
    half = (config.receptive_field - 1) // 2
    assert support.min().item() == t0 - half and support.max().item() == t0 + half


def test_parameter_counts_of_presets() -> None:
    tiny = Transcriptor(sized("tiny").model).n_parameters()
    paper = Transcriptor(sized("paper").model).n_parameters()
    assert 0.3e6 < tiny < 1.5e6
    assert 5e6 < paper < 15e6
    assert "parameters" in Separator(TINY).describe()


def test_checkpoint_round_trip_weights_only(tmp_path: Path, spec: torch.Tensor) -> None:
    torch.manual_seed(1)
    model = Transcriptor(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(spec).mean().backward()
    optimizer.step()
    path = tmp_path / "ckpt" / "best.pt"
    extra = {"epoch": 3, "optimizer": optimizer.state_dict(), "loss_config": to_dict(LossConfig())}
    save_checkpoint(path, model, extra)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert raw["kind"] == "transcriptor" and raw["epoch"] == 3
    assert raw["model_config"] == to_dict(TINY)
    loaded = load_model(path)
    assert isinstance(loaded, Transcriptor) and not loaded.training
    model.eval()
    assert torch.equal(loaded(spec), model(spec))
    again = Transcriptor.from_checkpoint(path)
    assert torch.equal(again(spec), model(spec))
    restored = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    restored.load_state_dict(raw["optimizer"])


def test_checkpoint_refuses_wrong_kind_and_version(tmp_path: Path) -> None:
    path = tmp_path / "sep.pt"
    save_checkpoint(path, Separator(TINY))
    with pytest.raises(CheckpointError, match="holds a 'separator', expected a 'transcriptor'"):
        Transcriptor.from_checkpoint(path)
    assert isinstance(Separator.from_checkpoint(path), Separator)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    bad = tmp_path / "future.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"format_version 99 .*expected 1"):
        load_model(bad)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no format_version"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_model(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_refuses_non_plain_extra_and_reserved_keys(tmp_path: Path) -> None:
    model = Classifier(TINY)
    with pytest.raises(TypeError, match="LossConfig"):
        save_checkpoint(tmp_path / "a.pt", model, {"loss_config": LossConfig()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "b.pt", model, {"kind": "separator"})
    assert not any(tmp_path.iterdir())


def test_build_model_kinds() -> None:
    assert isinstance(build_model("classifier", TINY), Classifier)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("critic", TINY)


# --- configuration ---------------------------------------------------------------------------


def test_presets_and_paper_values() -> None:
    loss = LossConfig()
    assert (loss.alpha1, loss.beta1, loss.alpha2, loss.beta2, loss.alpha3, loss.beta3) == (
        0.03, 0.1, 1.0, 0.1, 0.2, 0.05,
    )  # fmt: skip
    train = sized("paper").train
    assert (train.lr, train.lr_decay_factor, train.lr_patience, train.early_stop_patience) == (
        1e-3, 0.5, 2, 10,
    )  # fmt: skip
    assert sized("tiny").train.window_frames == 129
    paper = sized("paper").model
    assert (paper.kernel_size, paper.blocks_per_repeat, paper.repeats) == (3, 8, 3)
    from train.recipes import get_recipe, resolve

    aml = resolve(get_recipe("step3-aml")).config.loss
    assert aml.use_aml and not aml.use_atl
    assert not resolve(get_recipe("step2-hmix")).config.loss.use_cmix
    with pytest.raises(ConfigError, match="unknown size preset 'huge'"):
        sized("huge")


@pytest.mark.parametrize("config", [sized("paper").model, LossConfig(), sized("tiny").train])
def test_config_dict_round_trip(config: ModelConfig | LossConfig | TrainConfig) -> None:
    data = to_dict(config)
    assert all(isinstance(v, (int, float, str, bool)) for v in data.values())
    assert from_dict(type(config), data) == config


def test_from_dict_errors_and_yaml_coercion() -> None:
    with pytest.raises(ConfigError, match=r"unknown TrainConfig key\(s\) \['lr_rate'\]"):
        from_dict(TrainConfig, {"lr_rate": 0.1})
    assert from_dict(TrainConfig, {"lr": "1e-3"}).lr == pytest.approx(1e-3)  # YAML's 1e-3
    assert from_dict(LossConfig, {"alpha2": 1}).alpha2 == 1.0
    with pytest.raises(ConfigError, match="use_aml must be of type bool"):
        from_dict(LossConfig, {"use_aml": "yes"})
    with pytest.raises(ConfigError, match="batch_size must be of type int"):
        from_dict(TrainConfig, {"batch_size": 8.5})
    with pytest.raises(ConfigError, match="mixture_norm"):
        LossConfig(mixture_norm="loud")
    with pytest.raises(ConfigError, match="kernel_size"):
        ModelConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.hidden_channels = 3  # type: ignore[misc]


class _Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the model sits in ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_checkpoint_unwraps_ddp_style_wrapper(tmp_path: Path) -> None:
    model = Classifier(TINY)
    save_checkpoint(tmp_path / "c.pt", _Wrapper(model))
    loaded = ScoreCriticModel.from_checkpoint(tmp_path / "c.pt")
    assert isinstance(loaded, Classifier)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters(), strict=True)
    )
    with pytest.raises(TypeError, match="Linear"):
        save_checkpoint(tmp_path / "d.pt", nn.Linear(2, 2))


def test_average_checkpoints_writes_the_mean_of_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = Separator(TINY), Separator(TINY)
    save_checkpoint(tmp_path / "a.pt", a)
    save_checkpoint(tmp_path / "b.pt", b)
    out = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    mean = load_model(out)
    for key, value in mean.state_dict().items():
        expected = (a.state_dict()[key] + b.state_dict()[key]) / 2
        torch.testing.assert_close(value, expected)
    save_checkpoint(tmp_path / "t.pt", Transcriptor(TINY))
    with pytest.raises(CheckpointError, match="t.pt.*another configuration"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "t.pt"], tmp_path / "bad.pt")
