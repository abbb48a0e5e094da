"""Does L_sep (eq. 8) prefer better separations? The step-2 objective, scored on known answers.

The weakly supervised separator can only be as good as the minimiser of its loss. This script
evaluates L_sep = sum_i L_score(S_hat_i, Y^(i)) + alpha2 L_c-mix + beta2 L_h-mix, with the frozen
step-1 transcriptor as the critic, on the fixed validation windows the trainer uses, for
separations whose quality is known:

- the true stems and the oracle ideal ratio mask (IRM) applied to the mixture;
- the IRM with a share k of one instrument's mask handed to another ("leak probes": what the
  critic charges for the confusions the trained separators make);
- label-only estimates: the harmonic partition, the mixture as every source, the mixture split
  evenly;
- trained separators (``--separator name=path``), e.g. the supervised and the step-2 systems.

Next to each loss it prints the quality of the estimate as a magnitude SNR per instrument,
10 log10(sum |S|^2 / sum (|S| - S_hat)^2) over the windows (no phase, no iSTFT: the ranking is
what matters). If a worse separation gets a lower L_sep than a better one, no optimiser can
close the gap: it is in the objective. Two more tables say where the estimates go wrong: the
share of each stem's magnitude each output keeps (and, for one SOURCE:OUTPUT pair, by region),
and where the squared magnitude error lies (own harmonic bins, bins shared with another
instrument's harmonics, other instruments' bins, bins of nobody's harmonics, silent frames).

Usage:
    python -m benchmarks.diagnostics.objective_diagnostics --shards data --transcriptor runs-bench/step1/best.pt \\
        --separator supervised=runs-bench/supervised/best.pt --separator step2=runs-bench/step2/best.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import description, snr_cells, snr_db, snr_header, snr_sums, stem_magnitudes
from benchmarks.diagnostics.validation_cli import (
    load_separators,
    validation_parser,
    validation_windows,
)

if TYPE_CHECKING:
    import torch


def leak(masks: torch.Tensor, source: int, target: int, share: float) -> torch.Tensor:
    """Hand ``share`` of instrument ``source``'s mask to instrument ``target`` (masks [B, I, F, T])."""
    out = masks.clone()
    moved = share * masks[:, source]
    out[:, source] -= moved
    out[:, target] += moved
    return out


def main() -> None:
    parser = validation_parser(description(__doc__), separator_option=True)
    parser.add_argument("--transcriptor", type=Path, required=True)
    parser.add_argument("--alpha2", type=float, default=10.0)
    parser.add_argument("--beta2", type=float, default=1.0)
    parser.add_argument(
        "--leak", default="piano:bass", metavar="SOURCE:OUTPUT",
        help="split the share of SOURCE's magnitude that OUTPUT keeps by time-frequency region",
    )
    parser.add_argument(
        "--only-separators", action="store_true", help="skip the reference separations"
    )
    args = parser.parse_args()
    import numpy as np
    import torch

    from prep.shards import ShardSet
    from train import losses as L
    from train.config import LossConfig
    from train.model import Transcriptor, load_model

    shard_set = ShardSet(args.shards, args.split)
    instruments = list(shard_set.instruments)
    class_weights = torch.as_tensor(ShardSet(args.shards, "train").class_weights, dtype=torch.float32)
    config = LossConfig(alpha2=args.alpha2, beta2=args.beta2, use_cmix=True, use_hmix=True)
    critic = load_model(args.transcriptor, expected_kind=Transcriptor.kind)
    separators = load_separators(parser, args.separators)

    n_inst = len(instruments)
    piano, guitar, bass = (instruments.index(n) for n in ("piano", "guitar", "bass"))
    leak_source, leak_output = (instruments.index(n) for n in args.leak.split(":"))
    results: dict[str, dict[str, list]] = {}

    def add(name: str, batch: dict, S_hat: torch.Tensor, S: torch.Tensor) -> None:
        z_each = critic.logits_of_sources(S_hat)  # [B, I_src, I, 88, T]
        _, terms = L.separation_loss(
            z_each, batch["Y"], batch["X"], S_hat, batch["A"], class_weights, config
        )
        # per source i: the critic's BCE on S_hat_i against Y^(i), weighted as in eq. 5
        bce = L.bce_with_logits(z_each, L._source_targets(batch["Y"], keep_own=True))
        per_source = (bce.sum(dim=(3, 4)) * class_weights).sum(dim=2).sum(dim=0)
        per_source = per_source / (bce.shape[0] * bce.shape[-1])
        entry = results.setdefault(
            name, {"terms": [], "per_source": [], "regions": {}, "error_regions": {}}
        )
        # running sums over the windows (the estimates themselves are not kept)
        signal, error = snr_sums(S, S_hat)  # [I] each
        for key, value in (("signal", signal), ("error", error),
                           ("stem_total", S.sum(dim=(0, 2, 3)))):  # [I]
            entry[key] = entry.get(key, 0.0) + value.double().numpy()
        # share[i, j]: the part of stem j's magnitude that output i keeps, sum M_i S_j / sum S_j
        masks = S_hat / batch["X"][:, None].clamp_min(1e-8)
        share = torch.einsum("bift,bjft->ij", masks, S).double().numpy()
        entry["share"] = entry.get("share", 0.0) + share
        kept = masks[:, leak_output] * S[:, leak_source]  # [B, F, T]
        for region, where in leak_regions(batch).items():
            sums = entry["regions"].setdefault(region, np.zeros(2))
            sums += [float((kept * where).sum()), float((S[:, leak_source] * where).sum())]
        error = (S - S_hat).pow(2)  # [B, I, F, T]
        regions = error_regions(batch)
        regions["where the output is below the stem"] = (S_hat < S).float()
        errors = entry["error_regions"]
        for region, where in regions.items():
            errors[region] = errors.get(region, 0.0) + float((error * where).sum())
        entry["terms"].append({k: float(v) for k, v in terms.items()})
        entry["per_source"].append(per_source.numpy())

    def error_regions(batch: dict) -> dict[str, torch.Tensor]:
        """Where each output's squared error lies, per instrument i (broadcastable to S)."""
        A = batch["A"].bool()  # [B, I, F, T]
        anyone = A.any(dim=1, keepdim=True)  # [B, 1, F, T]
        shared = A & (A.sum(dim=1, keepdim=True) > 1)  # i's harmonic bins another also has
        silent = ~(batch["Y"] > 0).any(dim=2)  # [B, I, T]: frames where i plays no note
        return {
            "i's harmonic bins, not shared": (A & ~shared).float(),
            "i's harmonic bins shared with another": shared.float(),
            "others' harmonic bins only": (~A & anyone).float(),
            "nobody's harmonic bins": (~anyone).float(),
            "frames where i is silent": silent[:, :, None, :].float(),
        }

    def leak_regions(batch: dict) -> dict[str, torch.Tensor]:
        """Regions [B, F, T] (or broadcastable) to split the leak of SOURCE into OUTPUT by."""
        roll = batch["Y"][:, leak_source] > 0  # [B, 88, T]
        onset = roll[..., 1:] & ~roll[..., :-1]  # [B, 88, T-1]
        onset = torch.cat([roll[..., :1], onset], dim=-1).any(dim=1)  # [B, T]
        near = onset.clone()
        for k in (1, 2):
            near[..., k:] |= onset[..., :-k]
        playing = roll.any(dim=1)  # [B, T]
        other = (batch["Y"][:, leak_output] > 0).any(dim=1)  # [B, T]
        A = batch["A"].bool()
        own, theirs = A[:, leak_source], A[:, leak_output]  # [B, F, T]
        src, out = instruments[leak_source], instruments[leak_output]
        frame = {
            f"{src} onset frames (+2)": near,
            f"{src} sustained, no onset": playing & ~near,
            f"{out} playing": other,
            f"{out} silent": ~other,
        }
        regions = {name: where[:, None, :].float() for name, where in frame.items()}
        regions[f"{src}'s harmonic bins only"] = (own & ~theirs).float()
        regions["harmonic bins of both"] = (own & theirs).float()
        regions[f"{out}'s harmonic bins only"] = (~own & theirs).float()
        regions["harmonic bins of neither"] = (~own & ~theirs).float()
        return regions

    generator = torch.Generator().manual_seed(args.seed)

    def noise(like: torch.Tensor, sigma: float) -> torch.Tensor:
        """exp(sigma eps), eps ~ N(0, 1) per bin: mask errors that keep every source in place."""
        return torch.exp(sigma * torch.randn(like.shape, generator=generator))

    with torch.no_grad():
        for batch in validation_windows(args, shard_set):
            X = batch["X"]  # [B, F, T]
            S = stem_magnitudes(batch["stems"])  # [B, I, F, T]
            A = batch["A"].float()
            irm = S / S.sum(dim=1, keepdim=True).clamp_min(1e-8)  # [B, I, F, T]
            candidates = {
                "true stems": S,
                "oracle IRM": irm * X[:, None],
                "IRM, 25 % of piano to bass": leak(irm, piano, bass, 0.25) * X[:, None],
                "IRM, 50 % of piano to bass": leak(irm, piano, bass, 0.5) * X[:, None],
                "IRM, 25 % of piano to guitar": leak(irm, piano, guitar, 0.25) * X[:, None],
                "IRM, 25 % of bass to piano": leak(irm, bass, piano, 0.25) * X[:, None],
                "IRM, 25 % of guitar to piano": leak(irm, guitar, piano, 0.25) * X[:, None],
                "IRM x log-normal noise (sigma 0.5)": irm * X[:, None] * noise(S, 0.5),
                "IRM x log-normal noise (sigma 1)": irm * X[:, None] * noise(S, 1.0),
                "harmonic partition": A / A.sum(dim=1, keepdim=True).clamp_min(1.0) * X[:, None],
                "mixture split evenly": X[:, None].expand_as(S) / n_inst,
                "mixture as every source": X[:, None].expand_as(S).clone(),
            }
            if args.only_separators:
                candidates = {"oracle IRM": candidates["oracle IRM"]}
            for name, separator in separators.items():
                candidates[name] = separator.separate(X)
            for name, S_hat in candidates.items():
                add(name, batch, S_hat, S)

    print(f"# L_sep on known separations: {args.shards} {args.split}, {args.windows} windows, "
          f"critic {args.transcriptor}, alpha2 {args.alpha2}, beta2 {args.beta2}\n")
    head = " | ".join(f"L_score {n}" for n in instruments)
    print(f"| S_hat | L_sep | L_score | {head} | L_c-mix | L_h-mix | {snr_header(instruments)} |")
    print("|---|" + "---|" * (2 * n_inst + 5))
    for name, entry in results.items():
        terms = {k: np.mean([t[k] for t in entry["terms"]]) for k in entry["terms"][0]}
        per_source = np.mean(entry["per_source"], axis=0)
        quality = snr_db(entry["signal"], entry["error"])
        print(
            f"| {name} | {terms['total']:.3f} | {terms['score']:.3f} | "
            + " | ".join(f"{v:.3f}" for v in per_source)
            + f" | {terms['cmix']:.3f} | {terms['hmix']:.3f} | {snr_cells(quality)} |"
        )
    print("\nWhere each stem's magnitude goes: row = output, column = stem, sum M_i S_j / sum S_j.\n")
    print("| S_hat | " + " | ".join(f"{o} <- {s}" for o in instruments for s in instruments) + " |")
    print("|---|" + "---|" * n_inst**2)
    for name, entry in results.items():
        if name == "true stems":
            continue
        share = entry["share"] / entry["stem_total"][None, :]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in share.ravel()) + " |")

    src, out = args.leak.split(":")
    print(f"\nThe share of the {src}'s magnitude the {out} output keeps, by region "
          f"(sum M_{out} S_{src} / sum S_{src} over the region; in brackets, the region's "
          f"part of all the {src}'s magnitude).\n")
    region_names = list(next(iter(results.values()))["regions"])
    print("| S_hat | " + " | ".join(region_names) + " |")
    print("|---|" + "---|" * len(region_names))
    for name, entry in results.items():
        if name == "true stems":
            continue
        total = entry["stem_total"][leak_source]
        cells = []
        for region in region_names:
            kept, inside = entry["regions"][region]
            cells.append(f"{kept / max(inside, 1e-12):.2f} ({100 * inside / total:.0f} %)")
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nWhere the error lies: squared magnitude error sum_i (|S_i| - S_hat_i)^2 inside each "
          "region, in dB relative to the stems' total energy sum_i |S_i|^2 (lower is better; "
          "the first four regions partition each instrument's time-frequency plane; the last "
          "column is the part of the error where the output is below the stem).\n")
    error_names = list(next(iter(results.values()))["error_regions"])
    print("| S_hat | all bins | " + " | ".join(error_names) + " |")
    print("|---|" + "---|" * (len(error_names) + 1))
    for name, entry in results.items():
        if name == "true stems":
            continue
        signal = entry["signal"].sum()
        cells = [entry["error"].sum()] + [entry["error_regions"][r] for r in error_names]
        print(f"| {name} | " + " | ".join(
            f"{10 * np.log10(max(c, 1e-12) / signal):.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
