"""Our extensions of the paper's method: each a small unit, off by default, with its own config
section (:mod:`train.config`) and one explicit hook into the paper's losses or the trainer.

=================  =========================  ===============================================
section            what it does                hook
=================  =========================  ===============================================
``aml_positives``  bounded L_AML on the        replaces eq. 9 inside L_TL-3 (eq. 11):
                   remix's notes only          ``transcription_loss_step3(..., aml=...)``
``anchor``         the frozen step-1           adds lambda sum_i L_score(S_hat_i, Y^(i)) under
                   transcriptor as a second    it to L_sep (eq. 8), step 3
                   critic
``owned_remix``    remixes of the bins the     adds gamma L_own to L_sep (eq. 8), steps 2-3
                   score gives one instrument
``weight_average`` moving average of weights   the trainer validates and saves the average
``critic_lr``      the step-3 transcriptor's   the trainer's optimiser parameter groups
                   learning rate x scale
=================  =========================  ===============================================

Shapes follow :mod:`train.losses`: X [batch, F, T], S_hat [batch, I, F, T], A [batch, I, F, T]
bool, Y [batch, I, 88, T], z_each [batch, I_src, I, 88, T]. The measurements behind each
extension are in ``reports/bench/findings/``; the ablation ladder in ``reports/bench/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from train import losses as L
from train.config import (
    AmlPositivesConfig,
    AnchorConfig,
    CriticLrConfig,
    OwnedRemixConfig,
    WeightAverageConfig,
)

__all__ = [
    "positive_note_aml",
    "aml_term",
    "anchor_loss",
    "owned_harmonic_bins",
    "owned_bin_remix",
    "owned_bin_remix_loss",
    "owned_remix_loss",
    "normalised_ema",
    "averaged_copy",
    "critic_lr",
]

# --- aml_positives ----------------------------------------------------------------------------


def positive_note_aml(
    logits_remix: Tensor, Y_remix: Tensor, weights: Tensor | None = None, clamp: float = 2.3
) -> Tensor:
    """-sum_{i,n,t} w_i Y~[i,n,t] min(H(1, p[i,n,t](X~)), c), per frame.

    Eq. 9 restricted to the remix's notes (Y~ = 1) and clamped: each note pushes the
    transcriptor to miss it until the note's probability falls below exp(-c), then stops.
    Value in [-c sum_i w_i 88, 0] per frame.

    Args:
        logits_remix: transcriptor logits on the remixes X~ [batch, I, 88, T].
        Y_remix: the remixes' labels Y~ [batch, I, 88, T].
        weights: instrument weights w [I] (None: all 1).
        clamp: c.
    """
    if logits_remix.shape != Y_remix.shape:
        raise ValueError(
            f"positive_note_aml: logits {tuple(logits_remix.shape)} and Y~ "
            f"{tuple(Y_remix.shape)} differ"
        )
    batch, n_inst, _, frames = logits_remix.shape
    w = L.instrument_weights(weights, n_inst, logits_remix.device)[None, :, None, None]
    bce = L.bce_with_logits(logits_remix, Y_remix).clamp_max(clamp) * Y_remix.float()
    return -L.per_frame((w * bce).sum(), batch, frames)


def aml_term(config: AmlPositivesConfig) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The L_AML term of eq. 11: the paper's eq. 9, or :func:`positive_note_aml` when enabled."""
    if not config.enabled:
        return L.adversarial_mixture_loss
    return lambda z, Y, w: positive_note_aml(z, Y, w, clamp=config.clamp)


# --- anchor -----------------------------------------------------------------------------------


def anchor_loss(
    config: AnchorConfig, logits_anchor: Tensor, Y: Tensor, weights: Tensor | None
) -> Tensor:
    """lambda sum_i L_score(S_hat_i, Y^(i)) (eq. 5) under the frozen step-1 transcriptor.

    Args:
        config: lambda.
        logits_anchor: the anchor critic's logits on each separated source, z_each.
        Y: target roll [batch, I, 88, T].
        weights: instrument weights w [I] (None: all 1).
    """
    return config.weight * L.separated_score_loss(logits_anchor, Y, weights)


# --- owned_remix ------------------------------------------------------------------------------


def owned_harmonic_bins(A: Tensor) -> Tensor:
    """U_i = A_i and no other A_j: the bins only instrument i's harmonics reach.

    There eq. (6) and (7) leave one answer, S_hat_i = X and every other source 0, so the mixture
    in those bins is a weak-label estimate of the stem that no other instrument's notes claim.
    A [batch, I, F, T] bool -> U [batch, I, F, T] bool.
    """
    A = A.bool()
    return A & (A.sum(dim=1, keepdim=True) == 1)


def owned_bin_remix(X: Tensor, A: Tensor, idx: Tensor, S_fill: Tensor) -> tuple[Tensor, Tensor]:
    """Synthetic mixtures X' = sum_i S'_i from the owned bins of *different* clips.

    S'_i = X[a_i] U_i[a_i] + S_fill[a_i, i] (1 - U_i[a_i]): the mixture in instrument i's owned
    bins, the detached separated source elsewhere, so X' looks like a whole mixture.
    Instruments now collide in bins their own clips kept apart, and the answer there is known:
    a target for splitting shared harmonics built from mixtures and scores only.

    Args:
        X: mixture magnitude [batch, F, T].
        A: harmonic activity [batch, I, F, T] bool.
        idx: [batch, I] donors a_i (:func:`train.losses.remix_indices`).
        S_fill: separated magnitudes [batch, I, F, T] (detached here).

    Returns:
        (X' [batch, F, T], S' [batch, I, F, T]).
    """
    batch, n_inst = A.shape[:2]
    if idx.shape != (batch, n_inst) or X.shape != (batch, *A.shape[2:]):
        raise ValueError(
            f"owned_bin_remix: X {tuple(X.shape)}, A {tuple(A.shape)} and idx "
            f"{tuple(idx.shape)} must share [batch, I, F, T]"
        )
    U = owned_harmonic_bins(A).to(X.dtype)  # [batch, I, F, T]
    sources = U * X[:, None] + (1.0 - U) * S_fill.detach()  # [batch, I, F, T]
    S_syn = L.from_donors(sources, idx)  # [batch, I, F, T]
    return S_syn.sum(dim=1), S_syn


def owned_bin_remix_loss(
    S_hat: Tensor, S_syn: Tensor, X_syn: Tensor, mixture_norm: str = "mixture"
) -> Tensor:
    """L_own = sum_{i,f,t} |S_hat_i - S'_i| on an owned-bin remix (:func:`owned_bin_remix`),
    per frame, normalised by the remix's level like eq. (6)-(7).

    Args:
        S_hat: the separator's output on X' [batch, I, F, T].
        S_syn: the remix's sources S' [batch, I, F, T].
        X_syn: the remix X' [batch, F, T].
        mixture_norm: "none" or "mixture" (``LossConfig.mixture_norm``).
    """
    if S_hat.shape != S_syn.shape or S_syn.shape[0] != X_syn.shape[0]:
        raise ValueError(
            f"owned_bin_remix_loss: S_hat {tuple(S_hat.shape)}, S' {tuple(S_syn.shape)} and "
            f"X' {tuple(X_syn.shape)} disagree"
        )
    per_sample = (S_hat.float() - S_syn.float()).abs().sum(dim=(1, 2, 3))  # [batch]
    return L.per_frame_of_mixture(per_sample, X_syn, mixture_norm)


def owned_remix_loss(
    config: OwnedRemixConfig,
    separate: Callable[[Tensor], Tensor],
    X: Tensor,
    A: Tensor,
    S_hat: Tensor,
    generator: torch.Generator | None,
    mixture_norm: str,
) -> Tensor:
    """gamma L_own: remix the batch's owned bins (donors drawn with ``generator``), separate
    the remixes with ``separate`` (X' -> S_hat'), compare with their known sources."""
    donors = L.remix_indices(X.shape[0], S_hat.shape[1], generator, X.device)  # [B, I]
    X_syn, S_syn = owned_bin_remix(X, A, donors, S_hat)  # [B, F, T], [B, I, F, T]
    return config.weight * owned_bin_remix_loss(separate(X_syn), S_syn, X_syn, mixture_norm)


# --- weight_average ---------------------------------------------------------------------------


def normalised_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """The update of an exponential moving average normalised over the steps seen so far.

    After t updates with weights w_1..w_t the average is
    sum_s d^(t-s) w_s / sum_s d^(t-s): each step weighs d^(t-s), the first one included, so a
    run shorter than the window (about 1 / (1 - d) steps) averages its own steps only. The
    plain EMA that starts from a copy of w_1 gives w_1 the weight d^(t-1) instead, the mass of
    every step before it: 0.37 after 200 steps at d = 0.995, where a 200-step step 3 would
    keep 37 % of the separator it started from. Both agree once t is many windows long.

    The update is avg += (w_t - avg) (1 - d) / (1 - d^t), read on the device (no host sync).
    It is ``multi_avg_fn`` of :class:`~torch.optim.swa_utils.AveragedModel`, which copies w_1
    and then calls it with ``n_averaged`` = t - 1.
    """

    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        step = n_averaged.to(averaged[0].dtype) + 1  # t, counting this update
        weight = (1 - decay) / (1 - decay**step)  # 0-dim, on the device
        torch._foreach_lerp_(averaged, current, weight)

    return update


def averaged_copy(config: WeightAverageConfig, module: nn.Module) -> AveragedModel | None:
    """A moving average of ``module``'s weights (:func:`normalised_ema`; None when off); the
    trainer calls ``update_parameters(module)`` after every optimiser step."""
    if config.decay <= 0:
        return None
    return AveragedModel(module, multi_avg_fn=normalised_ema(config.decay)).eval()


# --- critic_lr --------------------------------------------------------------------------------


def critic_lr(config: CriticLrConfig, lr: float, network: str, trained: tuple[str, ...]) -> float:
    """The learning rate of trained ``network``: a transcriptor trained beside a separator
    (step 3) runs at ``scale`` x ``lr``; every other network at ``lr``."""
    is_critic = network == "transcriptor" and "separator" in trained
    return lr * (config.scale if is_critic else 1.0)
