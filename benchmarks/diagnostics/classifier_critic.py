"""Does the classifier baseline's objective prefer better separations? Its loss on known answers.

The baseline [Pishdadian et al. 2020] trains the separator against a frame-level instrument
classifier: on each S_hat_i the classifier should find instrument i where it plays and no other
(``train.losses.classifier_separation_loss``), plus alpha2 L_c-mix (eq. 6). This script scores
that objective, with a trained classifier as the critic, on the trainer's fixed validation
windows for separations of known quality: the true stems, the oracle ideal ratio mask, the
mixture as every source, and trained separators (``NAME=PATH``). Beside the loss it prints the
classifier's mean probability of the right instrument where it plays (hit) and of any other
instrument in each output (false alarm), and the magnitude SNR per instrument. A separation the
critic scores below the true stems while its SNR is worse is one the objective prefers to the
truth: no optimiser can fix that.

Usage:
    python -m benchmarks.diagnostics.classifier_critic --shards data \\
        --classifier runs-bench/baseline/classifier/best.pt \\
        baseline=runs-bench/baseline/best.pt supervised=runs-bench/supervised/best.pt
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import description, snr_cells, snr_db, snr_header, snr_sums, stem_magnitudes
from benchmarks.diagnostics.validation_cli import (
    load_separators,
    validation_parser,
    validation_windows,
)


def main() -> None:
    parser = validation_parser(description(__doc__))
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--alpha2", type=float, default=10.0, help="as params/bench.yaml")
    args = parser.parse_args()
    import torch

    from prep.shards import ShardSet
    from train import losses as L
    from train.config import LossConfig
    from train.model import Classifier, load_model

    classifier = load_model(args.classifier, expected_kind=Classifier.kind)
    separators = load_separators(parser, args.separators)
    shard_set = ShardSet(args.shards, args.split)
    class_weights = torch.as_tensor(ShardSet(args.shards, "train").class_weights, dtype=torch.float32)
    config = LossConfig(alpha2=args.alpha2, use_cmix=True, use_hmix=False)
    fields = ("spec", "activity", "stems")
    n_inst = len(shard_set.instruments)
    eye = torch.eye(n_inst)[None, :, :, None]  # [1, I_src, I, 1]
    sums: dict[str, dict[str, torch.Tensor | float]] = {}
    n_batches = 0
    with torch.no_grad():
        for batch in validation_windows(args, shard_set, fields):
            X, active = batch["X"], batch["activity"].float()  # [B, F, T], [B, I, T]
            S = stem_magnitudes(batch["stems"])  # [B, I, F, T]
            irm = S / S.sum(dim=1, keepdim=True).clamp_min(1e-8)
            candidates = {
                "true stems": S,
                "oracle IRM": irm * X[:, None],
                "mixture as every source": X[:, None].expand_as(S).contiguous(),
            }
            for name, separator in separators.items():
                candidates[name] = separator(X) * X[:, None]
            for name, S_hat in candidates.items():
                z_each = classifier.logits_of_sources(S_hat)  # [B, I_src, I, T]
                _, terms = L.classifier_separation_loss(
                    z_each, active, X, S_hat, class_weights, config
                )
                p = torch.sigmoid(z_each)
                own = eye * active[:, None]  # instrument i in output i, where i plays
                entry = sums.setdefault(name, {})
                signal, error = snr_sums(S, S_hat)  # [I] each
                for key, value in (
                    ("score", terms["score"].item()),
                    ("cmix", args.alpha2 * terms["cmix"].item()),
                    ("total", terms["total"].item()),
                    ("hit", ((p * own).sum() / own.sum().clamp_min(1)).item()),
                    ("false", ((p * (1 - eye)).sum() / (1 - eye).expand_as(p).sum()).item()),
                    ("signal", signal),
                    ("error", error),
                ):
                    entry[key] = entry.get(key, 0.0) + value
            n_batches += 1

    instruments = list(shard_set.instruments)
    print(f"# The classifier baseline's objective on {args.shards} {args.split}, "
          f"{args.windows} windows (classifier {args.classifier}, alpha2 {args.alpha2})\n")
    print("| separation | L_score | alpha2 L_c-mix | total | p(own, playing) | p(other) | "
          + f"{snr_header(instruments)} |")
    print("|---|---|---|---|---|---|" + "---|" * (n_inst + 1))
    for name, entry in sums.items():
        snr = snr_db(entry["signal"], entry["error"])
        means = [entry[k] / n_batches for k in ("score", "cmix", "total", "hit", "false")]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means[:3])
              + f" | {means[3]:.2f} | {means[4]:.2f} | {snr_cells(snr)} |")


if __name__ == "__main__":
    main()
