"""Shard storage sweep: bytes per audio-hour vs random 4-s window reads per second.

Writes shards of the same tracks with several ``StorageLayout``s (chunk length in frames,
compression of each dataset, bit-packed or plain harmonic mask) through the real ``ShardWriter``,
then times random 129-frame windows through the real ``ShardSet.read_frames`` (spec + roll +
harmonic_mask + activity, one process, files in the OS page cache as in training).

The audio is the real Slakh Track00001 score (tests/fixtures) rendered with FluidSynth (piano,
guitar and bass parts), so roll and mask sparsity are those of real music; without FluidSynth it
falls back to pretty_midi's sine synthesis.

Then, on a corpus rendered with ``prep synth-slakh`` (``--corpus``, 44.1 kHz FLAC stems + MIDI)
and its shards built by ``prep.build.build_shards``, three ways to get everything a training
step needs for a random 4-s window (X, Y, A, activity), in windows per CPU-second of one
process (= one DataLoader worker) and per wall-second of a 1-worker DataLoader:

* ``shards, stored``: the training reader on a GPU, ``train.data.WindowDataset(...,
  decode_on_device=True)`` in batches of 8, as a DataLoader worker runs it: stored bytes
  (float16 spec, bit-packed mask, time-major) through ``ShardSet.read_stored_frames``; the exact
  decoding to the model batch runs on the device in ``train.data.to_device``;
* ``shards, decoded``: the same batches decoded in the worker (``WindowDataset`` default, CPU
  training), and ``read_frames``: the reader before ``read_stored_frames`` (h5py slicing per
  window and field, ``WindowDataset.read_batch_reference``);
* ``raw mmap``: the physical limit, copying the same delivered bytes (spec f32, roll, mask and
  activity as bools) out of uncompressed memory-mapped arrays in the page cache;
* ``on the fly``: what users do without a feature cache, as typical Slakh torch Datasets do:
  per window, ``soundfile`` partial reads (start/stop) of the selected stems' FLACs, resampy to
  16 kHz, sum, STFT, ``pretty_midi`` parse of the stems' MIDI, piano rolls, harmonic masks.

    .venv/bin/python -m benchmarks.perf.loading [--copies 5] [--windows 2000] [--repeats 3]
        [--corpus /tmp/bench/corpus30] [--fly-windows 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import ROOT, add_json_option, description, machine, write_json

if TYPE_CHECKING:
    from prep import shards as S

FIXTURE = ROOT / "tests" / "fixtures" / "Track00001" / "all_src.mid"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CLASSES = {"piano": range(0, 8), "guitar": range(24, 32), "bass": range(32, 40)}


def render_fixture() -> tuple[np.ndarray, np.ndarray]:
    """Mixture audio and roll [T, 3, 88] of the fixture's piano/guitar/bass parts."""
    import pretty_midi

    from prep import features as F

    midi = pretty_midi.PrettyMIDI(str(FIXTURE))
    parts = {name: pretty_midi.PrettyMIDI() for name in CLASSES}
    for inst in midi.instruments:
        for name, programs in CLASSES.items():
            if not inst.is_drum and inst.program in programs:
                parts[name].instruments.append(inst)
    stems = []
    for part in parts.values():
        if SOUNDFONT.is_file():
            audio = part.fluidsynth(fs=F.SAMPLE_RATE, synthesizer=str(SOUNDFONT))
        else:
            audio = part.synthesize(fs=F.SAMPLE_RATE)
        stems.append(audio / (np.abs(audio).max() + 1e-9))
    length = max(len(s) for s in stems)
    mix = sum(np.pad(s, (0, length - len(s))) for s in stems).astype(np.float32) / 3
    frames = F.n_frames(length)
    roll = np.stack(
        [
            F.piano_roll(
                [(n.pitch, n.start, n.end) for inst in part.instruments for n in inst.notes],
                frames,
            )
            for part in parts.values()
        ],
        axis=1,
    )
    return mix, roll


def make_tracks(copies: int) -> list[S.TrackArrays]:
    from prep import features as F
    from prep import shards as S

    mix, roll = render_fixture()
    spec = F.magnitude_spectrogram(mix)
    mask = F.harmonic_mask(roll)
    activity = F.frame_activity(roll)
    return [
        S.TrackArrays(
            f"Track{k:05d}", mix * (1 - 0.1 * k), None, spec * (1 - 0.1 * k), roll, mask, activity
        )
        for k in range(copies)
    ]


def layouts() -> dict[str, S.StorageLayout]:
    from prep import shards as S

    def layout(chunk: int, spec: str, masks: str, bitpack: bool = True) -> S.StorageLayout:
        codecs = {"mix": "none", "stems": "none", "spec": spec}
        codecs.update({name: masks for name in ("roll", "harmonic_mask", "activity")})
        return S.StorageLayout(chunk_frames=chunk, bitpack_mask=bitpack, compression=codecs)

    sweep = {f"c{c} spec=none masks=lzf": layout(c, "none", "lzf") for c in (32, 64, 128, 256)}
    sweep["c64 all none"] = layout(64, "none", "none")
    sweep["c64 all none, mask bool"] = layout(64, "none", "none", bitpack=False)
    sweep["c64 spec=none masks=lzf, mask bool"] = layout(64, "none", "lzf", bitpack=False)
    sweep["c64 spec=lzf masks=lzf"] = layout(64, "lzf", "lzf")
    sweep["c64 spec=shuffle+lzf masks=lzf"] = layout(64, "shuffle+lzf", "lzf")
    sweep["c64 spec=gzip1 masks=gzip1"] = layout(64, "gzip1", "gzip1")
    sweep["c64 spec=none masks=gzip1"] = layout(64, "none", "gzip1")
    sweep["c64 spec=shuffle+gzip1 masks=lzf"] = layout(64, "shuffle+gzip1", "lzf")
    return sweep


def measure(
    name: str, layout: S.StorageLayout, tracks, folder: Path, windows: int, repeats: int
) -> dict:
    from prep import features as F
    from prep import shards as S

    out = folder / name.replace(" ", "_").replace("=", "-").replace(",", "")
    start = time.perf_counter()
    with S.ShardWriter(
        S.shard_path(out, "train", 0),
        split="train",
        instruments=list(CLASSES),
        feature_params=F.FeatureParams(),
        source={"source_corpus": "benchmark", "split_scheme": "none"},
        layout=layout,
    ) as writer:
        for track in tracks:
            writer.add_track(track)
    write_s = time.perf_counter() - start
    S.write_manifest(out, S.manifest_from_shards(out))
    shards = S.ShardSet(out, "train", verify_checksums=False)
    hours = shards.hours
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(shards), windows)
    starts = [int(rng.integers(0, shards.tracks[i].n_frames - F.WINDOW_FRAMES)) for i in picks]
    shards.read_frames(0, 0, F.WINDOW_FRAMES)  # open the file outside the timing
    # Median of several passes, timed in wall-clock and in this process's CPU time (user + sys):
    # on a shared machine the CPU time is the stable figure, on an idle one they agree.
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for index, first in zip(picks, starts, strict=True):
            shards.read_frames(int(index), first, F.WINDOW_FRAMES)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall_s, cpu_s = statistics.median(walls), statistics.median(cpus)
    shards.close()
    size = writer.record.bytes
    return {
        "layout": name,
        "chunk_frames": layout.chunk_frames,
        "compression": dict(layout.compression),
        "bitpack_mask": layout.bitpack_mask,
        "gb_per_hour": size / 1e9 / hours,
        "windows_per_cpu_s": windows / cpu_s,
        "windows_per_wall_s": windows / wall_s,
        "write_s_per_hour": write_s / hours,
    }


# --------------------------------------------------------------------------------------------
# Shards vs raw memory-mapped arrays vs on-the-fly decoding, and storage per audio-hour
# --------------------------------------------------------------------------------------------

FIELDS = ("spec", "roll", "harmonic_mask", "activity")
STORED = "shards, stored (decode on device)"
INSTRUMENTS = "piano,guitar,bass"


def build_corpus_shards(corpus: Path, out: Path, stems: str) -> Path:
    """``build_shards`` of the corpus (default options, soxr_hq) into ``out``."""
    from prep.build import build_shards

    build_shards(corpus, out, INSTRUMENTS, stems=stems, progress=False, log=lambda line: None)
    return out


def random_windows(shards: S.ShardSet, count: int, seed: int) -> list:
    from train.data import training_windows

    counts = np.asarray([t.n_frames for t in shards.tracks])
    return training_windows(counts, count, seed, 0, 0)


def time_cpu(fn, repeats: int) -> tuple[float, float]:
    """Median CPU seconds (this process, all threads) and wall seconds of ``fn()``."""
    cpus, walls = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(cpus), statistics.median(walls)


def shard_reader(shards: S.ShardSet, windows: list, batch: int = 8, mode: str = "stored"):
    """The product's path: WindowDataset batches of ``batch`` windows (what a worker does);
    ``mode`` "stored" (decoded later on the device), "decoded" (in the worker) or "read_frames"
    (the reference reader through ``ShardSet.read_frames``)."""
    from train.data import WindowDataset

    dataset = WindowDataset(shards, FIELDS, decode_on_device=mode == "stored")
    read = dataset.read_batch_reference if mode == "read_frames" else dataset.__getitem__

    def run() -> None:
        for first in range(0, len(windows), batch):
            read(windows[first : first + batch])

    return run


def loader_wall_rate(shards: S.ShardSet, windows: list, batch: int = 8) -> float:
    """Windows per wall-second through a 1-worker DataLoader (``train.data.make_loader``)."""
    from train.data import FixedBatchSampler, WindowDataset, make_loader

    loader = make_loader(WindowDataset(shards, FIELDS, decode_on_device=True),
                         FixedBatchSampler(windows, batch), 1, False)
    iterator = iter(loader)
    next(iterator)  # worker start-up outside the timing
    start = time.perf_counter()
    count = sum(1 for _ in iterator) * batch
    return count / (time.perf_counter() - start)


def raw_mmap_reader(shards: S.ShardSet, windows: list, folder: Path):
    """The physical limit: the same delivered bytes copied from uncompressed np.memmap files."""
    from prep import features as F

    arrays = []
    for index in range(len(shards)):
        track = shards.read_track(index, FIELDS)
        maps = {}
        for name in FIELDS:
            value = track[name]
            path = folder / f"{index}-{name}.npy"
            np.save(path, value)
            maps[name] = np.load(path, mmap_mode="r")
        arrays.append(maps)
    for maps in arrays:  # into the page cache, as the shards are
        for value in maps.values():
            np.asarray(value).sum()

    def run() -> None:
        for window in windows:
            maps = arrays[window.track_index]
            stop = window.start + F.WINDOW_FRAMES
            for name in FIELDS:
                np.array(maps[name][window.start : stop])

    return run


def window_bytes(shards: S.ShardSet) -> int:
    """Bytes of one window as delivered: spec f32, roll, mask and activity as bools."""
    from prep import features as F

    instruments = len(shards.instruments)
    return F.WINDOW_FRAMES * (4 * F.N_BINS + instruments * (F.N_PITCHES + F.N_BINS + 1))


def on_the_fly_reader(corpus: Path, shards: S.ShardSet, windows: list):
    """What users do without a feature cache: decode, resample, sum, STFT, parse MIDI, build
    rolls and masks for every window (soundfile start/stop reads, resampy, pretty_midi)."""
    import pretty_midi
    import resampy
    import soundfile as sf
    import torch

    from prep import features as F
    from prep.build import plan_track
    from prep.slakh import find_tracks, load_instrument_map, parse_instruments

    imap = load_instrument_map(None)
    names = parse_instruments(INSTRUMENTS, imap)
    plans = {t.track_id: plan_track(t, "split2", imap, names, "eval")
             for t in find_tracks(corpus)}
    by_index = [plans[t.track_id] for t in shards.tracks]
    resampy.resample(np.zeros(4410, dtype=np.float32), 44100, 16000)  # numba JIT, once
    window_samples = F.HOP_LENGTH * (F.WINDOW_FRAMES - 1)

    def load(window) -> dict[str, np.ndarray]:
        plan = by_index[window.track_index]
        start_s = window.start * F.HOP_LENGTH / F.SAMPLE_RATE
        mix = np.zeros(window_samples, dtype=np.float32)
        rolls = []
        for name in names:
            notes = []
            for key in plan.stems[name]:
                path = plan.path / plan.audio_files[key]
                rate = sf.info(str(path)).samplerate
                first = int(start_s * rate)
                audio, _ = sf.read(str(path), start=first,
                                   stop=first + int(window_samples * rate / F.SAMPLE_RATE) + 1,
                                   dtype="float32", always_2d=True)
                wave = resampy.resample(audio.mean(axis=1), rate, F.SAMPLE_RATE)
                mix[: min(len(wave), window_samples)] += wave[:window_samples]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    midi = pretty_midi.PrettyMIDI(str(plan.path / plan.midi_files[key]))
                notes += [(n.pitch, n.start - start_s, n.end - start_s)
                          for inst in midi.instruments if not inst.is_drum for n in inst.notes]
            rolls.append(F.piano_roll(notes, F.WINDOW_FRAMES))
        roll = np.stack(rolls, axis=1)
        spec = F.stft(torch.from_numpy(mix)).abs().T.numpy()
        return {"spec": spec, "roll": roll, "harmonic_mask": F.harmonic_mask(roll),
                "activity": F.frame_activity(roll)}

    def run() -> None:
        for window in windows:
            load(window)

    return run, load


def storage(corpus: Path, folder: Path) -> dict:
    """Bytes per audio-hour of the train split with and without stems, and raw float32."""
    from prep import features as F
    from prep import shards as S

    result = {}
    for stems in ("none", "all"):
        out = build_corpus_shards(corpus, folder / f"stems-{stems}", stems)
        shards = S.ShardSet(out, "train", verify_checksums=False)
        size = sum(p.stat().st_size for p in (out / "train").glob("*.h5"))
        result[f"gb_per_hour_stems_{stems}"] = size / 1e9 / shards.hours
        instruments = len(shards.instruments)
        frames = sum(t.n_frames for t in shards.tracks)
        samples = sum(t.n_samples for t in shards.tracks)
        raw = frames * (4 * F.N_BINS + instruments * (F.N_PITCHES + F.N_BINS + 1)) + 4 * samples
        if stems == "all":
            raw += 4 * samples * instruments
        result[f"raw_gb_per_hour_stems_{stems}"] = raw / 1e9 / shards.hours
        result["train_hours"] = shards.hours
        shards.close()
    return result


def compare_paths(corpus: Path, folder: Path, windows: int, fly_windows: int,
                  repeats: int) -> dict:
    """Windows/CPU-s of the shard reader, the raw-mmap limit and on-the-fly decoding."""
    from prep import features as F
    from prep import shards as S

    out = build_corpus_shards(corpus, folder / "paths", "eval")
    shards = S.ShardSet(out, "train", verify_checksums=False)
    picks = random_windows(shards, windows, seed=1)
    reader = shard_reader(shards, picks)
    reader()  # open files, fill the page cache
    decoded, reference = (shard_reader(shards, picks, mode=m) for m in ("decoded", "read_frames"))
    reference()
    raw = raw_mmap_reader(shards, picks, folder)
    raw()
    fly, load_one = on_the_fly_reader(corpus, shards, picks[:fly_windows])
    # sanity: on-the-fly features agree with the shard's (same audio, same scores)
    first = picks[0]
    mine = load_one(first)
    stored = shards.read_frames(first.track_index, first.start, F.WINDOW_FRAMES)
    agree = {"roll": float(np.mean(mine["roll"] == stored["roll"])),
             "spec_rel_err": float(np.abs(mine["spec"][2:-2] - stored["spec"][2:-2]).mean()
                                   / max(float(np.abs(stored["spec"]).mean()), 1e-12))}
    paths = {STORED: (reader, windows), "shards, decoded in the worker": (decoded, windows),
             "shards, read_frames (before)": (reference, windows),
             "raw mmap (limit)": (raw, windows),
             "on the fly (decode+resample+STFT+MIDI)": (fly, fly_windows)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(repeats):  # alternate the paths: load changes hit them alike
        for name, (fn, _count) in paths.items():
            times[name].append(time_cpu(fn, 1))
    rows = {}
    for name, (_fn, count) in paths.items():
        cpu = statistics.median(t[0] for t in times[name])
        wall = statistics.median(t[1] for t in times[name])
        rows[name] = {"windows_per_cpu_s": count / cpu, "windows_per_s": count / wall,
                      "windows": count}
    rows[STORED]["dataloader_1_worker_windows_per_s"] = statistics.median(
        loader_wall_rate(shards, picks) for _ in range(repeats))
    shard_rate = rows[STORED]["windows_per_cpu_s"]
    result = {
        "rows": rows, "window_mb": window_bytes(shards) / 1e6, "check": agree,
        "x_faster_than_on_the_fly": shard_rate
        / rows["on the fly (decode+resample+STFT+MIDI)"]["windows_per_cpu_s"],
        "x_slower_than_raw": rows["raw mmap (limit)"]["windows_per_cpu_s"] / shard_rate,
    }
    shards.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--copies", type=int, default=5, help="tracks (copies of the fixture)")
    parser.add_argument("--windows", type=int, default=2000, help="random windows to time")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median is kept)")
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench/corpus30"),
                        help="synth-slakh corpus for the path comparison (rendered if missing)")
    parser.add_argument("--fly-windows", type=int, default=30,
                        help="windows decoded on the fly (slow)")
    parser.add_argument("--skip-sweep", action="store_true", help="only the path comparison")
    add_json_option(parser, Path("runs-bench/loading.json"))
    args = parser.parse_args()
    import torch

    from prep import shards as S

    result: dict = {**machine(), "windows": args.windows, "repeats": args.repeats,
                    "default_layout": {"chunk_frames": S.DEFAULT_LAYOUT.chunk_frames,
                                       "compression": dict(S.DEFAULT_LAYOUT.compression),
                                       "bitpack_mask": S.DEFAULT_LAYOUT.bitpack_mask}}
    torch.set_num_threads(1)  # one DataLoader worker's view: workers run single-threaded
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_sweep:
            tracks = make_tracks(args.copies)
            rows = []
            print(f"{'layout':<36} {'size':>11}  {'reads per CPU-second':>20}  "
                  f"{'per second':>10}")
            for name, layout in layouts().items():
                rows.append(measure(name, layout, tracks, Path(tmp), args.windows,
                                    args.repeats))
                row = rows[-1]
                print(
                    f"{name:<36} {row['gb_per_hour']:6.3f} GB/h  "
                    f"{row['windows_per_cpu_s']:6.0f} win/CPU-s  "
                    f"{row['windows_per_wall_s']:6.0f} win/s  write "
                    f"{row['write_s_per_hour']:5.1f} s/h",
                    flush=True,
                )
            result["rows"] = rows
        from prep.synth import synth_slakh

        if not any(args.corpus.glob("*/Track*/metadata.yaml")):
            synth_slakh(args.corpus, tracks=30, seconds=60.0, seed=0, progress=False)
        paths = compare_paths(args.corpus, Path(tmp), args.windows, args.fly_windows,
                              args.repeats)
        result["paths"] = paths
        print(f"\n4-s windows (X, Y, A, activity; {paths['window_mb']:.2f} MB delivered), "
              f"one process, medians of {args.repeats}:")
        for name, row in paths["rows"].items():
            extra = row.get("dataloader_1_worker_windows_per_s")
            print(f"  {name:<42} {row['windows_per_cpu_s']:8.1f} win/CPU-s "
                  f"{row['windows_per_s']:8.1f} win/s"
                  + (f"   1-worker DataLoader {extra:.0f} win/s" if extra else ""))
        print(f"  shards are {paths['x_faster_than_on_the_fly']:.0f}x faster than on the fly "
              f"and {paths['x_slower_than_raw']:.2f}x slower than raw mmap; check {paths['check']}")
        result["storage"] = storage(args.corpus, Path(tmp))
        st = result["storage"]
        print(f"storage, train split ({st['train_hours']:.3f} h): "
              f"{st['gb_per_hour_stems_none']:.3f} GB/audio-hour without stems "
              f"(raw {st['raw_gb_per_hour_stems_none']:.3f}), "
              f"{st['gb_per_hour_stems_all']:.3f} with stems "
              f"(raw {st['raw_gb_per_hour_stems_all']:.3f})")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
