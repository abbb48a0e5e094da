"""Data cards for built shard sets (``prep card OUT``).

A data card is a Markdown file in the style of Hugging Face dataset cards (a YAML header, then
sections) that says what a shard set *is*: where its audio and scores come from and under which
licence, its schema, splits, hours, per-instrument activity rates next to the paper's, bytes on
disk, skipped tracks, music statistics next to Slakh's, the exact build command and
parameters, intended uses and known limitations.

Everything comes from the manifest (:func:`prep.shards.read_manifest`) and the HDF5 *attributes*
and dataset headers of the shards (dtypes, shapes, chunking, track attrs such as
``source_stems``); no audio or feature array is read. The schema rows are tied to the format's
constants in :mod:`prep.shards` and :mod:`prep.features` and checked against the shard on disk,
so a card cannot silently describe another format. The output is a deterministic function of the
manifest, the shard headers, the corpus's ``synth_slakh.json`` and, for the "Music statistics"
section, the ``metadata.yaml`` and MIDI files of the corpus's tracks that the shards hold
(:func:`prep.music_stats.measure_corpus`, no audio decoded; when the corpus folder is gone the
section says so). The Slakh column of that section comes from the packaged
``prep/data/slakh_track00001_music_stats.json`` (Slakh2100, CC BY 4.0), never from the test
fixtures. No clock, no host name; absolute machine paths are rendered relative to the working
directory or as given in the build command.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from prep import __version__ as PACKAGE_VERSION
from prep import features
from prep.atomic import atomic_write_text
from prep.defects import (
    LEAKAGE_METHOD,
    LEFT_OUT,
    NEAR_DUPLICATE_JACCARD,
    NOT_USED,
    REPORT_MISSING,
    SKIPPED_TRACK,
    load_known_defects,
    summarise,
)
from prep.features import (
    DEFAULT_N_HARMONICS,
    DEFAULT_TOLERANCE_BINS,
    HOP_LENGTH,
    MIDI_MAX,
    MIDI_MIN,
    N_BINS,
    N_FFT,
    N_PITCHES,
    SAMPLE_RATE,
    TUNING_HZ,
    class_weights,
)
from prep.music_stats import (
    MusicStats,
    MusicStatsError,
    load_reference,
    measure_corpus,
)
from prep.shards import (
    DEFAULT_LAYOUT,
    FRAME_FIELDS,
    MANIFEST_NAME,
    PACKED_BINS,
    REQUIRED_ROOT_ATTRS,
    SAMPLE_FIELDS,
    Manifest,
    ShardError,
    check_against_plan,
    read_attrs,
    read_manifest,
)
from prep.slakh import SYNTH_CONFIG_FILE, SlakhError, parse_instrument_map

CARD_NAME = "DATA_CARD.md"
SPLIT_ORDER = ("train", "validation", "test")
# The paper's training-set frame activity rates (Hung et al. 2021, sec. 3; METHOD.md).
PAPER_ACTIVITY_RATE: dict[str, float] = {"piano": 0.41, "guitar": 0.14, "bass": 0.67}
# Slakh2100-split2 track counts (prep/data/splits_v2.json, ATTRIBUTION.md).
SPLIT2_COUNTS: dict[str, int] = {"train": 1500, "validation": 375, "test": 225}
# Storage measured by benchmarks/perf/loading.py (prep/shards.py module docstring), GB = 1e9 bytes.
MEASURED_GB_PER_HOUR_NO_STEMS = 0.471
MEASURED_GB_PER_HOUR_PER_STEM = 0.23
DEFAULT_INSTRUMENT_MAP_SOURCE = "prep/data/instrument_map_programs.yaml"
PATCH_MAP_NAME = "instrument_map_patches.yaml"
# An absolute path up to a split folder or track folder (what PathDisplay rewrites last).
_TRACK_PATH_RE = re.compile(
    r"(?<![\w.])(?:/[^\s/:'\"`]+)+?/(?=(?:(?:train|validation|test|omitted)/)?Track\d{5}\b)"
)
MAX_LISTED = 10  # skipped tracks / warnings listed in full; the rest are counted
# What changed in each shard format version (the manifest's format_version).
FORMAT_CHANGELOG: dict[int, str] = {
    1: "first release: whole tracks per HDF5 shard, time-major float16 spec, bool roll and "
    "activity, bit-packed harmonic mask, optional float32 stems, SHA-256 manifest",
}

SLAKH_CITATION = (
    'E. Manilow, G. Wichern, P. Seetharaman, J. Le Roux, "Cutting Music Source Separation '
    'Some Slakh: A Dataset to Study the Impact of Training Data Quality and Quantity", '
    "IEEE WASPAA 2019."
)
SLAKH_BIBTEX = """@inproceedings{manilow2019cutting,
  title     = {Cutting Music Source Separation Some {Slakh}: A Dataset to Study the Impact of
               Training Data Quality and Quantity},
  author    = {Manilow, Ethan and Wichern, Gordon and Seetharaman, Prem and Le Roux, Jonathan},
  booktitle = {Proc. IEEE Workshop on Applications of Signal Processing to Audio and Acoustics
               (WASPAA)},
  year      = {2019}
}"""
SLAKH_FACTS = "Slakh2100: 2100 tracks, 145 hours of mixtures, 187 patches in 34 classes"
PAPER_CITATION = (
    'Y.-N. Hung, G. Wichern, J. Le Roux, "Transcription Is All You Need: Learning to Separate '
    'Musical Mixtures with Score as Supervision", IEEE ICASSP 2021.'
)

# One row per stored dataset. The keys must be exactly the format's fields
# (prep.shards.SAMPLE_FIELDS + FRAME_FIELDS): a field added to the format without a row here
# makes every card fail to render instead of going undocumented.
FIELD_DOCS: dict[str, str] = {
    "mix": "x, mono mixture = sum of the selected instruments' sources, 16 kHz (waveform, "
    "the corpus's full-scale units)",
    "stems": "s_i, per-instrument sources (all stems of a class summed), same units and "
    "length as `mix`, instrument order as the root attr `instruments`; all-zero when a track "
    "has no stem of that class",
    "spec": "X = |STFT(x)|, linear magnitude, sqrt-Hann window of 2048, hop 500, frame t "
    "centred on sample 500 t",
    "roll": f"Y, piano roll per instrument; column k = MIDI {MIDI_MIN} + k; note active at "
    "frame t iff onset <= t*500/16000 < offset (pretty_midi note times; offset extended by "
    "the sustain pedal when the root attr `sustain_pedal` is true)",
    "harmonic_mask": "A, instrument i expected at bin f, frame t: f is within "
    "`harmonic_tolerance_bins` of one of the first `n_harmonics` harmonics of an active note "
    "(root attrs)",
    "activity": "instrument i plays any note at frame t (= `roll.any(-1)`)",
}


class CardError(ShardError):
    """The card cannot be written truthfully (the shards disagree with the format it documents)."""


# --------------------------------------------------------------------------------------------
# Facts read from the shards (attributes and dataset headers only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset of a sample track as stored: dtype, shape, chunks, filter, attrs."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...] | None
    filters: str
    attrs: dict[str, Any]


@dataclass
class ShardFacts:
    """What the card needs from the shard files beyond the manifest.

    Attributes:
        root_attrs: root attributes of the first shard (``split`` and source path removed).
        track_attr_names: attribute names of the sample track.
        datasets: the sample track's datasets, by name (a track with stems if there is one).
        sample_track: ``(track_id, n_samples, n_frames)`` of that track.
        class_tracks: split -> instrument -> number of tracks with >= 1 stem of that class.
        class_hours: split -> instrument -> hours of those tracks.
        dropped_notes: split -> notes outside MIDI 21-108 dropped from the rolls.
        tracks_with_stems: split -> tracks that store ``stems``.
    """

    root_attrs: dict[str, Any]
    track_attr_names: list[str]
    datasets: dict[str, DatasetFacts]
    sample_track: tuple[str, int, int]
    class_tracks: dict[str, dict[str, int]] = field(default_factory=dict)
    class_hours: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped_notes: dict[str, int] = field(default_factory=dict)
    tracks_with_stems: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusInfo:
    """Where the shards' audio came from.

    Attributes:
        kind: ``"slakh2100"`` or ``"synthetic-demo"`` (rendered by ``prep synth-slakh``).
        name: the dataset name for the YAML header (``Slakh2100`` or the demo corpus's name).
        path: the corpus root as displayed (relative or as given in the build command).
        synth_config: the demo corpus's ``synth_slakh.json`` (None for Slakh).
        found: whether the corpus folder was found when the card was written.
    """

    kind: str
    name: str
    path: str
    synth_config: dict[str, Any] | None = None
    found: bool = True

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic-demo"


def _dataset_filters(dataset: h5py.Dataset) -> str:
    filters = dataset.compression or "none"
    return f"shuffle+{filters}" if dataset.shuffle else filters


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python values, so they print and compare plainly."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    return value


def _shard_paths(root: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    return [(s.split, root / s.path) for s in manifest.shards]


def collect_shard_facts(shards_root: Path, manifest: Manifest) -> ShardFacts:
    """Read the shards' attributes and dataset headers (never their arrays).

    Raises:
        ShardError: a shard named by the manifest is missing or is not a scorecritic shard.
    """
    root = Path(shards_root)
    instruments = list(manifest.instruments)
    paths = _shard_paths(root, manifest)
    if not paths:
        raise ShardError(f"{root / MANIFEST_NAME}: lists no shards")
    root_attrs: dict[str, Any] | None = None
    facts = ShardFacts(root_attrs={}, track_attr_names=[], datasets={}, sample_track=("", 0, 0))
    sample_info: tuple[str, list[str], dict[str, DatasetFacts], tuple[str, int, int]] | None = None
    for split, path in paths:
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in {root / MANIFEST_NAME} is missing")
        counts = facts.class_tracks.setdefault(split, dict.fromkeys(instruments, 0))
        hours = facts.class_hours.setdefault(split, dict.fromkeys(instruments, 0.0))
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise ShardError(f"{path}: not a readable HDF5 file ({error})") from error
        with handle:
            if root_attrs is None:
                root_attrs = read_attrs(handle)
            if "tracks" not in handle:
                raise ShardError(f"{path}: no /tracks group (not a scorecritic shard)")
            for track_id, group in handle["tracks"].items():
                attrs = read_attrs(group)
                n_samples = int(attrs.get("n_samples", 0))
                stems_by_class = attrs.get("source_stems", {}) or {}
                for name in instruments:
                    if stems_by_class.get(name):
                        counts[name] += 1
                        hours[name] += n_samples / SAMPLE_RATE / 3600
                facts.dropped_notes[split] = facts.dropped_notes.get(split, 0) + int(
                    attrs.get("dropped_notes", 0)
                )
                has_stems = "stems" in group
                facts.tracks_with_stems[split] = facts.tracks_with_stems.get(split, 0) + int(
                    has_stems
                )
                # Describe a track with stems when there is one, so the stems row is real.
                if sample_info is None or (has_stems and "stems" not in sample_info[2]):
                    datasets = {
                        name: DatasetFacts(
                            name=name,
                            dtype=str(dataset.dtype),
                            shape=tuple(int(n) for n in dataset.shape),
                            chunks=tuple(dataset.chunks) if dataset.chunks else None,
                            filters=_dataset_filters(dataset),
                            attrs={k: _plain(v) for k, v in sorted(dataset.attrs.items())},
                        )
                        for name, dataset in group.items()
                    }
                    sample_info = (
                        track_id,
                        sorted(attrs),
                        datasets,
                        (track_id, n_samples, int(attrs.get("n_frames", 0))),
                    )
    if root_attrs is None or sample_info is None:
        raise ShardError(f"{root}: the shards listed in {MANIFEST_NAME} hold no tracks")
    facts.root_attrs = {k: _plain(v) for k, v in root_attrs.items() if k != "split"}
    _, facts.track_attr_names, facts.datasets, facts.sample_track = sample_info
    return facts


def corpus_root(manifest: Manifest) -> str:
    """The folder the shards were built from: the build's provenance (``corpus_root``), or,
    for shards built before provenance existed, an absolute ``source_corpus``; else ``""``."""
    recorded = (manifest.provenance or {}).get("corpus_root")
    if isinstance(recorded, str):
        return recorded
    legacy = str((manifest.source or {}).get("source_corpus", ""))
    return legacy if Path(legacy).is_absolute() else ""


def instrument_map_source(manifest: Manifest) -> str:
    """The instrument map the build read: a packaged map's name, or the file the build recorded
    as provenance (shards store only its file name); ``""`` when unknown."""
    recorded = (manifest.provenance or {}).get("instrument_map_path")
    if isinstance(recorded, str):
        return recorded
    return str((manifest.instrument_map or {}).get("source", ""))


def detect_corpus(
    manifest: Manifest, display: PathDisplay | None = None
) -> CorpusInfo:
    """Slakh2100 or the synthetic demo corpus, from the manifest's ``source``.

    The demo corpus is recognised by its ``synth_slakh.json`` (written by ``prep synth-slakh``)
    in the corpus root the build recorded (:func:`corpus_root`), or by a ``synth_slakh`` entry
    in ``source`` itself. A corpus folder that no longer exists is assumed to be Slakh2100 and the
    card says so.
    """
    source = manifest.source or {}
    raw = corpus_root(manifest)
    shown = display.show(raw) if display else raw
    config = source.get("synth_slakh")
    corpus = Path(raw) if raw else None
    found = bool(corpus and corpus.is_dir())
    if config is None and corpus is not None and (corpus / SYNTH_CONFIG_FILE).is_file():
        try:
            config = json.loads((corpus / SYNTH_CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise CardError(f"{corpus / SYNTH_CONFIG_FILE}: unreadable ({error})") from error
    if isinstance(config, Mapping):
        name = Path(shown).name or "demo"
        return CorpusInfo("synthetic-demo", f"scorecritic-synth-{name}", shown, dict(config),
                          found or "synth_slakh" in source)
    return CorpusInfo("slakh2100", "Slakh2100", shown, None, found)


# --------------------------------------------------------------------------------------------
# Paths: never print this machine's absolute paths
# --------------------------------------------------------------------------------------------


@dataclass
class PathDisplay:
    """Rewrites absolute paths of this machine into the form a reader can use.

    ``replacements`` maps absolute prefixes (longest first) to what is shown instead; paths under
    ``base`` (the working directory, normally the repository root) become relative to it, other
    absolute paths become their last component.
    """

    base: Path
    replacements: dict[str, str] = field(default_factory=dict)
    corpus_shown: str = ""

    def add(self, absolute: Path | str, shown: str) -> None:
        text = str(absolute)
        if text and text not in self.replacements:
            self.replacements[text] = shown

    def relative(self, path: Path | str) -> str:
        """``path`` relative to ``base`` if it lies under it, else its last component."""
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        resolved = path.resolve()
        try:
            return resolved.relative_to(self.base.resolve()).as_posix() or "."
        except ValueError:
            return resolved.name or resolved.as_posix()

    def show(self, text: str) -> str:
        """``text`` with every known absolute prefix rewritten.

        A remaining absolute path into a track folder (a corpus reached through another
        spelling, e.g. a symlink) keeps only its part from the split folder or track on,
        under the corpus's shown name.
        """
        for prefix in sorted(self.replacements, key=len, reverse=True):
            text = text.replace(prefix, self.replacements[prefix])
        base = str(self.base.resolve())
        if base != "/":
            text = text.replace(base + "/", "")
        if self.corpus_shown:
            text = _TRACK_PATH_RE.sub(self.corpus_shown + "/", text)
        return text


def _command_option(command: str | None, option: str) -> str | None:
    """The value of ``--option X`` / ``--option=X`` in a shell command line, if present."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for index, word in enumerate(words):
        if word == option and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(option + "="):
            return word[len(option) + 1 :]
    return None


def make_path_display(
    shards_root: Path | None, manifest: Manifest, command: str | None,
    base: Path | None = None,
) -> PathDisplay:
    """Display rules for the corpus root and the shard folder (see :class:`PathDisplay`)."""
    display = PathDisplay(base=Path.cwd() if base is None else Path(base))
    corpus = corpus_root(manifest)
    if corpus and Path(corpus).is_absolute():
        given = _command_option(command, "--slakh-root")
        display.corpus_shown = given if given else display.relative(corpus)
        display.add(corpus, display.corpus_shown)
    if shards_root is not None:
        given = _command_option(command, "--out")
        absolute = Path(shards_root).resolve()
        display.add(absolute, given if given else display.relative(absolute))
    return display


# --------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------


def _fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _fmt_hours(hours: float) -> str:
    return f"{hours:.3f}"


def _fmt_mb(size: int) -> str:
    return f"{size / 1e6:,.1f}"


def _md_escape(text: str) -> str:
    """Make free text (reasons, warnings) safe inside a Markdown table cell or list item."""
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def size_category(n_examples: int) -> str:
    """Hugging Face ``size_categories`` bucket for a number of examples (tracks)."""
    buckets = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
               (1_000_000, "100K<n<1M"))
    for limit, name in buckets:
        if n_examples < limit:
            return name
    return "n>1M"


def class_weight_formula() -> str:
    """The weight formula as written in :func:`prep.features.class_weights`' docstring."""
    doc = inspect.getdoc(class_weights) or ""
    for line in doc.splitlines():
        if line.strip().startswith("w_i ="):
            return line.strip().rstrip(",")
    raise CardError("prep.features.class_weights: its docstring no longer states `w_i = ...`")


def _gm_program_names() -> dict[int, str]:
    text = resources.files("prep").joinpath("data/general_midi_inst_0based.json").read_text(
        "utf-8"
    )
    return {int(k): str(v["name"]) for k, v in json.loads(text).items()}


def _split_stats(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Per split: tracks, shards, bytes, samples (from the manifest's shard list)."""
    stats: dict[str, dict[str, Any]] = {}
    for shard in manifest.shards:
        entry = stats.setdefault(
            shard.split, {"tracks": 0, "shards": 0, "bytes": 0, "samples": 0}
        )
        entry["shards"] += 1
        entry["bytes"] += shard.bytes
        for track in shard.tracks:
            entry["tracks"] += 1
            entry["samples"] += track.n_samples
    ordered = [s for s in SPLIT_ORDER if s in stats] + sorted(set(stats) - set(SPLIT_ORDER))
    return {s: stats[s] for s in ordered}


def _split_hours(manifest: Manifest, split: str, stats: Mapping[str, Any]) -> float:
    hours = (manifest.hours or {}).get(split)
    return float(hours) if hours is not None else stats["samples"] / SAMPLE_RATE / 3600


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusMusic:
    """The music statistics of the tracks a shard set holds, or why there are none.

    Attributes:
        stats: measured by :func:`prep.music_stats.measure_corpus`, or None.
        note: why ``stats`` is None (corpus folder gone, unreadable, ...); empty otherwise.
    """

    stats: MusicStats | None
    note: str = ""


def sustain_applied(manifest: Manifest) -> bool:
    """Whether the build extended notes by the sustain pedal (``source.sustain_pedal``).

    Builds made before the setting existed did not apply the pedal, so a missing entry is
    False.
    """
    return bool((manifest.source or {}).get("sustain_pedal", False))


def measure_corpus_music(manifest: Manifest) -> CorpusMusic:
    """Music statistics of the shards' tracks, read from the corpus named in the manifest.

    The tracks, the instrument map and the sustain setting are the build's (manifest); only
    ``metadata.yaml`` and the selected stems' MIDI files are read.
    """
    raw = corpus_root(manifest)
    corpus = Path(raw)
    if not raw or not corpus.is_dir():
        return CorpusMusic(None, "the corpus folder was not found when this card was written")
    track_ids = {t.track_id for t in manifest.tracks()}
    try:
        raw_map = manifest.instrument_map or {}
        imap = parse_instrument_map(raw_map, str(raw_map.get("source", "manifest")))
        stats = measure_corpus(corpus, imap, [str(n) for n in manifest.instruments],
                               sustain_applied(manifest), track_ids)
    except (MusicStatsError, SlakhError) as error:
        return CorpusMusic(None, f"the corpus could not be measured ({error})")
    return CorpusMusic(stats)


@dataclass
class _Context:
    manifest: Manifest
    facts: ShardFacts | None
    corpus: CorpusInfo
    display: PathDisplay
    command: str
    command_given: bool
    shards_shown: str
    instruments: list[str]
    stats: dict[str, dict[str, Any]]
    music: CorpusMusic | None = None

    @property
    def source(self) -> Mapping[str, Any]:
        return self.manifest.source or {}

    @property
    def n_tracks(self) -> int:
        return sum(s["tracks"] for s in self.stats.values())

    @property
    def total_hours(self) -> float:
        return sum(_split_hours(self.manifest, k, v) for k, v in self.stats.items())

    @property
    def map_source(self) -> str:
        return self.display.show(instrument_map_source(self.manifest) or "unknown")

    @property
    def uses_patch_names(self) -> bool:
        imap = self.manifest.instrument_map or {}
        classes = imap.get("classes") or {}
        return PATCH_MAP_NAME in self.map_source or any(
            c.get("plugin_names") for c in classes.values()
        )


def _yaml_header(ctx: _Context) -> list[str]:
    names = ", ".join(ctx.instruments)
    if ctx.corpus.synthetic:
        pretty = f"scorecritic shards of the synthetic demo corpus ({names})"
        tags = ["synthetic", "fluidsynth"]
    else:
        scheme = ctx.source.get("split_scheme", "split2")
        pretty = f"scorecritic shards of Slakh2100-{scheme} ({names})"
        tags = ["slakh2100"]
    header = {
        "pretty_name": pretty,
        "license": "cc-by-4.0",
        "source_datasets": [ctx.corpus.name],
        "size_categories": [size_category(ctx.n_tracks)],
        "task_categories": ["audio-source-separation", "music-transcription"],
        "tags": ["music", "score-informed", "weak-supervision", "piano-roll", "hdf5", *tags],
    }
    text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=100)
    return ["---", *text.rstrip("\n").splitlines(), "---", ""]


def _summary(ctx: _Context) -> list[str]:
    names = ", ".join(ctx.instruments)
    counts = ", ".join(f"{v['tracks']} {k}" for k, v in ctx.stats.items())
    version = ctx.source.get("package_version", "unknown")
    if ctx.corpus.synthetic:
        origin = (
            f"the **synthetic demo corpus** `{ctx.corpus.path}`, which scorecritic renders "
            "itself (`prep synth-slakh`: generated MIDI, FluidSynth with "
            f"{_font_count_text(ctx.corpus.synth_config or {})}, written in Slakh2100's "
            "layout). It is **not Slakh audio**; it exists to run and test the pipeline end to "
            "end in minutes"
        )
    else:
        origin = f"**Slakh2100** (corpus root `{ctx.corpus.path}`)"
    return [
        "## Summary",
        "",
        f"HDF5 training shards for *Transcription Is All You Need* (Hung, Wichern & Le Roux, "
        f"ICASSP 2021): {ctx.n_tracks} tracks ({counts}; {_fmt_hours(ctx.total_hours)} h of "
        f"audio) built from {origin}. Each track holds the 16 kHz mono mixture of the "
        f"selected instruments ({names}) and, aligned frame by frame (32 frames/s), its "
        "magnitude spectrogram X, the per-instrument piano roll Y, the harmonic mask A and "
        f"frame activity; {_stems_sentence(ctx)} "
        f"Built by scorecritic {version} (shard format_version "
        f"{ctx.manifest.format_version}); read with `prep.shards.ShardSet` or plain "
        "h5py.",
        "",
    ]


def _soundfont_text(config: Mapping[str, Any]) -> str:
    """The soundfont(s) of a synth_slakh.json, FluidR3_GM's author and licence named."""
    fonts = config.get("soundfonts") or [config.get("soundfont", "FluidR3_GM.sf2")]
    names = [str(f) for f in (fonts if isinstance(fonts, list) else [fonts])]
    shown = ", ".join(f"`{n}`" for n in names)
    text = f"the soundfont{'s' if len(names) > 1 else ''} {shown}"
    if any(n.startswith("FluidR3") for n in names):
        text += " (FluidR3: Frank Wen, MIT licence; Debian package `fluid-soundfont-gm`)"
    return text


def _font_count_text(config: Mapping[str, Any]) -> str:
    """"the FluidR3_GM soundfont" or "a pool of 3 General MIDI soundfonts"."""
    fonts = config.get("soundfonts") or [config.get("soundfont", "FluidR3_GM.sf2")]
    fonts = fonts if isinstance(fonts, list) else [fonts]
    if len(fonts) == 1:
        return f"the {Path(str(fonts[0])).stem} soundfont"
    return f"a pool of {len(fonts)} General MIDI soundfonts"


def _setting_text(value: Any) -> str:
    """A synth_slakh.json value for the Settings line: nested tables are only pointed to."""
    if isinstance(value, Mapping):
        return f"(nested settings, see `{SYNTH_CONFIG_FILE}`)"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _stems_sentence(ctx: _Context) -> str:
    with_stems = [s for s in ctx.stats if _stem_tracks(ctx, s)]
    if not with_stems:
        return ("no per-instrument source audio (stems) is stored, so separation cannot be "
                "evaluated from these shards.")
    splits = (", ".join(with_stems[:-1]) + " and " if len(with_stems) > 1 else "") + with_stems[-1]
    return f"per-instrument source audio (stems) is stored for {splits}."


def score_timing_text(timing: Any) -> str:
    """One sentence on the shards' ``score_timing`` root attribute (see prep.align)."""
    if not isinstance(timing, Mapping):  # shards built before the attribute existed
        return "the corpus's own MIDI (not recorded by the build; it predates `score_timing`)."
    if timing.get("source") != "prep align":
        return ("the corpus's own MIDI, aligned to the audio by construction (the audio was "
                "rendered from it).")
    settings = timing.get("settings") or {}
    if str(timing.get("method", "")).startswith("none"):
        text = (f"the tracks' scores with their own timing, **not aligned** to the audio (`prep "
                f"align --method none`, the baseline alignment is measured against): "
                f"{timing.get('tracks_aligned')} tracks, {timing.get('tracks_skipped')} "
                "skipped.")
    else:
        text = (f"scores aligned to the audio by `prep align` ({timing.get('method')}, "
                f"{settings.get('feature_rate')} frames/s, tracks above a normalised chroma "
                f"cost of {settings.get('max_cost')} skipped): {timing.get('tracks_aligned')} "
                f"tracks aligned, {timing.get('tracks_skipped')} skipped.")
    error = timing.get("onset_error") or {}
    before, after = error.get("before") or {}, error.get("after") or {}
    if after.get("notes"):
        def figures(stats: Mapping[str, Any]) -> str:
            return (f"median {1000 * stats['median_s']:.0f} ms, 90th percentile "
                    f"{1000 * stats['p90_s']:.0f} ms, {100 * stats['within_50ms']:.0f} % within "
                    "50 ms")
        text += (f" Onset error against the true warp, all {after['notes']} notes: "
                 f"{figures(after)} (the unaligned score: {figures(before)}).")
    return text


def _source_section(ctx: _Context) -> list[str]:
    lines = ["## Source and attribution", ""]
    if ctx.corpus.synthetic:
        config = ctx.corpus.synth_config or {}
        lines += [
            f"The audio comes from the demo corpus `{ctx.corpus.path}`, rendered by "
            "scorecritic (`prep synth-slakh`, `prep/synth.py`) — not from Slakh2100:",
            "",
            "- **Music**: pop/rock songs generated by `prep/synth_music.py` from a seeded "
            "random generator (tempo, key, form, chord progressions, a song-level arrangement "
            "of which targets play in which sections; piano with sustain pedal, distorted "
            "guitar, electric bass, drums and one or two other pitched parts; see Music "
            "statistics).",
            f"- **Rendering**: FluidSynth {config.get('fluidsynth', '?')} with "
            f"{_soundfont_text(config)}, every stem on its own synthesiser"
            + (", with per-stem effects (settings in "
               f"`{SYNTH_CONFIG_FILE}`)" if config.get("effects") else ", dry")
            + ", loudness-normalised and mixed as Slakh does, 44.1 kHz 16-bit FLAC.",
            f"- **Settings** (`{SYNTH_CONFIG_FILE}`): "
            + ", ".join(f"{k} = {_setting_text(config[k])}" for k in sorted(config))
            + ".",
            "- **Layout and splits**: Slakh2100's exact folder layout and `metadata.yaml` "
            "fields, with track ids in Slakh's id ranges so that Slakh2100-split2 applies "
            "(it moves some of them).",
            "",
            "The generated MIDI, the rendered audio and these shards are scorecritic's own "
            "and are released under CC BY 4.0 like the Slakh-derived shards. The corpus format, "
            "the split file and the metadata conventions follow Slakh2100:",
            "",
            f"> {SLAKH_CITATION} CC BY 4.0, <http://www.slakh.com>.",
            "",
        ]
    else:
        lines += [
            "The audio and MIDI are from **Slakh2100**, licensed under Creative Commons "
            "Attribution 4.0 (CC BY 4.0, <https://creativecommons.org/licenses/by/4.0/>). "
            "Cite:",
            "",
            f"> {SLAKH_CITATION} <http://www.slakh.com>",
            "",
            "```bibtex",
            *SLAKH_BIBTEX.splitlines(),
            "```",
            "",
            "Slakh2100 renders 2100 tracks of the Lakh MIDI Dataset (Raffel, 2016) with "
            "sample-based virtual instruments. These shards are a derived work, released under "
            "CC BY 4.0 with the attribution above.",
            "",
        ]
    map_note = (
        " (selected by Slakh patch name, a list derived from merlresearch/"
        "hierarchical_music_separation, AGPL-3.0-or-later; see Known limitations)"
        if ctx.uses_patch_names else ""
    )
    filt = str(ctx.source.get("resample_filter", "soxr_hq"))
    lines += [f"**Score timing** (the MIDI the rolls and masks come from): "
              f"{score_timing_text(ctx.source.get('score_timing'))}", ""]
    lines += [
        "**What scorecritic changed** (the build, `prep/build.py`):",
        "",
        f"- kept only the stems of the selected classes ({', '.join(ctx.instruments)}) by "
        f"the instrument map `{ctx.map_source}`{map_note}; drum and other stems are never "
        "opened;",
        "- downmixed each stem to mono (channel mean), summed the stems of each class at their "
        f"own rate and resampled that sum to {SAMPLE_RATE} Hz ({filt}; resampling is linear, "
        "so this equals resampling each stem);",
        "- took each class's sum as that instrument's source and **re-mixed** the "
        "mixture as the sum of those sources only (Slakh's `mix.flac`, which holds every "
        "instrument, is not used);",
        "- computed features: magnitude STFT X, piano rolls Y from the stems' MIDI files "
        "(pretty_midi; "
        + ("note ends extended by the sustain pedal, MIDI CC 64" if sustain_applied(ctx.manifest)
           else "note-off times, sustain pedal not applied")
        + "), harmonic masks A and frame activity, and the training-set activity "
        "rates and class weights;",
        "- assigned splits by track id "
        f"({ctx.source.get('split_scheme', 'split2')}, see Provenance).",
        "",
        f"Method: {PAPER_CITATION}",
        "",
    ]
    return lines


def _schema_rows(ctx: _Context) -> list[list[str]]:
    """One row per format field, with dtype/shape/storage checked against the sample track."""
    fields = (*SAMPLE_FIELDS, *FRAME_FIELDS)
    if set(FIELD_DOCS) != set(fields):
        raise CardError(
            f"prep/card.py documents {sorted(FIELD_DOCS)} but the shard format has "
            f"{sorted(fields)}: update FIELD_DOCS"
        )
    n_inst = len(ctx.instruments)
    packed = DEFAULT_LAYOUT.bitpack_mask
    datasets = ctx.facts.datasets if ctx.facts else {}
    if "harmonic_mask" in datasets:
        packed = bool(datasets["harmonic_mask"].attrs.get("bitpacked", False))
    mask_bins = PACKED_BINS if packed else N_BINS
    symbolic: dict[str, tuple[tuple[str, int | None], ...]] = {
        "mix": (("n_samples", None),),
        "stems": (("I", n_inst), ("n_samples", None)),
        "spec": (("T", None), (str(N_BINS), N_BINS)),
        "roll": (("T", None), ("I", n_inst), (str(N_PITCHES), N_PITCHES)),
        "harmonic_mask": (("T", None), ("I", n_inst), (str(mask_bins), mask_bins)),
        "activity": (("T", None), ("I", n_inst)),
    }
    default_dtypes = {
        "mix": "float32", "stems": "float32", "spec": DEFAULT_LAYOUT.spec_dtype, "roll": "bool",
        "harmonic_mask": "uint8" if packed else "bool", "activity": "bool",
    }
    rows = []
    for name in fields:
        dims = symbolic[name]
        shape_text = "[" + ", ".join(d for d, _ in dims) + "]"
        fact = datasets.get(name)
        if fact is not None and ctx.facts is not None:
            track_id, n_samples, n_frames = ctx.facts.sample_track
            sizes = {"n_samples": n_samples, "T": n_frames}
            expected = tuple(sizes[d] if size is None else size for d, size in dims)
            if fact.shape != expected:
                raise CardError(
                    f"track {track_id}: dataset {name} has shape {fact.shape}, the card would "
                    f"document {shape_text} = {expected}"
                )
            dtype = fact.dtype
            storage = f"{fact.filters}, chunks {list(fact.chunks) if fact.chunks else '—'}"
        else:
            dtype = default_dtypes[name]
            comp = DEFAULT_LAYOUT.compression.get(name, "none")
            storage = comp + (" (not stored in this build)" if ctx.facts is not None else "")
        doc = FIELD_DOCS[name]
        if name == "harmonic_mask" and packed:
            doc += (f"; bit-packed: `np.unpackbits(a, axis=-1, count={N_BINS})` gives bool "
                    f"[T, I, {N_BINS}] (attrs bitpacked=True, unpacked_length={N_BINS})")
        if name == "spec" and dtype == "float16":
            doc += "; stored as float16, read back as float32"
        rows.append([f"`{name}`", f"`{dtype}`", f"`{shape_text}`", storage,
                     doc.replace("|", "\\|")])
    return rows


def _composition(ctx: _Context) -> list[str]:
    n_inst = len(ctx.instruments)
    lines = [
        "## Composition",
        "",
        "### Files",
        "",
        "```",
        f"{ctx.shards_shown}/{MANIFEST_NAME}              shard list, SHA-256, hours, activity "
        "rates, class weights, parameters",
        f"{ctx.shards_shown}/<split>/<split>-NNNNN.h5    whole tracks, group /tracks/<TrackId>",
        "```",
        "",
        "### Schema (one group `/tracks/<TrackId>` per track)",
        "",
        f"I = {n_inst} instruments in the order {', '.join(f'`{n}`' for n in ctx.instruments)} "
        f"(root attr `instruments`); T = n_frames = 1 + n_samples // {HOP_LENGTH}; frame t is "
        f"centred on sample {HOP_LENGTH}·t ({SAMPLE_RATE // HOP_LENGTH} frames/s, STFT with "
        f"`center=True`, N_FFT = {N_FFT}). All frame datasets are time-major. Booleans are "
        "h5py's enum-of-int8 bools.",
        "",
        *_table(["dataset", "dtype", "shape", "storage", "meaning and units"], _schema_rows(ctx)),
        "",
    ]
    if ctx.facts is not None:
        track_id, n_samples, n_frames = ctx.facts.sample_track
        lines += [
            f"Checked against track `{track_id}` ({n_samples} samples, {n_frames} frames). "
            f"Track attributes: {', '.join(f'`{a}`' for a in ctx.facts.track_attr_names)} "
            "(nested values are JSON strings listed in `json_attrs`).",
            "",
            "Root attributes of every shard (values of this build; `split` differs per shard):",
            "",
        ]
        root = ctx.facts.root_attrs
        rows = []
        for name in (*REQUIRED_ROOT_ATTRS, *sorted(set(root) - set(REQUIRED_ROOT_ATTRS))):
            if name not in root and name != "split":
                continue
            value = "per shard" if name == "split" else root[name]
            if name == "instrument_map":
                value = "the instrument map (see Provenance)"
            text = value if isinstance(value, str) else json.dumps(value)
            rows.append([f"`{name}`", _md_escape(ctx.display.show(str(text)))])
        lines += [*_table(["attribute", "value"], rows), ""]
    else:
        lines += [
            "Root attributes: " + ", ".join(f"`{a}`" for a in REQUIRED_ROOT_ATTRS) + ".",
            "",
        ]
    lines += _splits_table(ctx) + _activity_table(ctx) + _issues(ctx)
    return lines


def _splits_table(ctx: _Context) -> list[str]:
    rows = []
    total_bytes = 0
    total_hours = 0.0
    for split, stat in ctx.stats.items():
        hours = _split_hours(ctx.manifest, split, stat)
        total_bytes += stat["bytes"]
        total_hours += hours
        stems = _stem_tracks(ctx, split)
        rows.append([
            split, stat["tracks"], _fmt_hours(hours), f"{hours * 60:.1f}", stat["shards"],
            _fmt_mb(stat["bytes"]), f"{stat['bytes'] / 1e9 / max(hours, 1e-12):.2f}",
            _expected_gb_per_hour(ctx, stems, stat["tracks"]), stems,
        ])
    all_stems = sum(_stem_tracks(ctx, s) for s in ctx.stats)
    rows.append([
        "**total**", ctx.n_tracks, _fmt_hours(total_hours), f"{total_hours * 60:.1f}",
        sum(s["shards"] for s in ctx.stats.values()), _fmt_mb(total_bytes),
        f"{total_bytes / 1e9 / max(total_hours, 1e-12):.2f}",
        _expected_gb_per_hour(ctx, all_stems, ctx.n_tracks), all_stems,
    ])
    lines = [
        "### Splits, hours and bytes on disk",
        "",
        *_table(["split", "tracks", "hours", "minutes", "shards", "MB on disk", "GB per audio-h",
                 "≈ expected GB/h", "tracks with stems"], rows),
        "",
        "Hours are audio hours of the stored mixtures (`hours` in the manifest); MB and GB are "
        "10^6 and 10^9 bytes of the shard files. The expected figure comes from the storage "
        f"measurement in `prep/shards.py`: about {MEASURED_GB_PER_HOUR_NO_STEMS:.2f} GB per "
        f"audio-hour without stems plus about {MEASURED_GB_PER_HOUR_PER_STEM:.2f} GB/h per "
        f"stored stem (I = {len(ctx.instruments)} stems per track that stores them; stems mode "
        f"`{ctx.source.get('stems_mode', 'unknown')}`). Very short tracks carry relatively "
        "more HDF5 overhead.",
        "",
    ]
    if ctx.facts is not None:
        rows = []
        for split in ctx.stats:
            counts = ctx.facts.class_tracks.get(split, {})
            hours = ctx.facts.class_hours.get(split, {})
            rows.append([split] + [
                f"{counts.get(n, 0)} ({_fmt_hours(hours.get(n, 0.0))} h)" for n in ctx.instruments
            ])
        lines += [
            "Tracks containing each instrument (at least one stem of the class; the hours of "
            "those tracks). A track without a class has an all-zero roll and source for it:",
            "",
            *_table(["split", *ctx.instruments], rows),
            "",
        ]
    return lines


def _stem_tracks(ctx: _Context, split: str) -> int:
    """Tracks of ``split`` storing stems: counted in the shards, else from the stems mode."""
    if ctx.facts is not None:
        return ctx.facts.tracks_with_stems.get(split, 0)
    mode = ctx.source.get("stems_mode")
    stored = mode == "all" or (mode == "eval" and split in ("validation", "test"))
    return ctx.stats[split]["tracks"] if stored else 0


def _expected_gb_per_hour(ctx: _Context, stem_tracks: int, tracks: int) -> str:
    """GB per audio-hour predicted by the measured per-field sizes (tracks of equal length)."""
    share = stem_tracks / tracks if tracks else 0.0
    per_hour = MEASURED_GB_PER_HOUR_NO_STEMS + share * len(ctx.instruments) * (
        MEASURED_GB_PER_HOUR_PER_STEM)
    return f"{per_hour:.2f}"


def _activity_table(ctx: _Context) -> list[str]:
    rates = ctx.manifest.activity_rate or {}
    weights = ctx.manifest.class_weight or {}
    imap = (ctx.manifest.instrument_map or {}).get("classes") or {}
    paper_weights: dict[str, float] = {}
    if all(n in PAPER_ACTIVITY_RATE for n in ctx.instruments):
        values = class_weights(np.array([PAPER_ACTIVITY_RATE[n] for n in ctx.instruments]))
        paper_weights = {n: float(w) for n, w in zip(ctx.instruments, values, strict=True)}
    train_hours = (
        _split_hours(ctx.manifest, "train", ctx.stats["train"]) if "train" in ctx.stats else 0.0
    )
    rows = []
    for name in ctx.instruments:
        rate = rates.get(name)
        rows.append([
            f"`{name}`", imap.get(name, {}).get("name", name), _fmt_rate(rate),
            _fmt_rate(PAPER_ACTIVITY_RATE.get(name)), _fmt_rate(weights.get(name)),
            _fmt_rate(paper_weights.get(name)),
            "—" if rate is None else f"{rate * train_hours:.3f}",
        ])
    lines = [
        "### Instrument activity and class weights (train split)",
        "",
        *_table(["instrument", "class", "activity rate r_i", "paper r_i", "class weight w_i",
                 "w_i from paper r", "≈ active hours"], rows),
        "",
        "r_i is the fraction of training frames in which instrument i plays at least one note "
        "(`activity_rate` in the manifest); the paper reports piano 0.41, guitar 0.14, bass "
        "0.67 on Slakh2100-split2 with its own instrument grouping. The weights on the "
        "transcription loss are `class_weight` in the manifest, computed by "
        "`prep.features.class_weights`:",
        "",
        f"    {class_weight_formula()}",
        "",
        f"with floor = {features.ACTIVITY_RATE_FLOOR:g} (the paper does not give its formula). "
        "Active hours ≈ r_i × train hours.",
        "",
    ]
    if not rates:
        lines += ["No train split was built, so there are no activity rates or weights.", ""]
    return lines


def _listing(entries: Sequence[Mapping[str, str]], key: str, display: PathDisplay) -> list[str]:
    lines = [f"- `{e['track']}`: {_md_escape(display.show(str(e[key])))}"
             for e in entries[:MAX_LISTED]]
    if len(entries) > MAX_LISTED:
        lines.append(f"- … and {len(entries) - MAX_LISTED} more (all in `manifest.json`)")
    return lines


def _issues(ctx: _Context) -> list[str]:
    skipped = list(ctx.manifest.skipped or [])
    notes = list(ctx.manifest.warnings or [])
    problems = list(ctx.manifest.problems or [])
    lines = ["### Skipped tracks, warnings and dropped notes", ""]
    lines.append(f"**{len(skipped)} track(s) skipped** by the build"
                 + (" (first ones, sorted by id):" if skipped else "."))
    if skipped:
        lines += ["", *_listing(skipped, "reason", ctx.display)]
    lines += ["", f"**{len(notes)} warning(s)**" + (":" if notes else ".")]
    if notes:
        lines += ["", *_listing(notes, "warning", ctx.display)]
    if problems:
        lines += ["", f"**{len(problems)} manifest note(s)**:", ""]
        lines += [f"- {_md_escape(ctx.display.show(p))}" for p in problems[:MAX_LISTED]]
    if ctx.facts is not None:
        dropped = ", ".join(f"{s} {ctx.facts.dropped_notes.get(s, 0)}" for s in ctx.stats)
        lines += ["", f"Notes outside MIDI {MIDI_MIN}–{MIDI_MAX} dropped from the rolls: "
                  f"{dropped}."]
    return [*lines, ""]


DEFECT_CLASSES_TEXT = [
    "- **Known-bad renders** (white noise, wrong pitch or octave, unrendered notes, label "
    "lengths): a listed stem of a requested instrument skips its track; listed stems of other "
    "instruments are never opened (the mixture is the sum of the selected stems only).",
    "- **Stems without audio** ([slakh-utils#20](https://github.com/ethman/slakh-utils/issues/20)"
    "): a selected stem without an audio file skips its track, with a reason read from its "
    "`audio_rendered` flag (`true`: the copy is incomplete; `false` where other stems say "
    "`true`: Slakh never rendered it). Unselected stems marked rendered but missing are listed "
    "as not used.",
    "- **Bass octave** ([slakh-utils#18](https://github.com/ethman/slakh-utils/issues/18), "
    "[slakh-generation#2](https://github.com/ethman/slakh-generation/issues/2)): Slakh moves "
    "every bass note up an octave to render it, and notes below B1 (MIDI 35) in the original "
    "score one octave more, since that lowest octave is not rendered; users report the bass "
    "audio sounds an octave below its labels. A selected bass stem whose label "
    "(`MIDI/Sxx.mid`) has notes two octaves above `all_src.mid` is flagged; the rolls keep the "
    "labels as they are.",
]


def _defect_rows(ctx: _Context, defects: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    skipped = {str(s["track"]) for s in ctx.manifest.skipped or []}
    rows = []
    for d in defects[:MAX_LISTED]:
        action = str(d["action"])
        if action not in (SKIPPED_TRACK, NOT_USED, LEFT_OUT) and d["track"] in skipped:
            action += " (track skipped for another reason)"
        rows.append([f"`{d['track']}`", str(d.get("stem") or "–"),
                     str(d.get("instrument") or "–"), str(d["kind"]), action,
                     _md_escape(ctx.display.show(str(d["reason"])))])
    return rows


def _leakage_lines(ctx: _Context) -> list[str]:
    pairs = list(ctx.manifest.split_leakage or [])
    scheme = ctx.source.get("split_scheme", "split2")
    unread = [d for d in ctx.manifest.defects or [] if d.get("action") == LEFT_OUT]
    lines = ["### Split leakage", "",
             f"The {ctx.n_tracks} built tracks of the {scheme} splits "
             f"({', '.join(ctx.stats) or 'none'}) were compared"
             + (f", less {len(unread)} whose MIDI could not be read" if unread else "")
             + f". Method: {LEAKAGE_METHOD}; near-identical means Jaccard similarity >= "
             f"{NEAR_DUPLICATE_JACCARD}.", ""]
    if not pairs:
        return [*lines, "**None found**: no two tracks in different splits have identical or "
                "near-identical notes, or are transcriptions of the same song.", ""]
    kinds = {k: sum(1 for p in pairs if p["kind"] == k) for k in sorted({p["kind"] for p in pairs})}
    lines += [f"**{len(pairs)} pair(s)** across splits ("
              + ", ".join(f"{n} {k}" for k, n in kinds.items()) + "); the shards keep them. "
              "Slakh2100-split2 (the default) moves exact MIDI duplicates into one split, "
              "redux leaves them out.", ""]
    lines += _table(["track", "split", "track", "split", "kind", "Jaccard"],
                    [[f"`{p['track_a']}`", p["split_a"], f"`{p['track_b']}`", p["split_b"],
                      p["kind"], f"{p['similarity']:.3f}"] for p in pairs[:MAX_LISTED]])
    if len(pairs) > MAX_LISTED:
        lines.append(f"| … and {len(pairs) - MAX_LISTED} more (all in `manifest.json`) |"
                     " | | | | |")
    return [*lines, ""]


def _defects_section(ctx: _Context) -> list[str]:
    """Known Slakh defects found in this build, what was done with each, and split leakage."""
    lines = ["## Known defects and split leakage", ""]
    problems = [str(p) for p in ctx.manifest.problems or []]
    if any(REPORT_MISSING in p for p in problems):
        return [*lines, "Not recorded: these shards were built before the defect checks "
                "(`prep/defects.py`); rebuild them with `prep build-shards` to list the known "
                "defects found and any music shared across splits.", ""]
    known = load_known_defects()
    sources = ", ".join(f"<{s.url}>" for s in sorted(known.sources.values(),
                                                     key=lambda s: s.url))
    lines += [f"The build checks every track for Slakh2100's publicly reported defects "
              f"(`prep/defects.py`). Known-bad list: the {len(known.entries)} stems of "
              f"`{known.path}` (from {sources}), matched by track id *and* the metadata's "
              "`UUID` (the Lakh MIDI MD5), so no other corpus is matched.", "",
              *DEFECT_CLASSES_TEXT, ""]
    if ctx.corpus.synthetic:
        lines += ["This corpus is not Slakh2100: its tracks reuse Slakh's ids, not its music, "
                  "so no known-bad entry and no bass-octave check applies.", ""]
    defects = list(ctx.manifest.defects or [])
    lines.append(f"**{len(defects)} defect(s) found** in this corpus"
                 + ((" (first ones, sorted by track):" if len(defects) > MAX_LISTED else ":")
                    if defects else "."))
    if defects:
        summary = summarise(defects)
        lines += ["", *_table(["defect", "what was done", "stems"],
                              [[kind, action, n] for kind, actions in summary.items()
                               for action, n in actions.items()]), ""]
        lines += _table(["track", "stem", "instrument", "defect", "what was done", "reason"],
                        _defect_rows(ctx, defects))
        if len(defects) > MAX_LISTED:
            lines.append(f"| … and {len(defects) - MAX_LISTED} more (all in `manifest.json`) |"
                         " | | | | |")
    lines.append("")
    return lines + _leakage_lines(ctx)


def reconstruct_command(manifest: Manifest, display: PathDisplay,
                        shards_shown: str) -> str:
    """The ``prep build-shards`` command line that the manifest's parameters correspond to."""
    source = manifest.source or {}
    params = manifest.params or {}
    words = ["prep", "build-shards"]
    corpus = corpus_root(manifest)
    if corpus:
        words += ["--slakh-root", display.show(corpus)]
    words += ["--out", shards_shown, "--instruments", ",".join(manifest.instruments)]
    words += ["--split-scheme", str(source.get("split_scheme", "split2"))]
    map_source = display.show(instrument_map_source(manifest) or DEFAULT_INSTRUMENT_MAP_SOURCE)
    if map_source != DEFAULT_INSTRUMENT_MAP_SOURCE:
        words += ["--instrument-map", map_source]
    words += ["--stems", str(source.get("stems_mode", "eval"))]
    words += ["--n-harmonics", str(params.get("n_harmonics", DEFAULT_N_HARMONICS))]
    words += ["--resample-filter", str(source.get("resample_filter", "soxr_hq")).split()[-1]]
    words += ["--sustain" if sustain_applied(manifest) else "--no-sustain"]
    return shlex.join(words)


def _rendering_preset(config: Mapping[str, Any]) -> str | None:
    """The ``--preset`` whose rendering (soundfont pool, effects on/off) the corpus used,
    when that is not the default preset's; None for the default or when no preset matches.

    ``synth_slakh.json`` records the fonts and effects but not the preset's name, and
    ``--tracks/--seconds/--seed`` alone give the default preset's rendering.
    """
    from prep.synth import SYNTH_PRESETS

    fonts = config.get("soundfonts") or [config.get("soundfont", "FluidR3_GM.sf2")]
    fonts = [str(f) for f in (fonts if isinstance(fonts, list) else [fonts])]
    matches = [name for name, preset in SYNTH_PRESETS.items()
               if [Path(f).name for f in getattr(preset, "soundfonts", ())] == fonts
               and bool(getattr(preset, "effects", False)) == bool(config.get("effects"))]
    default = next(iter(SYNTH_PRESETS))  # the CLI's default preset is listed first (demo)
    if not matches or default in matches:
        return None
    sized = [n for n in matches if SYNTH_PRESETS[n].tracks == config.get("tracks")]
    return (sized or matches)[0]


def synth_command(corpus: CorpusInfo) -> str:
    """The ``prep synth-slakh`` command line that renders the demo corpus again."""
    config = corpus.synth_config or {}
    words = ["prep", "synth-slakh", "--out", corpus.path]
    preset = _rendering_preset(config)
    if preset is not None:
        words += ["--preset", preset]
    for key in ("tracks", "seconds", "seed"):
        if key in config:
            value = config[key]
            words += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)


def _provenance(ctx: _Context) -> list[str]:
    params = ctx.manifest.params or {}
    source = ctx.source
    how = ("as given to `prep card --command`" if ctx.command_given else
           "reconstructed from the manifest's parameters; `--shard-size-mb` and `--workers` are "
           "not recorded: they change how tracks are grouped into files and how fast the build "
           "runs, not the tracks' content")
    lines = ["## Provenance", ""]
    if ctx.corpus.synthetic:
        lines += ["Corpus command (from the corpus's `synth_slakh.json`; the same settings and "
                  "FluidSynth version give byte-identical files):", "", "```sh",
                  synth_command(ctx.corpus), "```", ""]
    lines += [f"Build command ({how}):", "", "```sh", ctx.command, "```", ""]
    odd = {k: params[k] for k, default in (("tolerance_bins", DEFAULT_TOLERANCE_BINS),
                                           ("tuning_hz", TUNING_HZ))
           if k in params and params[k] != default}
    if odd:
        lines += [f"Note: {odd} differ from the CLI's fixed values, so this build was made "
                  "through the Python API (`prep.build.build_shards`).", ""]
    rows = [[f"`{k}`", f"`{json.dumps(params[k])}`"] for k in params]
    rows += [[f"`{k}`", f"`{_md_escape(ctx.display.show(str(v)))}`"]
             for k, v in sorted(source.items()) if not isinstance(v, Mapping)]
    lines += [
        "Parameters (`params` and `source` in the manifest):",
        "",
        *_table(["parameter", "value"], rows),
        "",
        f"Built by scorecritic {source.get('package_version', 'unknown')}; this card written "
        f"by scorecritic {PACKAGE_VERSION} (`prep card`).",
        "",
    ]
    scheme = source.get("split_scheme", "split2")
    if scheme == "split2":
        expected = " / ".join(str(v) for v in SPLIT2_COUNTS.values())
        lines += [
            "**Split definition**: Slakh2100-**split2**, the paper's split, from "
            "`prep/data/splits_v2.json` (copied from `splits/splits_v2.json` of "
            "[ethman/slakh-utils](https://github.com/ethman/slakh-utils), MIT licence). A "
            "track keeps its original split by id (Track00001–01500 train, 01501–01875 "
            "validation, 01876–02100 test) unless the file says `\"action\": \"move\"`. On the "
            f"full Slakh2100 this gives {expected} train / validation / test tracks before "
            "skipping." + (" The demo corpus uses ids in those ranges, so split2 moves some "
                           "of its tracks too." if ctx.corpus.synthetic else ""),
            "",
        ]
    else:
        lines += [f"**Split definition**: `{scheme}` (original Slakh2100 id ranges: "
                  "1–1500 train, 1501–1875 validation, 1876–2100 test).", ""]
    lines += _instrument_map(ctx)
    return lines


def _instrument_map(ctx: _Context) -> list[str]:
    imap = ctx.manifest.instrument_map or {}
    classes = imap.get("classes") or {}
    gm = _gm_program_names()
    rows = []
    for name in ctx.instruments:
        entry = classes.get(name, {})
        programs = ", ".join(f"{p} {gm.get(int(p), '?')}" for p in entry.get("programs", []))
        patches = list(entry.get("plugin_names", []))
        shown = ", ".join(f"`{p}`" for p in patches[:6]) + (
            f" … ({len(patches)} in all)" if len(patches) > 6 else "")
        rows.append([f"`{name}`", entry.get("name", name), programs or "—", shown or "—"])
    return [
        f"**Instrument map** `{ctx.map_source}` (a stem belongs to a class when its 0-based "
        "General MIDI `program_num` or its Slakh patch `plugin_name` is listed; drum stems "
        "never do; several stems of one class are summed):",
        "",
        *_table(["class", "name", "GM programs (0-based)", "patch names"], rows),
        "",
    ]


def _uses(ctx: _Context) -> list[str]:
    lines = [
        "## Intended uses",
        "",
        "- Training and evaluating score-supervised music separation and multi-instrument "
        "transcription as in Hung et al. (2021): the transcriptor (step 1), the separator "
        "trained through it (steps 2–3), the classifier-critic baseline and, where stems are "
        "stored, the supervised baseline and SI-SDR evaluation.",
        "- Studying weak/score supervision, class imbalance (activity rates) and harmonic "
        "masks on aligned synthetic data.",
    ]
    if ctx.corpus.synthetic:
        lines.append("- Smoke tests, tutorials, CI and debugging of the scorecritic pipeline "
                     "(the demo corpus builds in about a minute on two CPU cores).")
    lines += [
        "",
        "## Out-of-scope uses",
        "",
        "- Reporting results as comparable to the paper's Table 1/2"
        + (": this is the synthetic demo corpus, not Slakh2100." if ctx.corpus.synthetic else
           " unless the build matches its setting (split2, the three classes, every track).")
        + "",
        "- Claims about separation or transcription of real recordings: the audio is rendered "
        "from MIDI, and the scores are perfectly aligned by construction.",
        "- Instruments other than the selected classes (their stems are not in the mixtures), "
        "drums, vocals, or stereo/spatial separation (everything is mono).",
        "- Redistributing the shards without the CC BY 4.0 attribution above.",
        "",
    ]
    return lines


def _limitations(ctx: _Context) -> list[str]:
    lines = ["## Known limitations", ""]
    if ctx.corpus.synthetic:
        config = ctx.corpus.synth_config or {}
        effects = ", with seeded per-stem effects" if config.get("effects") else ", dry"
        lines.append(
            f"- **Synthetic audio**: {_font_count_text(config)} played by FluidSynth"
            f"{effects}, from generated, grid-quantised MIDI. Timbres, dynamics and "
            "arrangements are far less varied than Slakh2100's 187 patches, so numbers from "
            "these shards say how the method behaves on this corpus, not on real Slakh."
        )
    lines.append(
        "- **Rendered, not recorded**: Slakh2100 itself is rendered from Lakh MIDI files with "
        "sample-based virtual instruments (187 patches); there are no performers, rooms or "
        "mastering, and the mixtures here are plain sums of the selected stems."
    )
    lines += [
        "- **Aligned-score assumption**: the rolls come from the very MIDI files the audio was "
        "rendered from, so scores and audio are aligned to the sample. Real scores are not; "
        "the method assumes aligned scores.",
        f"- **Only {len(ctx.instruments)} instrument classes** "
        f"({', '.join(ctx.instruments)}), chosen by the instrument map. Tracks without any of "
        "them are skipped; classes absent from a track are silent in its mixture.",
        _sustain_limitation(ctx),
        f"- **Range**: notes outside MIDI {MIDI_MIN}–{MIDI_MAX} are dropped from the rolls "
        "(counted above); drum stems never contribute to any roll.",
        "- **Harmonic mask**: equal-tempered harmonics f0·(l+1), l < "
        f"{(ctx.manifest.params or {}).get('n_harmonics', DEFAULT_N_HARMONICS)}, of "
        f"A4 = {(ctx.manifest.params or {}).get('tuning_hz', TUNING_HZ):g} Hz, ±"
        f"{(ctx.manifest.params or {}).get('tolerance_bins', DEFAULT_TOLERANCE_BINS)} "
        "bin; inharmonicity (piano strings), detuning and noise components are not modelled. "
        "The paper does not give the number of harmonics.",
        "- **Activity rates** depend on the instrument map; the paper's grouping of Slakh "
        "patches into its three classes is not published with it, so its rates are a "
        "reference, not a target.",
        "- **Patch-map licence**: the default map selects stems by General MIDI program "
        f"(`{DEFAULT_INSTRUMENT_MAP_SOURCE}`, MIT). The optional by-patch map "
        f"`prep/data/{PATCH_MAP_NAME}` is derived from merlresearch/"
        "hierarchical_music_separation, whose class definitions are AGPL-3.0-or-later; "
        + ("**this build used patch names**, so check that licence before redistributing the "
           "map with the shards." if ctx.uses_patch_names else
           "this build did not use patch names."),
    ]
    if not ctx.corpus.found:
        lines.append(
            f"- The corpus folder `{ctx.corpus.path}` was not found when this card was written; "
            "it is assumed to be Slakh2100."
        )
    return [*lines, ""]


def _sustain_limitation(ctx: _Context) -> str:
    """The known-limitations bullet on note ends: sustain pedal, pitch bends, releases."""
    bends = ("Pitch bends are ignored: a bent note keeps its nominal MIDI pitch in Y and A "
             "(`prep.build.read_stem_notes` reads note numbers only).")
    if sustain_applied(ctx.manifest):
        return ("- **Note ends**: a note sounds from note-on to note-off, extended by its "
                "stem's sustain pedal (MIDI CC 64, value >= 64 = down) until the pedal is "
                "lifted or the key is struck again (`prep.features.apply_sustain`, the rule of "
                "Magenta's note_seq; build option `--sustain`, root attr `sustain_pedal`; "
                "track attr `sustained_notes` counts the extended notes). " + bends + " The "
                "release tail after a note ends (the sound decaying) is unlabelled.")
    return ("- **Sustain pedal not applied** (built with `--no-sustain`, or before the option "
            "existed): rolls use each note's MIDI note-on/note-off times (pretty_midi "
            "`Note.start`/`end`, `prep.build.read_stem_notes`); sustain-pedal (CC 64) events "
            "are ignored, so a pedalled note is marked inactive while it still sounds in the "
            "audio. " + bends + " Release tails after note-off are unlabelled.")


def _fmt_stat(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def independent_together(rates: Sequence[float]) -> list[float]:
    """P(exactly k of the classes sound) if each sounds independently with its rate.

    An orientation for the "classes sounding together" rows where Slakh publishes no
    figure: the paper's rates combined as if the instruments ignored each other.
    """
    dist = [1.0]
    for rate in rates:
        nxt = [0.0] * (len(dist) + 1)
        for k, p in enumerate(dist):
            nxt[k] += p * (1 - rate)
            nxt[k + 1] += p * rate
        dist = nxt
    return dist


def _music_section(ctx: _Context) -> list[str]:
    """Music statistics of this corpus beside Slakh's (prep/music_stats.py)."""
    music = ctx.music or CorpusMusic(None, "not measured (`prep.card.render_card` was given "
                                           "no corpus statistics)")
    ours = music.stats
    sustain = sustain_applied(ctx.manifest)
    try:
        slakh, slakh_info = load_reference(sustain)
    except MusicStatsError as error:
        raise CardError(str(error)) from error
    paper_known = all(n in PAPER_ACTIVITY_RATE for n in ctx.instruments)

    def value(stats: MusicStats | None, name: str, key: str, digits: int = 3) -> str:
        if stats is None or name not in stats.classes:
            return "—"
        return _fmt_stat(getattr(stats.classes[name], key), digits)

    rows: list[list[str]] = []
    labels = (("active_fraction", "active-frame fraction", 3),
              ("mean_polyphony", "mean polyphony while active (pitches)", 2),
              ("notes_per_second", "notes per second of track", 2),
              ("notes_per_active_second", "notes per second while active", 2))
    for name in ctx.instruments:
        for key, label, digits in labels:
            published = (f"{PAPER_ACTIVITY_RATE[name]:.2f} ¹" if key == "active_fraction"
                         and name in PAPER_ACTIVITY_RATE else "—")
            rows.append([f"`{name}` {label}", value(ours, name, key, digits),
                         value(slakh, name, key, digits), published])
    n_classes = len(ctx.instruments)
    estimate = (independent_together([PAPER_ACTIVITY_RATE[n] for n in ctx.instruments])
                if paper_known else None)
    for k in range(n_classes + 1):
        ours_k = _fmt_stat(ours.together[k]) if ours is not None else "—"
        slakh_k = (_fmt_stat(slakh.together[k]) if len(slakh.together) == n_classes + 1
                   and list(slakh.classes) == ctx.instruments else "—")
        rows.append([f"frames with {k} of the {n_classes} classes sounding", ours_k, slakh_k,
                     "—" if estimate is None else f"({estimate[k]:.2f}) ²"])
    rows.append(["tracks / hours measured",
                 "—" if ours is None else f"{ours.tracks} / {ours.seconds / 3600:.3f}",
                 f"{slakh.tracks} / {slakh.seconds / 3600:.3f}", "2100 / 145 ³"])
    rows.append(["notes extended by the sustain pedal",
                 "—" if ours is None else str(ours.counts.sustained_notes),
                 str(slakh.counts.sustained_notes), "—"])
    stems = slakh_info.get("stems", {})
    stems_text = ", ".join(f"{n} {'+'.join(stems[n])}" for n in ctx.instruments if stems.get(n))
    pedal_text = ("It has no sustain-pedal events." if slakh.counts.pedal_events == 0 else
                  f"Its selected stems have {slakh.counts.pedal_events} sustain-pedal events.")
    lines = [
        "## Music statistics",
        "",
        "How often, how densely and how much together the target instruments play, measured "
        "from the scores the rolls are built from (`prep/music_stats.py`: the tracks in these "
        "shards, their `metadata.yaml` and selected stems' MIDI files, the build's instrument "
        f"map, sustain pedal {'applied' if sustain else 'not applied'} as in this build; 32 "
        "frames/s as in the shards; over all frames of all tracks, so a track without a class "
        "counts as silence for it; duration-weighted).",
        "",
    ]
    if ours is None:
        lines += [f"This corpus: {music.note}.", ""]
    lines += [
        *_table(["statistic", "this corpus", "Slakh2100 Track00001", "Slakh2100 published"],
                rows),
        "",
        "- **This corpus**: the tracks of this shard set"
        + (f"; {len(ours.skipped)} could not be measured" if ours and ours.skipped else "")
        + ".",
        "- **Slakh2100 Track00001**: one real Slakh track (metadata and MIDI; stems "
        f"{stems_text or '—'}), measured the same way and stored in "
        "`prep/data/slakh_track00001_music_stats.json` (regenerate with `python -m "
        "prep.music_stats --reference tests/fixtures/Track00001`). Source: "
        f"{SLAKH_CITATION} CC BY 4.0. One track is an example, not an average. {pedal_text}",
        "- ¹ The paper's training-set frame activity rates on Slakh2100-split2 "
        f"({PAPER_CITATION.rstrip('.')}), with its own, unpublished grouping of Slakh patches into the "
        "three classes; the same figures as in the activity table above.",
        "- ² Not published: what the paper's rates would give if the three instruments "
        "sounded independently of each other, for orientation only.",
        f"- ³ {SLAKH_FACTS} (Manilow et al. 2019, <http://www.slakh.com>). Slakh publishes no "
        "polyphony or note-rate figures.",
        "",
    ]
    return lines


def _maintenance(ctx: _Context) -> list[str]:
    version = int(ctx.manifest.format_version)
    changelog = [f"- format_version {v}: {text}" for v, text in sorted(FORMAT_CHANGELOG.items())
                 if v <= version]
    out = ctx.shards_shown
    return [
        "## Maintenance and changelog",
        "",
        f"Shard format_version **{version}** (`prep/shards.py`); readers refuse other "
        "versions, so rebuild after a format change. Builds are deterministic: the same corpus "
        "and options give byte-identical shards (same SHA-256).",
        "",
        "Regenerate and check:",
        "",
        "```sh",
        *([synth_command(ctx.corpus)] if ctx.corpus.synthetic else []),
        ctx.command,
        f"prep verify {shlex.quote(out)}      # checksums, files, schema, shapes against the "
        "manifest",
        f"prep card {shlex.quote(out)}        # this card (-> {out}/{CARD_NAME})",
        "```",
        "",
        "`prep build-shards` resumes an interrupted build and keeps finished shards; "
        f"`prep index {out}` rebuilds `manifest.json` from the build records (e.g. after "
        "`--part` builds). Format changelog:",
        "",
        *changelog,
        "",
    ]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def render_card(
    manifest: Manifest,
    facts: ShardFacts | None = None,
    command: str | None = None,
    corpus: CorpusInfo | None = None,
    display: PathDisplay | None = None,
    shards_shown: str = "OUT",
    music: CorpusMusic | None = None,
) -> str:
    """The data card (Markdown) of a shard set.

    Args:
        manifest: the shard set's manifest (:func:`prep.shards.read_manifest`).
        facts: shard attributes and headers (:func:`collect_shard_facts`); without them the
            schema shows the format's defaults and per-class track counts are left out.
        command: the exact build command; ``None`` reconstructs it from the manifest.
        corpus: the source corpus (:func:`detect_corpus` by default).
        display: how absolute paths are shown (:func:`make_path_display` by default).
        shards_shown: how the shard folder is named in the card.
        music: the corpus's music statistics (:func:`measure_corpus_music`); without them
            the "Music statistics" section shows only Slakh's column.

    Returns:
        The card text, a deterministic function of the inputs.
    """
    display = display or make_path_display(None, manifest, command)
    corpus = corpus or detect_corpus(manifest, display)
    ctx = _Context(
        manifest=manifest, facts=facts, corpus=corpus, display=display,
        command=command.strip() if command else reconstruct_command(manifest, display,
                                                                    shards_shown),
        command_given=bool(command), shards_shown=shards_shown,
        instruments=[str(n) for n in manifest.instruments], stats=_split_stats(manifest),
        music=music,
    )
    title = "the synthetic demo corpus" if corpus.synthetic else "Slakh2100"
    lines = [
        *_yaml_header(ctx),
        f"# Data card: scorecritic shards of {title} ({', '.join(ctx.instruments)})",
        "",
        *_summary(ctx),
        *_source_section(ctx),
        *_composition(ctx),
        *_defects_section(ctx),
        *_music_section(ctx),
        *_provenance(ctx),
        *_uses(ctx),
        *_limitations(ctx),
        *_maintenance(ctx),
    ]
    return display.show("\n".join(lines).rstrip("\n") + "\n")


def write_card(shards_root: Path, out: Path | None = None, command: str | None = None) -> Path:
    """Write the data card of the shard set in ``shards_root`` (``prep card``).

    Args:
        shards_root: the build's output folder (holds ``manifest.json``).
        out: card file; default ``shards_root/DATA_CARD.md``.
        command: the exact build command to print; default: reconstructed from the manifest.

    Returns:
        The path written.

    Raises:
        ShardError: no or unreadable manifest (the message names its path), or a shard it
            lists is missing; CardError: the shards disagree with the documented format.
    """
    shards_root = Path(shards_root)
    manifest = read_manifest(shards_root)
    incomplete = check_against_plan(shards_root, manifest)
    if incomplete:  # a card describes a complete, unchanged shard set, or nothing
        more = f" (and {len(incomplete) - 1} more)" if len(incomplete) > 1 else ""
        raise CardError(f"{incomplete[0]}{more}; no card written (`prep verify "
                        f"{shards_root}` lists every problem)")
    facts = collect_shard_facts(shards_root, manifest)
    display = make_path_display(shards_root, manifest, command)
    shown = display.show(str(shards_root.resolve()))
    text = render_card(manifest, facts=facts, command=command, display=display,
                       shards_shown=shown, music=measure_corpus_music(manifest))
    target = Path(out) if out is not None else shards_root / CARD_NAME
    return atomic_write_text(target, text, action="cannot write data card")


def card_header(text: str) -> dict[str, Any]:
    """The YAML header of a card (between the leading ``---`` lines), parsed."""
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if not match:
        raise CardError("card has no YAML header between '---' lines")
    header = yaml.safe_load(match.group(1))
    if not isinstance(header, dict):
        raise CardError("card's YAML header is not a mapping")
    return header


__all__ = [
    "CARD_NAME",
    "CardError",
    "CorpusInfo",
    "CorpusMusic",
    "PAPER_ACTIVITY_RATE",
    "PathDisplay",
    "ShardFacts",
    "card_header",
    "class_weight_formula",
    "collect_shard_facts",
    "detect_corpus",
    "independent_together",
    "measure_corpus_music",
    "make_path_display",
    "reconstruct_command",
    "render_card",
    "size_category",
    "sustain_applied",
    "synth_command",
    "write_card",
]
