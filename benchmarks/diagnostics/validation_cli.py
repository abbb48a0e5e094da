"""The command line the validation-window diagnostics share (not a benchmark itself).

``separator_snr``, ``owned_bins``, ``shared_bins``, ``classifier_critic`` and
``objective_diagnostics`` read the trainer's fixed validation windows
(``train.data.validation_batches``) and score ``NAME=PATH`` separators on them; this gives
them the same options, defaults, window draw and error for a malformed ``NAME=PATH``.
``prep`` and ``train`` are imported only once the command line is parsed (``--help`` needs
neither).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import common

if TYPE_CHECKING:
    from prep.shards import ShardSet
    from train.model import ScoreCriticModel

# what the stem-based diagnostics read of each window: X, Y, A and the stems' audio
STEM_FIELDS = ("spec", "roll", "harmonic_mask", "stems")


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
    from train.evaluate import load_named_models
    from train.model import Separator

    try:
        return load_named_models(values, Separator.kind)
    except ValueError as exc:
        parser.error(str(exc))


def validation_windows(
    args: argparse.Namespace, shard_set: ShardSet, fields: tuple[str, ...] = STEM_FIELDS
) -> Iterator[dict]:
    """The trainer's fixed validation windows of ``shard_set`` in batches, as the command line
    asks (``--windows``, ``--seed``, ``--batch``), with ``fields`` read."""
    from train.data import validation_batches

    return validation_batches(shard_set, fields, args.windows, args.seed, args.batch)


def validation_command(
    doc: str,
) -> tuple[argparse.Namespace, dict[str, ScoreCriticModel], ShardSet]:
    """The whole command line of a diagnostic without options of its own: parse it with the
    first paragraph of ``doc`` as the description, load the separators, open the shards."""
    parser = validation_parser(common.description(doc))
    args = parser.parse_args()
    from prep.shards import ShardSet

    return args, load_separators(parser, args.separators), ShardSet(args.shards, args.split)
