"""Every setting of a run, one dataclass per section, each field with its one default.

A run's configuration is a :class:`RunConfig`, whose sections are also the sections of a params
file, of a recipe (:mod:`train.recipes`) and of ``--set section.key=value``:

- ``model``  :class:`ModelConfig`, the TCN shared by transcriptor, separator and classifier
  (paper §3.2);
- ``train``  :class:`TrainConfig`, optimiser, schedule and data loading (paper §3.2);
- ``loss``   :class:`LossConfig`, the weights and switches of the paper's losses (eq. 1-11);
- our extensions, not in the paper, each off by default (:mod:`train.extensions` holds their
  code): ``aml_positives`` :class:`AmlPositivesConfig`, ``anchor`` :class:`AnchorConfig`,
  ``owned_remix`` :class:`OwnedRemixConfig`, ``weight_average`` :class:`WeightAverageConfig`,
  ``critic_lr`` :class:`CriticLrConfig`.

Sizes: ``SIZE_PRESETS`` (``tiny`` trains on a 2-core CPU in minutes, ``paper`` is sized for a
GPU) set some ``model`` and ``train`` fields. The paper gives no channel sizes; ``paper`` uses
Conv-TasNet's B=256, H=512 (Luo & Mesgarani 2019).

Everything converts to plain dicts of numbers, strings and bools (for checkpoints loadable with
``torch.load(weights_only=True)``, for ``config.json`` and params files) and back, refusing
unknown keys and values of the wrong type with a message naming the key:

>>> cfg = RunConfig().override({"loss": {"alpha2": 10}, "anchor": {"weight": 1.0}})
>>> cfg.loss.alpha2, cfg.anchor.weight
(10.0, 1.0)
>>> RunConfig.from_dict(cfg.to_dict()) == cfg
True
>>> parse_assignment("train.max_epochs=3")
('train', 'max_epochs', 3)

This module imports neither torch nor numpy: ``train --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "ModelConfig",
    "TrainConfig",
    "LossConfig",
    "AmlPositivesConfig",
    "AnchorConfig",
    "OwnedRemixConfig",
    "WeightAverageConfig",
    "CriticLrConfig",
    "RunConfig",
    "SIZE_PRESETS",
    "sized",
    "to_dict",
    "from_dict",
    "parse_assignment",
    "did_you_mean",
    "RESUME_MAY_CHANGE",
]


class ConfigError(ValueError):
    """A configuration value, key, section or preset name is invalid."""


MIXTURE_NORMS = ("none", "mixture")
KEEP_CHECKPOINT = ("best", "last")
# train.lr_batch_rule: the power p of (global batch / lr_reference_batch) that scales train.lr
LR_BATCH_RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


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


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and data settings (paper §3.2: Adam, lr 0.001, halved after 2 epochs
    without validation improvement, stop after 10).

    Attributes:
        batch_size: windows per optimiser step (per process under DDP).
        lr: Adam learning rate at ``lr_reference_batch`` windows per optimiser step.
        lr_reference_batch: the global batch (all processes) at which ``lr`` holds; the size
            presets set it to their own batch size, so their runs use ``lr`` as it is.
        lr_batch_rule: how the learning rate follows another global batch B:
            ``lr * (B / lr_reference_batch) ** p``, p = 1/2 for "sqrt" (the square-root rule
            for Adam, Malladi et al., NeurIPS 2022), 1 for "linear" (Goyal et al., 2017),
            0 for "none". Measured on the bench corpus in
            reports/bench/findings/35-batch-size-and-lr-rule.md.
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
            moving critic, so its minimum need not be the best separator
            (reports/bench/findings/10-step3-epochs-and-selection.md). The lr schedule and
            early stopping follow the validation loss either way.
    """

    batch_size: int = 8
    lr: float = 1e-3
    lr_reference_batch: int = 8
    lr_batch_rule: str = "sqrt"
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

    def __post_init__(self) -> None:
        if self.keep_checkpoint not in KEEP_CHECKPOINT:
            raise ConfigError(
                f"TrainConfig.keep_checkpoint must be one of {KEEP_CHECKPOINT}, "
                f"got {self.keep_checkpoint!r}"
            )
        if self.lr_batch_rule not in LR_BATCH_RULES:
            raise ConfigError(
                f"TrainConfig.lr_batch_rule must be one of {tuple(LR_BATCH_RULES)}, "
                f"got {self.lr_batch_rule!r}"
            )
        for name in ("batch_size", "max_epochs", "steps_per_epoch", "val_windows", "window_frames",
                     "lr_reference_batch"):
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

    def scaled_lr(self, world_size: int = 1) -> float:
        """The Adam learning rate at this run's global batch (``batch_size * world_size``).

        >>> TrainConfig(batch_size=32, lr=1e-3, lr_reference_batch=8).scaled_lr()
        0.002
        >>> TrainConfig(batch_size=8, lr_batch_rule="linear").scaled_lr(world_size=2)
        0.002
        """
        power = LR_BATCH_RULES[self.lr_batch_rule]
        return self.lr * (self.batch_size * world_size / self.lr_reference_batch) ** power


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of the paper's losses (§2, §3.2), and the one choice it leaves open.

    Weights (paper §3.2): alpha1 = 0.03 (L_inst) and beta1 = 0.1 (L_pitch) in eq. 4;
    alpha2 = 1 (L_c-mix) and beta2 = 0.1 (L_h-mix) in eq. 8; alpha3 = 0.2 (L_AML) and
    beta3 = 0.05 (L_ATL) in eq. 11. A term whose switch is off weighs 0 (paper: "the weights of
    the unused terms are then set to 0").

    Normalisation (the paper gives none): every loss is summed over the indices its equation
    shows, then divided by batch x frames, so the weights act "per frame". ``mixture_norm``
    says how the mixture losses (eq. 6-7), whose scale follows the audio level, are made
    comparable with the score terms: ``"none"`` keeps raw magnitudes; ``"mixture"`` (default)
    divides each sample's sums by its mixture's mean frame L1 norm mean_t sum_f X[f,t], a
    scale-invariant relative L1 error (:mod:`train.losses` tables both scales).

    Attributes:
        use_weights: apply the instrument (class-balance) weights to every term indexed by an
            instrument (paper §3.2, after [16]).
        use_cmix, use_hmix: the clip-level (eq. 6) and harmonic (eq. 7) mixture losses.
        use_aml, use_atl: the adversarial mixture (eq. 9) and transcription (eq. 10) losses of
            step 3.
        mixture_norm: "mixture" or "none", see above.
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

    def __post_init__(self) -> None:
        for name in ("alpha1", "beta1", "alpha2", "beta2", "alpha3", "beta3"):
            _check_weight(self, name)
        if self.mixture_norm not in MIXTURE_NORMS:
            raise ConfigError(
                f"LossConfig.mixture_norm must be one of {MIXTURE_NORMS}, got {self.mixture_norm!r}"
            )


# --- our extensions (not in the paper; code in train/extensions.py) -------------------------


@dataclass(frozen=True)
class AmlPositivesConfig:
    """L_AML on the remix's notes only, bounded: -sum_{i,n,t} w_i Y~ min(H(1, p), clamp).

    Eq. 9 negates a BCE over every element of the roll; ~97 % of them are zeros, on which the
    paper's sign teaches the transcriptor to switch notes *on* for fake mixtures, and the
    negated BCE is unbounded below. This form only asks it to miss the remixed notes, and
    stops pushing an element once its BCE reaches ``clamp`` (2.3 = -ln 0.1). Replaces eq. 9
    inside eq. 11 when ``enabled`` (and ``loss.use_aml``).
    Finding: reports/bench/findings/09-aml-positives.md.

    Attributes:
        enabled: use this form instead of the paper's eq. 9.
        clamp: c, the BCE at which an element stops contributing.
    """

    enabled: bool = False
    clamp: float = 2.3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clamp) and self.clamp > 0):
            raise ConfigError(f"aml_positives.clamp must be > 0, got {self.clamp}")


@dataclass(frozen=True)
class AnchorConfig:
    """A second critic in step 3's L_sep: the step-1 transcriptor, kept frozen.

    Adds ``weight`` x sum_i L_score(S_hat_i, Y^(i)) (eq. 5) under the frozen step-1
    transcriptor to L_sep (eq. 8). The co-trained critic drifts away from recognising clean
    sources; the frozen one still does. Finding: reports/bench/findings/13-anchor-critic.md.

    Attributes:
        weight: lambda (0 = off). Step 3 only.
    """

    weight: float = 0.0

    def __post_init__(self) -> None:
        _check_weight(self, "weight", "anchor")


@dataclass(frozen=True)
class OwnedRemixConfig:
    """The owned-bin remix loss in L_sep: separate synthetic mixtures whose sources are known.

    The bins the score gives to one instrument only ("owned") hold, by eq. 6-7, that
    instrument's stem. Owned bins of different clips, filled elsewhere with the detached
    separated sources, are remixed; the separator must return each remix's sources.
    Adds ``weight`` x L_own to L_sep (steps 2 and 3).
    Finding: reports/bench/findings/15-owned-bin-remix.md.

    Attributes:
        weight: gamma (0 = off).
    """

    weight: float = 0.0

    def __post_init__(self) -> None:
        _check_weight(self, "weight", "owned_remix")


@dataclass(frozen=True)
class WeightAverageConfig:
    """An exponential moving average of the trained networks' weights.

    Updated after every optimiser step; validation measures the averaged networks and the
    checkpoints hold them. A stem-free way to damp the epoch-to-epoch wander of a separator
    trained against a moving critic. The average is normalised over the run's own steps
    (:func:`train.extensions.normalised_ema`), so a run shorter than its window does not keep
    the weights it started from. Findings: reports/bench/findings/16-weight-average.md, 39.

    Attributes:
        decay: per-step decay (0 = off; 0.995 averages over about 200 steps).
    """

    decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"weight_average.decay must be in [0, 1), got {self.decay}")


@dataclass(frozen=True)
class CriticLrConfig:
    """The learning rate of a transcriptor trained beside a separator (step 3), as a multiple
    of ``train.lr``: a critic that keeps up with the separator teaches it more.
    Finding: reports/bench/findings/27-critic-lr-4x-and-8x.md.

    Attributes:
        scale: the multiple (1 = the paper: one learning rate). Other steps ignore it.
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"critic_lr.scale must be a finite number > 0, got {self.scale}")


def _check_weight(config: Any, name: str, section: str | None = None) -> None:
    value = getattr(config, name)
    where = f"{section}.{name}" if section else f"{type(config).__name__}.{name}"
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{where} must be a finite number >= 0, got {value}")


# --- the whole run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run, by section (the sections of params files, recipes, ``--set``).

    Attributes:
        model, train, loss: the paper's settings.
        aml_positives, anchor, owned_remix, weight_average, critic_lr: our extensions, each
            off by default.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aml_positives: AmlPositivesConfig = field(default_factory=AmlPositivesConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    owned_remix: OwnedRemixConfig = field(default_factory=OwnedRemixConfig)
    weight_average: WeightAverageConfig = field(default_factory=WeightAverageConfig)
    critic_lr: CriticLrConfig = field(default_factory=CriticLrConfig)

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Section name -> its dataclass, in order."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def override(self, changes: Mapping[str, Any], where: str = "") -> RunConfig:
        """A copy with ``{section: {key: value}}`` applied; unknown sections or keys are refused.

        A ``None`` value (``null`` in a params file) changes nothing: params files list a
        section's keys as ``null`` (each recipe keeps its own value) so that DVC can set one,
        ``dvc exp run -S loss.alpha2=3``, which needs the key to exist.

        Args:
            changes: sections to change, each a mapping of field names to values.
            where: what the changes come from (a file, ``--set``), for error messages.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(changes, Mapping):
            raise ConfigError(f"{prefix}expected a mapping of sections, got {changes!r}")
        sections = self.sections()
        unknown = sorted(set(changes) - set(sections), key=str)
        if unknown:
            raise ConfigError(
                f"{prefix}unknown section(s) {unknown}{did_you_mean(str(unknown[0]), sections)}; "
                f"sections: {', '.join(sections)}"
            )
        updated = {}
        for name, values in changes.items():
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"{prefix}section {name!r} must be a mapping, got {values!r}")
            current = getattr(self, name)
            try:
                set_values = {key: value for key, value in values.items() if value is not None}
                updated[name] = from_dict(type(current), {**to_dict(current), **set_values})
            except ConfigError as err:
                raise ConfigError(f"{prefix}{err}") from None
        return dataclasses.replace(self, **updated)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` of plain values."""
        return {name: to_dict(getattr(self, name)) for name in self.sections()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (missing sections and keys take their defaults)."""
        return cls().override(data)


SIZE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # ~0.7 M parameters (transcriptor): a step-1 epoch of 200 steps of 8 windows takes a few
    # minutes on 2 CPU cores. Keeps the paper's 3 x 8 blocks and kernel 3. No loader process:
    # on CPU reading windows is ~2 % of a step, and a worker would take a core from torch.
    "tiny": {
        "model": {"bottleneck_channels": 64, "hidden_channels": 128},
        "train": {"batch_size": 8, "lr_reference_batch": 8, "max_epochs": 30,
                  "steps_per_epoch": 200, "num_workers": 0, "val_windows": 64},
    },
    # Conv-TasNet's best B=256, H=512 [31]; ~7-10 M parameters.
    "paper": {
        "model": {"bottleneck_channels": 256, "hidden_channels": 512},
        "train": {"batch_size": 16, "lr_reference_batch": 16, "max_epochs": 300,
                  "steps_per_epoch": 1000, "num_workers": 8, "val_windows": 512},
    },
}


def sized(preset: str) -> RunConfig:
    """The defaults with the ``model`` and ``train`` sizes of ``SIZE_PRESETS[preset]``."""
    if preset not in SIZE_PRESETS:
        raise ConfigError(
            f"unknown size preset {preset!r}; known: {', '.join(sorted(SIZE_PRESETS))}"
        )
    return RunConfig().override(SIZE_PRESETS[preset], where=f"size preset {preset!r}")


RESUME_MAY_CHANGE: tuple[str, ...] = (
    "train.max_epochs", "train.early_stop_patience", "train.num_workers", "train.device",
    "train.bf16", "train.log_every",
)
"""The settings a resumed run may change: its budget and where and how fast it runs. Every
other setting is fixed by the saved state (the weights' shapes, Adam's and the scheduler's
learning rates) or by what the run is (``config.json`` describes the whole run), so a resume
that changes one is refused, naming it (:func:`train.trainer.check_resumable`):
``--resume --set train.lr=0.5`` would otherwise train on at the saved learning rate without a
word."""


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, value); the value is read as YAML
    (``3`` an int, ``1e-3`` a float, ``true`` a bool, anything else a string).

    Raises:
        ConfigError: no ``=`` or no ``section.key`` before it.
    """
    target, sep, raw = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not section or not key or "." in key:
        raise ConfigError(f"expected section.key=value (e.g. loss.alpha2=0.01), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'model'?)`` for a near miss among ``choices``, else ``""``.

    >>> did_you_mean("modle", ["model", "train"])
    " (did you mean 'model'?)"
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a section dataclass (numbers, strings, bools only)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict expects a config dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


ConfigT = TypeVar("ConfigT")


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


def from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    """Build section dataclass ``cls`` from a dict; missing keys take the defaults, unknown
    keys are refused.

    Raises:
        ConfigError: unknown key, or a value of the wrong type / out of range.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} must be built from a dict, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}{did_you_mean(str(unknown[0]), names)}; "
            f"valid keys: {', '.join(names)}"
        )
    values = {key: _coerce(cls.__name__, key, value, hints[key]) for key, value in data.items()}
    return cls(**values)
