"""Export the nets of a run's last epoch (``last.pt``) as loadable checkpoints.

``best.pt`` is the epoch with the lowest validation loss. In step 3 that loss is measured with
the transcriptor being trained, a critic that gets stricter every epoch, so it can rise while
the separator improves and ``best.pt`` then holds an early epoch. This writes the last epoch's
separator (and transcriptor) under ``<out>/best.pt`` (and ``<out>/transcriptor.pt``) so that
``train evaluate --runs`` scores it as a system of its own.

Usage:
    python -m benchmarks.diagnostics.last_epoch runs-bench/step3-atl runs-bench/step3-atl-lastepoch
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import description


def export_last_epoch(run: Path, out: Path) -> list[Path]:
    """Write each net of ``run/last.pt`` to ``out``; returns the files written."""
    import torch

    from train.config import ModelConfig, from_dict
    from train.model import build_model, save_checkpoint

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    config = from_dict(ModelConfig, state["model_config"])
    extra = {"instruments": state["instruments"], "step": state["step"],
             "epoch": state["progress"]["epoch"] - 1, "exported_from": str(run / "last.pt")}
    written = []
    for kind, weights in state["nets"].items():
        model = build_model(kind, config)
        model.load_state_dict(weights)
        name = "transcriptor.pt" if kind == "transcriptor" and "separator" in state["nets"] else "best.pt"
        written.append(save_checkpoint(out / name, model, extra))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for path in export_last_epoch(args.run, args.out):
        print(path)


if __name__ == "__main__":
    main()
