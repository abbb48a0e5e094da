"""Magnitude SNR of separators on the trainer's fixed validation windows, per instrument: the
quick stem-based check of a run's epochs (no critic, no iSTFT; seconds per checkpoint).

First the owned bins' weak labels (``train.losses.owned_harmonic_bins``: bins only one
instrument's harmonics reach, where eq. 6-7 give that instrument the whole mixture): their share
of the stems' magnitude, and their purity, sum_i U_i S_i / sum_i U_i X. Then a markdown row per
separator: the relative L1 error sum |S_hat - S| / sum X (per
window, averaged; the supervised loss's scale) and 10 log10(sum |S|^2 / sum (|S| - S_hat)^2)
per instrument and on average. ``benchmarks.diagnostics.objective_diagnostics`` gives the same SNR
beside the weak objective's terms, at the cost of the critic's passes.

Usage:
    python -m benchmarks.diagnostics.separator_snr --shards data \\
        anchor-e9=runs-bench/anchor-epochs/e9/best.pt filled-e9=runs-bench/owned-filled-epochs/e9/best.pt
"""

from __future__ import annotations

from benchmarks.common import snr_cells, snr_db, snr_header, snr_sums, stem_magnitudes
from benchmarks.diagnostics.validation_cli import validation_command, validation_windows


def main() -> None:
    args, separators, shard_set = validation_command(__doc__)
    import torch

    from train.extensions import owned_harmonic_bins

    n_inst = len(shard_set.instruments)
    sums = {name: [0.0, torch.zeros(n_inst), torch.zeros(n_inst)] for name in separators}
    owned_stem = owned_mix = stem_total = 0.0
    with torch.no_grad():
        for batch in validation_windows(args, shard_set):
            X = batch["X"]  # [B, F, T]
            S = stem_magnitudes(batch["stems"])  # [B, I, F, T]
            U = owned_harmonic_bins(batch["A"]).float()  # [B, I, F, T]
            owned_stem += (U * S).sum().item()
            owned_mix += (U * X[:, None]).sum().item()
            stem_total += S.sum().item()
            for name, separator in separators.items():
                S_hat = separator(X) * X[:, None]  # [B, I, F, T]
                l1 = (S_hat - S).abs().sum(dim=(1, 2, 3)) / X.sum(dim=(1, 2)).clamp_min(1e-8)
                sums[name][0] += l1.sum().item()
                signal, error = snr_sums(S, S_hat)
                sums[name][1] += signal
                sums[name][2] += error

    instruments = list(shard_set.instruments)
    print(f"# Separators on {args.shards} {args.split}, {args.windows} windows (seed {args.seed})\n")
    print(f"Owned harmonic bins: {owned_stem / stem_total:.1%} of the stems' magnitude (L1), "
          f"purity {owned_stem / owned_mix:.1%}.\n")
    print(f"| separator | rel. L1 | {snr_header(instruments)} |")
    print("|---|---|" + "---|" * (n_inst + 1))
    for name, (l1, signal, error) in sums.items():
        print(f"| {name} | {l1 / args.windows:.3f} | {snr_cells(snr_db(signal, error))} |")


if __name__ == "__main__":
    main()
