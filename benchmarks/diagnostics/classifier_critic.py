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
    python benchmarks/classifier_critic.py --shards data \\
        --classifier runs-bench/baseline/classifier/best.pt \\
        baseline=runs-bench/baseline/best.pt supervised=runs-bench/supervised/best.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/train.py would shadow `train`.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import torch  # noqa: E402

from prep.features import stft  # noqa: E402
from prep.shards import ShardSet  # noqa: E402
from train import losses as L  # noqa: E402
from train.config import LossConfig  # noqa: E402
from train.data import validation_batches  # noqa: E402
from train.model import Classifier, load_model  # noqa: E402

sys.path.append(str(HERE))  # the shared options, once `train` is the package
from validation_cli import load_separators, validation_parser  # noqa: E402


def main() -> None:
    parser = validation_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--alpha2", type=float, default=10.0, help="as params/bench.yaml")
    args = parser.parse_args()

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
        for batch in validation_batches(shard_set, fields, args.windows, args.seed, args.batch):
            X, active = batch["X"], batch["activity"].float()  # [B, F, T], [B, I, T]
            S = stft(batch["stems"], center=False).abs()  # [B, I, F, T]
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
                for key, value in (
                    ("score", terms["score"].item()),
                    ("cmix", args.alpha2 * terms["cmix"].item()),
                    ("total", terms["total"].item()),
                    ("hit", ((p * own).sum() / own.sum().clamp_min(1)).item()),
                    ("false", ((p * (1 - eye)).sum() / (1 - eye).expand_as(p).sum()).item()),
                    ("signal", S.square().sum(dim=(0, 2, 3))),  # [I]
                    ("error", (S - S_hat).square().sum(dim=(0, 2, 3))),  # [I]
                ):
                    entry[key] = entry.get(key, 0.0) + value
            n_batches += 1

    instruments = list(shard_set.instruments)
    print(f"# The classifier baseline's objective on {args.shards} {args.split}, "
          f"{args.windows} windows (classifier {args.classifier}, alpha2 {args.alpha2})\n")
    print("| separation | L_score | alpha2 L_c-mix | total | p(own, playing) | p(other) | "
          + " | ".join(f"SNR {i}" for i in instruments) + " | SNR avg |")
    print("|---|---|---|---|---|---|" + "---|" * (n_inst + 1))
    for name, entry in sums.items():
        snr = 10 * torch.log10(entry["signal"] / entry["error"].clamp_min(1e-12))
        means = [entry[k] / n_batches for k in ("score", "cmix", "total", "hit", "false")]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means[:3])
              + f" | {means[3]:.2f} | {means[4]:.2f} | "
              + " | ".join(f"{v:.2f}" for v in snr.tolist()) + f" | {snr.mean().item():.2f} |")


if __name__ == "__main__":
    main()
