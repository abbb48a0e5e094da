"""Average the weights of several checkpoints of one model (e.g. a run's last epochs).

Step 3 trains the separator against a critic that keeps moving (ATL, AML), so its quality
oscillates from epoch to epoch and, without stems, validation cannot tell the good epochs from
the bad ones (reports/bench/README.md, findings 4 and 9). Averaging the weights of the last
epochs (as GAN generators are averaged) needs no selection. This writes the element-wise mean
of the ``state_dict`` of each input as a checkpoint of the same kind and configuration
(:func:`train.model.average_checkpoints`).

Usage:
    python benchmarks/average_checkpoints.py runs-bench/atl-avg/best.pt \\
        runs-bench/atl-epochs/e{9,10,11}/best.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # `train` shadowing

from train.model import average_checkpoints  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="checkpoint to write")
    parser.add_argument("inputs", type=Path, nargs="+", help="checkpoints to average")
    args = parser.parse_args()
    print(average_checkpoints(args.inputs, args.out))


if __name__ == "__main__":
    main()
