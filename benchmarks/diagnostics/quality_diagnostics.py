"""Data and loss diagnostics behind the quality report (issue 9): what the weak labels allow.

Prints, on the whole tracks of a split (SI-SDR with the evaluation's protocol):

1. SI-SDR of label-only estimates, no training involved:
   - the input mixture and the oracle ideal ratio mask (the two bounds of Table 1);
   - the **harmonic partition** M_i = A_i / max(1, sum_j A_j): a minimiser of L_h-mix (eq. 7)
     that splits overlapping bins evenly -- what h-mix alone pulls a separator towards;
   - the same with the masks shifted by +-1 / +-2 frames (a misaligned roll would score
     better shifted).
2. For harmonic masks recomputed from the rolls with other L, tolerances and release tails:
   the partition's SI-SDR, and the share of each stem's STFT magnitude (L1) inside its own
   mask A_i, i.e. how much of a source h-mix can ever assign to it.
3. L_c-mix and L_h-mix (per frame, ``mixture_norm="mixture"``) of the true stems, the
   harmonic partition and the mixture as every source.

Usage:
    python -m benchmarks.diagnostics.quality_diagnostics --shards data --split test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import description, stem_magnitudes


def harmonic_partition(A: np.ndarray) -> np.ndarray:
    """M_i = A_i / max(1, sum_j A_j) from A [I, F, T] bool: an L_h-mix minimiser."""
    A = A.astype(np.float32)
    return A / np.maximum(A.sum(axis=0, keepdims=True), 1.0)


def shift(A: np.ndarray, frames: int) -> np.ndarray:
    """A [I, F, T] delayed by ``frames`` (negative: advanced), zero-filled."""
    out = np.zeros_like(A)
    if frames > 0:
        out[..., frames:] = A[..., :-frames]
    elif frames < 0:
        out[..., :frames] = A[..., -frames:]
    else:
        out[:] = A
    return out


def variant_mask(roll: np.ndarray, n_harmonics: int, tolerance: int, release: int) -> np.ndarray:
    """A [I, F, T] from a roll [T, I, 88] with L harmonics, +-tolerance bins, and each note
    held ``release`` frames past its offset (the synthesiser's release tail)."""
    from prep.features import harmonic_mask

    held = np.asarray(roll, dtype=bool).copy()
    for k in range(1, release + 1):
        held[k:] |= roll[:-k].astype(bool)
    mask = harmonic_mask(held, n_harmonics=n_harmonics, tolerance_bins=tolerance)  # [T, I, F]
    return np.transpose(mask, (1, 2, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--shards", type=Path, default=Path("data"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-tracks", type=int, default=None)
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--silence-db", type=float, default=-60.0)
    parser.add_argument(
        "--variants",
        default="15:1:0,30:1:0,60:1:0,15:2:0,60:2:0,15:1:3,60:2:3",
        help="harmonic-mask variants L:tolerance:release_frames to score the partition of",
    )
    args = parser.parse_args()
    import torch

    from prep.features import SAMPLE_RATE, stft
    from prep.shards import ShardSet
    from train import losses as L
    from train.evaluate import (
        oracle_ratio_masks,
        segment_bounds,
        segment_si_sdr,
        silent_segments,
    )
    from train.inference import masks_to_waveforms

    shard_set = ShardSet(args.shards, args.split)
    instruments = list(shard_set.instruments)
    n_tracks = len(shard_set) if args.max_tracks is None else min(args.max_tracks, len(shard_set))
    seg = int(round(args.segment_seconds * SAMPLE_RATE))
    systems = ["mixture", "oracle IRM", "harmonic partition"]
    systems += [f"harmonic partition shifted {s:+d} fr" for s in (-2, -1, 1, 2)]
    scores: dict[str, list[np.ndarray]] = {name: [] for name in systems}
    terms: dict[str, list[tuple[float, float]]] = {"true stems": [], "harmonic partition": [],
                                                  "mixture as every source": []}
    variants = [tuple(int(x) for x in v.split(":")) for v in args.variants.split(",") if v]
    variant_scores: dict[tuple[int, ...], list[np.ndarray]] = {v: [] for v in variants}
    variant_coverage: dict[tuple[int, ...], list[np.ndarray]] = {v: [] for v in variants}
    for index in range(n_tracks):
        track = shard_set.read_track(index, fields=("mix", "stems", "harmonic_mask", "roll"))
        mix, stems = track["mix"], track["stems"]
        A = np.transpose(track["harmonic_mask"], (1, 2, 0))  # [I, F, T]
        with torch.no_grad():
            mix_spec = stft(torch.from_numpy(mix))  # [F, T]
            S = stem_magnitudes(torch.from_numpy(stems), center=True).numpy()  # [I, F, T]
        X = mix_spec.abs().numpy()
        if A.shape[-1] != X.shape[-1]:
            raise SystemExit(f"track {index}: mask has {A.shape[-1]} frames, STFT {X.shape[-1]}")
        bounds = segment_bounds(len(mix), seg)
        silent = silent_segments(stems, bounds, args.silence_db)
        masks = {
            "mixture": None,
            "oracle IRM": oracle_ratio_masks(S),
            "harmonic partition": harmonic_partition(A),
        }
        for s in (-2, -1, 1, 2):
            masks[f"harmonic partition shifted {s:+d} fr"] = harmonic_partition(shift(A, s))
        for name, mask in masks.items():
            if mask is None:
                estimate = np.broadcast_to(mix, stems.shape)
            else:
                estimate = masks_to_waveforms(mask, mix_spec, len(mix))
            scores[name].append(segment_si_sdr(estimate, stems, bounds, silent))
        total = S.sum(axis=(1, 2))
        for variant in variants:
            A_v = variant_mask(track["roll"], *variant)
            estimate = masks_to_waveforms(harmonic_partition(A_v), mix_spec, len(mix))
            variant_scores[variant].append(segment_si_sdr(estimate, stems, bounds, silent))
            variant_coverage[variant].append(
                (S * A_v).sum(axis=(1, 2)) / np.maximum(total, 1e-12)
            )
        Xt = torch.from_numpy(X)[None]
        At = torch.from_numpy(A)[None]
        active = torch.from_numpy(A.reshape(A.shape[0], -1).any(axis=1))[None]
        for name, S_hat in (
            ("true stems", S),
            ("harmonic partition", harmonic_partition(A) * X[None]),
            ("mixture as every source", np.broadcast_to(X, S.shape).copy()),
        ):
            S_t = torch.from_numpy(np.ascontiguousarray(S_hat, dtype=np.float32))[None]
            terms[name].append(
                (
                    float(L.clip_mixture_loss(Xt, S_t, active)),
                    float(L.harmonic_mixture_loss(Xt, S_t, At)),
                )
            )

    print(f"# quality diagnostics: {args.shards} split {args.split}, {n_tracks} tracks\n")
    print("| estimate (no training) | " + " | ".join(instruments) + " | avg |")
    print("|---|" + "---|" * (len(instruments) + 1))
    for name in systems:
        per_inst = np.nanmean(np.concatenate(scores[name], axis=1), axis=1)
        cells = " | ".join(f"{v:.2f}" for v in per_inst)
        print(f"| {name} | {cells} | {per_inst.mean():.2f} |")
    print("\n| harmonic mask variant (L, +-bins, release frames) | partition SI-SDR "
          + " | ".join(instruments) + " | avg | coverage " + " | ".join(instruments) + " |")
    print("|---|" + "---|" * (2 * len(instruments) + 1))
    for variant in variants:
        per_inst = np.nanmean(np.concatenate(variant_scores[variant], axis=1), axis=1)
        cover = np.mean(variant_coverage[variant], axis=0)
        print(f"| L={variant[0]}, +-{variant[1]}, release {variant[2]} | "
              + " | ".join(f"{v:.2f}" for v in per_inst) + f" | {per_inst.mean():.2f} | "
              + " | ".join(f"{v:.3f}" for v in cover) + " |")
    print("\n| S_hat | L_c-mix per frame | L_h-mix per frame |")
    print("|---|---|---|")
    for name, values in terms.items():
        c, h = np.mean(values, axis=0)
        print(f"| {name} | {c:.3f} | {h:.3f} |")


if __name__ == "__main__":
    main()
