"""Shard storage sweep: bytes per audio-hour vs random 4-s window reads per second.

Writes shards of the same tracks with several ``StorageLayout``s (chunk length in frames,
compression of each dataset, bit-packed or plain harmonic mask) through the real ``ShardWriter``,
then times random 129-frame windows through the real ``ShardSet.read_frames`` (spec + roll +
harmonic_mask + activity, one process, files in the OS page cache as in training).

The audio is the real Slakh Track00001 score (tests/fixtures) rendered with FluidSynth (piano,
guitar and bass parts), so roll and mask sparsity are those of real music; without FluidSynth it
falls back to pretty_midi's sine synthesis.

    .venv/bin/python benchmarks/loading.py [--copies 5] [--windows 2000] [--repeats 3]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pretty_midi

from prep import features as F
from prep import shards as S

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "Track00001" / "all_src.mid"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CLASSES = {"piano": range(0, 8), "guitar": range(24, 32), "bass": range(32, 40)}


def render_fixture() -> tuple[np.ndarray, np.ndarray]:
    """Mixture audio and roll [T, 3, 88] of the fixture's piano/guitar/bass parts."""
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
    sweep["c64 spec=shuffle+gzip1 masks=lzf"] = layout(64, "shuffle+gzip1", "lzf")
    return sweep


def measure(
    name: str, layout: S.StorageLayout, tracks, folder: Path, windows: int, repeats: int
) -> dict:
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
    # Best of several passes, timed in wall-clock and in this process's CPU time (user + sys):
    # on a shared machine the CPU time is the stable figure, on an idle one they agree.
    wall_s = cpu_s = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for index, first in zip(picks, starts, strict=True):
            shards.read_frames(int(index), first, F.WINDOW_FRAMES)
        wall_s = min(wall_s, time.perf_counter() - wall)
        cpu_s = min(cpu_s, time.process_time() - cpu)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=5, help="tracks (copies of the fixture)")
    parser.add_argument("--windows", type=int, default=2000, help="random windows to time")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (best is kept)")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/loading.json"))
    args = parser.parse_args()
    tracks = make_tracks(args.copies)
    rows = []
    print(f"{'layout':<36} {'size':>11}  {'reads per CPU-second':>20}  {'per second':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in layouts().items():
            rows.append(measure(name, layout, tracks, Path(tmp), args.windows, args.repeats))
            row = rows[-1]
            print(
                f"{name:<36} {row['gb_per_hour']:6.3f} GB/h  "
                f"{row['windows_per_cpu_s']:6.0f} win/CPU-s  {row['windows_per_wall_s']:6.0f} "
                f"win/s  write {row['write_s_per_hour']:5.1f} s/h",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"windows": args.windows, "repeats": args.repeats, "rows": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
