"""The ``train`` command line: thin wrappers over functions in the ``train`` package."""

from __future__ import annotations

import os
from pathlib import Path

import click

# torch-free imports: --help stays fast
from train.config import AML_FORMS, KEEP_CHECKPOINT, MIXTURE_NORMS, OWNED_REMIX_SOURCES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scorecritic")
def main() -> None:
    """Train, evaluate and run the score-supervised separator.

    \b
    Examples:
      train step1 --shards data/
      train step2 --shards data/
      train step3 --shards data/
      train evaluate --shards data/ --split test
      train separate --checkpoint runs/step3/best.pt song.wav --out separated/
    """


# --- training commands (train/trainer.py) ----------------------------------------------------

# LossConfig field <- CLI option, by group; each command takes the groups its losses use.
_TRANSCRIPTION_OPTIONS = [
    click.option("--alpha1", type=float, help="Weight of L_inst in L_TL (eq. 4) [0.03]."),
    click.option("--beta1", type=float, help="Weight of L_pitch in L_TL (eq. 4) [0.1]."),
]
_WEIGHT_OPTIONS = [
    click.option(
        "--class-weights/--no-class-weights",
        "use_weights",
        default=None,
        help="Instrument (class-balance) weights from the manifest [on].",
    ),
]
_SEPARATION_OPTIONS = [
    click.option(
        "--cmix/--no-cmix",
        "use_cmix",
        default=None,
        help="Clip-level mixture loss L_c-mix (eq. 6) [on].",
    ),
    click.option(
        "--hmix/--no-hmix",
        "use_hmix",
        default=None,
        help="Harmonic mixture loss L_h-mix (eq. 7) [on; baseline: off].",
    ),
    click.option("--alpha2", type=float, help="Weight of L_c-mix in L_sep (eq. 8) [1]."),
    click.option("--beta2", type=float, help="Weight of L_h-mix in L_sep (eq. 8) [0.1]."),
    click.option(
        "--mixture-norm",
        type=click.Choice(MIXTURE_NORMS),
        help="Normalisation of the mixture losses [mixture].",
    ),
    click.option(
        "--owned-remix",
        "owned_remix_weight",
        type=float,
        help="Weight of the owned-bin remix loss in L_sep (steps 2-3) [0: off].",
    ),
    click.option(
        "--owned-remix-sources",
        type=click.Choice(OWNED_REMIX_SOURCES),
        help="What an owned-bin remix source is made of [owned].",
    ),
    click.option(
        "--owned-remix-shift",
        type=click.IntRange(0, 12),
        help="Pitch-shift owned-bin remix sources by up to K semitones to collide [0: off].",
    ),
    click.option(
        "--owned-remix-teacher/--no-owned-remix-teacher",
        "owned_remix_teacher",
        default=None,
        help="Fill the remixes from the weight-averaged separator (needs --ema-decay) [off].",
    ),
]
_ADVERSARIAL_OPTIONS = [
    click.option(
        "--aml/--no-aml",
        "use_aml",
        default=None,
        help="Adversarial mixture loss L_AML (eq. 9) [off].",
    ),
    click.option(
        "--atl/--no-atl",
        "use_atl",
        default=None,
        help="Adversarial transcription loss L_ATL (eq. 10) [off].",
    ),
    click.option("--alpha3", type=float, help="Weight of L_AML in L_TL-3 (eq. 11) [0.2]."),
    click.option("--beta3", type=float, help="Weight of L_ATL in L_TL-3 (eq. 11) [0.05]."),
    click.option(
        "--aml-form",
        type=click.Choice(AML_FORMS),
        help="Bounded form of the negated BCE of L_AML [clamped].",
    ),
    click.option(
        "--aml-clamp", "aml_bce_clamp", type=float, help="BCE clamp of the clamped L_AML [2.3]."
    ),
    click.option(
        "--anchor",
        "anchor_weight",
        type=float,
        help="Weight of the frozen step-1 transcriptor as a second critic in L_sep [0: off].",
    ),
    click.option(
        "--averaged-critic/--no-averaged-critic",
        "averaged_critic",
        default=None,
        help="Score the separated sources with the weight-averaged transcriptor "
        "(needs --ema-decay) [off].",
    ),
]
_LOSS_KEYS = (
    "alpha1",
    "beta1",
    "alpha2",
    "beta2",
    "alpha3",
    "beta3",
    "use_weights",
    "use_cmix",
    "use_hmix",
    "use_aml",
    "use_atl",
    "mixture_norm",
    "aml_form",
    "aml_bce_clamp",
    "anchor_weight",
    "owned_remix_weight",
    "owned_remix_sources",
    "owned_remix_teacher",
    "owned_remix_shift",
    "averaged_critic",
)
_TRAIN_KEYS = {
    "max_epochs": "max_epochs",
    "steps_per_epoch": "steps_per_epoch",
    "batch_size": "batch_size",
    "workers": "num_workers",
    "device": "device",
    "seed": "seed",
    "lr": "lr",
    "val_windows": "val_windows",
    "keep_checkpoint": "keep_checkpoint",
    "ema_decay": "ema_decay",
    "critic_lr_scale": "critic_lr_scale",
}


def _common_training_options(function):
    options = [
        click.option(
            "--shards",
            type=click.Path(path_type=Path),
            required=True,
            help="Shard root (manifest.json, train/, validation/).",
        ),
        click.option("--name", default=None, help="Run name, e.g. step2-cmix [the command name]."),
        click.option(
            "--out", type=click.Path(path_type=Path), default=None, help="Run folder [runs/<name>]."
        ),
        click.option(
            "--preset",
            type=click.Choice(["tiny", "paper"]),
            default=None,
            help="Model and training sizes (train/config.py) [params model.preset, else tiny].",
        ),
        click.option(
            "--params",
            "params_file",
            type=click.Path(path_type=Path),
            default=None,
            help="YAML with train:/model:/loss: sections (and per-run-name sections "
            "holding the same); CLI options override it.",
        ),
        click.option("--max-epochs", type=int, help="Stop after this many epochs."),
        click.option("--steps-per-epoch", type=int, help="Optimiser steps per epoch."),
        click.option("--batch-size", type=int, help="4-s windows per step (per process)."),
        click.option("--lr", type=float, help="Adam learning rate [0.001]."),
        click.option("--val-windows", type=int, help="Fixed validation windows."),
        click.option("--workers", type=int, help="DataLoader worker processes."),
        click.option("--device", type=str, help="auto, cpu, cuda or cuda:N."),
        click.option("--seed", type=int, help="Seed of every random generator."),
        click.option(
            "--keep-checkpoint",
            type=click.Choice(KEEP_CHECKPOINT),
            help="best.pt holds the epoch of lowest validation loss (best) or the last epoch "
            "(last: for step 3, whose validation loss moves with its critic) [best].",
        ),
        click.option(
            "--ema-decay",
            type=float,
            help="Validate and save an exponential moving average of the weights with this "
            "decay per step (0.995: about 200 steps) [0: off].",
        ),
        click.option(
            "--critic-lr-scale",
            type=float,
            help="Step 3: the transcriptor's learning rate as a multiple of --lr [1].",
        ),
        click.option("--resume", is_flag=True, help="Continue from <out>/last.pt."),
        click.option("--progress/--no-progress", default=True, help="tqdm progress bar."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _with(options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _run_training(step: str, loss_preset_name: str, options: dict, **checkpoints) -> None:
    """Assemble the configs (preset < params file < CLI) and call ``train.trainer.run``."""
    import yaml

    from prep.shards import ShardError
    from train.config import (
        LOSS_PRESETS,
        ConfigError,
        LossConfig,
        ModelConfig,
        TrainConfig,
        from_dict,
        loss_preset,
        model_preset,
        to_dict,
        train_preset,
    )
    from train.model import CheckpointError
    from train.trainer import TrainingError, run

    name = options["name"] or step
    out = options["out"] or Path("runs") / name
    try:
        params = {}
        if options["params_file"] is not None:
            params_path = Path(options["params_file"])
            try:  # safe_load: a !!python/object tag is refused, never constructed
                params = yaml.safe_load(params_path.read_text()) or {}
            except yaml.YAMLError as err:
                problem = str(err).strip().splitlines()[0]
                raise ConfigError(f"{params_path}: invalid or unsafe YAML ({problem})") from err
            if not isinstance(params, dict):
                raise ConfigError(f"{params_path}: expected a mapping of sections at top level")
        # Preset: --preset, else params' model.preset, else tiny. A run named after a system
        # of the paper's tables (step2-cmix, step3-aml, ...) starts from that system's losses.
        model_section = dict(params.get("model") or {})
        preset = options["preset"] or model_section.pop("preset", None) or "tiny"
        params = {**params, "model": model_section}
        configs = {
            "train": train_preset(preset),
            "model": model_preset(preset),
            "loss": loss_preset(name if name in LOSS_PRESETS else loss_preset_name),
        }
        classes = {"train": TrainConfig, "model": ModelConfig, "loss": LossConfig}
        for scope in (params, params.get(name) or {}):
            for section, cls in classes.items():
                if scope.get(section):
                    configs[section] = from_dict(
                        cls, {**to_dict(configs[section]), **scope[section]}
                    )
        train_overrides = {
            key: options[opt] for opt, key in _TRAIN_KEYS.items() if options.get(opt) is not None
        }
        loss_overrides = {key: options[key] for key in _LOSS_KEYS if options.get(key) is not None}
        train_cfg = from_dict(TrainConfig, {**to_dict(configs["train"]), **train_overrides})
        loss_cfg = from_dict(LossConfig, {**to_dict(configs["loss"]), **loss_overrides})
        metrics = run(
            step,
            options["shards"],
            train_cfg,
            configs["model"],
            loss_cfg,
            out,
            resume=options["resume"],
            progress=options["progress"],
            **checkpoints,
        )
    except (
        TrainingError,
        ShardError,
        CheckpointError,
        ConfigError,
        OSError,
        yaml.YAMLError,
    ) as error:
        raise click.ClickException(str(error)) from error
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(
            f"{name}: best validation loss {metrics['best_val_loss']:.5g} at epoch "
            f"{metrics['best_epoch']} ({metrics['stopped']}); run folder {out}"
        )


@main.command("step1")
@_common_training_options
@_with(_TRANSCRIPTION_OPTIONS + _WEIGHT_OPTIONS)
def step1_command(**options) -> None:
    """Step 1: train the transcriptor on mixtures with L_TL (eq. 1-4) -> <out>/best.pt.

    \b
    Examples:
      train step1 --shards data/
      train step1 --shards data/ --preset paper --device cuda --workers 6
      torchrun --nproc_per_node 4 -m train step1 --shards data/ --preset paper
    """
    _run_training("step1", "step1", options)


@main.command("step2")
@_common_training_options
@_with(_SEPARATION_OPTIONS + _WEIGHT_OPTIONS)
@click.option(
    "--transcriptor",
    type=click.Path(path_type=Path),
    default=None,
    help="Step-1 transcriptor [<out>/../step1/best.pt].",
)
def step2_command(transcriptor: Path | None, **options) -> None:
    """Step 2: train the separator with the frozen step-1 transcriptor as critic, L_sep (eq. 5-8).

    \b
    Examples:
      train step2 --shards data/
      train step2 --shards data/ --name step2-cmix --no-hmix
      train step2 --shards data/ --transcriptor runs/step1/best.pt --alpha2 0.01
    """
    _run_training("step2", "step2", options, transcriptor=transcriptor)


@main.command("step3")
@_common_training_options
@_with(_TRANSCRIPTION_OPTIONS + _SEPARATION_OPTIONS + _ADVERSARIAL_OPTIONS + _WEIGHT_OPTIONS)
@click.option(
    "--transcriptor",
    type=click.Path(path_type=Path),
    default=None,
    help="Step-1 transcriptor [<out>/../step1/best.pt].",
)
@click.option(
    "--separator",
    type=click.Path(path_type=Path),
    default=None,
    help="Step-2 separator [<out>/../step2/best.pt].",
)
def step3_command(transcriptor: Path | None, separator: Path | None, **options) -> None:
    """Step 3: joint fine-tuning, separator with L_sep (eq. 8), transcriptor with L_TL-3 (eq. 9-11).

    Writes the separator as <out>/best.pt and the transcriptor as <out>/transcriptor.pt.

    \b
    Examples:
      train step3 --shards data/
      train step3 --shards data/ --name step3-aml --aml --no-atl
      train step3 --shards data/ --separator runs/step2-cmix/best.pt --resume
    """
    _run_training("step3", "step3", options, transcriptor=transcriptor, separator=separator)


@main.command("baseline")
@_common_training_options
@_with(_WEIGHT_OPTIONS + [_SEPARATION_OPTIONS[0], _SEPARATION_OPTIONS[2], _SEPARATION_OPTIONS[4]])
def baseline_command(**options) -> None:
    """Pishdadian et al. 2020: classifier critic on mixtures (<out>/classifier/), then a separator
    trained against it with the classifier loss on each S_hat_i + L_c-mix (<out>/best.pt).

    \b
    Examples:
      train baseline --shards data/
    """
    _run_training("baseline", "baseline", options)


@main.command("supervised")
@_common_training_options
def supervised_command(**options) -> None:
    """Supervised upper bound: the separator trained with L1 to the true stem magnitudes
    (needs shards built with `prep build-shards --stems all`).

    \b
    Examples:
      train supervised --shards data/
      train supervised --shards data/ --max-epochs 50 --device cuda
    """
    _run_training("supervised", "supervised", options)


# --- evaluation and inference commands (train/evaluate.py, train/inference.py) --------------


def _parse_named_checkpoints(values: tuple[str, ...]) -> dict[str, Path]:
    """``NAME=PATH`` pairs of ``--checkpoint`` into a dict, refusing malformed ones."""
    from train.evaluate import parse_named_paths

    try:
        return parse_named_paths(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--checkpoint") from exc


@main.command("evaluate")
@click.option("--shards", type=click.Path(path_type=Path), required=True, help="Shard root.")
@click.option("--split", default="test", show_default=True, help="Split to score.")
@click.option(
    "--runs",
    type=click.Path(path_type=Path),
    default=None,
    help="Runs folder: scores every runs/<name>/best.pt and transcriptor.pt.",
)
@click.option(
    "--checkpoint",
    "named",
    multiple=True,
    metavar="NAME=PATH",
    help="A checkpoint to score under NAME (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Report folder (metrics.json, results.md, figures/).",
)
@click.option(
    "--segment-seconds", type=float, default=4.0, show_default=True, help="SI-SDR segment length."
)
@click.option(
    "--silence-db",
    type=float,
    default=-60.0,
    show_default=True,
    help="Reference segments below this RMS (dBFS) are skipped.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Note threshold on transcriptor probabilities.",
)
@click.option("--max-tracks", type=int, default=None, help="Score only the first N tracks.")
@click.option(
    "--figure-tracks", type=int, default=4, show_default=True, help="Tracks that get figures."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
def evaluate_command(
    shards: Path,
    split: str,
    runs: Path | None,
    named: tuple[str, ...],
    out: Path,
    segment_seconds: float,
    silence_db: float,
    threshold: float,
    max_tracks: int | None,
    figure_tracks: int,
    device: str,
) -> None:
    """Table 1 (SI-SDR) and Table 2 (note accuracy) on whole tracks of a shard split.

    \b
    Examples:
      train evaluate --shards data/ --split test --runs runs/
      train evaluate --shards data/ --checkpoint mine=runs/step3/best.pt --out reports/mine
    """
    from prep.shards import ShardError
    from train.evaluate import EvaluationError, evaluate
    from train.model import CheckpointError

    checkpoints = _parse_named_checkpoints(named)
    if runs is None and not checkpoints:
        raise click.UsageError("give --runs and/or at least one --checkpoint NAME=PATH")
    try:
        evaluate(
            shards,
            split,
            checkpoints,
            out,
            runs=runs,
            segment_seconds=segment_seconds,
            silence_db=silence_db,
            threshold=threshold,
            max_tracks=max_tracks,
            figure_tracks=figure_tracks,
            device=device,
        )
    except (EvaluationError, CheckpointError, ShardError) as error:
        raise click.ClickException(str(error)) from error
    click.echo((out / "results.md").read_text())
    click.echo(f"wrote {out / 'metrics.json'}, {out / 'results.md'}, {out / 'figures'}/")


@main.command("separate")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="Separator checkpoint (e.g. runs/step3/best.pt).",
)
@click.argument("audio", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for one WAV per instrument.",
)
@click.option("--device", default="cpu", show_default=True)
def separate_command(checkpoint: Path, audio: Path, out: Path, device: str) -> None:
    """Separate AUDIO (any format and sample rate libsndfile reads) into instrument WAVs.

    \b
    Examples:
      train separate --checkpoint runs/step3/best.pt song.wav --out separated/
    """
    from train.inference import AudioError, separate
    from train.model import CheckpointError

    try:
        paths = separate(checkpoint, audio, out, device=device)
    except (AudioError, CheckpointError) as error:
        raise click.ClickException(str(error)) from error
    for path in paths:
        click.echo(str(path))


@main.command("transcribe")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="Transcriptor checkpoint (e.g. runs/step3/transcriptor.pt).",
)
@click.argument("audio", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="MIDI file to write.")
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Note threshold on the probabilities.",
)
@click.option("--device", default="cpu", show_default=True)
def transcribe_command(
    checkpoint: Path, audio: Path, out: Path, threshold: float, device: str
) -> None:
    """Transcribe AUDIO into a multi-instrument MIDI file.

    \b
    Examples:
      train transcribe --checkpoint runs/step3/transcriptor.pt song.wav --out song.mid
    """
    from train.inference import AudioError, transcribe
    from train.model import CheckpointError

    try:
        path = transcribe(checkpoint, audio, out, threshold=threshold, device=device)
    except (AudioError, CheckpointError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(str(path))
