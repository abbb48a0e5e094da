"""Windows versus whole tracks: the same separators scored with whole-track context and with the
4-s windows they were trained on.

Training shows the separator 129-frame (4 s) windows, zero-padded at both ends by its
convolutions, while ``train evaluate`` gives it a whole track: with a receptive field of 1531
frames (47.8 s, preset ``tiny``) the outer dilated taps, almost never fed real frames in
training, act at test time. This script measures the effect on one split (validation by
default: the test split stays sealed) under three contexts:

* ``whole``: the whole track at once (what ``train evaluate`` does);
* ``windows``: non-overlapping 129-frame windows, each alone, exactly as in training;
* ``centred``: every output frame from a 129-frame window around it (chunks of 65 frames with
  32 frames of context on each side, clipped at the track's ends).

SI-SDR as ``train evaluate`` computes it (4-s segments, silent references skipped), per
instrument and avg, with the per-track paired difference to ``whole``.

Usage::

    python -m benchmarks.diagnostics.context --shards data --split validation \
        scorecritic=runs/scorecritic/best.pt step2=runs/scorecritic-step2/best.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import description

#: context name -> (chunk frames, overlap frames); None = whole track.
CONTEXTS: dict[str, tuple[int, int] | None] = {
    "whole": None,
    "windows": (129, 0),
    "centred": (65, 32),
}


def measure(shards: Path, split: str, checkpoints: dict[str, Path], limit: int | None,
            segment_s: float = 4.0, silence_db: float = -60.0,
            contexts: tuple[str, ...] = tuple(CONTEXTS)) -> dict:
    """``{system: {context: {"mean": {instrument|avg: dB}, "per_track": {track: avg dB}}}}``."""
    import numpy as np
    import torch

    from prep.features import SAMPLE_RATE, stft
    from prep.shards import ShardSet
    from train.evaluate import (
        masks_to_waveforms,
        segment_bounds,
        segment_si_sdr,
        separation_masks,
        silent_segments,
    )
    from train.model import load_model

    torch.set_grad_enabled(False)
    shard_set = ShardSet(shards, split)
    instruments = list(shard_set.instruments)
    models = {name: load_model(path, expected_kind="separator").eval()
              for name, path in checkpoints.items()}
    scores: dict[str, dict[str, list[np.ndarray]]] = {
        name: {context: [] for context in contexts} for name in models}
    track_ids: list[str] = []
    for index, info in enumerate(shard_set.tracks[:limit]):
        track = shard_set.read_track(index, fields=("mix", "stems"))
        mix = np.asarray(track["mix"], dtype=np.float32)
        stems = np.asarray(track["stems"], dtype=np.float32)
        mix_spec = stft(torch.from_numpy(mix))
        magnitude = mix_spec.abs()
        bounds = segment_bounds(len(mix), int(segment_s * SAMPLE_RATE))
        silent = silent_segments(stems, bounds, silence_db)
        track_ids.append(info.track_id)
        for name, model in models.items():
            for context in contexts:
                chunking = CONTEXTS[context]
                if chunking is None:
                    masks = separation_masks(model, magnitude, chunk_frames=magnitude.shape[-1])
                else:
                    masks = separation_masks(model, magnitude, *chunking)
                estimate = masks_to_waveforms(masks, mix_spec, len(mix))
                scores[name][context].append(segment_si_sdr(estimate, stems, bounds, silent))
    out: dict = {"split": split, "tracks": len(track_ids), "instruments": instruments,
                 "contexts": {k: list(CONTEXTS[k]) if CONTEXTS[k] else "whole" for k in contexts},
                 "systems": {}}
    for name, by_context in scores.items():
        out["systems"][name] = {}
        for context, per_track in by_context.items():
            pooled = np.concatenate(per_track, axis=1)  # [I, all segments]
            means = {inst: float(np.nanmean(row)) for inst, row in zip(instruments, pooled,
                                                                       strict=True)}
            means["avg"] = float(np.mean(list(means.values())))
            track_avg = {tid: float(np.nanmean(np.nanmean(s, axis=1)))
                         for tid, s in zip(track_ids, per_track, strict=True)}
            out["systems"][name][context] = {"mean": means, "per_track": track_avg}
    return out


def markdown(result: dict) -> str:
    """The table: system × context, per instrument and avg, with the paired track difference."""
    import numpy as np

    instruments = result["instruments"]
    lines = [f"SI-SDR (dB), {result['split']} split, {result['tracks']} tracks.", "",
             "| system | context | " + " | ".join(instruments) + " | avg | Δ avg vs whole "
             "(paired, mean ± 1.96 se over tracks) |",
             "|---|---|" + "---|" * (len(instruments) + 2)]
    for name, by_context in result["systems"].items():
        whole = by_context["whole"]["per_track"]
        for context, entry in by_context.items():
            cells = [f"{entry['mean'][inst]:.2f}" for inst in instruments]
            diff = np.array([entry["per_track"][t] - whole[t] for t in whole])
            half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            delta = "" if context == "whole" else f"{diff.mean():+.2f} ± {half:.2f}"
            lines.append(f"| {name} | {context} | " + " | ".join(cells)
                         + f" | {entry['mean']['avg']:.2f} | {delta} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--shards", type=Path, required=True, help="shard root")
    parser.add_argument("--split", default="validation", help="split to score [validation]")
    parser.add_argument("--limit", type=int, default=None, help="first N tracks only")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=PATH",
                        help="separator checkpoints to compare")
    args = parser.parse_args()
    from train.evaluate import parse_named_paths

    result = measure(args.shards, args.split, parse_named_paths(args.checkpoints), args.limit)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result), end="")


if __name__ == "__main__":
    main()
