"""The shard format: the HDF5 files ``prep build-shards`` writes and training reads.

This module is the only code that knows the on-disk layout. Everything else goes through
``ShardWriter`` (prep) and ``ShardSet`` (train, evaluation) or ``verify``/``inspect_shard``.

Layout of an output folder ``OUT``::

    OUT/manifest.json                  shards, checksums, hours, class weights (see below)
    OUT/<split>/<split>-NNNNN.h5       whole tracks, a few hundred MB per file

Each shard (``format_version`` 1) opens with plain h5py::

    /                                  root attrs: format_version, split, sample_rate (16000),
                                       n_fft (2048), hop_length (500), window ("sqrt_hann"),
                                       instruments (ordered names), midi_min (21), midi_max (108),
                                       tuning_hz, n_harmonics, harmonic_tolerance_bins,
                                       source_corpus, split_scheme, package_version, [any other
                                       `source` keys; nested values JSON-encoded]
    /tracks/<TrackId>/                 attrs: n_samples, n_frames, duration_s, the builder's
                                       pass-through attrs (source stems, programs, patch names,
                                       dropped_notes ...); nested values are JSON strings and
                                       their names are listed in attr ``json_attrs``
        mix            float32 [n_samples]                 mono mixture, 16 kHz
        stems          float32 [I, n_samples]              optional, instrument order as root
        spec           float16 [T, 1025]                   X = |STFT(mix)|, linear magnitude
        roll           bool    [T, I, 88]                  Y, column k = MIDI 21 + k
        harmonic_mask  uint8   [T, I, 129]                 A, np.packbits(bool[T, I, 1025],
                                                           axis=-1); attrs bitpacked=True,
                                                           unpacked_length=1025
        activity       bool    [T, I]                      roll.any(-1)

with ``T = n_frames = 1 + n_samples // 500`` (frame t centred on sample 500 t). Frame datasets
are time-major, so a 4-s training window (129 frames) is one contiguous slice per dataset.
Booleans are h5py's enum-of-int8 bools. The group order of tracks is their insertion order.

Storage, chosen by measurement (``python -m benchmarks.perf.loading``: the real Slakh
Track00001 score rendered with FluidSynth, piano/guitar/bass, 5 copies = 20 min, I = 3, no
stems; 1500 random 129-frame windows of spec+roll+harmonic_mask+activity read through
``ShardSet.read_frames`` in one process, files in the page cache, best of 3 passes, on the
2-core dev machine while other jobs ran; "per CPU-s" counts this process's user+sys time, the
stable figure on a shared machine, wall-clock windows/s is what the load left)::

    layout (chunk frames, filters)          GB/audio-hour  windows per CPU-s  windows/s (wall)
    c32  spec none, masks lzf                   0.472           3622              3622
    c64  spec none, masks lzf                   0.471           3716              3716
    c128 spec none, masks lzf                   0.474           3629              3628
    c256 spec none, masks lzf                   0.474           3624              3623
    c64  no compression                         0.544           3618              3617
    c64  no compression, mask as bool           0.854           3110              3110
    c64  masks lzf, mask as bool                0.487           1012              1012
    c64  spec lzf, masks lzf                    0.471           3563              3563
    c64  spec shuffle+lzf, masks lzf            0.465           1273              1273
    c64  spec gzip1, masks gzip1                0.449            781               781
    c64  spec none, masks gzip1 <- default      0.470           3682              3682
    c64  spec shuffle+gzip1, masks lzf          0.431           1051              1051

(re-measured 2026-11-24 on the idle 2-core machine, 1000 windows, medians of 3.)

(These figures are ``read_frames``, h5py slicing per window and field. Training reads through
``ShardSet.read_stored_frames``, below h5py: ~15k windows per CPU-s on the default layout while
the decompressed mask chunks stay in its cache, ~4.5k when they do not, the raw rate with
uncompressed masks; reports/bench/findings/34-window-loading.md.)

So: 64-frame chunks (2 s; chunk length hardly matters for a 129-frame window), float16 spec
uncompressed (lzf gains nothing on float16 magnitudes, shuffle/gzip save <= 8 % at 3x the CPU),
roll/mask/activity gzip level 1 (they are sparse: without compression the size target of
0.5 GB/h is missed; lzf reads as fast but is not deterministic: h5py's bundled liblzf leaves its
hash table uninitialised, so the same chunk sometimes compresses to different bytes and two
builds of one corpus would not be checksum-equal; zlib's output is a pure function of its input),
harmonic mask bit-packed (8x smaller than bools before compression, and 3x cheaper to read
than lzf-compressed bools), audio uncompressed in 32000-sample chunks. Mix (0.23 GB/h) and
spec (0.24 GB/h) are nearly all of the size; stems add 0.23 GB/h per instrument.

Manifest (``OUT/manifest.json``): the typed :class:`Manifest` (``schema_version`` 3), filled by
``prep build-shards`` and rebuilt from the build records by ``prep index``::

    {"shards": [{"path": "train/train-00000.h5", "sha256": ..., "bytes": ..., "split": "train",
                 "tracks": [{"track_id", "n_frames", "n_samples", "has_stems"}]}],
     "instruments": [...], "hours": {split: hours}, "params": FeatureParams, "source": {...},
     "instrument_map": ..., "activity_rate": {instrument: rate},
     "class_weight": {instrument: weight}  (train split), "skipped": [{"track", "reason"}],
     "warnings": [...], "problems": [...], "defects": [...], "split_leakage": [...],
     "provenance": {"corpus_root", "hosts", "built_from", "built_to", ...},
     "plan_id": ..., "planned_shards": [path, ...], "unverified": [path, ...],
     "format_version": 1, "schema_version": 3}

Integrity: the build plan is the source of truth. ``prep build-shards`` writes the plan
(``OUT/plan.json``: every shard of the corpus and options, with the key of its content, see
:class:`BuildPlanFile`) before it builds, and next to each shard a build record
``<split>-NNNNN.build.json`` holding the SHA-256 the build wrote. The manifest lists a shard
with that checksum only; ``planned_shards`` is every shard file the plan expects, so
:func:`verify` reports each missing, extra or changed shard, and a ``--part`` or interrupted
build never verifies as complete. ``unverified`` names shards whose bytes differ from their
build record that ``prep index --accept-unverified`` was told to accept: :func:`verify` still
reports them. Shard sets written with :class:`ShardWriter` directly (tests, benchmarks) have
no plan: ``plan_id`` is empty and only the listed checksums are checked.

Every field is part of the manifest's content except ``provenance`` (where and when); the
shards themselves never name a place, a host or a time, so their checksums do not depend on
where they were built.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prep import __version__ as PACKAGE_VERSION
from prep.atomic import (  # noqa: F401  (re-exported: part of the format's public API)
    PARTIAL_SUFFIX,
    ShardWriteError,
    atomic_write_text,
    discard,
    fsync_folder,
    partial_path,
    write_error,
    writer_token,
)
from prep.faults import fault_point
from prep.features import (
    HOP_LENGTH,
    N_BINS,
    N_FFT,
    N_PITCHES,
    SAMPLE_RATE,
    FeatureParams,
    class_weights,
)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".h5"
DEFAULT_TARGET_SHARD_BYTES = 256 * 2**20

FRAME_FIELDS = ("spec", "roll", "harmonic_mask", "activity")
SAMPLE_FIELDS = ("mix", "stems")
REQUIRED_DATASETS = ("mix", "spec", "roll", "harmonic_mask", "activity")
REQUIRED_ROOT_ATTRS = (
    "format_version",
    "split",
    "sample_rate",
    "n_fft",
    "hop_length",
    "window",
    "instruments",
    "midi_min",
    "midi_max",
    "tuning_hz",
    "n_harmonics",
    "harmonic_tolerance_bins",
    "source_corpus",
    "split_scheme",
    "package_version",
)
PACKED_BINS = (N_BINS + 7) // 8  # 129 bytes per packed harmonic-mask row


class ShardError(Exception):
    """A shard or manifest is missing, corrupt, inconsistent or of another format version."""


#: Rebuilding changed or missing shards; never ``prep index``, which would record the changed
#: bytes as if the build had written them.
REBUILD_HINT = ("rebuild it with `prep build-shards` and the same options (it resumes: only "
                "missing or changed shards are rebuilt)")


# --------------------------------------------------------------------------------------------
# Storage layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageLayout:
    """How the datasets are chunked and compressed (readers do not need to know).

    ``compression`` maps dataset name -> filter: ``"none"``, ``"lzf"``, ``"gzip<level>"``, with
    an optional ``"shuffle+"`` prefix (byte shuffle before compression).
    """

    chunk_frames: int = 64
    spec_dtype: str = "float16"
    bitpack_mask: bool = True
    compression: Mapping[str, str] = field(
        default_factory=lambda: {
            "mix": "none",
            "stems": "none",
            "spec": "none",
            "roll": "gzip1",
            "harmonic_mask": "gzip1",
            "activity": "gzip1",
        }
    )

    def filter_kwargs(self, dataset: str) -> dict[str, Any]:
        """h5py ``create_dataset`` keyword arguments for ``dataset``'s filter."""
        spec = self.compression.get(dataset, "none")
        kwargs: dict[str, Any] = {}
        if spec.startswith("shuffle+"):
            kwargs["shuffle"] = True
            spec = spec[len("shuffle+") :]
        if spec == "none":
            pass
        elif spec == "lzf":
            kwargs["compression"] = "lzf"
        elif spec.startswith("gzip"):
            kwargs["compression"] = "gzip"
            kwargs["compression_opts"] = int(spec[4:] or 4)
        else:
            raise ValueError(f"unknown compression {spec!r} for dataset {dataset!r}")
        return kwargs


# Measured with `benchmarks/perf/loading.py`; the numbers are in the module docstring.
DEFAULT_LAYOUT = StorageLayout()


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class TrackArrays:
    """Everything stored for one track (time-major; see the module docstring for shapes)."""

    track_id: str
    mix: np.ndarray
    stems: np.ndarray | None
    spec: np.ndarray
    roll: np.ndarray
    harmonic_mask: np.ndarray
    activity: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackInfo:
    """One track of a :class:`ShardSet`."""

    track_id: str
    shard_path: Path
    n_samples: int
    n_frames: int
    has_stems: bool

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


@dataclass(frozen=True)
class TrackEntry:
    """One track of a shard, as the manifest lists it."""

    track_id: str
    n_frames: int
    n_samples: int
    has_stems: bool


@dataclass
class ShardRecord:
    """A finished shard, as listed in the manifest (``path`` relative to OUT)."""

    path: str
    sha256: str
    bytes: int
    split: str
    tracks: list[TrackEntry]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShardRecord:
        """Parse and check one ``shards[k]`` entry; ShardError names ``where`` and the field."""
        fields = _check_fields(data, cls, where)
        tracks = fields["tracks"]
        if not isinstance(tracks, list):
            raise ShardError(f"{where}.tracks: expected a list, got {type(tracks).__name__}")
        return cls(**{**fields, "tracks": [
            TrackEntry(**_check_fields(t, TrackEntry, f"{where}.tracks[{i}]"))
            for i, t in enumerate(tracks)]})


def shard_path(out: Path, split: str, index: int) -> Path:
    """``OUT/<split>/<split>-NNNNN.h5``."""
    return Path(out) / split / f"{split}-{index:05d}{SHARD_SUFFIX}"


def sha256_file(path: Path, block_size: int = 4 * 2**20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute value, or None when it must be JSON-encoded."""
    if isinstance(value, bool | int | float | str | np.integer | np.floating | np.bool_):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return None


def _write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write attrs in sorted order; nested/None values become JSON strings listed in json_attrs."""
    json_names = []
    for name in sorted(attrs):
        value = attrs[name]
        plain = _attr_value(value)
        if plain is None:
            obj.attrs[name] = json.dumps(value, sort_keys=True, default=_json_default)
            json_names.append(name)
        else:
            obj.attrs[name] = plain
    if json_names:
        obj.attrs["json_attrs"] = np.array(json_names, dtype=h5py.string_dtype())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot JSON-encode attribute value of type {type(value).__name__}")


def read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Attributes of an HDF5 object as Python values, decoding the JSON-encoded ones."""
    json_names = {_to_str(n) for n in obj.attrs.get("json_attrs", [])}
    result: dict[str, Any] = {}
    for name, value in obj.attrs.items():
        if name == "json_attrs":
            continue
        if name in json_names:
            result[name] = json.loads(_to_str(value))
        elif isinstance(value, np.ndarray):
            result[name] = [_to_str(v) for v in value] if value.dtype.kind in "OSU" else value
        elif isinstance(value, np.generic):
            result[name] = value.item()
        else:
            result[name] = _to_str(value)
    return result


def _to_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


class ShardWriter:
    """Write whole tracks into one shard, atomically.

    Usage::

        with ShardWriter(OUT / "train" / "train-00000.h5", split="train",
                         instruments=["piano", "guitar", "bass"], feature_params=params,
                         source={"source_corpus": "slakh2100", "split_scheme": "split2"}) as w:
            w.add_track(TrackArrays(...))
        record = w.record

    The file is written as ``.<stem>.<writer>.h5.partial`` next to the final name (the
    writer's own temporary file, :func:`prep.atomic.partial_path`); a clean exit flushes,
    fsyncs and renames it (``close()`` returns the :class:`ShardRecord`), an exception deletes
    it. ``path`` must be ``OUT/<split>/<file>.h5`` (the manifest stores ``<split>/<file>.h5``).
    The bytes are a deterministic function of the inputs (no timestamps), so rebuilding gives
    the same checksums.
    """

    def __init__(
        self,
        path: Path,
        *,
        split: str,
        instruments: Sequence[str],
        feature_params: FeatureParams,
        source: Mapping[str, Any],
        layout: StorageLayout = DEFAULT_LAYOUT,
    ) -> None:
        self.path = Path(path)
        if self.path.parent.name != split:
            raise ShardError(
                f"{self.path}: a {split!r} shard must live in a folder named {split!r} "
                f"(OUT/{split}/{self.path.name})"
            )
        if self.path.suffix != SHARD_SUFFIX:
            raise ShardError(f"{self.path}: shard files must end in {SHARD_SUFFIX}")
        for key in ("source_corpus", "split_scheme"):
            if key not in source:
                raise ShardError(f"{self.path}: source is missing {key!r} (got {sorted(source)})")
        if not instruments or len(set(instruments)) != len(instruments):
            raise ShardError(f"{self.path}: instruments must be distinct names, got {instruments}")
        self.split = split
        self.instruments = [str(name) for name in instruments]
        self.feature_params = feature_params
        self.layout = layout
        self.record: ShardRecord | None = None
        self._tracks: list[TrackEntry] = []
        self._temp = partial_path(self.path, writer_token())  # its own: see partial_path
        self._file: h5py.File | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._create_file(self._temp)
        except OSError as error:
            discard(self._temp)
            raise write_error(self.path, error, "cannot create shard") from error
        try:
            # The format's own attrs win over same-named keys of `source`.
            root_attrs = {
                "package_version": PACKAGE_VERSION,
                **source,
                **feature_params.to_attrs(),
                "format_version": FORMAT_VERSION,
                "split": split,
            }
            root_attrs.pop("instruments", None)
            _write_attrs(self._file, root_attrs)
            self._file.attrs["instruments"] = np.array(self.instruments, dtype=h5py.string_dtype())
            self._tracks_group = self._create_group(self._file, "tracks")
        except OSError as error:
            self.abort()
            raise write_error(self.path, error, "cannot write shard") from error
        except BaseException:
            self.abort()
            raise

    # -- deterministic HDF5 objects: creation order tracked, no modification times, and no
    # chunk cache, so every chunk is placed in the file in the order it is written. (With a
    # cache, dirty chunks of several datasets are placed at flush in an order that depends on
    # memory addresses: the same content landed at other offsets in about 1 build in 12.)
    @staticmethod
    def _create_file(path: Path) -> h5py.File:
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        fcpl.set_obj_track_times(False)
        order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        fcpl.set_link_creation_order(order)
        fcpl.set_attr_creation_order(order)
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        mdc_elements, _, _, preemption = fapl.get_cache()
        fapl.set_cache(mdc_elements, 0, 0, preemption)  # raw-data chunk cache off
        fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
        return h5py.File(fid)

    @staticmethod
    def _create_group(parent: h5py.Group, name: str) -> h5py.Group:
        gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)
        order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        gcpl.set_link_creation_order(order)
        gcpl.set_attr_creation_order(order)
        lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
        lcpl.set_char_encoding(h5py.h5t.CSET_UTF8)
        gid = h5py.h5g.create(parent.id, name.encode(), lcpl=lcpl, gcpl=gcpl)
        return h5py.Group(gid)

    def _create_dataset(
        self, group: h5py.Group, name: str, data: np.ndarray, chunk_rows: int, **attrs: Any
    ) -> None:
        chunks = (max(1, min(chunk_rows, data.shape[0])),) + data.shape[1:] if data.size else None
        kwargs = self.layout.filter_kwargs(name) if data.size else {}
        dataset = group.create_dataset(name, data=data, chunks=chunks, track_times=False, **kwargs)
        for key, value in attrs.items():
            dataset.attrs[key] = value

    # -- public API ---------------------------------------------------------------------------
    @property
    def n_tracks(self) -> int:
        return len(self._tracks)

    @property
    def bytes_written(self) -> int:
        """Current size of the file being written (for the builder's target shard size)."""
        if self._file is None:
            return self.record.bytes if self.record else 0
        self._file.flush()
        return int(self._file.id.get_filesize())

    def add_track(self, track: TrackArrays) -> None:
        """Validate ``track`` and write it as ``/tracks/<track_id>``; raises ShardError."""
        if self._file is None:
            raise ShardError(f"{self.path}: add_track after the shard was closed")
        arrays = validate_track(track, n_instruments=len(self.instruments))
        spec_max = float(arrays["spec"].max(initial=0.0))
        if spec_max > np.finfo(self.layout.spec_dtype).max:
            raise ShardError(
                f"{self.path}: track {track.track_id}: spec maximum {spec_max:.1f} overflows "
                f"{self.layout.spec_dtype} (is the audio scaled to [-1, 1]?)"
            )
        if track.track_id in self._tracks_group:
            raise ShardError(f"{self.path}: track {track.track_id} added twice")
        try:
            self._write_track(track, arrays)
        except OSError as error:  # disk full, I/O error: no half-written shard is kept
            self.abort()
            raise write_error(self.path, error, f"cannot write track {track.track_id}") from error

    def _write_track(self, track: TrackArrays, arrays: dict[str, np.ndarray | None]) -> None:
        group = self._create_group(self._tracks_group, track.track_id)
        n_samples = arrays["mix"].shape[0]
        frames = arrays["spec"].shape[0]
        attrs = dict(track.attrs)
        attrs.update(
            {"n_samples": n_samples, "n_frames": frames, "duration_s": n_samples / SAMPLE_RATE}
        )
        _write_attrs(group, attrs)
        chunk = self.layout.chunk_frames
        self._create_dataset(group, "mix", arrays["mix"], chunk * HOP_LENGTH, units="waveform")
        fault_point("shard-write")
        if arrays["stems"] is not None:
            stems = arrays["stems"]
            # Stems are read per window across all instruments: chunk along time only.
            chunks = (stems.shape[0], max(1, min(chunk * HOP_LENGTH, stems.shape[1])))
            dataset = group.create_dataset(
                "stems",
                data=stems,
                chunks=chunks if stems.size else None,
                track_times=False,
                **(self.layout.filter_kwargs("stems") if stems.size else {}),
            )
            dataset.attrs["instruments"] = np.array(self.instruments, dtype=h5py.string_dtype())
        self._create_dataset(
            group,
            "spec",
            arrays["spec"].astype(self.layout.spec_dtype),
            chunk,
            units="linear magnitude",
            dtype=self.layout.spec_dtype,
        )
        self._create_dataset(group, "roll", arrays["roll"], chunk, midi_min=21)
        mask = arrays["harmonic_mask"]
        if self.layout.bitpack_mask:
            packed = np.packbits(mask, axis=-1)
            self._create_dataset(
                group, "harmonic_mask", packed, chunk, bitpacked=True, unpacked_length=N_BINS
            )
        else:
            self._create_dataset(group, "harmonic_mask", mask, chunk, bitpacked=False)
        self._create_dataset(group, "activity", arrays["activity"], chunk)
        self._tracks.append(
            TrackEntry(track.track_id, int(frames), int(n_samples), arrays["stems"] is not None)
        )

    def close(self) -> ShardRecord:
        """Finish the shard: flush, fsync, rename to the final name; returns its record."""
        if self.record is not None:
            return self.record
        if self._file is None:
            raise ShardError(f"{self.path}: writer was aborted")
        try:
            self._file.flush()
            self._file.close()
            self._file = None
            fsync_folder(self._temp)
            digest = sha256_file(self._temp)
            size = self._temp.stat().st_size
            fault_point("shard-rename")
            os.replace(self._temp, self.path)
            fsync_folder(self.path.parent)
        except OSError as error:
            self.abort()
            raise write_error(self.path, error, "cannot finish shard") from error
        self.record = ShardRecord(
            path=f"{self.split}/{self.path.name}",
            sha256=digest,
            bytes=size,
            split=self.split,
            tracks=list(self._tracks),
        )
        return self.record

    def abort(self) -> None:
        """Discard the partial file (nothing is left behind)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # e.g. disk full while flushing on close: the file is deleted anyway
            finally:
                self._file = None
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def validate_track(track: TrackArrays, n_instruments: int) -> dict[str, np.ndarray | None]:
    """Check shapes, dtypes and frame counts of ``track``; returns the arrays to store.

    Raises ShardError naming the track and the offending field.
    """
    tid = track.track_id

    def fail(message: str) -> ShardError:
        return ShardError(f"track {tid}: {message}")

    if not isinstance(tid, str) or not tid or "/" in tid or tid.startswith("."):
        raise ShardError(f"invalid track id {tid!r} (non-empty, no '/', not starting with '.')")
    mix = np.asarray(track.mix)
    if mix.ndim != 1 or mix.dtype.kind != "f":
        raise fail(f"mix must be a 1-D float array, got {mix.dtype} {mix.shape}")
    n_samples = mix.shape[0]
    frames = 1 + n_samples // HOP_LENGTH
    stems = None
    if track.stems is not None:
        stems = np.asarray(track.stems)
        if stems.dtype.kind != "f" or stems.shape != (n_instruments, n_samples):
            raise fail(
                f"stems must be float [{n_instruments}, {n_samples}], got {stems.dtype} "
                f"{stems.shape}"
            )
        stems = stems.astype(np.float32, copy=False)
    expected = {
        "spec": ((frames, N_BINS), "f"),
        "roll": ((frames, n_instruments, N_PITCHES), "bu"),
        "harmonic_mask": ((frames, n_instruments, N_BINS), "bu"),
        "activity": ((frames, n_instruments), "bu"),
    }
    arrays: dict[str, np.ndarray | None] = {"mix": mix.astype(np.float32, copy=False)}
    arrays["stems"] = stems
    for name, (shape, kinds) in expected.items():
        value = np.asarray(getattr(track, name))
        if value.shape != shape:
            raise fail(
                f"{name} has shape {value.shape}, expected {shape} "
                f"(n_frames = 1 + n_samples // {HOP_LENGTH} = {frames}, I = {n_instruments})"
            )
        if value.dtype.kind not in kinds:
            raise fail(f"{name} has dtype {value.dtype}, expected one of kinds {kinds!r}")
        if value.dtype.kind == "u" and value.max(initial=0) > 1:
            raise fail(f"{name} must be 0/1, found value {value.max()}")
        arrays[name] = value if name == "spec" else value.astype(bool, copy=False)
    spec = arrays["spec"]
    if not np.all(np.isfinite(spec)) or spec.min(initial=0.0) < 0:
        raise fail("spec must be finite, non-negative magnitudes")
    if not np.array_equal(arrays["activity"], arrays["roll"].any(axis=-1)):
        raise fail("activity disagrees with roll.any(-1)")
    return arrays


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


# the manifest's layout (2: typed, with provenance; 3: the build plan, unverified shards)
MANIFEST_SCHEMA_VERSION = 3


def _check_fields(data: Any, cls: type, where: str) -> dict[str, Any]:
    """``data``'s keys are exactly ``cls``'s fields (those with defaults may be missing) and
    each value has the field's basic JSON type; returns them. ShardError names ``where``."""
    if not isinstance(data, dict):
        raise ShardError(f"{where}: expected an object, got {type(data).__name__}")
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        raise ShardError(f"{where}: unknown field(s) {unknown} (written by another scorecritic "
                         "version? `prep index OUT` rewrites the manifest from the shards)")
    required = [n for n, f in declared.items() if f.default is MISSING
                and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ShardError(f"{where}: missing field(s) {missing} (`prep index OUT` rewrites the "
                         "manifest from the shards)")
    for name, value in data.items():
        expected = _JSON_TYPES.get(str(declared[name].type))
        if expected is not None and not isinstance(value, expected):
            raise ShardError(f"{where}.{name}: expected {declared[name].type}, got "
                             f"{type(value).__name__} {value!r:.60}")
    return dict(data)


# the basic JSON type of each annotation used by the manifest's dataclasses
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "bool": bool, "float": (int, float),
    "list[TrackEntry]": list, "list[ShardRecord]": list, "list[str]": list,
    "dict[str, float]": dict, "dict[str, Any]": dict, "list[dict[str, Any]]": list,
    "dict[str, float] | None": (dict, type(None)), "dict[str, Any] | None": (dict, type(None)),
}


@dataclass
class Manifest:
    """``OUT/manifest.json``: what a shard folder holds, and how it was built.

    The one typed view of the manifest, for every reader and writer. Written by
    ``prep build-shards`` and, from the shard files and build records alone, by ``prep index``
    (:func:`manifest_from_shards`). Everything but ``provenance`` is a function of the corpus
    and the build's options; ``provenance`` (corpus folder, hosts, build times) says where and
    when, and is left out of comparisons (``==``) and of :meth:`content_sha256`.

    Example::

        >>> manifest = Manifest.read(Path("data"))              # doctest: +SKIP
        >>> manifest.instruments, manifest.hours["train"]        # doctest: +SKIP
        (['piano', 'guitar', 'bass'], 1.23)
        >>> [t.track_id for t in manifest.tracks("test")][:2]    # doctest: +SKIP
        ['Track01877', 'Track01878']
    """

    shards: list[ShardRecord]
    instruments: list[str]
    hours: dict[str, float]
    params: dict[str, Any]  # FeatureParams.to_dict(): see :attr:`feature_params`
    source: dict[str, Any]  # the shards' source root attrs (split scheme, stems mode, ...)
    instrument_map: dict[str, Any] | None = None
    activity_rate: dict[str, float] | None = None  # r_i over the train split
    class_weight: dict[str, float] | None = None  # prep.features.class_weights(r)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"track", "reason"}
    warnings: list[dict[str, Any]] = field(default_factory=list)  # {"track", "warning"}
    problems: list[str] = field(default_factory=list)  # e.g. a shard without build record
    defects: list[dict[str, Any]] = field(default_factory=list)  # known dataset defects met
    split_leakage: list[dict[str, Any]] = field(default_factory=list)  # similar scores across splits
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    # the build plan this manifest completes ("" for shards written without prep build-shards)
    plan_id: str = ""
    planned_shards: list[str] = field(default_factory=list)  # every shard file the plan expects
    unverified: list[str] = field(default_factory=list)  # differ from their build record
    format_version: int = FORMAT_VERSION
    schema_version: int = MANIFEST_SCHEMA_VERSION

    # -- reading and writing --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Parse and check a manifest's JSON object; ShardError names ``where`` and the field."""
        if isinstance(data, dict):
            if data.get("format_version") != FORMAT_VERSION:
                raise ShardError(
                    f"{where}: format_version {data.get('format_version')} found, this "
                    f"scorecritic reads format_version {FORMAT_VERSION}; rebuild the shards "
                    "with this version")
            if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
                raise ShardError(
                    f"{where}: manifest schema_version {data.get('schema_version')} found, "
                    f"expected {MANIFEST_SCHEMA_VERSION}; `prep index OUT` rewrites it from the "
                    "build records (no rebuild needed; a folder without plan.json: rerun "
                    "`prep build-shards`, which keeps the finished shards)")
        values = _check_fields(data, cls, where)
        shards = [ShardRecord.from_dict(e, f"{where}: shards[{k}]")
                  for k, e in enumerate(values["shards"])]
        manifest = cls(**{**values, "shards": shards})
        manifest.validate(where)
        return manifest

    def validate(self, where: str = MANIFEST_NAME) -> None:
        """Cross-field checks: distinct instruments and shard paths, shards in their split's
        folder, per-instrument tables keyed by exactly the instruments, valid feature params."""
        if not self.instruments or len(set(self.instruments)) != len(self.instruments):
            raise ShardError(f"{where}: instruments must be distinct names, got "
                             f"{self.instruments}")
        paths = [s.path for s in self.shards]
        if len(set(paths)) != len(paths):
            raise ShardError(f"{where}: a shard is listed twice")
        for shard in self.shards:
            if not shard.path.startswith(f"{shard.split}/"):
                raise ShardError(f"{where}: shard {shard.path} is not in its split's folder "
                                 f"{shard.split}/")
        for name in ("activity_rate", "class_weight"):
            table = getattr(self, name)
            if table is not None and sorted(table) != sorted(self.instruments):
                raise ShardError(f"{where}: {name} is keyed by {sorted(table)}, not by the "
                                 f"instruments {self.instruments}")
        try:
            self.feature_params  # noqa: B018  (validates the stored parameters)
        except (TypeError, ValueError) as error:
            raise ShardError(f"{where}: params: {error}") from error

    @classmethod
    def read(cls, out: Path | str) -> Manifest:
        """Read ``OUT/manifest.json``; ShardError if missing, unreadable or invalid."""
        path = Path(out) / MANIFEST_NAME
        if not path.is_file():
            raise ShardError(
                f"{path}: no manifest (build shards with `prep build-shards`, or rebuild the "
                "manifest from the build records with `prep index`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ShardError(f"{path}: unreadable manifest (not UTF-8 text: byte "
                             f"{error.object[error.start]:#04x} at offset {error.start})") from error
        except (OSError, json.JSONDecodeError) as error:
            raise ShardError(f"{path}: unreadable manifest ({error})") from error
        if not isinstance(data, dict):
            raise ShardError(f"{path}: not a manifest (a JSON {type(data).__name__}, expected "
                             "an object)")
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (fields in declaration order)."""
        return asdict(self)

    def write(self, out: Path) -> Path:
        """Write ``OUT/manifest.json`` atomically (temporary file, fsync, rename)."""
        text = json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
        return atomic_write_text(Path(out) / MANIFEST_NAME, text, fault="manifest-write",
                                 action="cannot write manifest")

    # -- views ----------------------------------------------------------------------------------
    @property
    def feature_params(self) -> FeatureParams:
        return FeatureParams(**self.params)

    @property
    def splits(self) -> list[str]:
        """The splits that have shards, in the order train, validation, test, others."""
        order = {"train": 0, "validation": 1, "test": 2}
        return sorted({s.split for s in self.shards}, key=lambda x: (order.get(x, 3), x))

    def split_shards(self, split: str) -> list[ShardRecord]:
        return [s for s in self.shards if s.split == split]

    def tracks(self, split: str | None = None) -> list[TrackEntry]:
        """Every track (of ``split``), in shard order."""
        return [t for s in self.shards if split in (None, s.split) for t in s.tracks]

    @property
    def n_tracks(self) -> int:
        return sum(len(s.tracks) for s in self.shards)

    def content_sha256(self) -> str:
        """A hash of what the shards are (checksums, instruments, params, source), not of where
        or when they were built: runs record it to name the data they trained on."""
        content = {"shards": [(s.path, s.sha256) for s in self.shards],
                   "instruments": self.instruments, "params": self.params,
                   "source": self.source}
        text = json.dumps(content, sort_keys=True, default=_json_default)
        return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(out: Path, manifest: Manifest) -> Path:
    """Write ``OUT/manifest.json`` atomically (:meth:`Manifest.write`)."""
    return manifest.write(out)


def read_manifest(out: Path) -> Manifest:
    """Read and check ``OUT/manifest.json`` (:meth:`Manifest.read`)."""
    return Manifest.read(out)


def list_shard_files(out: Path) -> list[Path]:
    """All finished shard files ``OUT/<split>/*.h5`` (partials excluded), sorted."""
    out = Path(out)
    return sorted(
        p for p in out.glob(f"*/*{SHARD_SUFFIX}") if p.is_file() and not p.name.startswith(".")
    )


def manifest_from_shards(
    out: Path, known_sha256: Mapping[str, str] | None = None,
    files: Sequence[Path] | None = None,
) -> Manifest:
    """Rebuild the manifest from the shard files alone (``prep index``).

    ``known_sha256`` maps shard paths relative to OUT to checksums the caller has just computed
    (the builder hashes each shard as it writes or resumes it): those files are not read a
    second time. ``files``: the shard files to list (default: every ``OUT/<split>/*.h5``); the
    builder and ``prep index`` pass the shards of the build plan, with the checksums of their
    build records.

    Checksums, sizes, track lists, hours per split, instruments, feature params and source are
    read from the shards; ``activity_rate``/``class_weight`` are recomputed from the
    ``activity`` datasets of the train shards. ``skipped`` and ``instrument_map`` cannot be
    derived from shards unless the builder put ``instrument_map`` in ``source``: they are kept
    from the previous manifest if one exists.
    """
    out = Path(out)
    files = list_shard_files(out) if files is None else [Path(f) for f in files]
    if not files:
        raise ShardError(f"{out}: no shard files OUT/<split>/*{SHARD_SUFFIX} found")
    previous: dict[str, Any] = {}  # any older manifest, typed or not: only read for fallbacks
    if (out / MANIFEST_NAME).is_file():
        try:
            previous = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
        previous = previous if isinstance(previous, dict) else {}
    shards: list[ShardRecord] = []
    instruments: list[str] | None = None
    params: dict[str, Any] | None = None
    source: dict[str, Any] = {}
    hours: dict[str, float] = {}
    active_frames: np.ndarray | None = None
    train_frames = 0
    for path in files:
        relative = path.relative_to(out).as_posix()
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise ShardError(f"{path}: not a readable HDF5 shard ({_first_line(error)})") from error
        with handle:
            root = read_attrs(handle)
            _check_format_version(path, root.get("format_version"))
            missing = [a for a in REQUIRED_ROOT_ATTRS if a not in root]
            if missing:
                raise ShardError(f"{path}: missing root attrs {missing}")
            split = str(root["split"])
            if path.parent.name != split:
                raise ShardError(f"{path}: split attr {split!r} disagrees with its folder")
            shard_instruments = list(root["instruments"])
            if instruments is None:
                instruments = shard_instruments
                params = FeatureParams.from_attrs(root).to_dict()
                source = _source_from_root(root)
            elif shard_instruments != instruments:
                raise ShardError(
                    f"{path}: instruments {shard_instruments} differ from {instruments} "
                    f"({files[0]})"
                )
            if "tracks" not in handle:
                raise ShardError(f"{path}: no /tracks group (not a scorecritic shard)")
            tracks = []
            for track_id, group in handle["tracks"].items():
                n_samples = int(group.attrs["n_samples"])
                n_frames = int(group.attrs["n_frames"])
                tracks.append(TrackEntry(track_id, n_frames, n_samples, "stems" in group))
                hours[split] = hours.get(split, 0.0) + n_samples / SAMPLE_RATE / 3600
                if split == "train":
                    counts = np.asarray(group["activity"][()], dtype=bool).sum(axis=0)
                    active_frames = counts if active_frames is None else active_frames + counts
                    train_frames += n_frames
        shards.append(
            ShardRecord(
                path=relative,
                sha256=(known_sha256 or {}).get(relative) or sha256_file(path),
                bytes=path.stat().st_size,
                split=split,
                tracks=tracks,
            )
        )
    assert instruments is not None and params is not None
    if active_frames is not None and train_frames > 0:
        rate = activity_rate_from_counts(active_frames, train_frames)
        weight = class_weights(rate)
        activity_rate = {n: float(r) for n, r in zip(instruments, rate, strict=True)}
        class_weight = {n: float(w) for n, w in zip(instruments, weight, strict=True)}
    else:
        activity_rate = previous.get("activity_rate")
        class_weight = previous.get("class_weight")
    return Manifest(
        shards=shards,
        instruments=instruments,
        hours={k: round(v, 6) for k, v in sorted(hours.items())},
        params=params,
        source={k: v for k, v in source.items() if k != "instrument_map"},
        instrument_map=source.get("instrument_map", previous.get("instrument_map")),
        activity_rate=activity_rate,
        class_weight=class_weight,
        skipped=list(previous.get("skipped", [])),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def activity_rate_from_counts(active_frames: np.ndarray, total_frames: int) -> np.ndarray:
    """Activity rate per instrument from summed active-frame counts."""
    return np.asarray(active_frames, dtype=np.float64) / float(total_frames)


def _source_from_root(root: Mapping[str, Any]) -> dict[str, Any]:
    feature_keys = set(FeatureParams().to_attrs())
    skip = feature_keys | {"format_version", "split", "instruments"}
    return {k: v for k, v in root.items() if k not in skip}


def _check_format_version(path: Path, found: Any) -> None:
    if found is None or int(found) != FORMAT_VERSION:
        raise ShardError(
            f"{path}: format_version {found} found, expected {FORMAT_VERSION} (rebuild the "
            "shards with this scorecritic version)"
        )


# --------------------------------------------------------------------------------------------
# Build plan and build records
# --------------------------------------------------------------------------------------------


PLAN_NAME = "plan.json"
PLAN_SCHEMA_VERSION = 1
BUILD_RECORD_SUFFIX = ".build.json"


@dataclass(frozen=True)
class PlannedShard:
    """One shard of the build plan: its file (relative to OUT), split, tracks and plan key
    (the hash of everything that determines its bytes, :meth:`prep.build.Plan.shard_key`)."""

    name: str
    path: str
    split: str
    plan_key: str
    tracks: list[str]


@dataclass
class BuildPlanFile:
    """``OUT/plan.json``: every shard a build of the corpus with its options makes, written by
    ``prep build-shards`` before it builds anything (every ``--part`` writes the same one), so
    ``prep index`` and :func:`verify` know which shards are missing."""

    plan_id: str
    shards: list[PlannedShard]
    format_version: int = FORMAT_VERSION
    schema_version: int = PLAN_SCHEMA_VERSION

    @staticmethod
    def make_id(shards: Sequence[PlannedShard]) -> str:
        """The plan's identity: a hash of its shards' names and keys."""
        text = json.dumps([[s.name, s.plan_key] for s in shards])
        return hashlib.sha256(text.encode()).hexdigest()

    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def write(self, out: Path) -> Path:
        """Write ``OUT/plan.json`` atomically (left alone when it already says the same)."""
        path = Path(out) / PLAN_NAME
        text = self.to_text()
        try:
            if path.read_text(encoding="utf-8") == text:
                return path
        except (OSError, UnicodeDecodeError):
            pass
        return atomic_write_text(path, text, action="cannot write the build plan")

    @classmethod
    def read(cls, out: Path) -> BuildPlanFile | None:
        """``OUT/plan.json``; ``None`` if there is none; ShardError naming it if it is bad."""
        path = Path(out) / PLAN_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # ValueError: JSON or UTF-8
            raise ShardError(f"{path}: unreadable build plan ({_first_line(error)})") from error
        if not isinstance(data, dict) or data.get("schema_version") != PLAN_SCHEMA_VERSION:
            found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
            raise ShardError(f"{path}: not a build plan of schema_version "
                             f"{PLAN_SCHEMA_VERSION} (found {found}); rerun `prep build-shards`")
        try:
            shards = [PlannedShard(**entry) for entry in data["shards"]]
            plan = cls(**{**data, "shards": shards})
        except (KeyError, TypeError) as error:
            raise ShardError(f"{path}: malformed build plan ({_first_line(error)})") from error
        if plan.plan_id != cls.make_id(shards):
            raise ShardError(f"{path}: plan_id does not match its shards (edited?); rerun "
                             "`prep build-shards`")
        return plan


def build_record_path(out: Path, shard: str) -> Path:
    """The build record of the shard at ``shard`` (relative to OUT): ``<split>-NNNNN.build.json``
    next to it."""
    path = Path(out) / shard
    return path.with_name(path.name.removesuffix(SHARD_SUFFIX) + BUILD_RECORD_SUFFIX)


def read_build_record(out: Path, shard: str) -> dict[str, Any] | None:
    """The build record of a shard (relative path), ``None`` if there is none; ShardError naming
    it if it cannot be read."""
    path = build_record_path(out, shard)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ShardError(f"{path}: unreadable build record ({_first_line(error)})") from error
    if not isinstance(record, dict):
        raise ShardError(f"{path}: not a build record (a JSON {type(record).__name__})")
    return record


def plan_problems(out: Path, plan: BuildPlanFile) -> list[str]:
    """Planned shards that no build has finished (no build record, or a record of another plan,
    or a record whose shard file is gone): one line each, naming the file."""
    problems = []
    for entry in plan.shards:
        path = Path(out) / entry.path
        try:
            record = read_build_record(out, entry.path)
        except ShardError as error:
            problems.append(str(error))
            continue
        if record is None or record.get("plan_key") != entry.plan_key:
            why = "no build record" if record is None else "its build record is of another plan"
            problems.append(f"{path}: planned shard missing ({why}; not built yet, or built by "
                            "another --part: build it with `prep build-shards`)")
        elif record.get("record") and not path.is_file():
            problems.append(f"{path}: planned shard missing (its build record says it was "
                            f"written); {REBUILD_HINT}")
    return problems


# --------------------------------------------------------------------------------------------
# Verify
# --------------------------------------------------------------------------------------------


def verify(out: Path, progress: bool = False) -> list[str]:
    """Check an output folder against its manifest; returns problems (empty list = OK).

    Checks: manifest readable and of this format version; every listed shard exists, has the
    listed size and SHA-256; no unlisted shard or leftover partial files; each shard's root
    attrs, split and instruments; each track's datasets present with the expected dtypes and
    shapes, frame counts agreeing with ``1 + n_samples // hop`` and with the manifest, and
    ``activity`` equal to ``roll.any(-1)``. Against the build plan (``plan.json``) and the build
    records: every planned shard listed and nothing else, each with the SHA-256 its build wrote,
    shards accepted as unverified named; without a manifest, the planned shards still missing.
    ``progress`` shows a tqdm bar over the shards read (on stderr).

    Example::

        problems = verify(Path("data"))  # [] when every shard is as built
    """
    from tqdm import tqdm

    out = Path(out)
    try:
        plan = BuildPlanFile.read(out)
    except ShardError as error:
        plan, plan_error = None, [str(error)]
    else:
        plan_error = []
    try:
        manifest = read_manifest(out)
    except ShardError as error:
        # no manifest: say which planned shards are missing, if a build has started
        return [str(error), *plan_error, *(plan_problems(out, plan) if plan else [])]
    problems: list[str] = list(plan_error)
    listed = {}
    for entry in manifest.shards:
        listed[(out / entry.path).resolve()] = entry
    for path in list_shard_files(out):
        if path.resolve() not in listed:
            problems.append(f"{path}: shard file not listed in {MANIFEST_NAME}")
    for path in sorted(out.glob(f"*/.*{PARTIAL_SUFFIX}")):
        problems.append(f"{path}: leftover partial file from an interrupted build")
    for path, entry in tqdm(listed.items(), desc="verify", unit="shard", disable=not progress):
        problems.extend(_verify_shard(path, entry, manifest))
    problems.extend(_verify_plan(out, manifest, plan))
    return problems


def check_against_plan(out: Path, manifest: Manifest) -> list[str]:
    """:func:`verify`'s checks of the manifest against the build plan and the build records
    (no shard is read): what ``prep card`` refuses to describe as a complete shard set."""
    try:
        plan = BuildPlanFile.read(out)
    except ShardError as error:
        return [str(error)]
    return _verify_plan(Path(out), manifest, plan)


def _verify_plan(out: Path, manifest: Manifest, plan: BuildPlanFile | None) -> list[str]:
    """The manifest against the build plan and the build records: every planned shard listed,
    nothing else, each with the checksum its build wrote; unverified shards named."""
    problems = []
    where = out / MANIFEST_NAME
    listed = [s.path for s in manifest.shards]
    if manifest.plan_id:
        for path in manifest.planned_shards:
            if path not in listed:
                problems.append(f"{out / path}: planned shard missing from {where}")
        for path in listed:
            if path not in manifest.planned_shards:
                problems.append(f"{out / path}: listed in {where} but not in its build plan")
    if plan is not None and plan.plan_id != manifest.plan_id:
        problems.append(f"{where}: describes another build than {out / PLAN_NAME} (options or "
                        "corpus changed); finish the build with `prep build-shards`")
    for entry in manifest.shards:
        if entry.path in manifest.unverified:
            problems.append(f"{out / entry.path}: unverified: its bytes differ from its build "
                            f"record (accepted by `prep index --accept-unverified`); "
                            f"{REBUILD_HINT}")
            continue
        try:
            record = read_build_record(out, entry.path)
        except ShardError as error:
            problems.append(str(error))
            continue
        written = (record or {}).get("record") or {}
        if written.get("sha256") not in (None, entry.sha256):
            problems.append(f"{out / entry.path}: SHA-256 in {where} differs from the one its "
                            f"build wrote ({build_record_path(out, entry.path)}): the shard "
                            f"changed after the build; {REBUILD_HINT}")
    return problems


def _verify_shard(path: Path, entry: ShardRecord, manifest: Manifest) -> list[str]:
    if not path.is_file():
        return [f"{path}: listed in {MANIFEST_NAME} but missing"]
    size = path.stat().st_size
    if size != entry.bytes:
        return [f"{path}: {size} bytes, manifest says {entry.bytes} (truncated or changed)"]
    if sha256_file(path) != entry.sha256:
        return [f"{path}: SHA-256 does not match the manifest (file corrupted or changed); "
                f"{REBUILD_HINT}"]
    try:
        with h5py.File(path, "r") as handle:
            return _verify_contents(path, handle, entry, manifest)
    except (OSError, KeyError, ValueError) as error:
        return [f"{path}: cannot be read as an HDF5 shard ({error})"]


def _verify_contents(
    path: Path, handle: h5py.File, entry: ShardRecord, manifest: Manifest
) -> list[str]:
    problems = []
    root = read_attrs(handle)
    missing = [a for a in REQUIRED_ROOT_ATTRS if a not in root]
    if missing:
        problems.append(f"{path}: missing root attrs {missing}")
    if root.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"{path}: format_version {root.get('format_version')} found, expected {FORMAT_VERSION}"
        )
    if root.get("split") != entry.split:
        problems.append(f"{path}: split {root.get('split')!r}, manifest {entry.split!r}")
    instruments = list(root.get("instruments", []))
    if instruments != manifest.instruments:
        problems.append(f"{path}: instruments {instruments}, manifest {manifest.instruments}")
    fixed = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH}
    for name, value in fixed.items():
        if root.get(name) != value:
            problems.append(f"{path}: root attr {name}={root.get(name)}, expected {value}")
    if "tracks" not in handle:
        return problems + [f"{path}: no /tracks group"]
    file_tracks = list(handle["tracks"].keys())
    listed_tracks = [t.track_id for t in entry.tracks]
    if file_tracks != listed_tracks:
        problems.append(f"{path}: tracks {file_tracks} differ from the manifest {listed_tracks}")
    listed_by_id = {t.track_id: t for t in entry.tracks}
    for track_id in file_tracks:
        problems.extend(
            f"{path}: track {track_id}: {p}"
            for p in _verify_track(
                handle["tracks"][track_id], len(instruments), listed_by_id.get(track_id)
            )
        )
    return problems


def _verify_track(group: h5py.Group, n_instruments: int, listed: TrackEntry | None) -> list[str]:
    problems = []
    missing = [d for d in REQUIRED_DATASETS if d not in group]
    if missing:
        return [f"missing datasets {missing}"]
    n_samples = group["mix"].shape[0]
    frames = 1 + n_samples // HOP_LENGTH
    if int(group.attrs.get("n_samples", -1)) != n_samples:
        problems.append(f"attr n_samples {group.attrs.get('n_samples')} != len(mix) {n_samples}")
    if int(group.attrs.get("n_frames", -1)) != frames:
        problems.append(f"attr n_frames {group.attrs.get('n_frames')} != 1 + n_samples//hop")
    if listed is not None and (listed.n_frames, listed.n_samples) != (frames, n_samples):
        problems.append(
            f"manifest says {listed.n_frames} frames / {listed.n_samples} samples, "
            f"file has {frames} / {n_samples}"
        )
    mask = group["harmonic_mask"]
    mask_bins = PACKED_BINS if mask.attrs.get("bitpacked", False) else N_BINS
    expected = {
        "mix": ((n_samples,), "f"),
        "spec": ((frames, N_BINS), "f"),
        "roll": ((frames, n_instruments, N_PITCHES), "b"),
        "harmonic_mask": ((frames, n_instruments, mask_bins), "u" if mask_bins < N_BINS else "b"),
        "activity": ((frames, n_instruments), "b"),
    }
    if "stems" in group:
        expected["stems"] = ((n_instruments, n_samples), "f")
    for name, (shape, kind) in expected.items():
        dataset = group[name]
        if dataset.shape != shape:
            problems.append(f"{name} has shape {dataset.shape}, expected {shape}")
        if dataset.dtype.kind != kind:
            problems.append(f"{name} has dtype {dataset.dtype}, expected kind {kind!r}")
    if not problems:
        roll_active = np.asarray(group["roll"][()], dtype=bool).any(axis=-1)
        if not np.array_equal(roll_active, np.asarray(group["activity"][()], dtype=bool)):
            problems.append("activity disagrees with roll.any(-1)")
    return problems


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Window reads below h5py's selection machinery
# --------------------------------------------------------------------------------------------


class _ChunkCache:
    """Per-process LRU of decompressed chunks, bounded in bytes.

    HDF5's own chunk cache is per open dataset (``rdcc_nbytes``); this one is shared by all
    datasets of a ``ShardSet`` and hands out numpy views, so a cached chunk costs one slice copy.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._chunks: OrderedDict[tuple[int, str, int], np.ndarray] = OrderedDict()

    def get(self, key: tuple[int, str, int]) -> np.ndarray | None:
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
        return chunk

    def put(self, key: tuple[int, str, int], chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes:
            return
        self._chunks[key] = chunk
        self.bytes += chunk.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._chunks.popitem(last=False)
            self.bytes -= old.nbytes


class _FrameReader:
    """Reads frame rows ``[lo, hi)`` of one time-major frame dataset into a caller's buffer.

    h5py's slicing costs 20-90 us per call in selection building and type handling, more than
    copying a window. So chunks whose layout is plain are read directly: uncompressed chunks
    as views of the memory-mapped file (the chunk's byte offset from HDF5's chunk index),
    deflate-only chunks with ``read_direct_chunk`` + ``zlib`` into the :class:`_ChunkCache`.
    Anything else (other filters, chunks that do not span whole frames, unallocated chunks, a
    user block) goes through ``Dataset.read_direct``: same values, just slower.
    """

    def __init__(
        self,
        key: tuple[int, str],
        dataset: h5py.Dataset,
        file_map: mmap.mmap | None,
        cache: _ChunkCache,
    ) -> None:
        self.key = key
        self.dataset = dataset
        self.dtype = dataset.dtype
        self.tail = tuple(dataset.shape[1:])
        self.cache = cache
        self.file_map = file_map
        self.mode = self._mode(dataset, file_map)
        self.frames = int(dataset.chunks[0]) if self.mode != "h5py" else 0
        self.chunk_items = self.frames * int(np.prod(self.tail, dtype=np.int64))
        self._views: dict[int, np.ndarray] = {}

    @staticmethod
    def _mode(dataset: h5py.Dataset, file_map: mmap.mmap | None) -> str:
        chunks = dataset.chunks
        if chunks is None or tuple(chunks[1:]) != tuple(dataset.shape[1:]):
            return "h5py"
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if not filters:
            return "mmap" if file_map is not None else "h5py"
        if filters == [h5py.h5z.FILTER_DEFLATE]:
            return "deflate"
        return "h5py"

    def _chunk(self, index: int) -> np.ndarray | None:
        """Chunk ``index`` as an array [frames, *tail], or None (unallocated: use h5py)."""
        if self.mode == "mmap":
            view = self._views.get(index)
            if view is None:
                coord = (index * self.frames,) + (0,) * len(self.tail)
                info = self.dataset.id.get_chunk_info_by_coord(coord)
                if info.byte_offset is None:
                    return None
                view = np.frombuffer(
                    self.file_map, self.dtype, self.chunk_items, info.byte_offset
                ).reshape((self.frames,) + self.tail)
                self._views[index] = view
            return view
        key = self.key + (index,)
        chunk = self.cache.get(key)
        if chunk is None:
            coord = (index * self.frames,) + (0,) * len(self.tail)
            try:
                filter_mask, raw = self.dataset.id.read_direct_chunk(coord)
            except (KeyError, ValueError, RuntimeError):
                return None
            data = raw if filter_mask & 1 else zlib.decompress(raw)
            chunk = np.frombuffer(data, self.dtype, self.chunk_items).reshape(
                (self.frames,) + self.tail
            )
            self.cache.put(key, chunk)
        return chunk

    def read_into(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Copy frames ``lo .. hi-1`` (within the dataset) into ``out[: hi - lo]``."""
        if self.mode != "h5py":
            frames = self.frames
            for index in range(lo // frames, (hi - 1) // frames + 1):
                chunk = self._chunk(index)
                if chunk is None:
                    break
                first, last = max(lo, index * frames), min(hi, (index + 1) * frames)
                out[first - lo : last - lo] = chunk[first - index * frames : last - index * frames]
            else:
                return
        self.dataset.read_direct(out, np.s_[lo:hi], np.s_[0 : hi - lo])


class ShardSet:
    """Read-only view of one split of an output folder (the training side of the format).

    ``ShardSet(root, "train")`` reads ``root/manifest.json``, checks every shard of the split
    against its recorded size and SHA-256 once, here (``verify_checksums=False`` skips the
    hashing), and opens the HDF5 files lazily, one handle per file per process, so a copy
    forked or pickled into a DataLoader worker opens its own handles.

    ``cache_bytes`` is HDF5's chunk cache per open dataset; ``chunk_cache_bytes`` bounds this
    process's cache of decompressed chunks for :meth:`read_stored_frames` (the training reader,
    which bypasses h5py's per-call overhead, see :class:`_FrameReader`).

    Frame fields: ``spec`` float32 [T, 1025], ``roll`` bool [T, I, 88], ``harmonic_mask`` bool
    [T, I, 1025], ``activity`` bool [T, I]. Sample fields: ``mix`` float32 [L], ``stems``
    float32 [I, L].
    """

    def __init__(
        self,
        root: Path,
        split: str,
        verify_checksums: bool = True,
        cache_bytes: int = 4 * 2**20,
        chunk_cache_bytes: int = 64 * 2**20,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self.instruments: list[str] = list(self.manifest.instruments)
        self._cache_bytes = int(cache_bytes)
        self._chunk_cache_bytes = int(chunk_cache_bytes)
        entries = self.manifest.split_shards(split)
        if not entries:
            splits = self.manifest.splits
            raise ShardError(f"{self.root}: no {split!r} shards in the manifest (has {splits})")
        self._entries = {self.root / e.path: e for e in entries}
        self.tracks: list[TrackInfo] = [
            TrackInfo(
                track_id=t.track_id,
                shard_path=self.root / e.path,
                n_samples=t.n_samples,
                n_frames=t.n_frames,
                has_stems=t.has_stems,
            )
            for e in entries
            for t in e.tracks
        ]
        self._check_files(verify_checksums)
        self._handles: dict[Path, h5py.File] = {}
        # Per-process cache of each track's open datasets: group lookups by name cost about as
        # much as the window read itself.
        self._datasets: dict[int, dict[str, h5py.Dataset]] = {}
        self._unpacked_bins: dict[int, int] = {}
        self._reset_readers()
        self._pid = os.getpid()

    def _reset_readers(self) -> None:
        """Forget this process's raw readers (file maps, chunk views, decompressed chunks)."""
        self._readers: dict[tuple[int, str], _FrameReader] = {}
        self._maps: dict[Path, mmap.mmap | None] = {}
        self._chunk_cache = _ChunkCache(self._chunk_cache_bytes)

    def _check_files(self, verify_checksums: bool) -> None:
        for path, entry in self._entries.items():
            if not path.is_file():
                raise ShardError(f"{path}: listed in {self.root / MANIFEST_NAME} but missing")
            if path.stat().st_size != entry.bytes:
                raise ShardError(
                    f"{path}: {path.stat().st_size} bytes, manifest says {entry.bytes} "
                    "(truncated or changed; run `prep verify`)"
                )
        if not verify_checksums:
            return
        paths = list(self._entries)
        workers = max(1, min(4, os.cpu_count() or 1, len(paths)))
        with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large blocks
            digests = list(pool.map(sha256_file, paths))
        for path, digest in zip(paths, digests, strict=True):
            if digest != self._entries[path].sha256:
                raise ShardError(
                    f"{path}: SHA-256 does not match {self.root / MANIFEST_NAME} "
                    f"(corrupted or changed; `prep verify {self.root}` lists every such shard; "
                    f"{REBUILD_HINT})"
                )

    # -- metadata -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def activity_rate(self) -> np.ndarray:
        """Training-set frame activity rate per instrument (manifest), float32 [I]."""
        return self._per_instrument("activity_rate")

    @property
    def class_weights(self) -> np.ndarray:
        """Instrument weights on the transcription loss (manifest), float32 [I]."""
        return self._per_instrument("class_weight")

    def _per_instrument(self, key: str) -> np.ndarray:
        """A manifest entry keyed by instrument name, in model order, float32 [I]."""
        values = getattr(self.manifest, key)
        if not values:
            raise ShardError(f"{self.root / MANIFEST_NAME}: no {key} (no train split was built)")
        return np.asarray([values[name] for name in self.instruments], dtype=np.float32)

    @property
    def feature_params(self) -> FeatureParams:
        return self.manifest.feature_params

    @property
    def hours(self) -> float:
        return sum(t.n_samples for t in self.tracks) / SAMPLE_RATE / 3600

    def track_attrs(self, track_index: int) -> dict[str, Any]:
        """The stored attributes of a track (JSON-encoded values decoded)."""
        return read_attrs(self._group(track_index))

    # -- handles --------------------------------------------------------------------------
    def _file(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():
            # Forked copy: never touch the parent's HDF5 handles, open our own.
            self._handles = {}
            self._datasets = {}
            self._unpacked_bins = {}
            self._reset_readers()
            self._pid = os.getpid()
        handle = self._handles.get(path)
        if handle is None:
            handle = h5py.File(path, "r", rdcc_nbytes=self._cache_bytes, rdcc_nslots=1009)
            _check_format_version(path, handle.attrs.get("format_version"))
            self._handles[path] = handle
        return handle

    def _group(self, track_index: int) -> h5py.Group:
        info = self.tracks[track_index]
        handle = self._file(info.shard_path)
        try:
            return handle["tracks"][info.track_id]
        except KeyError as error:
            raise ShardError(f"{info.shard_path}: no track {info.track_id}") from error

    def _track_datasets(self, track_index: int) -> dict[str, h5py.Dataset]:
        if self._pid != os.getpid():
            self._file(self.tracks[track_index].shard_path)  # resets the forked caches
        datasets = self._datasets.get(track_index)
        if datasets is None:
            group = self._group(track_index)
            datasets = {name: group[name] for name in FRAME_FIELDS + SAMPLE_FIELDS if name in group}
            mask = datasets.get("harmonic_mask")
            if mask is not None and bool(mask.attrs.get("bitpacked", False)):
                # Read the packing attrs once per process, not once per window.
                datasets["harmonic_mask_packed"] = mask
                self._unpacked_bins[track_index] = int(mask.attrs["unpacked_length"])
            self._datasets[track_index] = datasets
        return datasets

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}
        self._datasets = {}
        self._reset_readers()  # the maps close once their chunk views are gone

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_datasets"] = {}
        state["_readers"], state["_maps"] = {}, {}
        state["_chunk_cache"] = _ChunkCache(self._chunk_cache_bytes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing useful to do
            pass

    # -- reads ----------------------------------------------------------------------------
    def read_frames(
        self, track_index: int, start: int, n_frames: int, fields: Iterable[str] = FRAME_FIELDS
    ) -> dict[str, np.ndarray]:
        """Frames ``start .. start+n_frames-1`` of a track; frames outside it are zeros."""
        info = self.tracks[track_index]
        lo, hi = max(start, 0), min(start + n_frames, info.n_frames)
        result = {}
        for name in fields:
            if name not in FRAME_FIELDS:
                raise ValueError(f"unknown frame field {name!r}; choose from {FRAME_FIELDS}")
            result[name] = self._read_frame_field(track_index, name, lo, hi, start, n_frames)
        return result

    def _read_frame_field(
        self,
        track_index: int,
        name: str,
        lo: int,
        hi: int,
        start: int,
        count: int,
    ) -> np.ndarray:
        datasets = self._track_datasets(track_index)
        try:
            dataset = datasets[name]
        except KeyError as error:
            raise ShardError(f"dataset {name!r} missing (run `prep verify`)") from error
        packed = name == "harmonic_mask" and "harmonic_mask_packed" in datasets
        out_dtype = np.float32 if name == "spec" else bool
        tail = dataset.shape[1:]
        if packed:
            tail = tail[:-1] + (self._unpacked_bins.get(track_index, N_BINS),)
        block = dataset[lo:hi] if hi > lo else np.zeros((0,) + dataset.shape[1:], dataset.dtype)
        if packed:
            block = np.unpackbits(block, axis=-1, count=tail[-1]).view(bool)
        block = block.astype(out_dtype, copy=False)
        if lo == start and hi - lo == count:
            return block
        padded = np.zeros((count,) + tail, dtype=out_dtype)
        if hi > lo:
            padded[lo - start : hi - start] = block
        return padded

    def _file_map(self, path: Path, handle: h5py.File) -> mmap.mmap | None:
        """The shard memory-mapped read-only (None for a file with a user block, whose HDF5
        addresses are not file offsets, or an empty one)."""
        if path not in self._maps:
            file_map = None
            if handle.userblock_size == 0 and path.stat().st_size > 0:
                with open(path, "rb") as stream:
                    file_map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[path] = file_map
        return self._maps[path]

    def _frame_reader(self, track_index: int, name: str) -> _FrameReader:
        reader = self._readers.get((track_index, name))
        if reader is None or self._pid != os.getpid():
            datasets = self._track_datasets(track_index)  # resets a forked copy's caches
            if name not in FRAME_FIELDS:
                raise ValueError(f"unknown frame field {name!r}; choose from {FRAME_FIELDS}")
            if name not in datasets:
                raise ShardError(f"dataset {name!r} missing (run `prep verify`)")
            path = self.tracks[track_index].shard_path
            file_map = self._file_map(path, self._file(path))
            reader = _FrameReader((track_index, name), datasets[name], file_map, self._chunk_cache)
            self._readers[(track_index, name)] = reader
        return reader

    def stored_frame_field(self, track_index: int, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape per frame and dtype of frame field ``name`` as stored in a track's shard: spec
        float16 [1025], roll bool [I, 88], harmonic_mask uint8 [I, 129] when bit-packed (attr
        ``bitpacked``; else bool [I, 1025]), activity bool [I]."""
        reader = self._frame_reader(track_index, name)
        return reader.tail, reader.dtype

    def packed_bins(self, track_index: int) -> int | None:
        """Bins of the track's harmonic mask when stored bit-packed (``np.packbits`` on the
        last axis, attr ``unpacked_length``), None when stored as bools."""
        if "harmonic_mask_packed" not in self._track_datasets(track_index):
            return None
        return self._unpacked_bins[track_index]

    def read_stored_frames(
        self, track_index: int, start: int, n_frames: int, name: str, out: np.ndarray
    ) -> None:
        """Frames ``start .. start+n_frames-1`` of field ``name`` as stored (no dtype conversion
        or unpacking, see :meth:`stored_frame_field`) into ``out`` [n_frames, ...]; frames
        outside the track are zeros. The training reader: about 3-10x cheaper per window than
        :meth:`read_frames`, whose conversions are left to the consumer (e.g. on the device)."""
        reader = self._frame_reader(track_index, name)
        if out.shape != (n_frames,) + reader.tail:
            raise ValueError(f"{name}: out has shape {out.shape}, needs {(n_frames,) + reader.tail}")
        lo, hi = max(start, 0), min(start + n_frames, self.tracks[track_index].n_frames)
        if hi <= lo:
            out[...] = 0
            return
        out[: lo - start] = 0
        out[hi - start :] = 0
        reader.read_into(lo, hi, out[lo - start :])

    def read_samples(
        self,
        track_index: int,
        start: int,
        n_frames: int,
        fields: Iterable[str] = SAMPLE_FIELDS,
    ) -> dict[str, np.ndarray]:
        """The audio that ``stft(center=False)`` turns into exactly frames start..start+T-1.

        Samples ``[HOP*start - N_FFT//2, HOP*(start+T-1) + N_FFT//2)``, zero outside the track:
        ``mix`` [L], ``stems`` [I, L] with ``L = HOP*(T-1) + N_FFT``.
        """
        info = self.tracks[track_index]
        datasets = self._track_datasets(track_index)
        first = HOP_LENGTH * start - N_FFT // 2
        length = HOP_LENGTH * (n_frames - 1) + N_FFT
        lo, hi = max(first, 0), min(first + length, info.n_samples)
        result = {}
        for name in fields:
            if name not in SAMPLE_FIELDS:
                raise ValueError(f"unknown sample field {name!r}; choose from {SAMPLE_FIELDS}")
            if name == "stems" and "stems" not in datasets:
                raise ShardError(
                    f"{info.shard_path}: track {info.track_id} has no stems (build the shards "
                    "with stems to train the supervised baseline or evaluate separation)"
                )
            dataset = datasets[name]
            lead = dataset.shape[:-1]
            out = np.zeros(lead + (length,), dtype=np.float32)
            if hi > lo:
                out[..., lo - first : hi - first] = dataset[..., lo:hi]
            result[name] = out
        return result

    def read_track(
        self, track_index: int, fields: Iterable[str] = FRAME_FIELDS + ("mix",)
    ) -> dict[str, np.ndarray]:
        """A whole track: frame fields with all ``n_frames`` frames, ``mix`` [n_samples],
        ``stems`` [I, n_samples] (unpadded audio, so ``stft(center=True)`` gives the frames)."""
        info = self.tracks[track_index]
        datasets = self._track_datasets(track_index)
        result = {}
        for name in fields:
            if name in FRAME_FIELDS:
                result[name] = self._read_frame_field(
                    track_index, name, 0, info.n_frames, 0, info.n_frames
                )
            elif name in SAMPLE_FIELDS:
                if name == "stems" and "stems" not in datasets:
                    raise ShardError(f"{info.shard_path}: track {info.track_id} has no stems")
                result[name] = np.asarray(datasets[name][()], dtype=np.float32)
            else:
                raise ValueError(f"unknown field {name!r}")
        return result


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------


def _describe_dataset(name: str, dataset: h5py.Dataset) -> str:
    filters = dataset.compression or "none"
    if dataset.shuffle:
        filters = f"shuffle+{filters}"
    extra = " bitpacked" if dataset.attrs.get("bitpacked", False) else ""
    return (
        f"    {name:<14} {str(dataset.dtype):<8} {str(dataset.shape):<20} "
        f"chunks={dataset.chunks} {filters}{extra} "
        f"stored={dataset.id.get_storage_size() / 2**20:.2f} MiB"
    )


def inspect_shard(path: Path, track: str | None = None) -> str:
    """A human-readable summary of a shard file (or of one of its tracks)."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such shard file")
    lines = [f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"]
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ShardError(f"{path}: not a readable HDF5 shard ({_first_line(error)})") from error
    with handle:
        root = read_attrs(handle)
        for key, value in root.items():
            lines.append(f"  {key}: {value}")
        if "tracks" not in handle:
            raise ShardError(f"{path}: no /tracks group (not a scorecritic shard)")
        tracks = handle["tracks"]
        instruments = list(root.get("instruments", []))
        if track is None:
            total = sum(int(g.attrs["n_samples"]) for g in tracks.values())
            lines.append(f"  {len(tracks)} tracks, {total / SAMPLE_RATE / 60:.1f} min:")
            for track_id, group in tracks.items():
                stems = " stems" if "stems" in group else ""
                lines.append(
                    f"    {track_id}: {float(group.attrs['duration_s']):.1f} s, "
                    f"{int(group.attrs['n_frames'])} frames{stems}"
                )
            return "\n".join(lines)
        if track not in tracks:
            raise ShardError(f"{path}: no track {track!r} (has {list(tracks)[:5]}...)")
        group = tracks[track]
        lines.append(f"  track {track}:")
        for key, value in read_attrs(group).items():
            lines.append(f"    {key}: {value}")
        for name, dataset in group.items():
            lines.append(_describe_dataset(name, dataset))
        activity = np.asarray(group["activity"][()], dtype=bool)
        roll = np.asarray(group["roll"][()], dtype=bool)
        for index, name in enumerate(instruments):
            onsets = np.diff(roll[:, index].astype(np.int8), axis=0, prepend=0) > 0
            lines.append(
                f"    {name}: active in {activity[:, index].mean():.1%} of frames, "
                f"{int(onsets.sum())} note onsets"
            )
    return "\n".join(lines)


def plot_window(path: Path, track: str | None, start_frame: int, png: Path,
                n_frames: int = 129) -> Path:
    """Save a figure of a window of ``track`` (default: the shard's first): the log
    spectrogram |X| beside the frame-level activity labels of every instrument, then per
    instrument its piano roll Y and its harmonic mask A over |X|.

    Example::

        plot_window(Path("data/train/train-00000.h5"), None, 0, Path("window.png"))
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    with h5py.File(path, "r") as handle:
        if "tracks" not in handle or not len(handle["tracks"]):
            raise ShardError(f"{path}: holds no tracks")
        track = next(iter(handle["tracks"])) if track is None else track
        if track not in handle["tracks"]:
            raise ShardError(f"{path}: no track {track!r}")
        group = handle["tracks"][track]
        instruments = [_to_str(n) for n in handle.attrs["instruments"]]
        stop = min(start_frame + n_frames, int(group.attrs["n_frames"]))
        if not 0 <= start_frame < stop:
            raise ShardError(f"{path}: start frame {start_frame} outside track {track}")
        spec = np.asarray(group["spec"][start_frame:stop], dtype=np.float32)
        roll = np.asarray(group["roll"][start_frame:stop], dtype=bool)
        mask = group["harmonic_mask"][start_frame:stop]
        if group["harmonic_mask"].attrs.get("bitpacked", False):
            mask = np.unpackbits(mask, axis=-1, count=N_BINS)
        mask = np.asarray(mask, dtype=bool)
        activity = np.asarray(group["activity"][start_frame:stop], dtype=bool)  # [T, I]
    # dB with an 80 dB floor below the window maximum, so quiet partials stay visible.
    log_spec = 20 * np.log10(np.maximum(spec, 1e-4 * max(float(spec.max()), 1e-12))).T
    extent_t = (start_frame, stop)
    fig, axes = plt.subplots(
        1 + len(instruments), 2, figsize=(12, 3 * (1 + len(instruments))), squeeze=False
    )
    axes[0, 0].imshow(
        log_spec, origin="lower", aspect="auto", extent=(*extent_t, 0, SAMPLE_RATE / 2)
    )
    axes[0, 0].set_title(f"{track}: |X| (dB)")
    axes[0, 0].set_ylabel("Hz")
    axes[0, 1].imshow(activity.T, origin="lower", aspect="auto", cmap="Greys",
                      interpolation="nearest", extent=(*extent_t, -0.5, len(instruments) - 0.5))
    axes[0, 1].set_yticks(range(len(instruments)), instruments)
    axes[0, 1].set_title("activity labels (frame level)")
    for index, name in enumerate(instruments, start=1):
        axes[index, 0].imshow(
            roll[:, index - 1].T,
            origin="lower",
            aspect="auto",
            extent=(*extent_t, 21, 109),
            cmap="Greys",
            interpolation="nearest",
        )
        axes[index, 0].set_title(f"{name}: piano roll Y")
        axes[index, 0].set_ylabel("MIDI")
        axes[index, 1].imshow(
            log_spec,
            origin="lower",
            aspect="auto",
            cmap="Greys",
            extent=(*extent_t, 0, SAMPLE_RATE / 2),
        )
        axes[index, 1].imshow(
            np.ma.masked_where(~mask[:, index - 1].T, mask[:, index - 1].T),
            origin="lower",
            aspect="auto",
            alpha=0.5,
            cmap="autumn",
            extent=(*extent_t, 0, SAMPLE_RATE / 2),
            interpolation="nearest",
        )
        axes[index, 1].set_title(f"{name}: harmonic mask A over |X|")
    for ax in axes[-1]:
        ax.set_xlabel("frame")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def remove_tree_partials(out: Path) -> list[Path]:
    """Delete leftover ``.*.partial`` shard files (interrupted builds); returns what was removed."""
    removed = []
    for path in sorted(Path(out).glob(f"*/.*{PARTIAL_SUFFIX}")):
        path.unlink()
        removed.append(path)
    return removed


__all__ = [
    "BUILD_RECORD_SUFFIX",
    "BuildPlanFile",
    "DEFAULT_LAYOUT",
    "DEFAULT_TARGET_SHARD_BYTES",
    "FORMAT_VERSION",
    "FRAME_FIELDS",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA_VERSION",
    "Manifest",
    "PLAN_NAME",
    "PlannedShard",
    "REBUILD_HINT",
    "SAMPLE_FIELDS",
    "ShardError",
    "ShardRecord",
    "ShardSet",
    "ShardWriteError",
    "ShardWriter",
    "StorageLayout",
    "TrackArrays",
    "TrackEntry",
    "TrackInfo",
    "inspect_shard",
    "list_shard_files",
    "manifest_from_shards",
    "partial_path",
    "plan_problems",
    "plot_window",
    "read_build_record",
    "read_attrs",
    "read_manifest",
    "remove_tree_partials",
    "build_record_path",
    "check_against_plan",
    "sha256_file",
    "shard_path",
    "validate_track",
    "discard",
    "verify",
    "write_error",
    "write_manifest",
]
