"""The command line the validation-window diagnostics share (not a benchmark itself).

``separator_snr.py``, ``owned_bins.py``, ``shared_bins.py``, ``classifier_critic.py`` and
``objective_diagnostics.py`` read the trainer's fixed validation windows
(``train.data.validation_batches``) and score ``NAME=PATH`` separators on them; this gives
them the same options, defaults and error for a malformed ``NAME=PATH``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prep.shards import ShardSet
from train.evaluate import load_named_models
from train.model import ScoreCriticModel, Separator


def validation_parser(description: str, separator_option: bool = False) -> argparse.ArgumentParser:
    """--shards, --split, --windows, --batch, --seed, and the separators to score: positional
    ``NAME=PATH`` arguments, or with ``separator_option`` a repeatable ``--separator NAME=PATH``."""
    parser = argparse.ArgumentParser(description=description)
    if separator_option:
        parser.add_argument("--separator", dest="separators", action="append", default=[],
                            metavar="NAME=PATH")
    else:
        parser.add_argument("separators", nargs="*", metavar="NAME=PATH")
    parser.add_argument("--shards", type=Path, default=Path("data"))
    parser.add_argument("--split", default="validation")
    parser.add_argument("--windows", type=int, default=64, help="fixed validation windows")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the window draw")
    return parser


def load_separators(parser: argparse.ArgumentParser, values: list[str]) -> dict[str, ScoreCriticModel]:
    """The ``NAME=PATH`` separators, or exit with the parser's usage and the problem."""
    try:
        return load_named_models(values, Separator.kind)
    except ValueError as exc:
        parser.error(str(exc))


def validation_command(
    doc: str,
) -> tuple[argparse.Namespace, dict[str, ScoreCriticModel], ShardSet]:
    """The whole command line of a diagnostic without options of its own: parse it with the
    first paragraph of ``doc`` as the description, load the separators, open the shards."""
    parser = validation_parser(doc.split("\n\n")[0])
    args = parser.parse_args()
    return args, load_separators(parser, args.separators), ShardSet(args.shards, args.split)
