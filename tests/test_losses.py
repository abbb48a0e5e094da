"""Every loss of train/losses.py against small hand-computed examples (plain python math)."""

from __future__ import annotations

import math

import pytest
import torch

from train.config import LossConfig, ModelConfig
from train.losses import (
    active_instruments,
    adversarial_mixture_loss,
    adversarial_transcription_loss,
    classifier_loss,
    classifier_separation_loss,
    clip_mixture_loss,
    harmonic_mixture_loss,
    instrument_loss,
    pitch_loss,
    remix,
    remix_indices,
    score_loss,
    separated_score_loss,
    separation_loss,
    supervised_loss,
    transcription_loss_step1,
    transcription_loss_step3,
)
from train.model import Separator, Transcriptor


def h(y: float, p: float) -> float:
    """Binary cross entropy H(y, p) in plain python."""
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def logits_of(probs: list) -> torch.Tensor:
    """Nested lists of probabilities -> tensor of logits (float64 for exact comparisons)."""
    return torch.tensor(probs, dtype=torch.float64).logit()


# B=1, I=2 instruments, N=2 notes, T=2 frames. P[i][n][t], Yl[i][n][t].
P = [[[0.9, 0.2], [0.3, 0.6]], [[0.1, 0.7], [0.8, 0.4]]]
Yl = [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]
W = [1.0, 3.0]
I_, N_, T_ = 2, 2, 2


def roll(values: list) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_score_loss_eq1_with_instrument_weights() -> None:
    expected = sum(
        W[i] * h(Yl[i][n][t], P[i][n][t]) for i in range(I_) for n in range(N_) for t in range(T_)
    ) / (1 * T_)
    got = score_loss(logits_of([P]), roll(Yl), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    unweighted = (
        sum(h(Yl[i][n][t], P[i][n][t]) for i in range(I_) for n in range(N_) for t in range(T_))
        / T_
    )
    assert score_loss(logits_of([P]), roll(Yl)).item() == pytest.approx(unweighted, rel=1e-5)


def test_pitch_loss_eq2_max_over_instruments() -> None:
    expected = (
        sum(
            h(max(Yl[i][n][t] for i in range(I_)), max(P[i][n][t] for i in range(I_)))
            for n in range(N_)
            for t in range(T_)
        )
        / T_
    )
    assert pitch_loss(logits_of([P]), roll(Yl)).item() == pytest.approx(expected, rel=1e-5)


def test_instrument_loss_eq3_max_over_notes_weighted() -> None:
    expected = (
        sum(
            W[i] * h(max(Yl[i][n][t] for n in range(N_)), max(P[i][n][t] for n in range(N_)))
            for i in range(I_)
            for t in range(T_)
        )
        / T_
    )
    got = instrument_loss(logits_of([P]), roll(Yl), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_transcription_loss_step1_eq4_combines_terms() -> None:
    config = LossConfig(alpha1=0.03, beta1=0.1)
    z, y, w = logits_of([P]), roll(Yl), torch.tensor(W)
    total, terms = transcription_loss_step1(z, y, w, config)
    expected = (
        score_loss(z, y, w).item()
        + 0.03 * instrument_loss(z, y, w).item()
        + 0.1 * pitch_loss(z, y).item()
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(terms) == {"score", "inst", "pitch", "total"}
    assert not terms["score"].requires_grad
    # use_weights=False ignores the weights
    total_nw, _ = transcription_loss_step1(z, y, w, LossConfig(use_weights=False))
    total_ones, _ = transcription_loss_step1(z, y, None, LossConfig())
    assert total_nw.item() == pytest.approx(total_ones.item())


# Separated-source predictions: PE[i_src][j][n][t] = p[j,n,t](S_hat_{i_src}), N=1 note.
PE = [[[[0.8, 0.3]], [[0.2, 0.1]]], [[[0.4, 0.6]], [[0.7, 0.2]]]]
YE = [[[1.0, 0.0]], [[1.0, 1.0]]]  # Y[i][n][t]


def test_separated_score_loss_eq5_targets_y_i() -> None:
    # Source i: instrument i should be transcribed as Y[i], every j != i as silence.
    expected = 0.0
    for i in range(2):
        for t in range(2):
            expected += W[i] * h(YE[i][0][t], PE[i][i][0][t])
            for j in range(2):
                if j != i:
                    expected += W[j] * h(0.0, PE[i][j][0][t])
    expected /= 1 * 2
    got = separated_score_loss(logits_of([PE]), roll(YE), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_adversarial_transcription_loss_eq10_complement_targets() -> None:
    # Source i: instrument i should NOT be found (target 0), the others should (Y[j]).
    expected = 0.0
    for i in range(2):
        for t in range(2):
            expected += W[i] * h(0.0, PE[i][i][0][t])
            for j in range(2):
                if j != i:
                    expected += W[j] * h(YE[j][0][t], PE[i][j][0][t])
    expected /= 2
    got = adversarial_transcription_loss(logits_of([PE]), roll(YE), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-5)


# Mixture losses: B=1, I=2, F=2, T=2.
XM = [[1.0, 2.0], [0.5, 0.0]]  # X[f][t]
SM = [[[0.6, 1.0], [0.5, 0.1]], [[0.3, 0.2], [0.0, 0.4]]]  # S_hat[i][f][t]


def test_clip_mixture_loss_eq6_hand_value_and_norms() -> None:
    X, S = torch.tensor([XM]), torch.tensor([SM])
    active = torch.tensor([[True, False]])  # only instrument 0 plays in the clip
    raw = sum(abs(XM[f][t] - SM[0][f][t]) + abs(SM[1][f][t]) for f in range(2) for t in range(2))
    got = clip_mixture_loss(X, S, active, mixture_norm="none")
    assert got.item() == pytest.approx(raw / 2, rel=1e-6)
    level = sum(XM[f][t] for f in range(2) for t in range(2)) / 2  # mean frame L1 norm
    got = clip_mixture_loss(X, S, active, mixture_norm="mixture")
    assert got.item() == pytest.approx(raw / 2 / level, rel=1e-6)
    both = sum(abs(XM[f][t] - SM[0][f][t] - SM[1][f][t]) for f in range(2) for t in range(2))
    got = clip_mixture_loss(X, S, torch.tensor([[True, True]]), mixture_norm="none")
    assert got.item() == pytest.approx(both / 2, rel=1e-6)


def test_mixture_norm_makes_mixture_losses_scale_invariant() -> None:
    X = torch.rand(2, 6, 5)
    S = torch.rand(2, 3, 6, 5) * X[:, None]
    active = torch.tensor([[True, False, True], [True, True, True]])
    a = clip_mixture_loss(X, S, active, "mixture")
    b = clip_mixture_loss(10 * X, 10 * S, active, "mixture")
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    c = clip_mixture_loss(10 * X, 10 * S, active, "none")
    assert c.item() == pytest.approx(10 * clip_mixture_loss(X, S, active, "none").item(), rel=1e-5)


def test_harmonic_mixture_loss_eq7_per_bin_sets() -> None:
    X, S = torch.tensor([XM]), torch.tensor([SM])
    AM = [[[True, False], [False, True]], [[True, True], [False, False]]]  # A[i][f][t]
    raw = 0.0
    for f in range(2):
        for t in range(2):
            raw += abs(XM[f][t] - sum(SM[i][f][t] for i in range(2) if AM[i][f][t]))
            raw += sum(abs(SM[i][f][t]) for i in range(2) if not AM[i][f][t])
    got = harmonic_mixture_loss(X, S, torch.tensor([AM]), mixture_norm="none")
    assert got.item() == pytest.approx(raw / 2, rel=1e-6)


def test_active_instruments_from_roll() -> None:
    y = torch.zeros(2, 3, 4, 5)
    y[0, 1, 2, 3] = 1
    y[1, 0, 0, 0] = 1
    y[1, 2, 3, 4] = 1
    assert active_instruments(y).tolist() == [[False, True, False], [True, False, True]]


def test_separation_loss_eq8_weights_and_switches() -> None:
    z_each, y = logits_of([PE]), roll(YE)
    X = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)  # F=1, T=2
    S = torch.tensor([[[[0.4, 0.5]], [[0.3, 1.0]]]], dtype=torch.float64, requires_grad=True)
    A = torch.tensor([[[[True, False]], [[False, True]]]])
    w = torch.tensor(W)
    l_score = separated_score_loss(z_each, y, w).item()
    l_c = clip_mixture_loss(X, S, active_instruments(y), "mixture").item()
    l_h = harmonic_mixture_loss(X, S, A, "mixture").item()
    config = LossConfig(alpha2=1.0, beta2=0.1)
    total, terms = separation_loss(z_each, y, X, S, A, w, config)
    assert total.item() == pytest.approx(l_score + 1.0 * l_c + 0.1 * l_h, rel=1e-6)
    assert terms["hmix"].item() == pytest.approx(l_h, rel=1e-6)
    # h-mix switched off: weight 0, still logged
    total, terms = separation_loss(z_each, y, X, S, A, w, LossConfig(use_hmix=False))
    assert total.item() == pytest.approx(l_score + l_c, rel=1e-6)
    assert terms["hmix"].item() == pytest.approx(l_h, rel=1e-6)
    # c-mix switched off: the mixture terms give no gradient to S_hat
    total, _ = separation_loss(z_each, y, X, S, A, w, LossConfig(use_cmix=False, use_hmix=False))
    assert total.item() == pytest.approx(l_score, rel=1e-6)
    assert not total.requires_grad
    with pytest.raises(ValueError, match="use_hmix"):
        separation_loss(z_each, y, X, S, None, w, LossConfig(use_hmix=True))


@pytest.mark.parametrize("batch", [3, 4, 8, 16])
def test_remix_indices_use_distinct_samples_per_row(batch: int) -> None:
    idx = remix_indices(batch, 3, torch.Generator().manual_seed(batch))
    assert idx.shape == (batch, 3) and idx.dtype == torch.long
    for row in idx.tolist():
        assert len(set(row)) == 3, f"a remix reuses a sample: {row}"
    for col in idx.T.tolist():  # every separated output used once per instrument
        assert sorted(col) == list(range(batch))


def test_remix_indices_reproducible_and_small_batches() -> None:
    a = remix_indices(8, 3, torch.Generator().manual_seed(1))
    b = remix_indices(8, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    small = remix_indices(2, 3, torch.Generator().manual_seed(0))
    assert small.shape == (2, 3) and 0 <= small.min() and small.max() <= 1
    assert remix_indices(1, 3).tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError):
        remix_indices(0, 3)


def test_remix_builds_each_sample_from_the_indexed_items() -> None:
    S = torch.rand(4, 3, 5, 6)
    Y = (torch.rand(4, 3, 7, 6) > 0.5).float()
    idx = torch.tensor([[1, 2, 3], [0, 3, 2], [3, 1, 0], [2, 0, 1]])
    X_tilde, Y_tilde = remix(S, Y, idx)
    for b in range(4):
        expected = S[idx[b, 0], 0] + S[idx[b, 1], 1] + S[idx[b, 2], 2]
        assert torch.allclose(X_tilde[b], expected)
        for i in range(3):
            assert torch.equal(Y_tilde[b, i], Y[idx[b, i], i])


def test_aml_eq9_is_the_negated_score_loss_with_the_papers_gradient_sign() -> None:
    probs = [[[0.9, 0.2]], [[0.01, 0.3]]]
    labels = [[[1.0, 1.0]], [[1.0, 0.0]]]
    expected = -sum(
        W[i] * h(labels[i][0][t], probs[i][0][t]) for i in range(2) for t in range(2)
    ) / 2
    z = logits_of([probs]).requires_grad_(True)
    got = adversarial_mixture_loss(z, roll(labels), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    g = z.grad[0]
    assert g[0, 0, 0] > 0 and g[0, 0, 1] > 0, "descent must push p down on remix positives"
    assert g[1, 0, 0] > 0, "as written: no clamp, an element wrong enough still pushes"
    assert g[1, 0, 1] < 0, "paper's sign: on remix negatives the negated BCE pushes p up"
    # as written it is unbounded below: more confident wrong logits, lower loss
    far = adversarial_mixture_loss(torch.tensor([[[[-80.0, -80.0]], [[-80.0, 80.0]]]]),
                                   roll(labels).float(), torch.tensor(W))
    assert far.item() < -50


def test_transcription_loss_step3_eq11_combines_terms() -> None:
    z = logits_of([P])
    y = roll(Yl)
    w = torch.tensor(W)
    z_remix = logits_of([[[[0.6, 0.2], [0.3, 0.5]], [[0.4, 0.9], [0.2, 0.1]]]])
    y_remix = roll([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    z_each = torch.randn(1, 2, 2, 2, 2, dtype=torch.float64)
    config = LossConfig(alpha3=0.2, beta3=0.05, use_aml=True, use_atl=True)
    total, terms = transcription_loss_step3(z, y, w, config, z_remix, y_remix, z_each)
    step1, _ = transcription_loss_step1(z, y, w, config)
    aml = adversarial_mixture_loss(z_remix, y_remix, w)
    atl = adversarial_transcription_loss(z_each, y, w)
    assert total.item() == pytest.approx((step1 + 0.2 * aml + 0.05 * atl).item(), rel=1e-6)
    assert {"score", "inst", "pitch", "aml", "atl", "total"} == set(terms)
    off, terms_off = transcription_loss_step3(z, y, w, LossConfig())
    assert off.item() == pytest.approx(step1.item()) and "aml" not in terms_off
    with pytest.raises(ValueError, match="use_aml"):
        transcription_loss_step3(z, y, w, LossConfig(use_aml=True))
    # an extension replaces eq. 9 through the hook, and nothing else
    hooked, hooked_terms = transcription_loss_step3(
        z, y, w, config, z_remix, y_remix, z_each, aml=lambda *_: torch.tensor(-1.0)
    )
    assert hooked_terms["aml"].item() == -1.0
    assert hooked.item() == pytest.approx((step1 - 0.2 + 0.05 * atl).item(), rel=1e-6)


def test_classifier_loss_hand_value() -> None:
    q = [[0.7, 0.2, 0.9], [0.1, 0.6, 0.5]]  # q[i][t]
    a = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    expected = sum(W[i] * h(a[i][t], q[i][t]) for i in range(2) for t in range(3)) / 3
    got = classifier_loss(logits_of([q]), roll(a), torch.tensor(W))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_classifier_separation_loss_targets_only_instrument_i() -> None:
    qe = [[[0.7, 0.2], [0.3, 0.1]], [[0.2, 0.4], [0.6, 0.8]]]  # q[i_src][j][t]
    a = [[1.0, 0.0], [1.0, 1.0]]  # a[i][t]
    X = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)
    S = torch.tensor([[[[0.5, 0.5]], [[0.2, 0.4]]]], dtype=torch.float64)
    expected_score = 0.0
    for i in range(2):
        for j in range(2):
            for t in range(2):
                target = a[j][t] if j == i else 0.0
                expected_score += W[j] * h(target, qe[i][j][t])
    expected_score /= 2
    level = 1.0  # mean frame L1 norm of X
    cmix = sum(abs(1.0 - 0.5 - s1) for s1 in (0.2, 0.4)) / 2 / level  # both active
    total, terms = classifier_separation_loss(
        logits_of([qe]), roll(a), X, S, torch.tensor(W), LossConfig(alpha2=0.5)
    )
    assert terms["score"].item() == pytest.approx(expected_score, rel=1e-6)
    assert terms["cmix"].item() == pytest.approx(cmix, rel=1e-6)
    assert total.item() == pytest.approx(expected_score + 0.5 * cmix, rel=1e-6)


def test_supervised_loss_l1_per_frame() -> None:
    S_hat = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])
    S = torch.tensor([[[[0.5, 2.5]], [[1.0, 1.0]]]])
    assert supervised_loss(S_hat, S).item() == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 2)


def test_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="score_loss"):
        score_loss(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match="weights"):
        score_loss(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.ones(3))
    with pytest.raises(ValueError, match="I_src"):
        separated_score_loss(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))


def test_losses_accept_bf16_logits_and_compute_in_float32() -> None:
    z = torch.randn(2, 3, 88, 10).bfloat16()
    y = (torch.rand(2, 3, 88, 10) > 0.9).float()
    loss = score_loss(z, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # saturated logits stay finite with a useful gradient (no probability clamping)
    z = torch.full((1, 1, 1, 1), 60.0, requires_grad=True)
    loss = score_loss(z, torch.zeros(1, 1, 1, 1))
    loss.backward()
    assert torch.isfinite(loss) and z.grad.item() == pytest.approx(1.0)


def _small_config() -> ModelConfig:
    return ModelConfig(
        n_bins=32, n_instruments=2, n_pitches=6, bottleneck_channels=8, hidden_channels=16,
        blocks_per_repeat=2, repeats=1,
    )  # fmt: skip


def test_step2_gradients_reach_separator_not_frozen_transcriptor() -> None:
    torch.manual_seed(0)
    config = _small_config()
    separator, transcriptor = Separator(config), Transcriptor(config)
    transcriptor.requires_grad_(False)
    X = torch.rand(3, 32, 9)
    Y = (torch.rand(3, 2, 6, 9) > 0.7).float()
    A = torch.rand(3, 2, 32, 9) > 0.5
    S_hat = separator.separate(X)
    total, _ = separation_loss(
        transcriptor.logits_of_sources(S_hat), Y, X, S_hat, A, None, LossConfig()
    )
    total.backward()
    assert all(p.grad is None for p in transcriptor.parameters())
    grads = [p.grad for p in separator.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_step3_adversarial_terms_update_only_the_transcriptor() -> None:
    torch.manual_seed(0)
    config = _small_config()
    separator, transcriptor = Separator(config), Transcriptor(config)
    X = torch.rand(4, 32, 9)
    Y = (torch.rand(4, 2, 6, 9) > 0.7).float()
    S_hat = separator.separate(X).detach()  # Fig. 2: the blue term updates the transcriptor only
    X_tilde, Y_tilde = remix(S_hat, Y, remix_indices(4, 2, torch.Generator().manual_seed(0)))
    total, _ = transcription_loss_step3(
        transcriptor.logits(X), Y, None, LossConfig(use_aml=True, use_atl=True),
        transcriptor.logits(X_tilde), Y_tilde, transcriptor.logits_of_sources(S_hat),
    )  # fmt: skip
    total.backward()
    assert all(p.grad is None for p in separator.parameters())
    assert all(p.grad is not None for p in transcriptor.parameters())


def _harmonic_batch(batch: int, frames: int, generator: torch.Generator) -> tuple:
    """Realistic random inputs: sparse rolls (~3 notes per active instrument), their harmonic
    spectra (15 harmonics, 1/l amplitudes, +-1 bin), a noise floor, and harmonic masks."""
    n_inst, n_bins = 3, 1025
    bin_hz = 16000 / 2048
    Y = torch.zeros(batch, n_inst, 88, frames)
    stems = torch.zeros(batch, n_inst, n_bins, frames)
    A = torch.zeros(batch, n_inst, n_bins, frames, dtype=torch.bool)
    ranges = [(28, 52), (40, 76), (48, 96)]  # bass, guitar, piano-like MIDI ranges
    for b in range(batch):
        for i, (lo, hi) in enumerate(ranges):
            if torch.rand(1, generator=generator).item() < 0.2:
                continue  # instrument silent in this clip
            for _ in range(3):
                pitch = int(torch.randint(lo, hi, (1,), generator=generator))
                start = int(torch.randint(0, frames - 4, (1,), generator=generator))
                end = min(frames, start + int(torch.randint(4, 40, (1,), generator=generator)))
                Y[b, i, pitch - 21, start:end] = 1
                f0 = 440.0 * 2 ** ((pitch - 69) / 12)
                for harmonic in range(1, 16):
                    k = round(f0 * harmonic / bin_hz)
                    if k + 1 >= n_bins:
                        break
                    stems[b, i, k, start:end] += 5.0 / harmonic
                    stems[b, i, k - 1 : k + 2, start:end] += 1.0 / harmonic
                    A[b, i, k - 1 : k + 2, start:end] = True
    X = stems.sum(1) + 0.01 * torch.rand(batch, n_bins, frames, generator=generator)
    return X, Y, A, stems


def test_term_scales_per_frame_at_initialisation() -> None:
    """Per-frame scale of each step-2 term with a fresh separator on synthetic harmonic spectra:
    with mixture_norm="mixture" the mixture terms are O(1) (train/losses.py documents the values
    measured on rendered audio), raw ones scale with the mixture level."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X, Y, A, _ = _harmonic_batch(2, 129, generator)
    config = ModelConfig(bottleneck_channels=16, hidden_channels=32)
    separator, transcriptor = Separator(config), Transcriptor(config)
    with torch.no_grad():
        S_hat = separator.separate(X)
        z_each = transcriptor.logits_of_sources(S_hat)
        _, norm_terms = separation_loss(z_each, Y, X, S_hat, A, None, LossConfig())
        _, raw_terms = separation_loss(
            z_each, Y, X, S_hat, A, None, LossConfig(mixture_norm="none")
        )
    level = (X.sum(dim=(1, 2)) / X.shape[2]).mean().item()
    assert 0.2 < norm_terms["cmix"].item() < 2.0
    assert 0.5 < norm_terms["hmix"].item() < 3.0
    assert raw_terms["cmix"].item() == pytest.approx(norm_terms["cmix"].item() * level, rel=0.3)
    # I * I * 88 BCEs per frame, each ~ln 2 or more for an untrained transcriptor
    assert 300 < norm_terms["score"].item() < 1500
