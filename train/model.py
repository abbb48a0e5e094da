"""The TCN shared by the transcriptor, the separator and the baseline classifier, and checkpoints.

Paper §3.2: "We use the same temporal convolutional network (TCN) model for both our
transcriptor and separator [...]. Our TCN contains three repeated layers with each layer
including eight dilated residual blocks. All convolution layers have kernel size of 3. The
output layers [...] are fully connected layers with sigmoid activation". The block follows
Conv-TasNet (Luo & Mesgarani 2019, [31]; torchaudio's ``conv_tasnet.py``): 1x1 conv to H
channels, PReLU, channel norm, dilated depthwise conv, PReLU, channel norm, then 1x1
convs back to B channels for the residual path and the skip path. The paper gives no channel
sizes: B and H are :class:`~train.config.ModelConfig` parameters.

Input: the magnitude STFT X [batch, F=1025, T]. Normalisation: log(1 + X / eps) (log1p for the
default eps = 1) compresses the dynamic range, then a learned per-bin affine (scale 1, shift 0
at initialisation), then a 1x1 conv to B channels. No statistic is taken over the input: a
per-frame norm would erase how loud each frame is (silence must stay distinguishable), and a
norm over time would make each output frame depend on how much audio is fed in.

Normalisation inside the blocks is per frame over channels (Conv-TasNet's "cLN"), not the
global layer norm (gLN) of non-causal Conv-TasNet: every output frame then depends only on the
input frames within the receptive field, so a long track processed in overlapping chunks gives
exactly the whole-track result, and 4-s training windows see the same statistics as inference.

Dilations: block b of each repeat has dilation 2^b, b = 0..7, "same" padding (non-causal), so
the receptive field is 1 + R (P - 1)(2^X - 1) = 1531 frames (47.8 s) for R=3, X=8, P=3.

Outputs (all models return the paper's sigmoid outputs from ``forward``; the losses in
:mod:`train.losses` take the pre-sigmoid *logits* from ``.logits(...)`` for numerically stable
BCE, also under bf16 autocast where ``binary_cross_entropy`` on probabilities is refused):

- :class:`Transcriptor`: p [batch, I, 88, T], the per-instrument piano roll probabilities;
- :class:`Separator`: masks M [batch, I, F, T]; ``separate(X)`` gives S_hat = M * X[:, None];
- :class:`Classifier` (Pishdadian et al. 2020 baseline critic): instrument activity [batch, I, T].

Checkpoints (like Demucs): one file holding ``format_version``, ``kind``, ``model_config`` (a
plain dict) and ``state_dict`` plus any extra plain entries, written atomically, loadable with
``torch.load(path, weights_only=True)`` and by :func:`load_model` with no other argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from prep.atomic import atomic_write
from train.config import ConfigError, ModelConfig, from_dict, to_dict

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "ChannelNorm",
    "BinAffine",
    "ConvBlock",
    "TCN",
    "ScoreCriticModel",
    "Transcriptor",
    "Separator",
    "Classifier",
    "MODEL_KINDS",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "load_error_reason",
    "load_model",
    "average_checkpoints",
]

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint layout written by :func:`save_checkpoint`; bump on any change."""

_RESERVED_KEYS = ("format_version", "kind", "model_config", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, of an unknown format version, or of the wrong kind."""


class ChannelNorm(nn.Module):
    """Layer norm over the channels of each frame (Conv-TasNet's channel-wise "cLN").

    Args:
        channels: number of channels normalised together, per frame.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """x [batch, C, T] -> [batch, C, T], each frame normalised over C."""
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # [batch, C, T]


class BinAffine(nn.Module):
    """A learned scale and shift per frequency bin, applied to every frame alike.

    Args:
        n_bins: F, the number of STFT bins.
    """

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, n_bins, 1))
        self.shift = nn.Parameter(torch.zeros(1, n_bins, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x [batch, F, T] -> [batch, F, T]."""
        return x * self.scale + self.shift  # [batch, F, T]


class ConvBlock(nn.Module):
    """One dilated residual block of the TCN (Conv-TasNet's 1-D conv block).

    Args:
        io_channels: B, channels of the residual (and skip) path.
        hidden_channels: H, channels inside the block.
        kernel_size: P, kernel of the depthwise dilated convolution (paper: 3).
        dilation: 2^b for block b of a repeat.
        dropout: dropout rate before the output 1x1 convs.
        no_residual: the last block of the stack only feeds the skip path.
    """

    def __init__(
        self,
        io_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation: int,
        dropout: float = 0.0,
        no_residual: bool = False,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2  # "same" length, centred (non-causal)
        self.conv_layers = nn.Sequential(
            nn.Conv1d(io_channels, hidden_channels, kernel_size=1),
            nn.PReLU(),
            ChannelNorm(hidden_channels),
            nn.Conv1d(
                hidden_channels,
                hidden_channels,
                kernel_size=kernel_size,
                padding=padding,
                dilation=dilation,
                groups=hidden_channels,  # depthwise: the separable conv of Conv-TasNet
            ),
            nn.PReLU(),
            ChannelNorm(hidden_channels),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )
        self.res_out = None if no_residual else nn.Conv1d(hidden_channels, io_channels, 1)
        self.skip_out = nn.Conv1d(hidden_channels, io_channels, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """x [batch, B, T] -> (residual [batch, B, T] or None, skip [batch, B, T])."""
        h = self.conv_layers(x)  # [batch, H, T]
        residual = None if self.res_out is None else self.res_out(h)  # [batch, B, T]
        skip = self.skip_out(h)  # [batch, B, T]
        return residual, skip


class TCN(nn.Module):
    """The temporal convolutional network shared by all three models (paper §3.2).

    Maps a magnitude spectrogram X [batch, F, T] to ``out_channels`` logits per frame: input
    normalisation, R repeats x X dilated residual blocks, and a final "fully connected" layer
    (a 1x1 conv over channels, applied to every frame) before the caller's sigmoid.

    Args:
        config: channel sizes and depth (F = ``config.n_bins``, B, H, P, X, R).
        out_channels: I*88 for the transcriptor, I*F for the separator, I for the classifier.
    """

    def __init__(self, config: ModelConfig, out_channels: int) -> None:
        super().__init__()
        self.config = config
        self.out_channels = out_channels
        self.input_norm = BinAffine(config.n_bins)
        self.bottleneck = nn.Conv1d(config.n_bins, config.bottleneck_channels, kernel_size=1)
        n_blocks = config.repeats * config.blocks_per_repeat
        self.blocks = nn.ModuleList(
            ConvBlock(
                io_channels=config.bottleneck_channels,
                hidden_channels=config.hidden_channels,
                kernel_size=config.kernel_size,
                dilation=2 ** (k % config.blocks_per_repeat),
                dropout=config.dropout,
                no_residual=k == n_blocks - 1,
            )
            for k in range(n_blocks)
        )
        self.output = nn.Sequential(
            nn.PReLU(),
            nn.Conv1d(config.bottleneck_channels, out_channels, kernel_size=1),
        )

    @property
    def dilations(self) -> list[int]:
        """Dilation of every block, in order (1, 2, ..., 128 repeated R times)."""
        return [block.conv_layers[3].dilation[0] for block in self.blocks]

    def forward(self, spec: Tensor) -> Tensor:
        """spec: magnitude X [batch, F, T] (>= 0) -> logits [batch, out_channels, T]."""
        if spec.dim() != 3 or spec.shape[1] != self.config.n_bins:
            raise ValueError(
                f"TCN expects a magnitude spectrogram [batch, {self.config.n_bins}, frames], "
                f"got shape {tuple(spec.shape)}"
            )
        feats = torch.log1p(spec.clamp_min(0) / self.config.input_log_eps)  # [batch, F, T]
        feats = self.input_norm(feats)  # [batch, F, T]
        x = self.bottleneck(feats)  # [batch, B, T]
        skip_sum = torch.zeros_like(x)  # [batch, B, T]
        for block in self.blocks:
            residual, skip = block(x)  # [batch, B, T] each
            if residual is not None:
                x = x + residual  # [batch, B, T]
            skip_sum = skip_sum + skip  # [batch, B, T]
        return self.output(skip_sum)  # [batch, out_channels, T]


class ScoreCriticModel(nn.Module):
    """Common base of the three models: config, kind, checkpoint loading, description."""

    kind: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, out_channels: int) -> None:
        super().__init__()
        self.config = config
        self.tcn = TCN(config, out_channels)

    @property
    def n_instruments(self) -> int:
        """I, the number of instruments."""
        return self.config.n_instruments

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def describe(self) -> str:
        """One line: kind, channel sizes, depth, receptive field and parameter count."""
        c = self.config
        return (
            f"{self.kind}: TCN {c.repeats}x{c.blocks_per_repeat} blocks, kernel {c.kernel_size}, "
            f"B={c.bottleneck_channels}, H={c.hidden_channels}, out={self.tcn.out_channels}, "
            f"receptive field {c.receptive_field} frames, {self.n_parameters():,} parameters"
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
        """Load a checkpoint written by :func:`save_checkpoint`; a subclass refuses another kind
        (``ScoreCriticModel.from_checkpoint`` accepts any kind, like :func:`load_model`)."""
        return load_model(path, map_location=map_location, expected_kind=cls.kind or None)


class Transcriptor(ScoreCriticModel):
    """Multi-instrument transcriptor p(X) (paper §2.1): X [batch, F, T] -> p [batch, I, 88, T].

    p[i, n, t] is the probability that note n (MIDI 21 + n) of instrument i sounds at frame t.
    """

    kind: ClassVar[str] = "transcriptor"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, config.n_instruments * config.n_pitches)

    def logits(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> logits z [batch, I, 88, T] (p = sigmoid(z))."""
        z = self.tcn(spec)  # [batch, I*88, T]
        return z.unflatten(1, (self.config.n_instruments, self.config.n_pitches))  # [b, I, 88, T]

    def forward(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> probabilities p [batch, I, 88, T] in (0, 1)."""
        return torch.sigmoid(self.logits(spec))  # [batch, I, 88, T]

    def logits_of_sources(self, sources: Tensor) -> Tensor:
        """Transcribe every separated source: S_hat [batch, I_src, F, T] -> z [batch, I_src, I, 88, T].

        Entry [:, i] is p(S_hat_i) as logits, the input of eq. 5 and eq. 10.
        """
        batch, n_src = sources.shape[:2]
        z = self.logits(sources.flatten(0, 1))  # [batch*I_src, I, 88, T]
        return z.unflatten(0, (batch, n_src))  # [batch, I_src, I, 88, T]


class Separator(ScoreCriticModel):
    """Mask-based separator (paper §2.2): X [batch, F, T] -> masks M [batch, I, F, T] in (0, 1)."""

    kind: ClassVar[str] = "separator"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, config.n_instruments * config.n_bins)

    def forward(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> masks M [batch, I, F, T]."""
        z = self.tcn(spec)  # [batch, I*F, T]
        z = z.unflatten(1, (self.config.n_instruments, self.config.n_bins))  # [batch, I, F, T]
        return torch.sigmoid(z)  # [batch, I, F, T]

    def separate(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> separated magnitudes S_hat = M * X [batch, I, F, T]."""
        return self(spec) * spec[:, None]  # [batch, I, F, T]


class Classifier(ScoreCriticModel):
    """Baseline critic of Pishdadian et al. 2020 [16]: the same TCN, only the last layer outputs
    frame-level instrument activity, X [batch, F, T] -> activity probabilities [batch, I, T]."""

    kind: ClassVar[str] = "classifier"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, config.n_instruments)

    def logits(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> activity logits [batch, I, T]."""
        return self.tcn(spec)  # [batch, I, T]

    def forward(self, spec: Tensor) -> Tensor:
        """spec X [batch, F, T] -> activity probabilities [batch, I, T]."""
        return torch.sigmoid(self.logits(spec))  # [batch, I, T]

    def logits_of_sources(self, sources: Tensor) -> Tensor:
        """S_hat [batch, I_src, F, T] -> activity logits [batch, I_src, I, T]."""
        batch, n_src = sources.shape[:2]
        z = self.logits(sources.flatten(0, 1))  # [batch*I_src, I, T]
        return z.unflatten(0, (batch, n_src))  # [batch, I_src, I, T]


MODEL_KINDS: dict[str, type[ScoreCriticModel]] = {
    Transcriptor.kind: Transcriptor,
    Separator.kind: Separator,
    Classifier.kind: Classifier,
}


def build_model(kind: str, config: ModelConfig) -> ScoreCriticModel:
    """A fresh model of ``kind`` ("transcriptor", "separator" or "classifier")."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](config)


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor, torch.dtype)):
        return
    if isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            _check_plain(item, f"{where}[{k}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; store only dicts, lists, "
        "tensors, numbers and strings (use train.config.to_dict for configs)"
    )


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (and ``extra``) to ``path`` atomically.

    The file holds ``{"format_version", "kind", "model_config", "state_dict", **extra}``, only
    plain types, so ``torch.load(path, weights_only=True)`` reads it. It is written to a
    temporary file in the same directory, fsync'ed, then renamed over ``path``: a crash never
    leaves a half-written checkpoint. A DDP/compiled wrapper is unwrapped via ``.module`` /
    ``._orig_mod``.

    Args:
        path: destination file (parent directories are created).
        model: a Transcriptor, Separator or Classifier.
        extra: more plain entries (epoch, optimiser state, losses, LossConfig dict, ...); may not
            use the reserved keys format_version, kind, model_config, state_dict.
    """
    while not isinstance(model, ScoreCriticModel):
        inner = getattr(model, "module", None)  # DistributedDataParallel
        if inner is None:
            inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None:
            break
        model = inner
    if not isinstance(model, ScoreCriticModel):
        raise TypeError(f"save_checkpoint expects a scorecritic model, got {type(model).__name__}")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"checkpoint extra may not use the reserved key(s) {clash}")
    payload: dict[str, Any] = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": model.kind,
        "model_config": to_dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    _check_plain(payload, "checkpoint")
    return atomic_write(Path(path), lambda f: torch.save(payload, f), action="cannot save checkpoint")


def load_error_reason(error: BaseException) -> str:
    """What went wrong in ``torch.load(..., weights_only=True)``, in one short line.

    torch's own message runs to a dozen lines and advises ``weights_only=False``, which would
    run whatever code the file holds: only the unpickler's reason is kept.

    >>> load_error_reason(RuntimeError("Weights only load failed. ...\\nWeightsUnpickler "
    ...                                "error: \\n\\nUnsupported operand 153\\n\\nCheck the docs"))
    'unsafe or corrupt: Unsupported operand 153'
    """
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        reason = rest[0] if rest else "refused by the safe unpickler"
        return f"unsafe or corrupt: {reason}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint dict (``weights_only=True``); the model is not built.

    Raises:
        CheckpointError: missing/unreadable file, unknown ``format_version`` or kind, or a
            missing reserved entry; the message names the file and what was found/expected.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle of a non-plain object, ...
        raise CheckpointError(
            f"{path}: not a readable scorecritic checkpoint ({load_error_reason(err)})"
        ) from err
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a scorecritic checkpoint (no format_version entry)")
    version = payload["format_version"]
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported "
            f"(expected {CHECKPOINT_FORMAT_VERSION})"
        )
    missing = [key for key in _RESERVED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the entries {missing}")
    if payload["kind"] not in MODEL_KINDS:
        raise CheckpointError(
            f"{path}: unknown model kind {payload['kind']!r} (expected one of {sorted(MODEL_KINDS)})"
        )
    return payload


def load_model(
    path: str | os.PathLike[str], map_location: Any = "cpu", expected_kind: str | None = None
) -> ScoreCriticModel:
    """Build the model stored in ``path`` and load its weights; returned in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: device for the tensors (default CPU).
        expected_kind: if given, refuse a checkpoint of another kind.

    Raises:
        CheckpointError: see :func:`load_checkpoint`, or a wrong kind / mismatching weights.
    """
    payload = load_checkpoint(path, map_location=map_location)
    kind = payload["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"{path}: checkpoint holds a {kind!r}, expected a {expected_kind!r}")
    try:
        config = from_dict(ModelConfig, payload["model_config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: bad model_config: {err}") from err
    model = MODEL_KINDS[kind](config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not match the stored model_config: {err}"
        ) from err
    return model.eval()


def average_checkpoints(
    paths: list[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> Path:
    """Write the element-wise mean of the weights of ``paths`` (one kind, one config) to ``out``.

    For a model trained against a moving critic (step 3), whose quality oscillates between
    epochs: the average of its last epochs needs no (stem-free) checkpoint selection.

    Raises:
        CheckpointError: an unreadable checkpoint, or one of another kind or configuration.
    """
    if not paths:
        raise ValueError("average_checkpoints: no checkpoint given")
    models = [load_model(path) for path in paths]
    first = models[0]
    for path, model in zip(paths[1:], models[1:], strict=True):
        if model.kind != first.kind or to_dict(model.config) != to_dict(first.config):
            raise CheckpointError(
                f"{path}: a {model.kind} of another configuration than {paths[0]}; "
                "only checkpoints of one model can be averaged"
            )
    states = [model.state_dict() for model in models]
    mean = {key: torch.stack([s[key].float() for s in states]).mean(dim=0) for key in states[0]}
    first.load_state_dict({key: value.to(states[0][key].dtype) for key, value in mean.items()})
    return save_checkpoint(out, first, extra={"averaged_from": [str(p) for p in paths]})
