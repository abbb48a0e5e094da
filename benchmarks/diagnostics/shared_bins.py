"""Can the score alone split the bins two instruments share? Score-only splits against separators.

In a bin that two instruments' harmonic masks reach (A_i and A_j, ±1 bin of a harmonic of each),
eq. 6-7 only ask the outputs to add up to the mixture (reports/bench, finding 14). A classical
score-informed answer needs no training: estimate each instrument's magnitude there from the
bins where the score gives it the mixture alone (its owned bins U_i), at the nearest frames of
the same bin (*time*: a note that sounded alone before or after) or at the nearest bins of the
same frame (*frequency*: the neighbouring partials), log-linearly interpolated, and split X in
proportion. If such a split beat the separators inside the shared bins, it would be a weak label
for them. This prints, on the trainer's fixed validation windows, the magnitude SNR inside the
shared bins (per instrument: 10 log10 sum_shared S^2 / sum_shared (S - S_hat)^2) of an equal
split, of the interpolated splits, and of each ``NAME=PATH`` separator, as is and with its
outputs renormalised over the instruments whose harmonics reach the bin.

Usage:
    python -m benchmarks.diagnostics.shared_bins --shards data \\
        gamma40=runs-bench/step3-ema-gamma40/best.pt supervised=runs-bench/supervised-14epochs-ema/best.pt
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.common import snr_cells, snr_db, snr_header, stem_magnitudes
from benchmarks.diagnostics.validation_cli import validation_command, validation_windows

if TYPE_CHECKING:
    from torch import Tensor

TIME_GAPS = (4, 16, 64)  # frames (32 ms each) a known value may be carried over
FREQ_GAP = 6  # bins (7.8 Hz each)


def nearest_known(values: Tensor, known: Tensor, dim: int, max_gap: int) -> tuple[Tensor, Tensor]:
    """Fill every position of ``values`` from the nearest ``known`` positions along ``dim``:
    log-linear interpolation between the known neighbours on both sides when both lie within
    ``max_gap``, the one neighbour when only one does. Returns (estimate, available)."""
    import torch

    n = values.shape[dim]
    shape = [1] * values.dim()
    shape[dim] = n
    pos = torch.arange(n, device=values.device).view(shape).expand_as(values)
    far = n + max_gap + 1
    before = torch.where(known, pos, pos.new_full((), -far)).cummax(dim=dim).values
    after = torch.where(known, pos, pos.new_full((), 2 * far)).flip(dim).cummin(dim=dim).values
    after = after.flip(dim)
    d_before, d_after = pos - before, after - pos
    ok_before, ok_after = d_before <= max_gap, d_after <= max_gap
    v_before = torch.gather(values, dim, before.clamp(0, n - 1))
    v_after = torch.gather(values, dim, after.clamp(0, n - 1))
    w_before = torch.where(d_before + d_after == 0, 1, d_after)  # a known position keeps its value
    log_mix = (
        v_before.clamp_min(1e-6).log() * w_before + v_after.clamp_min(1e-6).log() * d_before
    ) / (w_before + d_before)
    one_side = torch.where(ok_before, v_before, torch.where(ok_after, v_after, 0.0))
    estimate = torch.where(ok_before & ok_after, log_mix.exp(), one_side)
    return estimate, ok_before | ok_after


def proportional_split(X: Tensor, A: Tensor, E: Tensor) -> Tensor:
    """Split X [B, F, T] over the instruments whose harmonic mask A [B, I, F, T] reaches each
    bin, in proportion to the estimates E [B, I, F, T]."""
    E = E * A
    return X[:, None] * E / E.sum(dim=1, keepdim=True).clamp_min(1e-8)


def main() -> None:
    args, separators, shard_set = validation_command(__doc__)
    import torch

    from train.extensions import owned_harmonic_bins

    instruments = list(shard_set.instruments)
    signal = torch.zeros(len(instruments))
    errors: dict[str, Tensor] = {}
    stem_energy = 0.0

    def add(name: str, S_hat: Tensor, S: Tensor, shared: Tensor) -> None:
        error = ((S - S_hat).square() * shared).sum(dim=(0, 2, 3))
        errors[name] = errors.get(name, 0) + error

    with torch.no_grad():
        for batch in validation_windows(args, shard_set):
            X, A = batch["X"], batch["A"].bool()  # [B, F, T], [B, I, F, T]
            S = stem_magnitudes(batch["stems"])  # [B, I, F, T]
            shared = (A & (A.sum(dim=1, keepdim=True) > 1)).float()  # [B, I, F, T]
            owned = owned_harmonic_bins(A)  # [B, I, F, T]
            signal += (S.square() * shared).sum(dim=(0, 2, 3))
            stem_energy += S.square().sum().item()
            X_each = X[:, None].expand_as(S)  # [B, I, F, T]
            equal = X_each / A.sum(dim=1, keepdim=True).clamp_min(1)  # [B, I, F, T]
            add("equal split", proportional_split(X, A, equal), S, shared)
            by_freq, ok_freq = nearest_known(X_each, owned, 2, FREQ_GAP)
            add(f"frequency (±{FREQ_GAP} bins)",
                proportional_split(X, A, torch.where(ok_freq, by_freq, equal)), S, shared)
            for gap in TIME_GAPS:
                by_time, ok_time = nearest_known(X_each, owned, 3, gap)
                add(f"time (±{gap} frames)",
                    proportional_split(X, A, torch.where(ok_time, by_time, equal)), S, shared)
                both = torch.where(ok_time, by_time, torch.where(ok_freq, by_freq, equal))
                add(f"time (±{gap} frames), else frequency", proportional_split(X, A, both), S, shared)
            for name, separator in separators.items():
                S_hat = separator(X) * X[:, None]  # [B, I, F, T]
                add(name, S_hat, S, shared)
                add(f"{name}, renormalised over A", proportional_split(X, A, S_hat), S, shared)

    print(f"# Bins two instruments' harmonics share: {args.shards} {args.split}, {args.windows} "
          f"windows (seed {args.seed})\n")
    print(f"They hold {signal.sum().item() / stem_energy:.1%} of the stems' energy.\n")
    print(f"| split of the shared bins | {snr_header(instruments)} |")
    print("|---|" + "---|" * (len(instruments) + 1))
    for name, error in errors.items():
        print(f"| {name} | {snr_cells(snr_db(signal, error))} |")


if __name__ == "__main__":
    main()
