"""Our extensions (train/extensions.py): each unit's value by hand, its bounds, and its config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.config import (
    AmlPositivesConfig,
    AnchorConfig,
    ConfigError,
    CriticLrConfig,
    OwnedRemixConfig,
    RunConfig,
    WeightAverageConfig,
)
from train.extensions import (
    aml_term,
    anchor_loss,
    averaged_copy,
    critic_lr,
    owned_bin_remix,
    owned_bin_remix_loss,
    owned_harmonic_bins,
    owned_remix_loss,
    positive_note_aml,
)
from train.losses import adversarial_mixture_loss, separated_score_loss

W = [1.0, 3.0]


def h(y: float, p: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def logits_of(probs: list) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).logit()


def roll(values: list) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_every_extension_is_off_by_default() -> None:
    cfg = RunConfig()
    assert not cfg.aml_positives.enabled and cfg.anchor.weight == 0
    assert cfg.owned_remix.weight == 0 and cfg.weight_average.decay == 0
    assert cfg.critic_lr.scale == 1
    for section, bad in (("anchor", {"weight": -1.0}), ("owned_remix", {"weight": math.inf}),
                         ("aml_positives", {"clamp": 0.0}), ("weight_average", {"decay": 1.0}),
                         ("critic_lr", {"scale": 0.0})):
        with pytest.raises(ConfigError, match=section):
            RunConfig().override({section: bad})


def test_positive_note_aml_only_pushes_remixed_notes_down() -> None:
    probs = [[[0.9, 0.2]], [[0.01, 0.3]]]
    labels = [[[1.0, 0.0]], [[1.0, 0.0]]]
    c = 2.3
    expected = -sum(
        W[i] * min(h(1.0, probs[i][0][t]), c)
        for i in range(2) for t in range(2) if labels[i][0][t] == 1.0
    ) / 2
    z = logits_of([probs]).requires_grad_(True)
    got = positive_note_aml(z, roll(labels), torch.tensor(W), c)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    g = z.grad[0]
    assert g[0, 0, 0] > 0  # descent lowers p on a remixed note
    assert g[1, 0, 0] == 0  # already below exp(-c): clamped
    assert g[0, 0, 1] == 0 and g[1, 0, 1] == 0  # negatives untouched
    extreme = torch.tensor([[[[-80.0, -80.0]], [[-80.0, 80.0]]]])
    assert positive_note_aml(extreme, roll(labels).float(), torch.tensor(W), c) >= -c * sum(W)
    # the hook: eq. 9 when off, this form when on
    assert aml_term(AmlPositivesConfig()) is adversarial_mixture_loss
    on = aml_term(AmlPositivesConfig(enabled=True, clamp=c))
    assert on(z.detach(), roll(labels), torch.tensor(W)).item() == pytest.approx(expected)


def test_anchor_loss_is_eq5_under_the_second_critic_times_lambda() -> None:
    torch.manual_seed(0)
    z_anchor = torch.randn(1, 2, 2, 3, 4, dtype=torch.float64)
    Y = (torch.rand(1, 2, 3, 4) > 0.5).double()
    w = torch.tensor(W)
    expected = 0.5 * separated_score_loss(z_anchor, Y, w)
    torch.testing.assert_close(anchor_loss(AnchorConfig(weight=0.5), z_anchor, Y, w), expected)


def test_owned_bin_remix_takes_each_instruments_owned_bins_from_its_donor() -> None:
    # 2 clips, 2 instruments, 3 bins, 1 frame. Clip 0: bin 0 piano only, bin 1 both, bin 2
    # nobody. Clip 1: bin 0 guitar only, bin 2 piano only.
    X = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # [2, 3, 1]
    A = torch.tensor(
        [[[[1], [1], [0]], [[0], [1], [0]]], [[[0], [0], [1]], [[1], [0], [0]]]], dtype=torch.bool
    )  # [2, 2, 3, 1]
    U = owned_harmonic_bins(A)
    assert U[0, :, :, 0].tolist() == [[True, False, False], [False, False, False]]
    assert U[1, :, :, 0].tolist() == [[False, False, True], [True, False, False]]
    donors = torch.tensor([[0, 1], [1, 0]])  # remix 0: piano of clip 0, guitar of clip 1
    # outside its owned bins a source is the donor's separated source
    S_fill = torch.full((2, 2, 3, 1), 0.5, requires_grad=True)
    X_syn, S_syn = owned_bin_remix(X, A, donors, S_fill)
    assert S_syn[0, :, :, 0].tolist() == [[1.0, 0.5, 0.5], [4.0, 0.5, 0.5]]  # they collide
    assert S_syn[1, :, :, 0].tolist() == [[0.5, 0.5, 6.0], [0.5, 0.5, 0.5]]
    assert torch.equal(X_syn, S_syn.sum(dim=1))
    assert not S_syn.requires_grad  # targets: the fill is detached
    # L_own: 0 for the right answer, the relative L1 error otherwise
    assert owned_bin_remix_loss(S_syn, S_syn, X_syn).item() == 0.0
    swapped = S_syn.flip(1)
    expected = (swapped - S_syn).abs().sum(dim=(1, 2, 3)) / X_syn.sum(dim=(1, 2))
    assert owned_bin_remix_loss(swapped, S_syn, X_syn).item() == pytest.approx(
        expected.mean().item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="idx"):
        owned_bin_remix(X, A, donors[:1], S_fill)
    # the hook: gamma times L_own of the remixes, separated by the given function
    identity = owned_remix_loss(OwnedRemixConfig(weight=2.0), lambda x: x[:, None].repeat(1, 2, 1, 1),
                                X, A, S_fill, torch.Generator().manual_seed(0), "mixture")
    assert identity.item() > 0


def test_weight_average_and_critic_lr_units() -> None:
    net = nn.Linear(2, 2)
    assert averaged_copy(WeightAverageConfig(), net) is None
    d = 0.5
    average = averaged_copy(WeightAverageConfig(decay=d), net)
    seen = []
    with torch.no_grad():
        for step in range(4):
            net.weight.add_(float(step))
            seen.append(net.weight.clone())
            average.update_parameters(net)
    # sum_s d^(t-s) w_s / sum_s d^(t-s): the first step weighs d^3 of 1.875, not d^3 of 1
    mass = [d ** (len(seen) - 1 - s) for s in range(len(seen))]
    expected = sum(m * w for m, w in zip(mass, seen, strict=True)) / sum(mass)
    torch.testing.assert_close(average.module.weight, expected)
    plain = seen[0]
    for w in seen[1:]:
        plain = d * plain + (1 - d) * w  # the EMA started from a copy of w_1
    assert not torch.allclose(average.module.weight, plain)
    # a run much longer than the window: the plain EMA's
    long_run = averaged_copy(WeightAverageConfig(decay=d), net)
    with torch.no_grad():
        for _ in range(60):
            long_run.update_parameters(net)
            net.weight.add_(1.0)
    torch.testing.assert_close(long_run.module.weight, net.weight - 1.0 - d / (1 - d))
    step3 = ("separator", "transcriptor")
    assert critic_lr(CriticLrConfig(scale=8.0), 1e-3, "transcriptor", step3) == pytest.approx(8e-3)
    assert critic_lr(CriticLrConfig(scale=8.0), 1e-3, "separator", step3) == 1e-3
    assert critic_lr(CriticLrConfig(scale=8.0), 1e-3, "transcriptor", ("transcriptor",)) == 1e-3
