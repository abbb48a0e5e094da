"""The ``train`` command line: thin wrappers over functions in the ``train`` package."""

from __future__ import annotations

import os
from pathlib import Path

import click

from train.config import RESUME_MAY_CHANGE


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
      train separate --checkpoint runs/scorecritic/best.pt song.wav --out separated/

    \b
    Recipes (named systems; `train recipes` lists them):
      train step3 --shards data/                 the project's best system, scorecritic
      train step3 --shards data/ --recipe step3  the paper's plain step 3
    """


# --- training commands (train/pipeline.py) ----------------------------------------------------


def _recipe_list(step: str) -> str:
    """The help epilog of ``train <step>``: its recipes, the default first."""
    from train.recipes import default_recipe, recipes

    default = default_recipe(step).name
    lines = ["\b", f"Recipes of {step} (--recipe; default {default}):"]
    for name, recipe in recipes(step).items():
        mark = "*" if name == default else " "
        lines.append(f"  {mark} {name}: {recipe.summary}")
    lines += ["", "\b", "`train recipes NAME` prints a recipe's every setting."]
    return "\n".join(lines + [""] + _budget_lines(step))


def _budget_lines(step: str) -> list[str]:
    """The help epilog's training budget: what a bare ``train <step> --shards DIR`` runs, per
    size preset, resolved from the step's default recipe and ``SIZE_PRESETS`` (the one source
    of these numbers), so the help can never disagree with the run."""
    from train.config import SIZE_PRESETS
    from train.recipes import default_recipe, resolve

    recipe = default_recipe(step)
    lines = ["\b", f"Training budget of a bare `train {step} --shards DIR` (recipe {recipe.name}):"]
    last = None
    for preset in SIZE_PRESETS:
        cfg = resolve(recipe, preset).config
        t = last = cfg.train
        mark = "*" if preset == "tiny" else " "
        workers = "worker" if t.num_workers == 1 else "workers"
        lines.append(
            f"  {mark} {preset + ':':6} {t.max_epochs} epochs x {t.steps_per_epoch} steps x batch "
            f"{t.batch_size}, {t.num_workers} loader {workers}, device {t.device}"
        )
    assert last is not None
    lines += [
        f"  (early stop after {last.early_stop_patience} epochs without improvement; "
        f"seed {last.seed})",
        "  * the default size: --preset, else the --params file's preset, else tiny.",
        "  Smaller: --set train.max_epochs=4 --set train.steps_per_epoch=25",
        "  (the demo's budget, in params.yaml).",
    ]
    return lines


def _training_command(step: str, starts: tuple[str, ...]):
    """Define ``train <step>``: the same options for every step, plus the networks it starts
    from (``--transcriptor``, ``--separator``)."""

    def command(**options) -> None:
        _run_training(step, options)

    options = [
        click.option(
            "--shards",
            type=click.Path(path_type=Path),
            required=True,
            help="Shard root (manifest.json, train/, validation/).",
        ),
        click.option("--recipe", default=None, help="The system to train [the step's default]."),
        click.option(
            "--out", type=click.Path(path_type=Path), default=None, help="Run folder [runs/<recipe>]."
        ),
        click.option(
            "--preset",
            type=click.Choice(["tiny", "paper"]),
            default=None,
            help="Model and training sizes [params' preset, else tiny].",
        ),
        click.option(
            "--params",
            "params_file",
            type=click.Path(path_type=Path),
            default=None,
            help="YAML with sections to override (model:, train:, loss:, an extension's, "
            "steps.<step>:); an unknown section, key or step is an error.",
        ),
        click.option(
            "--set",
            "assignments",
            multiple=True,
            metavar="SECTION.KEY=VALUE",
            help="Override one setting, e.g. --set loss.alpha2=0.01 (repeatable).",
        ),
        click.option(
            "--seed",
            type=int,
            default=None,
            help="Same as --set train.seed=N [the recipe's train.seed, see below].",
        ),
        click.option(
            "--device",
            default=None,
            help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N; same as --set "
            "train.device=... [the recipe's train.device, see below].",
        ),
    ]
    for network in starts:
        options.append(
            click.option(
                f"--{network}",
                type=click.Path(path_type=Path),
                default=None,
                help=f"{network.capitalize()} checkpoint to start from "
                f"[runs/<the recipe's {network} recipe>/best.pt].",
            )
        )
    options += [
        click.option(
            "--resume",
            is_flag=True,
            help="Continue from <out>/last.pt: after a crash, or a stop by SIGTERM/SIGUSR1 "
            "(preempted: exit code 75), also within an epoch. The run keeps its settings: "
            f"only {', '.join(RESUME_MAY_CHANGE)} may change; other changes are refused.",
        ),
        click.option(
            "--progress/--no-progress", default=True, show_default=True,
            help="tqdm progress bar.",
        ),
        click.option(
            "--print-config",
            is_flag=True,
            help="Print the resolved settings (budget included) and exit.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run_training(step: str, options: dict) -> None:
    """Resolve the recipe's settings (recipe < params < --set) and call
    ``train.pipeline.run``."""
    import yaml

    from train.config import ConfigError
    from train.recipes import default_recipe, get_recipe, read_params, recipes, resolve

    try:
        recipe = get_recipe(options["recipe"], step) if options["recipe"] else default_recipe(step)
        params, params_name = {}, "params"
        if options["params_file"] is not None:
            params, params_name = read_params(options["params_file"]), str(options["params_file"])
        assignments = list(options["assignments"])
        if options["seed"] is not None:
            assignments.append(f"train.seed={options['seed']}")
        if options["device"] is not None:
            assignments.append(f"train.device={options['device']}")
        resolved = resolve(recipe, options["preset"], params, assignments, params_name)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    if options["print_config"]:
        click.echo(f"# recipe {recipe.name} ({recipe.step}), preset {resolved.preset}")
        click.echo(yaml.safe_dump(resolved.config.to_dict(), sort_keys=False).rstrip())
        return

    from prep.shards import ShardError
    from train.assemble import TrainingError
    from train.model import CheckpointError
    from train.pipeline import run
    from train.preemption import EXIT_PREEMPTED, Preempted

    out = options["out"] or Path("runs") / recipe.name
    main_rank = int(os.environ.get("RANK", "0")) == 0
    named = recipes().get(out.name)
    if main_rank and named is not None and named.name != recipe.name:
        # run names are labels only: say so where a folder's name suggests another system
        click.echo(
            f"note: {out} is a folder name only; this run trains recipe {recipe.name!r}, not "
            f"{named.name!r} (that is `train {named.step} --recipe {named.name}`)",
            err=True,
        )
    try:
        metrics = run(
            resolved,
            options["shards"],
            out,
            transcriptor=options.get("transcriptor"),
            separator=options.get("separator"),
            resume=options["resume"],
            progress=options["progress"],
        )
    except (TrainingError, ShardError, CheckpointError, ConfigError, OSError) as error:
        raise click.ClickException(str(error)) from error
    except Preempted as stopped:
        if main_rank:
            click.echo(
                f"{recipe.name}: preempted by {stopped.signal_name}, state saved; exit code "
                f"{EXIT_PREEMPTED}. Continue with the same command and --resume.",
                err=True,
            )
        raise click.exceptions.Exit(EXIT_PREEMPTED) from stopped
    if main_rank:
        click.echo(
            f"{recipe.name}: best validation loss {metrics['best_val_loss']:.5g} at epoch "
            f"{metrics['best_epoch']} ({metrics['stopped']}); run folder {out}"
        )


#: One line per command for `train --help`'s command list (click would cut the summaries at
#: their first period: "Pishdadian et al.").
SHORT_HELP = {
    "step1": "transcriptor on mixtures (eq. 1-4)",
    "step2": "separator, transcriptor frozen as critic (eq. 5-8)",
    "step3": "joint adversarial fine-tuning (eq. 9-11)",
    "baseline": "classifier-critic baseline (Pishdadian et al. 2020)",
    "supervised": "same separator, L1 to true stem magnitudes",
    "recipes": "the named systems the steps train, and their every setting",
    "evaluate": "Table 1 (SI-SDR) and Table 2 (transcription) on a shard split",
    "separate": "separate any audio file into one WAV per instrument",
    "transcribe": "transcribe any audio file into a multi-instrument MIDI file",
}

_STEPS = {
    "step1": (
        "Step 1: train the transcriptor on mixtures with L_TL (eq. 1-4) -> <out>/best.pt.",
        """train step1 --shards data/
  train step1 --shards data/ --preset paper --device cuda --set train.num_workers=6
  torchrun --nproc_per_node 4 -m train step1 --shards data/ --preset paper""",
        (),
    ),
    "step2": (
        "Step 2: train the separator against the frozen step-1 transcriptor, L_sep (eq. 5-8).",
        """train step2 --shards data/
  train step2 --shards data/ --recipe step2-cmix
  train step2 --shards data/ --recipe step2 --set loss.alpha2=0.01""",
        ("transcriptor",),
    ),
    "step3": (
        "Step 3: separator (eq. 8) and transcriptor (eq. 9-11) trained jointly.\n\n"
        "Writes the separator as <out>/best.pt and the transcriptor as <out>/transcriptor.pt. "
        "Without --recipe it trains the project's best weakly supervised system, scorecritic "
        "(reports/bench/README.md); --recipe step3 is the paper's plain step 3.",
        """train step3 --shards data/
  train step3 --shards data/ --recipe step3-aml
  train step3 --shards data/ --set anchor.weight=0 --out runs/no-anchor
  train step3 --shards data/ --resume""",
        ("transcriptor", "separator"),
    ),
    "baseline": (
        "Pishdadian et al. 2020: an activity classifier as critic (<out>/classifier/), then a "
        "separator trained against it with L_c-mix (<out>/best.pt).",
        "train baseline --shards data/",
        (),
    ),
    "supervised": (
        "Supervised upper bound: the separator trained with L1 to the true stem magnitudes "
        "(needs shards built with `prep build-shards --stems all`).",
        """train supervised --shards data/
  train supervised --shards data/ --set train.max_epochs=50 --device cuda""",
        (),
    ),
}

for _step, (_summary, _examples, _starts) in _STEPS.items():
    _help = f"{_summary}\n\n\b\nExamples:\n  {_examples}"
    main.command(_step, help=_help, short_help=SHORT_HELP[_step], epilog=_recipe_list(_step))(
        _training_command(_step, _starts)
    )


@main.command("recipes", short_help=SHORT_HELP["recipes"])
@click.argument("name", required=False)
@click.option(
    "--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True,
    help="Size preset.",
)
def recipes_command(name: str | None, preset: str | None) -> None:
    """List the recipes, or print NAME's every setting (as `train <step> --print-config`).

    \b
    Examples:
      train recipes
      train recipes scorecritic
    """
    import yaml

    from train.config import ConfigError
    from train.recipes import get_recipe, recipes, resolve

    if name is None:
        for recipe in recipes().values():
            starts = ", ".join(f"{k} from {v}" for k, v in recipe.starts_from.items())
            click.echo(f"{recipe.name} [{recipe.step}{'; ' + starts if starts else ''}]")
            click.echo(f"    {recipe.summary}")
        return
    try:
        resolved = resolve(get_recipe(name), preset)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    recipe = resolved.recipe
    click.echo(f"# {recipe.name}: {recipe.summary}")
    click.echo(yaml.safe_dump({"step": recipe.step, "paper_row": recipe.paper_row or None,
                               "starts_from": recipe.starts_from, "preset": resolved.preset,
                               **resolved.config.to_dict()}, sort_keys=False).rstrip())


# --- evaluation and inference commands (train/evaluate.py, train/inference.py) --------------


def _parse_named_checkpoints(values: tuple[str, ...]) -> dict[str, Path]:
    """``NAME=PATH`` pairs of ``--checkpoint`` into a dict, refusing malformed ones."""
    from train.evaluate import parse_named_paths

    try:
        return parse_named_paths(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--checkpoint") from exc


@main.command("evaluate", short_help=SHORT_HELP["evaluate"])
@click.option("--shards", type=click.Path(path_type=Path), required=True, help="Shard root.")
@click.option("--split", default="test", show_default=True, help="Split to score.")
@click.option(
    "--runs",
    type=click.Path(path_type=Path),
    default=None,
    help="Runs folder: scores every <runs>/<name>/best.pt and transcriptor.pt "
    "[runs, when no --checkpoint is given].",
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
    help="Report folder: metrics.json (the headline), details.json (everything), table1.json "
    "and gain.json (plot rows), results.md, figures/.",
)
@click.option(
    "--segment-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="SI-SDR segment length.",
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
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Note threshold on transcriptor probabilities.",
)
@click.option(
    "--max-tracks", type=click.IntRange(min=1), default=None, help="Score only the first N tracks."
)
@click.option(
    "--figure-tracks",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Tracks that get figures.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True,
    help="tqdm progress bar, one step per track (stderr).",
)
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
    progress: bool,
) -> None:
    """Table 1 (SI-SDR) and Table 2 (note accuracy) on whole tracks of a shard split.

    \b
    Examples:
      train evaluate --shards data/ --split test
      train evaluate --shards data/ --checkpoint mine=runs/scorecritic/best.pt --out reports/mine

    Rows are matched to the paper's by the recipe each checkpoint records, never by name.
    """
    from prep.shards import ShardError
    from train.evaluate import EvaluationError, evaluate
    from train.model import CheckpointError

    checkpoints = _parse_named_checkpoints(named)
    if runs is None and not checkpoints:
        runs = Path("runs")
        if not runs.is_dir():
            raise click.UsageError(
                "no runs/ folder here: give --runs DIR and/or --checkpoint NAME=PATH"
            )
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
            progress=progress,
        )
    except (EvaluationError, CheckpointError, ShardError, OSError) as error:
        raise click.ClickException(str(error)) from error
    from train.evaluate import DETAILS_FILE, FIGURES_DIR, HEADLINE_FILE, RESULTS_FILE

    click.echo((out / RESULTS_FILE).read_text())
    click.echo(f"wrote {out / HEADLINE_FILE} (headline), {out / DETAILS_FILE}, "
               f"{out / RESULTS_FILE}, {out / FIGURES_DIR}/")


@main.command("separate", short_help=SHORT_HELP["separate"])
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="Separator checkpoint (e.g. runs/scorecritic/best.pt).",
)
@click.argument("audio", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for one WAV per instrument.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option(
    "--model-rate",
    is_flag=True,
    help="Write the model's own 16 kHz mono estimates instead of stems at the input's rate "
    "and channels.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True,
    help="tqdm progress bars for files longer than one model chunk (64 s).",
)
def separate_command(
    checkpoint: Path, audio: Path, out: Path, device: str, model_rate: bool, progress: bool
) -> None:
    """Separate AUDIO (any format and sample rate libsndfile reads) into instrument WAVs.

    The model separates the 16 kHz mono downmix; each <out>/<instrument>.wav is then written
    at AUDIO's sample rate and channel count (32-bit float WAV): the instrument's mask, carried
    to AUDIO's time-frequency grid, applied to every channel, so the stems sum back to AUDIO
    wherever the masks sum to 1 (above 8 kHz each instrument keeps its 8 kHz mask).
    --model-rate writes the 16 kHz mono estimates `train evaluate` scores.

    \b
    Examples:
      train separate --checkpoint runs/scorecritic/best.pt song.wav --out separated/
      train separate --checkpoint runs/scorecritic/best.pt song.wav --out separated/ --model-rate
    """
    from train.inference import AudioError, OutputError, separate
    from train.model import CheckpointError

    try:
        paths = separate(
            checkpoint, audio, out, device=device, model_rate=model_rate, progress=progress
        )
    except (AudioError, CheckpointError, OutputError, OSError) as error:
        raise click.ClickException(str(error)) from error
    for path in paths:
        click.echo(str(path))


@main.command("transcribe", short_help=SHORT_HELP["transcribe"])
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="Transcriptor checkpoint (e.g. runs/scorecritic/transcriptor.pt).",
)
@click.argument("audio", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="MIDI file to write.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Note threshold on the probabilities.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
def transcribe_command(
    checkpoint: Path, audio: Path, out: Path, threshold: float, device: str
) -> None:
    """Transcribe AUDIO into a multi-instrument MIDI file.

    \b
    Examples:
      train transcribe --checkpoint runs/scorecritic/transcriptor.pt song.wav --out song.mid
    """
    from train.inference import AudioError, OutputError, transcribe
    from train.model import CheckpointError

    try:
        path = transcribe(checkpoint, audio, out, threshold=threshold, device=device)
    except (AudioError, CheckpointError, OutputError, OSError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(str(path))
