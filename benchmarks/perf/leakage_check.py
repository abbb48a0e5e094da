"""Cost of the split-leakage check (``prep.defects``) at Slakh2100's size.

Writes N Standard MIDI Files of Lakh-like size (default 2100 songs of 4 parts, about 3000 notes,
16th-note grid, 480 ticks per beat) with mido, a fraction of them exact copies and a fraction
with a few notes changed, spread over train/validation/test; then times, in one process:
reading every file (:func:`prep.defects.read_midi_notes`) and fingerprinting it, the MinHash
signatures, and :func:`prep.defects.find_split_leakage` (LSH candidates, exact Jaccard); and
checks that every planted duplicate in another split is found.

    .venv/bin/python -m benchmarks.perf.leakage_check [--tracks 2100] [--folder /tmp/leak]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mido
import numpy as np

SPLITS = ("train", "validation", "test")


def write_song(path: Path, notes: list[tuple[int, int, int]], tpb: int = 480) -> None:
    """(channel, onset in 16ths, pitch) notes, each a 16th long, as a type-1 MIDI file."""
    midi = mido.MidiFile(ticks_per_beat=tpb)
    for channel in sorted({n[0] for n in notes}):
        events = []
        for _, onset, pitch in (n for n in notes if n[0] == channel):
            start = onset * tpb // 4
            events += [(start, 1, pitch), (start + tpb // 4, 0, pitch)]
        track = mido.MidiTrack([mido.Message("program_change", channel=channel,
                                             program=8 * channel)])
        now = 0
        for tick, on, pitch in sorted(events):
            track.append(mido.Message("note_on", channel=channel, note=pitch,
                                      velocity=90 if on else 0, time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))


def random_song(rng: np.random.Generator, n_notes: int = 3000) -> list[tuple[int, int, int]]:
    channel = rng.integers(0, 4, n_notes)
    onset = rng.integers(0, 1600, n_notes)  # 100 bars of 4/4
    pitch = rng.integers(36, 90, n_notes)
    return sorted(set(zip(channel.tolist(), onset.tolist(), pitch.tolist(), strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=2100)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--copies", type=float, default=0.05, help="fraction exact copies")
    parser.add_argument("--edited", type=float, default=0.05, help="fraction near copies")
    args = parser.parse_args()
    from prep import defects as D
    folder = args.folder or Path(tempfile.mkdtemp(prefix="leakage-"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    songs: list[list[tuple[int, int, int]]] = []
    planted: set[tuple[str, str]] = set()
    splits = []
    start = time.perf_counter()
    for index in range(args.tracks):
        kind = rng.random()
        if songs and kind < args.copies:
            source = int(rng.integers(0, len(songs)))
            notes = songs[source]
        elif songs and kind < args.copies + args.edited:
            source = int(rng.integers(0, len(songs)))
            notes = list(songs[source])
            for k in rng.choice(len(notes), 10, replace=False):  # 10 of ~3000 notes moved
                channel, onset, pitch = notes[int(k)]
                notes[int(k)] = (channel, onset, pitch + 1)
        else:
            source, notes = -1, random_song(rng)
        split = SPLITS[int(rng.integers(0, 3))]
        if source >= 0 and splits[source] != split:
            planted.add((f"Track{source + 1:05d}", f"Track{index + 1:05d}"))
        songs.append(notes)
        splits.append(split)
        path = folder / f"Track{index + 1:05d}.mid"
        if not path.exists():
            write_song(path, notes)
    print(f"{args.tracks} files in {folder} ready in {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    notes = [D.read_midi_notes(folder / f"Track{i + 1:05d}.mid") for i in range(args.tracks)]
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    tracks = [D.LeakageTrack(f"Track{i + 1:05d}", splits[i], D.fingerprint(n))
              for i, n in enumerate(notes)]
    fingerprint_s = time.perf_counter() - start
    start = time.perf_counter()
    pairs = D.find_split_leakage(tracks)
    leakage_s = time.perf_counter() - start
    found = {(p.track_a, p.track_b) for p in pairs}
    missed = planted - found
    print(f"read {read_s:.1f} s ({1000 * read_s / args.tracks:.1f} ms/file, "
          f"{np.mean([n.ticks.size for n in notes]):.0f} notes/file), fingerprint "
          f"{fingerprint_s:.1f} s, minhash+LSH+Jaccard {leakage_s:.1f} s; "
          f"{len(pairs)} pairs found, {len(planted)} planted, {len(missed)} missed")


if __name__ == "__main__":
    main()
