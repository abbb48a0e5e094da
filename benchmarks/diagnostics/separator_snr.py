"""Magnitude SNR of separators on the trainer's fixed validation windows, per instrument: the
quick stem-based check of a run's epochs (no critic, no iSTFT; seconds per checkpoint).

First the owned bins' weak labels (``train.losses.owned_harmonic_bins``: bins only one
instrument's harmonics reach, where eq. 6-7 give that instrument the whole mixture): their share
of the stems' magnitude, and their purity, sum_i U_i S_i / sum_i U_i X. Then a markdown row per
separator: the relative L1 error sum |S_hat - S| / sum X (per
window, averaged; the supervised loss's scale) and 10 log10(sum |S|^2 / sum (|S| - S_hat)^2)
per instrument and on average. ``benchmarks/objective_diagnostics.py`` gives the same SNR
beside the weak objective's terms, at the cost of the critic's passes.

Usage:
    python benchmarks/separator_snr.py --shards data \\
        anchor-e9=runs-bench/anchor-epochs/e9/best.pt filled-e9=runs-bench/owned-filled-epochs/e9/best.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # `train` shadowing

import torch  # noqa: E402

from prep.features import stft  # noqa: E402
from train.data import validation_batches  # noqa: E402
from train.losses import owned_harmonic_bins  # noqa: E402

sys.path.append(str(HERE))  # the shared options, once `train` is the package
from validation_cli import validation_command  # noqa: E402


def main() -> None:
    args, separators, shard_set = validation_command(__doc__)
    fields = ("spec", "roll", "harmonic_mask", "stems")
    n_inst = len(shard_set.instruments)
    sums = {name: [0.0, torch.zeros(n_inst), torch.zeros(n_inst)] for name in separators}
    owned_stem = owned_mix = stem_total = 0.0
    with torch.no_grad():
        for batch in validation_batches(shard_set, fields, args.windows, args.seed, args.batch):
            X = batch["X"]  # [B, F, T]
            S = stft(batch["stems"], center=False).abs()  # [B, I, F, T]
            U = owned_harmonic_bins(batch["A"]).float()  # [B, I, F, T]
            owned_stem += (U * S).sum().item()
            owned_mix += (U * X[:, None]).sum().item()
            stem_total += S.sum().item()
            for name, separator in separators.items():
                S_hat = separator(X) * X[:, None]  # [B, I, F, T]
                l1 = (S_hat - S).abs().sum(dim=(1, 2, 3)) / X.sum(dim=(1, 2)).clamp_min(1e-8)
                sums[name][0] += l1.sum().item()
                sums[name][1] += S.square().sum(dim=(0, 2, 3))
                sums[name][2] += (S - S_hat).square().sum(dim=(0, 2, 3))

    instruments = list(shard_set.instruments)
    print(f"# Separators on {args.shards} {args.split}, {args.windows} windows (seed {args.seed})\n")
    print(f"Owned harmonic bins: {owned_stem / stem_total:.1%} of the stems' magnitude (L1), "
          f"purity {owned_stem / owned_mix:.1%}.\n")
    print("| separator | rel. L1 | " + " | ".join(f"SNR {i}" for i in instruments) + " | SNR avg |")
    print("|---|---|" + "---|" * (n_inst + 1))
    for name, (l1, signal, error) in sums.items():
        snr = 10 * torch.log10(signal / error.clamp_min(1e-12))
        cells = " | ".join(f"{v:.2f}" for v in snr.tolist())
        print(f"| {name} | {l1 / args.windows:.3f} | {cells} | {snr.mean().item():.2f} |")


if __name__ == "__main__":
    main()
