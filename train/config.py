"""Configuration dataclasses for the models, the losses and the training loop.

Three dataclasses, each with named presets:

- :class:`ModelConfig`  the TCN shared by transcriptor, separator and classifier (paper §3.2);
- :class:`LossConfig`   every weight and switch of the paper's losses (eq. 1-11, §3.2) plus the
  normalisation and stabilisation choices the paper leaves open;
- :class:`TrainConfig`  optimiser, schedule and data-loading settings.

Presets: ``tiny`` trains on a 2-core CPU in minutes, ``paper`` is sized for a GPU. The paper
gives no channel sizes; ``paper`` uses Conv-TasNet's B=256, H=512 (Luo & Mesgarani 2019, [31]).

``to_dict``/``from_dict`` turn a config into plain dicts of numbers/strings/bools (for
checkpoints loadable with ``torch.load(weights_only=True)`` and for ``params.yaml``) and back,
refusing unknown keys and values of the wrong type with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ModelConfig",
    "LossConfig",
    "TrainConfig",
    "MODEL_PRESETS",
    "TRAIN_PRESETS",
    "LOSS_PRESETS",
    "model_preset",
    "train_preset",
    "loss_preset",
    "to_dict",
    "from_dict",
    "ConfigError",
]


class ConfigError(ValueError):
    """A configuration value, key or preset name is invalid."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the TCN (paper §3.2: 3 repeats x 8 dilated residual blocks, kernel size 3).

    Attributes:
        n_bins: input channels, the F = 1025 frequency bins of the magnitude STFT X.
        n_instruments: I, the number of instruments (piano, guitar, bass in the paper).
        n_pitches: the 88 MIDI notes n = 21..108 of the piano roll Y.
        bottleneck_channels: B in Conv-TasNet, channels of the residual path (not in the paper).
        hidden_channels: H in Conv-TasNet, channels inside each block (not in the paper).
        kernel_size: P, kernel of the dilated depthwise convolutions (paper: 3).
        blocks_per_repeat: X, dilated blocks per repeat, dilations 1, 2, ..., 2^(X-1) (paper: 8).
        repeats: R, number of repeats of the dilated stack (paper: 3).
        input_log_eps: the input feature is log(1 + X / input_log_eps) (1.0 gives log1p(X)).
            Log compression keeps loud low bins from dominating the first layer; the scale is a
            parameter because the STFT magnitude's level depends on the audio's level.
        dropout: dropout rate inside each block, before its residual/skip outputs (0 = off).
    """

    n_bins: int = 1025
    n_instruments: int = 3
    n_pitches: int = 88
    bottleneck_channels: int = 128
    hidden_channels: int = 256
    kernel_size: int = 3
    blocks_per_repeat: int = 8
    repeats: int = 3
    input_log_eps: float = 1.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "n_bins",
            "n_instruments",
            "n_pitches",
            "bottleneck_channels",
            "hidden_channels",
            "blocks_per_repeat",
            "repeats",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            # An odd kernel gives symmetric "same" padding (a non-causal TCN).
            raise ConfigError(
                f"ModelConfig.kernel_size must be odd and >= 1, got {self.kernel_size}"
            )
        if not self.input_log_eps > 0:
            raise ConfigError(f"ModelConfig.input_log_eps must be > 0, got {self.input_log_eps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def receptive_field(self) -> int:
        """Receptive field in frames: 1 + R * (P - 1) * (2^X - 1) (1531 frames = 47.8 s for 3x8, P=3)."""
        return 1 + self.repeats * (self.kernel_size - 1) * (2**self.blocks_per_repeat - 1)


MIXTURE_NORMS = ("none", "mixture")
AML_FORMS = ("clamped", "flipped", "positives")
OWNED_REMIX_SOURCES = ("owned", "owned+separated", "owned+separated-unowned", "separated")
KEEP_CHECKPOINT = ("best", "last")


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of the paper's losses (§2, §3.2) plus the choices it leaves open.

    Weights (paper §3.2): alpha1 = 0.03 (L_inst) and beta1 = 0.1 (L_pitch) in eq. 4;
    alpha2 = 1 (L_c-mix) and beta2 = 0.1 (L_h-mix) in eq. 8; alpha3 = 0.2 (L_AML) and
    beta3 = 0.05 (L_ATL) in eq. 11. A term whose switch is off weighs 0 (paper: "the weights of
    the unused terms are then set to 0").

    Normalisation (not in the paper): every loss is summed over the indices its equation shows,
    then divided by batch x frames, so the weights act "per frame". ``mixture_norm`` chooses how
    the mixture losses (eq. 6-7), whose scale follows the audio level, are made comparable:

    - ``"none"``: raw magnitudes (CALIBRATION.md: c-mix 20-45, h-mix 1000-1500 per frame, against
      a score term of ~25: h-mix dominates; per-frame values measured here are tabled in
      :mod:`train.losses`);
    - ``"mixture"`` (default): each sample's sums are divided by its mixture's mean frame L1 norm
      mean_t sum_f X[f,t], i.e. the per-frame value is a relative L1 error, scale-invariant.

    Adversarial mixture loss stabilisation (eq. 9 negates a BCE, which is unbounded below):
    ``aml_form = "clamped"`` (default) uses -sum min(H, aml_bce_clamp): each element pushes the
    transcriptor away from the remix labels (the paper's gradient sign) until its BCE reaches the
    clamp (default 2.3 = -ln 0.1: the label's probability fell below 0.1), then stops; bounded
    in [-clamp, 0] per element. ``"flipped"`` uses H(1 - Y~, p), the GAN-style non-saturating
    replacement: same gradient sign, bounded below by 0, never stops pushing. ``"positives"``
    applies the clamped form to the remix's notes only (Y~ = 1): an ablation, because on the
    ~97 % of zeros the paper's sign pushes the transcriptor to switch notes *on* for fakes.

    Attributes:
        use_weights: apply the instrument (class-balance) weights to every term indexed by an
            instrument (paper §3.2, after [16]).
        use_cmix, use_hmix: switches of the clip-level (eq. 6) and harmonic (eq. 7) mixture losses.
        use_aml, use_atl: switches of the adversarial mixture (eq. 9) and transcription (eq. 10)
            losses in step 3.
        anchor_weight: lambda of a second critic in step 3's L_sep (not in the paper; 0 = off):
            lambda sum_i L_score(S_hat_i, Y^(i)) under the step-1 transcriptor, kept frozen,
            beside the transcriptor being trained. The trained critic drifts away from
            recognising clean separated sources (reports/bench, findings 12-13); the frozen one
            still does.
        owned_remix_weight: gamma of the owned-bin remix loss in L_sep (not in the paper; 0 =
            off): the separator also separates synthetic mixtures of the bins each clip's
            score gives to one instrument only, taken from different clips, whose sources are
            known (``train.losses.owned_bin_remix``; reports/bench, finding 15).
        owned_remix_sources: what a remix source is made of: ``"owned"`` (the mixture in the
            instrument's owned bins, zero elsewhere), ``"owned+separated"`` (the same, and the
            detached separated source outside them, so the remix looks like a whole mixture),
            ``"owned+separated-unowned"`` (the fill only in bins no instrument owns: in bins the
            score gives to another instrument alone the source is 0, not its separated leak) or
            ``"separated"`` (the separated source everywhere: the ablation without weak labels,
            a pure remix-consistency term).
        owned_remix_teacher: take the separated sources that fill a remix from the
            weight-averaged separator (a mean teacher; needs ``TrainConfig.ema_decay`` > 0)
            instead of the separator being trained.
        owned_remix_shift: K > 0 pitch-shifts each remix source by up to K semitones so that
            its owned bins land on the other sources' (``train.losses.colliding_shifts``): a
            known split of shared harmonic bins, which unshifted donors rarely give (0 = off).
        averaged_critic: score the separated sources in step 3's L_sep with the
            weight-averaged transcriptor (a mean-teacher critic; needs ``TrainConfig.ema_decay``
            > 0) instead of the transcriptor being trained, which swings from step to step
            (reports/bench, finding 16). Its own losses (eq. 11) still train the raw one.
            Worse on the bench corpus (finding 17): the lagging critic runs away from the
            separator.
    """

    alpha1: float = 0.03
    beta1: float = 0.1
    alpha2: float = 1.0
    beta2: float = 0.1
    alpha3: float = 0.2
    beta3: float = 0.05
    use_weights: bool = True
    use_cmix: bool = True
    use_hmix: bool = True
    use_aml: bool = False
    use_atl: bool = False
    mixture_norm: str = "mixture"
    aml_form: str = "clamped"
    aml_bce_clamp: float = 2.3
    anchor_weight: float = 0.0
    owned_remix_weight: float = 0.0
    owned_remix_sources: str = "owned"
    owned_remix_teacher: bool = False
    owned_remix_shift: int = 0
    averaged_critic: bool = False

    def __post_init__(self) -> None:
        weights = ("alpha1", "beta1", "alpha2", "beta2", "alpha3", "beta3")
        for name in (*weights, "anchor_weight", "owned_remix_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"LossConfig.{name} must be a finite number >= 0, got {value}")
        if self.mixture_norm not in MIXTURE_NORMS:
            raise ConfigError(
                f"LossConfig.mixture_norm must be one of {MIXTURE_NORMS}, got {self.mixture_norm!r}"
            )
        if self.aml_form not in AML_FORMS:
            raise ConfigError(
                f"LossConfig.aml_form must be one of {AML_FORMS}, got {self.aml_form!r}"
            )
        if self.owned_remix_sources not in OWNED_REMIX_SOURCES:
            raise ConfigError(
                f"LossConfig.owned_remix_sources must be one of {OWNED_REMIX_SOURCES}, "
                f"got {self.owned_remix_sources!r}"
            )
        if self.owned_remix_teacher and self.owned_remix_sources == "owned":
            raise ConfigError(
                "LossConfig.owned_remix_teacher needs owned_remix_sources with separated fills, "
                "not 'owned'"
            )
        if not (math.isfinite(self.aml_bce_clamp) and self.aml_bce_clamp > 0):
            raise ConfigError(f"LossConfig.aml_bce_clamp must be > 0, got {self.aml_bce_clamp}")
        if not (isinstance(self.owned_remix_shift, int) and 0 <= self.owned_remix_shift <= 12):
            raise ConfigError(
                f"LossConfig.owned_remix_shift must be a whole number of semitones in 0..12, "
                f"got {self.owned_remix_shift!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and data settings (paper §3.2: Adam, lr 0.001, halved after 2 epochs
    without validation improvement, stop after 10).

    Attributes:
        batch_size: windows per optimiser step (per process under DDP).
        lr: Adam learning rate.
        lr_decay_factor: multiplier applied when the validation loss stalls (paper: 0.5).
        lr_patience: epochs without improvement before decaying the lr (paper: 2).
        early_stop_patience: epochs without improvement before stopping (paper: 10).
        max_epochs: hard limit on epochs.
        steps_per_epoch: optimiser steps per epoch (random windows, so an "epoch" is a budget).
        grad_clip: max global gradient norm (0 = off).
        num_workers: DataLoader workers.
        seed: seed of every random generator.
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        val_windows: number of fixed validation windows.
        window_frames: frames per training window (129 = 4 s at 16 kHz, hop 500).
        log_every: optimiser steps between logged training losses.
        keep_checkpoint: what ``best.pt`` (and a step-3 run's ``transcriptor.pt``) holds:
            "best", the epoch with the lowest validation loss (the paper), or "last", the last
            epoch. Step 3's validation loss is measured with the transcriptor it trains, a
            moving critic, and picks early epochs of separators that kept improving
            (reports/bench/README.md, finding 10): use "last" there. The lr schedule and early
            stopping follow the validation loss either way.
        ema_decay: decay of an exponential moving average of the trained networks' weights,
            updated after every optimiser step (not in the paper; 0 = off). When on, validation
            measures the averaged networks and the checkpoints hold them: a stem-free way to
            damp the epoch-to-epoch wander of step 3's separator (reports/bench, finding 16).
            0.995 averages over about 200 steps.
        critic_lr_scale: the learning rate of a transcriptor trained beside a separator (step 3)
            as a multiple of ``lr`` (not in the paper; 1 = the same). On the bench corpus 2
            leads 1 from epoch 4 on and holds the guitar, 0.3 trails (reports/bench, finding
            25), 4 leads 2 and 8 leads 4 (findings 26-27, each confirmed on a third seed; 8
            adopted): a critic that keeps up with the separator teaches it more. Steps that
            train one network ignore it.
    """

    batch_size: int = 8
    lr: float = 1e-3
    lr_decay_factor: float = 0.5
    lr_patience: int = 2
    early_stop_patience: int = 10
    max_epochs: int = 100
    steps_per_epoch: int = 200
    grad_clip: float = 5.0
    num_workers: int = 1
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    val_windows: int = 64
    window_frames: int = 129
    log_every: int = 20
    keep_checkpoint: str = "best"
    ema_decay: float = 0.0
    critic_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.critic_lr_scale) and self.critic_lr_scale > 0):
            raise ConfigError(
                f"TrainConfig.critic_lr_scale must be a finite number > 0, got {self.critic_lr_scale}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.keep_checkpoint not in KEEP_CHECKPOINT:
            raise ConfigError(
                f"TrainConfig.keep_checkpoint must be one of {KEEP_CHECKPOINT}, "
                f"got {self.keep_checkpoint!r}"
            )
        for name in ("batch_size", "max_epochs", "steps_per_epoch", "val_windows", "window_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_patience", "early_stop_patience", "num_workers", "log_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ConfigError(
                f"TrainConfig.lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}"
            )
        if self.grad_clip < 0:
            raise ConfigError(f"TrainConfig.grad_clip must be >= 0, got {self.grad_clip}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )


MODEL_PRESETS: dict[str, ModelConfig] = {
    # ~0.7 M parameters (transcriptor): a step-1 epoch of 200 steps of 8 windows takes a few
    # minutes on 2 CPU cores. Keeps the paper's 3 x 8 blocks and kernel 3.
    "tiny": ModelConfig(bottleneck_channels=64, hidden_channels=128),
    # Conv-TasNet's best B=256, H=512 [31]; ~7-10 M parameters.
    "paper": ModelConfig(bottleneck_channels=256, hidden_channels=512),
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        batch_size=8, max_epochs=30, steps_per_epoch=200, num_workers=1, val_windows=64
    ),
    "paper": TrainConfig(
        batch_size=16, max_epochs=300, steps_per_epoch=1000, num_workers=8, val_windows=512
    ),
}

LOSS_PRESETS: dict[str, LossConfig] = {
    # Table 1 / Table 2 systems. Step 1 uses only alpha1, beta1; the baseline uses c-mix only.
    "step1": LossConfig(use_cmix=False, use_hmix=False),
    "step2-cmix": LossConfig(use_cmix=True, use_hmix=False),
    "step2-hmix": LossConfig(use_cmix=False, use_hmix=True),
    "step2": LossConfig(use_cmix=True, use_hmix=True),
    "step3": LossConfig(use_cmix=True, use_hmix=True),
    "step3-aml": LossConfig(use_cmix=True, use_hmix=True, use_aml=True),
    "step3-atl": LossConfig(use_cmix=True, use_hmix=True, use_atl=True),
    "baseline": LossConfig(use_cmix=True, use_hmix=False),
    "supervised": LossConfig(use_cmix=False, use_hmix=False),
}


def _preset(table: dict[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"unknown {kind} preset {name!r}; known presets: {', '.join(sorted(table))}"
        ) from None


def model_preset(name: str) -> ModelConfig:
    """The :class:`ModelConfig` called ``name`` ("tiny" or "paper")."""
    return _preset(MODEL_PRESETS, "model", name)


def train_preset(name: str) -> TrainConfig:
    """The :class:`TrainConfig` called ``name`` ("tiny" or "paper")."""
    return _preset(TRAIN_PRESETS, "train", name)


def loss_preset(name: str) -> LossConfig:
    """The :class:`LossConfig` of a system of the paper's tables (see ``LOSS_PRESETS``)."""
    return _preset(LOSS_PRESETS, "loss", name)


def to_dict(config: ModelConfig | LossConfig | TrainConfig) -> dict[str, Any]:
    """Plain dict of a config (numbers, strings, bools only: safe for weights_only checkpoints)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict expects a config dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


ConfigT = TypeVar("ConfigT", ModelConfig, LossConfig, TrainConfig)


def _coerce(cls_name: str, key: str, value: Any, annotation: Any) -> Any:
    """Check/convert one value to its field's type (YAML reads ``1e-3`` as a string)."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - every field is one of the four types above
        return value
    raise ConfigError(
        f"{cls_name}.{key} must be of type {annotation.__name__}, got {value!r} ({type(value).__name__})"
    )


def from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Build ``cls`` from a dict; missing keys take the defaults, unknown keys are refused.

    Args:
        cls: ModelConfig, LossConfig or TrainConfig.
        data: mapping of field names to values (e.g. from a checkpoint or params.yaml).

    Raises:
        ConfigError: unknown key, or a value of the wrong type / out of range.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be built from a dict, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys: {', '.join(names)}"
        )
    values = {key: _coerce(cls.__name__, key, value, hints[key]) for key, value in data.items()}
    return cls(**values)
