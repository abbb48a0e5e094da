"""The ``prep`` command line: thin wrappers over functions in the ``prep`` package."""

from __future__ import annotations

from pathlib import Path

import click

# prep.features.DEFAULT_N_HARMONICS, here so that `--help` answers without importing torch
# (tests/test_cli.py holds the two equal).
DEFAULT_N_HARMONICS = 15


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scorecritic")
def main() -> None:
    """Turn Slakh2100 (or the rendered demo corpus) into HDF5 training shards.

    \b
    Examples:
      prep synth-slakh --preset demo --out corpus/demo
      prep align --corpus corpus/unaligned --out corpus/aligned
      prep build-shards --instruments piano,guitar,bass
      prep verify data/
    """


# --- synth-slakh: the demo corpus (prep/synth.py) -------------------------------------------


@main.command("synth-slakh", short_help="Render a Slakh-layout corpus with FluidSynth.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Corpus root; gets train/, validation/, test/ as in Slakh2100.")
@click.option("--preset", type=click.Choice(["demo", "bench", "heldout", "tiny", "none"]),
              default="demo", show_default=True,
              help="Preset: demo 24 x 30 s and tiny 6 x 6 s (one soundfont, dry); bench "
                   "200 x 60 s and heldout 60 x 60 s, seed 1000 (soundfont pools that share "
                   "no samples, per-stem effects); none renders nothing (the pipeline on a "
                   "real Slakh2100 copy).")
@click.option("--tracks", type=int, default=None, help="Number of tracks (overrides preset).")
@click.option("--seconds", type=float, default=None, help="Seconds per track (overrides preset).")
@click.option("--seed", type=int, default=None, help="Seed of the music (overrides preset).")
@click.option("--soundfont", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="One SF2/SF3 file for every stem, instead of the preset's soundfont pool.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Tracks rendered in parallel.")
@click.option("--unaligned-scores", is_flag=True,
              help="Also write TrackNNNNN/score/: all_src.mid and MIDI/Sxx.mid with the "
                   "timing distorted (tempo, tempo curve, onset jitter; drawn from --seed's "
                   "own stream) and warp.json, the true score-to-audio warp (for `prep align`).")
@click.option("--score-bar-edits", is_flag=True,
              help="With --unaligned-scores: each score also drops or repeats one bar "
                   "(drawn; not the first or last).")
def synth_slakh_command(out: Path, preset: str, tracks: int | None, seconds: float | None,
                        seed: int | None, soundfont: Path | None, workers: int,
                        unaligned_scores: bool, score_bar_edits: bool) -> None:
    """Render a demo corpus in Slakh2100's exact layout with FluidSynth.

    Deterministic (same options, same files) and resumable: complete tracks in OUT are kept.

    \b
    Examples:
      prep synth-slakh --preset demo --out corpus/demo --workers 2
      prep synth-slakh --out corpus/mine --tracks 50 --seconds 45 --seed 7
      prep synth-slakh --preset tiny --out corpus/unaligned --unaligned-scores
    """
    from prep.synth import SynthError, preset_settings, synth_slakh

    if preset == "none":
        # The pipeline's render stage on real data: an empty, explained output folder.
        out.mkdir(parents=True, exist_ok=True)
        (out / "NOTHING_RENDERED.txt").write_text(
            "corpus.preset is 'none': nothing was rendered; shards are built from "
            "corpus.slakh_root (a real Slakh2100 copy).\n"
        )
        click.echo(f"{out}: nothing rendered (--preset none)")
        return
    try:
        settings = preset_settings(preset)
        for key, value in (("tracks", tracks), ("seconds", seconds), ("seed", seed)):
            if value is not None:
                settings[key] = value
        dirs = synth_slakh(out, soundfont=soundfont, workers=workers,
                           unaligned_scores=unaligned_scores,
                           score_bar_edits=score_bar_edits, **settings)
    except SynthError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{out}: {len(dirs)} tracks of {settings['seconds']:g} s "
               f"(seed {settings['seed']})")


# --- align: scores aligned to their audio (prep/align.py) -----------------------------------

# prep.align.DEFAULT_MAX_COST, here so that `--help` answers without importing the aligner
# (tests/test_align.py holds the two equal).
DEFAULT_MAX_COST = 0.5


@main.command("align", short_help="Align each track's score to its audio (synctoolbox DTW).")
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Slakh-layout corpus whose tracks have score/all_src.mid and "
                   "score/MIDI/Sxx.mid (e.g. from `prep synth-slakh --unaligned-scores`).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Aligned corpus (Slakh layout, audio symlinked, aligned MIDI), for "
                   "`prep build-shards --slakh-root OUT`; reports in OUT/alignment/.")
@click.option("--max-cost", type=float, default=DEFAULT_MAX_COST, show_default=True,
              help="Skip a track whose normalised chroma cost along the DTW path (0 same "
                   "chroma, 1 orthogonal) is above this: its score does not fit its audio.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tracks aligned in parallel.")
@click.option("--method", type=click.Choice(["dtw", "none"]), default="dtw", show_default=True,
              help="dtw aligns; none keeps the scores' own timing (the unaligned baseline, "
                   "in the same layout, with the same reports).")
@click.option("--allow-empty", is_flag=True,
              help="A corpus without track folders gives an empty aligned corpus, not an "
                   "error (a pipeline whose corpus stage rendered nothing).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def align_command(corpus: Path, out: Path, max_cost: float, workers: int, method: str,
                  allow_empty: bool, no_progress: bool) -> None:
    """Align every track's score to its mixture audio (chroma + DLNCO onset features,
    multiresolution multiscale DTW; synctoolbox) and write a Slakh-layout corpus with the
    score's notes moved onto the audio.

    Per-track reports (cost, normalised cost, and the onset error before and after
    against score/warp.json where the corpus has it) go to OUT/alignment/, the summary to
    OUT/alignment.json. Tracks without a readable score or mixture, or above --max-cost, are
    skipped with a one-line reason. Shards built from OUT record the alignment in their
    score_timing attribute, and their data card prints it.

    \b
    Examples:
      prep synth-slakh --preset tiny --out corpus/u --unaligned-scores
      prep align --corpus corpus/u --out corpus/u-aligned
      prep build-shards --slakh-root corpus/u-aligned --out data-aligned
      prep align --corpus corpus/u --out corpus/u-unaligned --method none
    """
    from prep.align import AlignError, align_corpus

    try:
        summary = align_corpus(corpus, out, max_cost=max_cost, workers=workers,
                               progress=not no_progress, log=click.echo,
                               allow_empty=allow_empty, method=method)
    except AlignError as error:
        raise click.ClickException(str(error)) from error
    line = (f"{out}: {summary['aligned']} tracks aligned, {len(summary['skipped'])} skipped, "
            f"{summary['real_time_factor']:.1f}x real time")
    overall = summary.get("onset_error", {}).get("overall")
    if overall:
        line += (f"; onset error median {overall['before']['median_s'] * 1000:.0f} ms before, "
                 f"{overall['after']['median_s'] * 1000:.0f} ms after")
    click.echo(line)


# --- build-shards, index, verify, inspect: the shards (prep/build.py, prep/shards.py) -----


def _parse_part_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from prep.build import parse_part

    try:
        return parse_part(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@main.command("build-shards", short_help="Build checksummed HDF5 shards from a Slakh2100-layout corpus.")
@click.option("--slakh-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Slakh2100-layout corpus (split folders or flat). "
                   "[default: $SLAKH_ROOT, else corpus/demo]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("data"),
              show_default=True, help="Output folder: OUT/<split>/*.h5 and OUT/manifest.json.")
@click.option("--instruments", default="piano,guitar,bass", show_default=True,
              help="Comma-separated classes of the instrument map, in model order.")
@click.option("--split-scheme", type=click.Choice(["split2", "orig"]), default="split2",
              show_default=True, help="split2: the paper's Slakh2100-split2; orig: by id range.")
@click.option("--instrument-map", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML map of classes to GM programs / Slakh patch names, or the name of a "
                   "packaged map: instrument_map_programs.yaml (default) or "
                   "instrument_map_patches.yaml.")
# the modes of prep.build.STEMS_MODES, spelled out so that --help does not import the build
# (tests/test_cli.py checks they match)
@click.option("--stems", type=click.Choice(["test", "eval", "all", "none"]), default="test",
              show_default=True,
              help="Which splits store per-instrument stems: test (for evaluation; what the "
                   "weakly supervised steps accept), eval (validation and test), all (the "
                   "supervised reference needs train stems) or none.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes, each building whole shards.")
@click.option("--part", "part", default="1/1", show_default=True, callback=_parse_part_option,
              help="Build only part I of N (shards k with k % N == I-1); parts of one build "
                   "may run at once into one OUT; then `prep index`.")
@click.option("--backend", type=click.Choice(["local", "dask"]), default="local",
              show_default=True,
              help="local: --workers processes here; dask: one task per shard on a Dask "
                   "cluster (OUT on storage every worker sees).")
@click.option("--scheduler", default=None, metavar="ADDRESS|FILE",
              help="Dask scheduler address (tcp://host:8786) or scheduler file; without it, "
                   "--backend dask starts a local cluster of --workers processes.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any track was skipped.")
@click.option("--force", is_flag=True, help="Rebuild shards that are already complete.")
@click.option("--shard-size-mb", type=click.FloatRange(min=0, min_open=True), default=256.0,
              show_default=True, help="Target shard size (estimated, uncompressed).")
@click.option("--n-harmonics", type=click.IntRange(min=1), default=DEFAULT_N_HARMONICS,
              show_default=True, help="Harmonics per note L in the harmonic mask.")
@click.option("--resample-filter",
              type=click.Choice(["soxr_hq", "soxr_vhq", "kaiser_best", "kaiser_fast"]),
              default="soxr_hq", show_default=True,
              help="Resampler to 16 kHz: soxr_hq/soxr_vhq (libsoxr) or resampy's kaiser_best/"
                   "kaiser_fast (~90x/~40x more CPU than soxr_hq; see benchmarks/README.md).")
@click.option("--sustain/--no-sustain", default=True, show_default=True,
              help="Extend note ends by the sustain pedal (MIDI CC 64) in the piano rolls and "
                   "harmonic masks, as the audio sounds; --no-sustain uses note-off times.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def build_shards_command(
    slakh_root: Path | None, out: Path, instruments: str, split_scheme: str,
    instrument_map: Path | None, stems: str, workers: int, part: tuple[int, int],
    backend: str, scheduler: str | None, strict: bool, force: bool, shard_size_mb: float,
    n_harmonics: int, resample_filter: str, sustain: bool, no_progress: bool,
) -> None:
    """Build HDF5 training shards from a Slakh2100-layout corpus.

    Mixtures are the sum of the selected instruments' stems (16 kHz mono); bad tracks are
    skipped with a reason (listed at the end and in OUT/manifest.json). Rerunning resumes.
    OUT is locked while it runs (OUT/.lock/): a second build or index on OUT is refused,
    naming the holder. SIGTERM or Ctrl-C stops the workers and exits (143 or 130); rerun to
    resume.

    \b
    Examples:
      prep build-shards --instruments piano,guitar,bass
      prep build-shards --slakh-root /data/slakh2100_flac_redux --out data/ --workers 8
      prep build-shards --instrument-map instrument_map_patches.yaml
      prep build-shards --stems all --out data-stems/   (for `train supervised`)
      prep build-shards --part 1/4 ... (on 4 machines), then: prep index data/
      prep build-shards --backend dask --scheduler tcp://10.0.0.5:8786 --out /shared/data
    """
    from prep.build import BuildError, BuildInterrupted, build_shards, default_slakh_root

    try:
        build_shards(
            slakh_root if slakh_root is not None else default_slakh_root(), out, instruments,
            split_scheme=split_scheme, instrument_map=instrument_map, stems=stems,
            workers=workers, part=part, backend=backend, scheduler=scheduler, strict=strict,
            force=force,
            shard_size_mb=shard_size_mb,
            n_harmonics=n_harmonics,
            resample_filter=resample_filter, sustain=sustain, progress=not no_progress,
            log=click.echo,
        )
    except BuildError as error:
        raise click.ClickException(str(error)) from error
    except BuildInterrupted as stop:
        click.echo(f"Error: {out}: build {stop} (workers stopped, finished shards kept; rerun "
                   "the same command to resume)", err=True)
        raise SystemExit(128 + stop.signum) from None


@main.command("index", short_help="Rebuild OUT/manifest.json from the build plan and records.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--accept-unverified", is_flag=True,
              help="List shards whose bytes differ from their build record anyway, marked "
                   "unverified (`prep verify` keeps reporting them).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def index_command(out: Path, accept_unverified: bool, no_progress: bool) -> None:
    """Rebuild OUT/manifest.json from the build plan and build records (e.g. after `--part`
    builds), each shard with the SHA-256 its build wrote.

    Refuses, naming each file, when a planned shard is missing, a shard file is not in the
    plan, or a shard's bytes differ from its build record (rebuild it: `prep build-shards`
    resumes).

    \b
    Examples:
      prep index data/
    """
    from prep.build import IndexRefused, index_shards
    from prep.lock import LockError
    from prep.shards import ShardError

    try:
        manifest = index_shards(out, accept_unverified=accept_unverified, log=click.echo,
                                progress=not no_progress)
    except IndexRefused as refused:
        for problem in refused.problems:
            click.echo(problem, err=True)
        raise click.ClickException(f"{out / 'manifest.json'}: not written "
                                   f"({len(refused.problems)} problem(s) above)") from None
    except (ShardError, LockError, OSError) as error:  # OSError: manifest cannot be written
        raise click.ClickException(str(error)) from error
    click.echo(f"{out / 'manifest.json'}: {len(manifest.shards)} shards, {manifest.n_tracks} "
               f"tracks, hours {manifest.hours}, {len(manifest.skipped)} skipped")
    for problem in manifest.problems:
        click.echo(f"note: {problem}", err=True)
    for path in manifest.unverified:
        click.echo(f"warning: {out / path}: listed as unverified (differs from its build "
                   "record)", err=True)


@main.command("verify", short_help="Check OUT's shards against the manifest and the build plan.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify_command(out: Path, no_progress: bool) -> None:
    """Check the shards in OUT against OUT/manifest.json (checksums, files, schema, shapes)
    and the build plan: every planned shard present with the SHA-256 its build wrote.

    Prints every problem, naming the file (missing, extra, changed or unverified shards), and
    exits with status 1 if there is any.

    \b
    Examples:
      prep verify data/
    """
    from prep.shards import verify

    problems = verify(out, progress=not no_progress)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{out}: OK")


@main.command("inspect", short_help="Describe a shard file (or a track); --plot draws a window.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--track", "track", default=None, help="Describe this track (e.g. Track00001).")
@click.option(
    "--plot",
    "png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save spectrogram, activity, piano rolls and harmonic masks of a 4-s window of "
         "--track (default: the first track) as PNG.",
)
@click.option("--start-frame", default=0, show_default=True, help="First frame of the plot.")
def inspect_command(file: Path, track: str | None, png: Path | None, start_frame: int) -> None:
    """Describe a shard FILE: its attributes, tracks, datasets and their storage.

    \b
    Examples:
      prep inspect data/train/train-00000.h5
      prep inspect data/train/train-00000.h5 --plot window.png
      prep inspect data/train/train-00000.h5 --track Track00001 --plot window.png
    """
    from prep.shards import ShardError, inspect_shard, plot_window

    try:
        click.echo(inspect_shard(file, track))
        if png is not None:
            click.echo(f"wrote {plot_window(file, track, start_frame, png)}")
    except ShardError as error:
        raise click.ClickException(str(error)) from error


# --- card: data cards of built shard sets (prep/card.py) ---------------------------------


@main.command("card", short_help="Write the data card of a built shard set (Markdown).")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "card_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Card file to write [default: OUT/DATA_CARD.md].")
@click.option("--command", "build_command", default=None,
              help="The exact build command to print in the card "
                   "[default: reconstructed from the manifest].")
def card_command(out: Path, card_path: Path | None, build_command: str | None) -> None:
    """Write a data card (Markdown, Hugging Face style) for the shard set in OUT.

    Reads OUT/manifest.json and the shards' attributes only (no audio): source and licence,
    schema, splits and hours, activity rates next to the paper's, provenance, limitations.

    \b
    Examples:
      prep card data/
      prep card data/ --out data_cards/mine.md --command "prep build-shards ..."
    """
    from prep.card import write_card
    from prep.shards import ShardError

    try:
        path = write_card(out, card_path, build_command)
    except ShardError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {path}")
