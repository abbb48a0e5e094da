"""Soak test of crash safety: many random kills of ``prep build-shards`` and ``train step1``.

A tiny demo corpus is rendered with FluidSynth (``prep synth-slakh``), built once without
interruption (the reference), then rebuilt again and again while being killed with SIGKILL:

* at a random named point (``SCORECRITIC_FAULT=point:n``, see prep/faults.py: inside a shard
  write, before a rename, inside the manifest write ...), or
* at a random moment (an external ``kill -9`` after a random delay).

After every kill the output folder is checked: every shard under its final name has the
reference's contents and the SHA-256 its build record gives, every build record parses, and ``manifest.json`` is either absent or the
reference's. A run that finishes must give exactly the reference (``prep verify`` clean, same
checksums, same manifest); the next run then uses ``--force`` so later kills land in the build
again. Training: ``train step1`` on the built shards is killed at random optimiser steps and
checkpoint writes, resumed with ``--resume`` (or restarted when no ``last.pt`` exists yet)
until it finishes, and its final weights must be bit-equal to an uninterrupted run's.

    .venv/bin/python -m benchmarks.perf.soak [--prep-kills 40] [--train-kills 12] [--seed 0]
        [--json runs-bench/soak.json]

Prints the counts (faults injected, kills that hit, survived, violations, tracks lost) and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prep.shards import Manifest

from benchmarks.common import add_json_option, description, write_json

BIN = Path(sys.executable).parent
PREP_POINTS = ("track-processed", "shard-write", "shard-rename", "shard-renamed",
               "record-write", "manifest-write")
TRAIN_POINTS = ("train-step", "checkpoint-write", "best-written")
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1}
train: {val_windows: 2, num_workers: 0, device: cpu, batch_size: 2, window_frames: 32}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_killed(command: list[str], fault: str | None, delay: float | None,
               timeout: float = 600) -> int:
    """Run ``command``; SIGKILL it at ``fault`` (env hook) or after ``delay`` s; return code."""
    from prep.faults import ENV_VAR

    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if fault:
        env[ENV_VAR] = fault
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        process.wait(timeout=delay if delay is not None else timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if process.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(command)} failed:\n{process.stderr.read().decode()}")
    process.stderr.close()
    return process.returncode


def shard_contents(path: Path) -> dict[str, Any]:
    """Every dataset's bytes and every attribute of a shard (h5py's LZF filter can compress the
    same chunk to different bytes in two processes, so contents, not file hashes, are
    compared with the reference; each file must still match its own recorded SHA-256)."""
    import h5py

    from prep.shards import read_attrs

    with h5py.File(path, "r") as handle:
        contents = {"/": json.dumps(read_attrs(handle), sort_keys=True, default=str)}

        def visit(name: str, obj: Any) -> None:
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
            contents[name] = (json.dumps(read_attrs(obj), sort_keys=True, default=str), data)

        handle.visititems(visit)
    return contents


def without_checksums(manifest: Manifest) -> Manifest:
    """The manifest with each shard's checksum and size blanked (contents are compared file by
    file instead); its provenance is left out of ``==`` anyway."""
    return replace(manifest, shards=[replace(s, sha256="", bytes=0) for s in manifest.shards])


def check_prep_state(out: Path, clean: Path) -> list[str]:
    """What a killed build left must never look complete unless it is: violations."""
    from prep.shards import read_manifest, verify

    problems = []
    for path in out.glob("*/*.h5"):
        try:
            if shard_contents(path) != shard_contents(clean / path.relative_to(out)):
                problems.append(f"{path}: under its final name but not the reference's contents")
        except OSError as error:
            problems.append(f"{path}: under its final name but unreadable ({error})")
    for path in out.glob("*/*.build.json"):
        try:
            record = json.loads(path.read_text())
            reference = json.loads((clean / path.relative_to(out)).read_text())
            if record["record"]["tracks"] != reference["record"]["tracks"]:
                problems.append(f"{path}: records tracks other than the reference's")
            shard = out / record["record"]["path"]
            if shard.exists() and sha256(shard) != record["record"]["sha256"]:
                problems.append(f"{path}: its SHA-256 is not that of {shard}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{path}: unreadable build record ({error})")
    if (out / "manifest.json").exists():
        try:
            if without_checksums(read_manifest(out)) != without_checksums(read_manifest(clean)):
                problems.append(f"{out / 'manifest.json'}: differs from the reference")
            problems += verify(out)
        except Exception as error:  # noqa: BLE001 - any failure to read is a violation
            problems.append(f"{out / 'manifest.json'}: unreadable ({error})")
    return problems


def soak_prep(work: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    from prep.shards import read_manifest, verify
    from prep.synth import synth_slakh

    corpus, clean, out = work / "corpus", work / "clean", work / "out"
    synth_slakh(corpus, tracks=6, seconds=4.0, seed=1, progress=False)
    base = [str(BIN / "prep"), "build-shards", "--slakh-root", str(corpus), "--shard-size-mb",
            "0.3", "--no-progress"]
    start = time.perf_counter()
    run_killed([*base, "--out", str(clean)], None, None)
    clean_s = time.perf_counter() - start
    clean_manifest = read_manifest(clean)
    tracks = {t.track_id for t in clean_manifest.tracks()}
    stats = {"faults_injected": 0, "killed": 0, "finished_runs": 0, "survived": 0,
             "violations": [], "by_point": {}, "clean_build_s": round(clean_s, 2),
             "shards": len(clean_manifest.shards), "tracks": len(tracks)}
    force = False
    for _ in range(kills):
        if rng.random() < 0.3:
            fault, delay = None, rng.uniform(0.5, clean_s)
            label = "random-time"
        else:
            point = rng.choice(PREP_POINTS)
            fault, delay = f"{point}:{rng.randint(1, 3)}", None
            label = point
        stats["faults_injected"] += 1
        code = run_killed([*base, "--out", str(out), *(["--force"] if force else [])], fault,
                          delay)
        problems = check_prep_state(out, clean)
        force = False
        if code == 0:  # the fault point was not reached: the run finished
            stats["finished_runs"] += 1
            force = True  # next time rebuild everything, so kills land in the build again
        else:
            stats["killed"] += 1
            stats["by_point"][label] = stats["by_point"].get(label, 0) + 1
        stats["survived"] += not problems
        stats["violations"] += problems
    run_killed([*base, "--out", str(out)], None, None)
    final = read_manifest(out)
    stats["violations"] += verify(out) + check_prep_state(out, clean)
    if without_checksums(final) != without_checksums(clean_manifest):
        stats["violations"].append("final manifest differs from the uninterrupted build's")
    kept = {t.track_id for t in final.tracks()}
    stats["tracks_lost"] = sorted(tracks - kept)
    stats["leftover_partials"] = [str(p) for p in out.rglob("*.partial")]
    return stats


def soak_train(work: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    import torch

    params = work / "params.yaml"
    params.write_text(PARAMS)
    shards = work / "clean"

    def command(out: Path, resume: bool) -> list[str]:
        return [str(BIN / "train"), "step1", "--shards", str(shards), "--out", str(out),
                "--params", str(params), "--set", "train.max_epochs=4", "--set", "train.steps_per_epoch=3",
                "--seed", "5", "--no-progress", *(["--resume"] if resume else [])]

    straight, resumed = work / "runs" / "straight", work / "runs" / "resumed"
    run_killed(command(straight, False), None, None)
    stats = {"faults_injected": 0, "killed": 0, "by_point": {}, "restarts_without_last_pt": 0}
    finished = False
    while not finished:
        has_last = (resumed / "last.pt").exists()
        if not has_last and (resumed / "config.json").exists():
            stats["restarts_without_last_pt"] += 1
        if stats["faults_injected"] < kills:
            point = rng.choice(TRAIN_POINTS)
            count = rng.randint(1, 6) if point == "train-step" else rng.randint(1, 2)
            fault = f"{point}:{count}"
            stats["faults_injected"] += 1
        else:
            fault = None
        code = run_killed(command(resumed, has_last), fault, None)
        if code != 0:
            stats["killed"] += 1
            stats["by_point"][point] = stats["by_point"].get(point, 0) + 1
        finished = code == 0 and (resumed / "metrics.json").exists()
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    equal = all(torch.equal(v, b["nets"][n][k]) for n in a["nets"] for k, v in a["nets"][n].items())
    stats["final_weights_bit_equal"] = bool(equal)
    stats["leftover_tmp"] = [str(p) for p in resumed.glob(".*.tmp")]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--prep-kills", type=int, default=40)
    parser.add_argument("--train-kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser, Path("runs-bench/soak.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        prep_stats = soak_prep(work, args.prep_kills, rng)
        train_stats = soak_train(work, args.train_kills, rng) if args.train_kills else {}
        shutil.rmtree(work / "runs", ignore_errors=True)
    result = {"seed": args.seed, "prep": prep_stats, "train": train_stats,
              "wall_s": round(time.perf_counter() - start, 1)}
    print(f"prep: {prep_stats['faults_injected']} faults injected, {prep_stats['killed']} kills "
          f"hit ({prep_stats['by_point']}), {prep_stats['finished_runs']} runs finished, "
          f"{prep_stats['survived']} states survived, {len(prep_stats['violations'])} "
          f"violations, tracks lost: {len(prep_stats['tracks_lost'])} of "
          f"{prep_stats['tracks']}")
    if train_stats:
        print(f"train: {train_stats['faults_injected']} faults injected, {train_stats['killed']} "
              f"kills hit ({train_stats['by_point']}), final weights bit-equal: "
              f"{train_stats['final_weights_bit_equal']}")
    print(f"wall {result['wall_s']} s")
    write_json(args.json, result)
    failed = (prep_stats["violations"] or prep_stats["tracks_lost"]
              or (train_stats and not train_stats["final_weights_bit_equal"]))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
