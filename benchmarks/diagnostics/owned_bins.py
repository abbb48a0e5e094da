"""How much of each stem the owned-bin remix can see, and what its fills copy into the targets.

The owned-bin remix (``train.extensions.owned_bin_remix``; reports/bench, finding 15) takes its
known sources from the bins U_i that only instrument i's harmonics reach. This prints, on the
trainer's fixed validation windows:

1. the **coverage** of U_i (share of stem i's magnitude, L1, inside U_i) and its **purity**
   (sum U_i S_i / sum U_i X), per instrument, for U_i as the product defines it and for two
   ways of widening it: harmonic masks with ``d`` more bins of tolerance (recomputed from the rolls), and *solo
   frames* added whole (frames where the score has i alone, nobody else sounding in the
   ``tail`` frames before, so that every bin of the frame, onsets and inharmonic energy too,
   is i's);
2. with ``NAME=PATH`` separators: the share of each separated source's *fill* (its magnitude
   outside U_i, which ``owned+separated`` copies into the remix's targets) lying in bins
   another instrument owns, beside the same share for the true stems. An excess over the
   stems is leak the fill teaches back.

(The collision table of finding 24, for the pitch-shifted remixes that were not adopted, is in
git tag ``search-history``.)

Usage:
    python -m benchmarks.diagnostics.owned_bins --shards data g20=runs-bench/step3-ema-gamma20/best.pt
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import stem_magnitudes
from benchmarks.diagnostics.validation_cli import validation_command, validation_windows

if TYPE_CHECKING:
    import torch

# (frequency dilation in bins, solo-frame release tail in frames or None for no solo frames)
VARIANTS = [(0, None), (1, None), (2, None), (0, 2), (0, 4), (1, 2)]


def widened(A: torch.Tensor, Y: torch.Tensor, bins: int) -> torch.Tensor:
    """The shards' harmonic activity A, or with ``bins`` > 0 the same mask recomputed by
    ``prep.features.harmonic_mask`` with ``bins`` more bins of tolerance each side.
    A [B, I, F, T] bool, Y [B, I, 88, T] -> [B, I, F, T] bool."""
    import torch

    from prep.features import DEFAULT_TOLERANCE_BINS, harmonic_mask

    if bins == 0:
        return A.bool()
    rolls = Y.permute(0, 3, 1, 2).bool().numpy()  # [B, T, I, 88]
    tolerance = DEFAULT_TOLERANCE_BINS + bins
    masks = [harmonic_mask(roll, tolerance_bins=tolerance) for roll in rolls]  # [T, I, F] each
    return torch.from_numpy(np.stack(masks)).permute(0, 2, 3, 1)  # [B, I, F, T]


def solo_frames(Y: torch.Tensor, tail: int) -> torch.Tensor:
    """[B, I, T] bool: the score has instrument i alone at t, and nobody else in the ``tail``
    frames before (their release). Y [B, I, 88, T]."""
    import torch.nn.functional as F

    active = Y.amax(dim=2).float()  # [B, I, T]
    if tail:
        active = F.max_pool1d(F.pad(active, (tail, 0)), tail + 1, stride=1)  # [B, I, T]
    active = active.bool()
    return active & (active.sum(dim=1, keepdim=True) == 1)


def main() -> None:
    args, separators, shard_set = validation_command(__doc__)
    import torch

    from train.extensions import owned_harmonic_bins

    instruments = list(shard_set.instruments)
    n_inst = len(instruments)

    def zeros() -> torch.Tensor:
        return torch.zeros(n_inst, dtype=torch.float64)

    coverage = {v: {"stem_in_U": zeros(), "mix_in_U": zeros()} for v in VARIANTS}
    stem_total = zeros()
    fill_keys = ["stems", *separators]
    fill = {k: {"others_owned": zeros(), "outside_own": zeros()} for k in fill_keys}
    with torch.no_grad():
        for batch in validation_windows(args, shard_set):
            X, A, Y = batch["X"], batch["A"], batch["Y"]  # [B, F, T], [B, I, F, T], [B, I, 88, T]
            S = stem_magnitudes(batch["stems"]).double()  # [B, I, F, T]
            stem_total += S.sum(dim=(0, 2, 3))
            for bins, tail in VARIANTS:
                U = owned_harmonic_bins(widened(A, Y, bins))  # [B, I, F, T]
                if tail is not None:
                    U = U | solo_frames(Y, tail)[:, :, None, :]
                U = U.double()
                coverage[(bins, tail)]["stem_in_U"] += (U * S).sum(dim=(0, 2, 3))
                coverage[(bins, tail)]["mix_in_U"] += (U * X[:, None]).sum(dim=(0, 2, 3))
            U = owned_harmonic_bins(A).double()  # [B, I, F, T]
            others = U.sum(dim=1, keepdim=True) - U  # bins another instrument owns
            estimates = {"stems": S}
            for name, separator in separators.items():
                estimates[name] = (separator(X) * X[:, None]).double()  # [B, I, F, T]
            for name, S_i in estimates.items():
                fill[name]["others_owned"] += (others * S_i).sum(dim=(0, 2, 3))
                fill[name]["outside_own"] += ((1 - U) * S_i).sum(dim=(0, 2, 3))

    print(f"# Owned bins on {args.shards} {args.split}, {args.windows} windows (seed {args.seed})\n")
    print("Coverage: share of each stem's magnitude (L1) inside U_i; purity: sum U_i S_i / "
          "sum U_i X. `d`: harmonic masks widened by d bins; `solo, tail k`: solo frames added "
          "whole.\n")
    head = " | ".join(f"coverage {i}" for i in instruments)
    print(f"| U_i | {head} | coverage all | " + " | ".join(f"purity {i}" for i in instruments)
          + " | purity all |")
    print("|---|" + "---|" * (2 * n_inst + 2))
    for (bins, tail), sums in coverage.items():
        label = f"d = {bins}" + ("" if tail is None else f", solo, tail {tail}")
        cov = sums["stem_in_U"] / stem_total
        pur = sums["stem_in_U"] / sums["mix_in_U"]
        cells = [f"{v:.3f}" for v in cov.tolist()]
        cells.append(f"{sums['stem_in_U'].sum() / stem_total.sum():.3f}")
        cells += [f"{v:.3f}" for v in pur.tolist()]
        cells.append(f"{sums['stem_in_U'].sum() / sums['mix_in_U'].sum():.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if separators:
        print("\nFill: share of each source's magnitude outside U_i that lies in bins another "
              "instrument owns (U_j, j != i).\n")
        print("| source | " + " | ".join(instruments) + " |")
        print("|---|" + "---|" * n_inst)
        for name, sums in fill.items():
            share = sums["others_owned"] / sums["outside_own"]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in share.tolist()) + " |")


if __name__ == "__main__":
    main()
