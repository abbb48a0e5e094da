"""Every loss of the paper (Hung, Wichern & Le Roux, ICASSP 2021, eq. 1-11) and of its baselines.

Conventions (shapes are channel-major, as the models output them):

- X      [batch, F, T]          mixture magnitude STFT (F = 1025 bins);
- Y      [batch, I, 88, T]      target piano roll, float 0/1 (I instruments, 88 notes);
- z      [batch, I, 88, T]      transcriptor *logits*, p = sigmoid(z) (``Transcriptor.logits``);
- z_each [batch, I_src, I, 88, T] transcriptor logits on each separated source, entry [:, i] is
  p(S_hat_i) (``Transcriptor.logits_of_sources(S_hat)``);
- S_hat  [batch, I, F, T]       separated magnitudes (``Separator.separate``);
- A      [batch, I, F, T] bool  harmonic activity: instrument i expected at bin f, frame t;
- w      [I]                    instrument (class-balance) weights, applied to every term that
  is indexed by an instrument (eq. 1, 3, 5, 9, 10 and the classifier loss), not to eq. 2.

H is the binary cross entropy. It is computed from logits with
``binary_cross_entropy_with_logits`` (stable for saturated outputs, and allowed under bf16
autocast, unlike BCE on probabilities). Max over instruments / notes (eq. 2-3) is taken on the
logits: sigmoid is monotonic, so sigmoid(max z) = max sigmoid(z) = max p exactly. Every loss
computes in float32 whatever the input dtype.

Normalisation (the paper gives none, and it sets the balance of the terms):
each loss is **summed over the indices its equation shows, then divided by batch x frames**, so
the paper's weights alpha1..beta3 apply per frame. The mixture losses (eq. 6-7) follow the audio
level; with ``LossConfig.mixture_norm = "mixture"`` (default) each sample's sum is also divided
by its mixture's mean frame L1 norm mean_t sum_f X[f, t], making them scale-invariant relative
L1 errors. Per-frame values measured on FluidSynth renderings of the Track00001 test fixture
(piano S02, guitar S00, bass S03 at equal RMS 0.05, seven 4-s windows, 15 harmonics; mean frame
L1 norm of X = 787), with a fresh ``tiny`` separator (masks ~0.5) unless said otherwise:

    term (per frame)                 mixture_norm="none"   mixture_norm="mixture"
    score, eq. 5 summed over i       ~690 at init (I*I*88 BCEs), trained ~25 down to 0.3 [cal]
    c-mix, eq. 6, init separator     417                   0.56
    c-mix, true stems as S_hat       127                   0.16  (|X| != sum_i |S_i|)
    c-mix, mixture as every source   1574                  2.00
    h-mix, eq. 7, init separator     1476                  1.86
    h-mix, true stems as S_hat       1085                  1.31  (energy off the harmonics)
    h-mix, mixture as every source   2446                  3.06

[cal] = the project's early CPU-scale calibration runs. With raw magnitudes and the paper's
alpha2 = 1 the mixture terms there were as large as the trained score term and fought it
(-5.5 dB); alpha2 = 0.01 did better. "mixture" puts alpha2 * c-mix at ~1-2 % of a trained score term, the regime that worked,
and makes that balance independent of the audio level. The "mixture" h-mix has a floor of ~1.3
even for the true stems: it can never reach 0.

Who updates what (the caller arranges it; these functions only compute values):

- step 1: transcriptor with :func:`transcription_loss_step1` (eq. 4);
- step 2: separator with :func:`separation_loss` (eq. 8); the transcriptor is frozen
  (``requires_grad_(False)``) but gradients flow through it into S_hat;
- step 3: separator still with eq. 8; transcriptor with :func:`transcription_loss_step3`
  (eq. 11), whose adversarial terms must see ``S_hat.detach()`` (paper Fig. 2: "only used to
  update the transcriptor").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from train.config import LossConfig

__all__ = [
    "bce_with_logits",
    "score_loss",
    "pitch_loss",
    "instrument_loss",
    "transcription_loss_step1",
    "separated_score_loss",
    "active_instruments",
    "clip_mixture_loss",
    "harmonic_mixture_loss",
    "separation_loss",
    "remix_indices",
    "remix",
    "from_donors",
    "instrument_weights",
    "per_frame",
    "per_frame_of_mixture",
    "adversarial_mixture_loss",
    "adversarial_transcription_loss",
    "transcription_loss_step3",
    "classifier_loss",
    "classifier_separation_loss",
    "supervised_loss",
]

_SCALE_FLOOR = 1e-8  # keeps the mixture normalisation finite on a silent clip


def bce_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Element-wise H(target, sigmoid(logits)) in float32 (no reduction)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")


def instrument_weights(weights: Tensor | None, n_instruments: int, device: torch.device) -> Tensor:
    """Instrument weights w [I] as float32 on ``device`` (ones when None)."""
    if weights is None:
        return torch.ones(n_instruments, device=device)
    weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
    if weights.shape != (n_instruments,):
        raise ValueError(
            f"instrument weights must have shape [{n_instruments}], got {tuple(weights.shape)}"
        )
    return weights


def _check_roll_pair(logits: Tensor, target: Tensor, name: str) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
        )


def per_frame(total: Tensor, batch: int, frames: int) -> Tensor:
    """Divide a sum by batch x frames: the normalisation of every loss here."""
    return total / (batch * frames)


# --- step 1: transcriptor (paper §2.1) -------------------------------------------------------


def score_loss(logits: Tensor, Y: Tensor, weights: Tensor | None = None) -> Tensor:
    """L_score(X, Y) = sum_{i,n,t} w_i H(Y[i,n,t], p[i,n,t](X))  -- paper eq. (1).

    Args:
        logits: z [batch, I, 88, T], p = sigmoid(z).
        Y: target roll [batch, I, 88, T] (0/1).
        weights: instrument weights w [I] (None: all 1).

    Returns:
        Scalar: the sum divided by batch x frames.
    """
    _check_roll_pair(logits, Y, "score_loss")
    batch, n_inst, _, frames = logits.shape
    w = instrument_weights(weights, n_inst, logits.device)
    per_inst = bce_with_logits(logits, Y).sum(dim=(0, 2, 3))  # [I]
    return per_frame((w * per_inst).sum(), batch, frames)


def pitch_loss(logits: Tensor, Y: Tensor) -> Tensor:
    """L_pitch(X, Y) = sum_{n,t} H(max_i Y[i,n,t], max_i p[i,n,t](X))  -- paper eq. (2).

    Instrument-agnostic multi-pitch loss: no instrument weight (there is no i left).
    Args/returns as :func:`score_loss`.
    """
    _check_roll_pair(logits, Y, "pitch_loss")
    batch, _, _, frames = logits.shape
    bce = bce_with_logits(logits.amax(dim=1), Y.amax(dim=1))  # [batch, 88, T]
    return per_frame(bce.sum(), batch, frames)


def instrument_loss(logits: Tensor, Y: Tensor, weights: Tensor | None = None) -> Tensor:
    """L_inst(X, Y) = sum_{i,t} w_i H(max_n Y[i,n,t], max_n p[i,n,t](X))  -- paper eq. (3).

    Frame-level instrument activity loss, weighted per instrument i.
    Args/returns as :func:`score_loss`.
    """
    _check_roll_pair(logits, Y, "instrument_loss")
    batch, n_inst, _, frames = logits.shape
    w = instrument_weights(weights, n_inst, logits.device)
    bce = bce_with_logits(logits.amax(dim=2), Y.amax(dim=2))  # [batch, I, T]
    return per_frame((w[:, None] * bce).sum(dim=(1, 2)).sum(), batch, frames)


def transcription_loss_step1(
    logits: Tensor, Y: Tensor, weights: Tensor | None, config: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_TL = L_score + alpha1 L_inst + beta1 L_pitch  -- paper eq. (4).

    Args:
        logits: transcriptor logits on the mixture, [batch, I, 88, T].
        Y: target roll [batch, I, 88, T].
        weights: instrument weights w [I]; ignored when ``config.use_weights`` is False.
        config: alpha1, beta1.

    Returns:
        (total, terms): the scalar to minimise and detached scalars "score", "inst", "pitch",
        "total" for logging.
    """
    w = weights if config.use_weights else None
    l_score = score_loss(logits, Y, w)
    l_inst = instrument_loss(logits, Y, w)
    l_pitch = pitch_loss(logits, Y)
    total = l_score + config.alpha1 * l_inst + config.beta1 * l_pitch
    terms = {"score": l_score, "inst": l_inst, "pitch": l_pitch, "total": total}
    return total, {k: v.detach() for k, v in terms.items()}


# --- step 2: separator (paper §2.2) ----------------------------------------------------------


def _source_targets(Y: Tensor, keep_own: bool) -> Tensor:
    """Targets for each separated source i: Y^(i) (keep_own) or its complement Y - Y^(i).

    Y [batch, I, 88, T] -> [batch, I_src, I, 88, T] with entry [:, i, j] = Y[:, j] when
    (i == j) == keep_own, else 0. Y^(i)_j = delta_ij Y_j (paper, after eq. 5).
    """
    n_inst = Y.shape[1]
    eye = torch.eye(n_inst, device=Y.device, dtype=torch.float32)  # [I_src, I]
    select = eye if keep_own else 1.0 - eye
    return Y.float()[:, None] * select[None, :, :, None, None]  # [batch, I_src, I, 88, T]


def _check_each(logits_each: Tensor, Y: Tensor, name: str) -> None:
    batch, n_inst = Y.shape[:2]
    expected = (batch, n_inst, *Y.shape[1:])
    if tuple(logits_each.shape) != expected:
        raise ValueError(
            f"{name}: transcriptor logits on the separated sources must have shape "
            f"[batch, I_src, I, 88, T] = {expected}, got {tuple(logits_each.shape)}"
        )


def _source_score(
    logits_each: Tensor, Y: Tensor, weights: Tensor | None, keep_own: bool, name: str
) -> Tensor:
    """Shared body of eq. 5 and eq. 10: BCE of the transcriptor on each separated source against
    Y^(i) (``keep_own``) or its complement Y - Y^(i), weighted per class, per frame."""
    _check_each(logits_each, Y, name)
    batch, n_inst, _, _, frames = logits_each.shape
    w = instrument_weights(weights, n_inst, logits_each.device)
    bce = bce_with_logits(logits_each, _source_targets(Y, keep_own=keep_own))  # [b, Is, I, 88, T]
    per_class = bce.sum(dim=(0, 1, 3, 4))  # [I]
    return per_frame((w * per_class).sum(), batch, frames)


def separated_score_loss(logits_each: Tensor, Y: Tensor, weights: Tensor | None = None) -> Tensor:
    """sum_i L_score(S_hat_i, Y^(i))  -- paper eq. (5), summed over the sources i as in eq. (8).

    L_score(S_hat_i, Y^(i)) = sum_{n,t} [ H(Y[i], p[i,n,t](S_hat_i))
                                          + sum_{j != i} H(0, p[j,n,t](S_hat_i)) ]
    (each term j weighted by w_j).

    Args:
        logits_each: z_each [batch, I_src, I, 88, T], [:, i] = transcriptor logits on S_hat_i.
        Y: target roll [batch, I, 88, T].
        weights: instrument weights w [I] (None: all 1).

    Returns:
        Scalar: sum over i, j, n, t and batch, divided by batch x frames.
    """
    return _source_score(logits_each, Y, weights, keep_own=True, name="separated_score_loss")


def active_instruments(Y: Tensor) -> Tensor:
    """The clip-level active set of eq. (6): instruments with any note in the clip.

    Y [batch, I, 88, T] (or frame activity [batch, I, T]) -> bool [batch, I].
    """
    return Y.flatten(start_dim=2).amax(dim=2) > 0


def _mixture_loss(X: Tensor, S_hat: Tensor, active: Tensor, mixture_norm: str) -> Tensor:
    """sum_{f,t} |X - sum_{i active} S_hat_i| + sum_{f,t} sum_{i inactive} |S_hat_i|, per frame.

    ``active`` is a 0/1 mask broadcastable to S_hat [batch, I, F, T].
    """
    if X.dim() != 3 or S_hat.dim() != 4 or S_hat.shape[0] != X.shape[0]:
        raise ValueError(
            f"mixture loss: X must be [batch, F, T] and S_hat [batch, I, F, T], got "
            f"{tuple(X.shape)} and {tuple(S_hat.shape)}"
        )
    if S_hat.shape[2:] != X.shape[1:]:
        raise ValueError(
            f"mixture loss: S_hat {tuple(S_hat.shape)} does not match X {tuple(X.shape)}"
        )
    X = X.float()
    S_hat = S_hat.float()
    active = active.float()
    recon = (active * S_hat).sum(dim=1)  # [batch, F, T]: sum of the active sources
    mix_err = (X - recon).abs().sum(dim=(1, 2))  # [batch]
    inactive = ((1.0 - active) * S_hat.abs()).sum(dim=(1, 2, 3))  # [batch]
    return per_frame_of_mixture(mix_err + inactive, X, mixture_norm)


def per_frame_of_mixture(per_sample: Tensor, X: Tensor, mixture_norm: str) -> Tensor:
    """Per-sample sums [batch] -> per frame, and with "mixture" also divided by each sample's
    mixture level mean_t sum_f X[f, t] (X [batch, F, T])."""
    batch, frames = X.shape[0], X.shape[2]
    if mixture_norm == "mixture":
        frame_level = X.float().sum(dim=(1, 2)) / frames  # [batch]
        per_sample = per_sample / frame_level.clamp_min(_SCALE_FLOOR)
    elif mixture_norm != "none":
        raise ValueError(f"mixture_norm must be 'none' or 'mixture', got {mixture_norm!r}")
    return per_frame(per_sample.sum(), batch, frames)


def clip_mixture_loss(
    X: Tensor, S_hat: Tensor, active: Tensor, mixture_norm: str = "mixture"
) -> Tensor:
    """L_c-mix = sum_{f,t} |X - sum_{i in A} S_hat_i| + sum_{f,t} sum_{i not in A} |S_hat_i|
    -- paper eq. (6), A the instruments active anywhere in the clip.

    Args:
        X: mixture magnitude [batch, F, T].
        S_hat: separated magnitudes [batch, I, F, T].
        active: bool [batch, I], the clip-level active set A (:func:`active_instruments`).
        mixture_norm: "none" or "mixture" (see the module docstring).

    Returns:
        Scalar: sum divided by batch x frames (and by the mixture level for "mixture").
    """
    if active.shape != S_hat.shape[:2]:
        raise ValueError(
            f"clip_mixture_loss: active must be [batch, I] = {tuple(S_hat.shape[:2])}, "
            f"got {tuple(active.shape)}"
        )
    return _mixture_loss(X, S_hat, active[:, :, None, None], mixture_norm)


def harmonic_mixture_loss(
    X: Tensor, S_hat: Tensor, A: Tensor, mixture_norm: str = "mixture"
) -> Tensor:
    """L_h-mix = sum_{f,t} |X - sum_{i in A[f,t]} S_hat_i| + sum_{f,t} sum_{i not in A[f,t]} |S_hat_i|
    -- paper eq. (7), A[f,t] the instruments with an expected harmonic within +-1 bin of f.

    Args:
        X: mixture magnitude [batch, F, T].
        S_hat: separated magnitudes [batch, I, F, T].
        A: harmonic activity, bool [batch, I, F, T] (``prep.features.harmonic_mask``, transposed).
        mixture_norm: "none" or "mixture" (see the module docstring).
    """
    if A.shape != S_hat.shape:
        raise ValueError(
            f"harmonic_mixture_loss: A must match S_hat {tuple(S_hat.shape)}, got {tuple(A.shape)}"
        )
    return _mixture_loss(X, S_hat, A, mixture_norm)


def separation_loss(
    logits_each: Tensor,
    Y: Tensor,
    X: Tensor,
    S_hat: Tensor,
    A: Tensor | None,
    weights: Tensor | None,
    config: LossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_sep = sum_i L_score(S_hat_i, Y^(i)) + alpha2 L_c-mix + beta2 L_h-mix  -- paper eq. (8).

    A switched-off mixture term weighs 0 but is still computed without gradient (and logged),
    so the balance of the terms can be checked; h-mix is skipped when ``A`` is None.

    Args:
        logits_each: z_each [batch, I_src, I, 88, T] (the frozen transcriptor on each S_hat_i).
        Y: target roll [batch, I, 88, T].
        X: mixture magnitude [batch, F, T].
        S_hat: separated magnitudes [batch, I, F, T].
        A: harmonic activity [batch, I, F, T] bool, required when ``config.use_hmix``.
        weights: instrument weights w [I]; ignored when ``config.use_weights`` is False.
        config: alpha2, beta2, use_cmix, use_hmix, mixture_norm.

    Returns:
        (total, terms) with detached "score", "cmix", ["hmix"], "total".
    """
    if config.use_hmix and A is None:
        raise ValueError("separation_loss: use_hmix is on but no harmonic activity A was given")
    w = weights if config.use_weights else None
    l_score = separated_score_loss(logits_each, Y, w)
    total = l_score
    terms = {"score": l_score}
    with torch.set_grad_enabled(config.use_cmix and torch.is_grad_enabled()):
        l_cmix = clip_mixture_loss(X, S_hat, active_instruments(Y), config.mixture_norm)
    terms["cmix"] = l_cmix
    if config.use_cmix:
        total = total + config.alpha2 * l_cmix
    if A is not None:
        with torch.set_grad_enabled(config.use_hmix and torch.is_grad_enabled()):
            l_hmix = harmonic_mixture_loss(X, S_hat, A, config.mixture_norm)
        terms["hmix"] = l_hmix
        if config.use_hmix:
            total = total + config.beta2 * l_hmix
    terms["total"] = total
    return total, {k: v.detach() for k, v in terms.items()}


# --- step 3: joint training with adversarial losses (paper §2.3) -----------------------------


def remix_indices(
    batch_size: int,
    n_instruments: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample a_i for the remixes of the adversarial mixture loss (paper §2.3, Fig. 2).

    Returns idx [batch, I] (long): remix b takes instrument i from batch sample idx[b, i].
    Built as idx[b, i] = perm[(b + shift_i) mod batch] with a random permutation ``perm`` and
    distinct random shifts, so when batch >= I every row uses I *different* samples (a fake
    mixture, never a real one) and every column is a permutation (each separated output is used
    exactly once per instrument). When batch < I distinct samples are impossible and the
    indices are drawn uniformly with replacement.

    Args:
        batch_size: number of samples in the batch (>= 1).
        n_instruments: I.
        generator: torch RNG on the CPU (for reproducible remixes).
        device: device of the returned tensor.
    """
    if batch_size < 1 or n_instruments < 1:
        raise ValueError(
            f"remix_indices needs batch_size >= 1 and n_instruments >= 1, "
            f"got {batch_size} and {n_instruments}"
        )
    if batch_size < n_instruments:
        idx = torch.randint(0, batch_size, (batch_size, n_instruments), generator=generator)
    else:
        perm = torch.randperm(batch_size, generator=generator)  # [batch]
        shifts = torch.randperm(batch_size, generator=generator)[:n_instruments]  # [I] distinct
        rows = torch.arange(batch_size)[:, None]  # [batch, 1]
        idx = perm[(rows + shifts[None, :]) % batch_size]  # [batch, I]
    return idx.to(device) if device is not None else idx


def remix(S_hat: Tensor, Y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Build the fake mixtures X~ = sum_i S_hat[a_i, i] and their labels Y~[i] = Y[a_i, i].

    Args:
        S_hat: separated magnitudes [batch, I, F, T] (detach it for the transcriptor's AML).
        Y: target roll [batch, I, 88, T].
        idx: [batch, I] from :func:`remix_indices`.

    Returns:
        (X_tilde [batch, F, T], Y_tilde [batch, I, 88, T]).
    """
    batch, n_inst = S_hat.shape[:2]
    if idx.shape != (batch, n_inst) or Y.shape[:2] != (batch, n_inst):
        raise ValueError(
            f"remix: idx {tuple(idx.shape)} and Y {tuple(Y.shape)} must start with "
            f"[batch, I] = {(batch, n_inst)}"
        )
    X_tilde = from_donors(S_hat, idx).sum(dim=1)  # [batch, I, F, T] -> [batch, F, T]
    return X_tilde, from_donors(Y, idx)  # Y~ [batch, I, 88, T]


def from_donors(per_instrument: Tensor, idx: Tensor) -> Tensor:
    """out[b, i] = per_instrument[idx[b, i], i] for per_instrument [batch, I, ...]."""
    idx = idx.to(per_instrument.device)
    inst = torch.arange(per_instrument.shape[1], device=per_instrument.device)[None, :]  # [1, I]
    return per_instrument[idx, inst]


def adversarial_mixture_loss(
    logits_remix: Tensor, Y_remix: Tensor, weights: Tensor | None = None
) -> Tensor:
    """L_AML(X~, Y~) = -L_score(X~, Y~)  -- paper eq. (9).

    The transcriptor is pushed away from the labels Y~ of a remix X~ = sum_i S_hat_i[a_i] of
    separated sources from different clips (a fake mixture). As written this is unbounded
    below; the trainer stops a run whose loss is no longer finite. Our bounded form is the
    ``aml_positives`` extension (:func:`train.extensions.positive_note_aml`).

    Args:
        logits_remix: transcriptor logits on X~, [batch, I, 88, T] (computed by the caller on
            the remix of the *detached* separated outputs).
        Y_remix: remixed labels Y~ [batch, I, 88, T] (:func:`remix`).
        weights: instrument weights w [I] (None: all 1).

    Returns:
        Scalar, sum divided by batch x frames.
    """
    _check_roll_pair(logits_remix, Y_remix, "adversarial_mixture_loss")
    return -score_loss(logits_remix, Y_remix, weights)


def adversarial_transcription_loss(
    logits_each: Tensor, Y: Tensor, weights: Tensor | None = None
) -> Tensor:
    """L_ATL(S_hat_i, Y - Y^(i)) summed over i  -- paper eq. (10).

    sum_{n,t} [ H(0, p[i,n,t](S_hat_i)) + sum_{j != i} H(Y[j], p[j,n,t](S_hat_i)) ]: on the
    imperfect S_hat_i the transcriptor should *not* find instrument i but should find the
    residue of the others. Bounded (targets are plain 0/1 BCE). Each term j weighted by w_j.

    Args:
        logits_each: z_each [batch, I_src, I, 88, T] on the *detached* separated sources.
        Y: target roll [batch, I, 88, T].
        weights: instrument weights w [I].
    """
    return _source_score(
        logits_each, Y, weights, keep_own=False, name="adversarial_transcription_loss"
    )


def transcription_loss_step3(
    logits: Tensor,
    Y: Tensor,
    weights: Tensor | None,
    config: LossConfig,
    logits_remix: Tensor | None = None,
    Y_remix: Tensor | None = None,
    logits_each: Tensor | None = None,
    aml: Callable[[Tensor, Tensor, Tensor | None], Tensor] = adversarial_mixture_loss,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_TL-3 = L_TL + alpha3 L_AML + beta3 L_ATL  -- paper eq. (11).

    Args:
        logits: transcriptor logits on the real mixtures [batch, I, 88, T] (for eq. 4).
        Y: target roll [batch, I, 88, T].
        weights: instrument weights w [I]; ignored when ``config.use_weights`` is False.
        config: alpha1, beta1, alpha3, beta3, use_aml, use_atl.
        logits_remix, Y_remix: transcriptor logits on the remixes X~ and their labels Y~;
            required when ``config.use_aml``.
        logits_each: transcriptor logits on the detached S_hat_i [batch, I_src, I, 88, T];
            required when ``config.use_atl``.
        aml: the L_AML term, ``aml(logits_remix, Y_remix, weights)``: eq. 9 unless an
            extension replaces it (:func:`train.extensions.positive_note_aml`).

    Returns:
        (total, terms) with the detached step-1 terms plus "aml" / "atl" when on, and "total".
    """
    w = weights if config.use_weights else None
    total, terms = transcription_loss_step1(logits, Y, weights, config)
    terms = {k: v for k, v in terms.items() if k != "total"}
    if config.use_aml:
        if logits_remix is None or Y_remix is None:
            raise ValueError("transcription_loss_step3: use_aml needs logits_remix and Y_remix")
        l_aml = aml(logits_remix, Y_remix, w)
        total = total + config.alpha3 * l_aml
        terms["aml"] = l_aml.detach()
    if config.use_atl:
        if logits_each is None:
            raise ValueError("transcription_loss_step3: use_atl needs logits_each")
        l_atl = adversarial_transcription_loss(logits_each, Y, w)
        total = total + config.beta3 * l_atl
        terms["atl"] = l_atl.detach()
    terms["total"] = total.detach()
    return total, terms


# --- baselines -------------------------------------------------------------------------------


def classifier_loss(
    activity_logits: Tensor, activity_true: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Baseline critic training (Pishdadian et al. 2020 [16]): sum_{i,t} w_i H(a[i,t], q[i,t](X)).

    Frame-level instrument activity, the classifier's analogue of eq. (1).

    Args:
        activity_logits: classifier logits [batch, I, T].
        activity_true: frame activity [batch, I, T] (0/1).
        weights: instrument weights w [I].
    """
    _check_roll_pair(activity_logits, activity_true, "classifier_loss")
    batch, n_inst, frames = activity_logits.shape
    w = instrument_weights(weights, n_inst, activity_logits.device)
    bce = bce_with_logits(activity_logits, activity_true)  # [batch, I, T]
    return per_frame((w[:, None] * bce).sum(dim=(1, 2)).sum(), batch, frames)


def classifier_separation_loss(
    activity_logits_each: Tensor,
    activity_true: Tensor,
    X: Tensor,
    S_hat: Tensor,
    weights: Tensor | None,
    config: LossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Baseline separator loss [16]: the classifier critic on each S_hat_i + alpha2 L_c-mix.

    sum_i sum_t [ w_i H(a[i,t], q[i,t](S_hat_i)) + sum_{j != i} w_j H(0, q[j,t](S_hat_i)) ]
    (eq. 5 with activity instead of notes: "only instrument i, where it was active") plus the
    clip-level mixture loss eq. (6) with A = instruments active in the clip.

    Args:
        activity_logits_each: classifier logits on each S_hat_i, [batch, I_src, I, T]
            (``Classifier.logits_of_sources``).
        activity_true: frame activity [batch, I, T] (0/1).
        X, S_hat: mixture [batch, F, T] and separated magnitudes [batch, I, F, T].
        weights: instrument weights w [I]; ignored when ``config.use_weights`` is False.
        config: alpha2, use_cmix, mixture_norm.

    Returns:
        (total, terms) with detached "score", "cmix", "total".
    """
    batch, n_inst, frames = activity_true.shape
    if tuple(activity_logits_each.shape) != (batch, n_inst, n_inst, frames):
        raise ValueError(
            f"classifier_separation_loss: logits must be [batch, I_src, I, T] = "
            f"{(batch, n_inst, n_inst, frames)}, got {tuple(activity_logits_each.shape)}"
        )
    w = instrument_weights(weights if config.use_weights else None, n_inst, activity_true.device)
    eye = torch.eye(n_inst, device=activity_true.device)  # [I_src, I]
    target = activity_true.float()[:, None] * eye[None, :, :, None]  # [batch, I_src, I, T]
    bce = bce_with_logits(activity_logits_each, target)  # [batch, I_src, I, T]
    l_score = per_frame((w * bce.sum(dim=(0, 1, 3))).sum(), batch, frames)
    total = l_score
    with torch.set_grad_enabled(config.use_cmix and torch.is_grad_enabled()):
        l_cmix = clip_mixture_loss(X, S_hat, active_instruments(activity_true), config.mixture_norm)
    if config.use_cmix:
        total = total + config.alpha2 * l_cmix
    terms = {"score": l_score, "cmix": l_cmix, "total": total}
    return total, {k: v.detach() for k, v in terms.items()}


def supervised_loss(S_hat: Tensor, S_true: Tensor) -> Tensor:
    """Supervised upper bound (paper §3.3): sum_{i,f,t} |S_hat_i - S_i| / (batch x frames).

    Args:
        S_hat: separated magnitudes [batch, I, F, T].
        S_true: true stem magnitudes [batch, I, F, T].
    """
    if S_hat.shape != S_true.shape:
        raise ValueError(
            f"supervised_loss: S_hat {tuple(S_hat.shape)} and S_true {tuple(S_true.shape)} differ"
        )
    batch, frames = S_hat.shape[0], S_hat.shape[-1]
    return per_frame((S_hat.float() - S_true.float()).abs().sum(), batch, frames)
