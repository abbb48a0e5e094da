"""Average the weights of several checkpoints of one model (e.g. a run's last epochs).

Step 3 trains the separator against a critic that keeps moving (ATL, AML), so its quality
oscillates from epoch to epoch and, without stems, validation cannot tell the good epochs from
the bad ones (reports/bench/README.md, findings 4 and 9). Averaging the weights of the last
epochs (as GAN generators are averaged) needs no selection. This writes the element-wise mean
of the ``state_dict`` of each input as a checkpoint of the same kind and configuration
(:func:`train.model.average_checkpoints`).

Usage:
    python -m benchmarks.diagnostics.average_checkpoints runs-bench/atl-avg/best.pt \\
        runs-bench/atl-epochs/e{9,10,11}/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import description


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("out", type=Path, help="checkpoint to write")
    parser.add_argument("inputs", type=Path, nargs="+", help="checkpoints to average")
    args = parser.parse_args()
    from train.model import average_checkpoints

    print(average_checkpoints(args.inputs, args.out))


if __name__ == "__main__":
    main()
