"""The ``train`` command line: thin wrappers over functions in the ``train`` package."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scorecritic")
def main() -> None:
    """Train, evaluate and run the score-supervised separator.

    \b
    Examples:
      train step1 --shards data/
      train step2 --shards data/
      train step3 --shards data/
      train evaluate --shards data/ --split test
      train separate --checkpoint runs/step3/best.pt song.wav --out separated/
    """


# --- training commands (train/trainer.py) ----------------------------------------------------

# --- evaluation and inference commands (train/evaluate.py, train/inference.py) --------------
