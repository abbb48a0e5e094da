"""Run a recipe: find the checkpoints it starts from, record what the run is, train its step
(the classifier baseline in two phases).

A stop signal (SIGTERM, SIGUSR1) ends the run after the step in progress with its state saved
(:mod:`train.preemption`): :class:`~train.preemption.Preempted` propagates, no later phase
starts, and ``<out>/preempted.json`` says where it stopped until a ``resume`` run starts.

>>> from train.recipes import get_recipe, resolve
>>> plan = starting_points(get_recipe("scorecritic"), Path("runs/scorecritic"))
>>> {k: str(v) for k, v in plan.items()}  # doctest: +NORMALIZE_WHITESPACE
{'transcriptor': 'runs/step1/best.pt', 'separator': 'runs/scorecritic-step2/best.pt'}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from prep.shards import ShardSet
from train.assemble import load_pretrained, setup_distributed
from train.preemption import Preempted, clear_marker, stop_signals, write_marker
from train.recipes import Recipe, Resolved, recipes
from train.steps import SPECS
from train.trainer import Trainer

__all__ = ["run", "starting_points"]


def starting_points(
    recipe: Recipe, out: Path, given: dict[str, Path | None] | None = None
) -> dict[str, Path]:
    """The checkpoint each network of ``recipe.starts_from`` is loaded from: the one given,
    else ``<runs>/<that recipe>/best.pt`` beside the run folder ``out``."""
    given, out = given or {}, Path(out)
    runs = out.parent if out.name not in ("", ".", "..") else out.resolve().parent
    return {
        network: Path(given.get(network) or runs / source / "best.pt")
        for network, source in recipe.starts_from.items()
    }


def _load_starts(
    recipe: Recipe, paths: dict[str, Path], instruments: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the starting networks; warn when one was trained by another recipe than expected."""
    init, record = {}, {}
    for network, path in paths.items():
        source = recipe.starts_from[network]
        command = f"train {recipes()[source].step} --recipe {source} --shards ..."
        init[network], found = load_pretrained(path, network, instruments, command)
        record[network] = {"path": str(path), "recipe": found, "expected_recipe": source}
        if found and found != source:
            print(
                f"warning: recipe {recipe.name!r} starts its {network} from a {source!r} run; "
                f"{path} was trained with recipe {found!r}",
                file=sys.stderr,
            )
    return init, record


def run(
    resolved: Resolved,
    shards: str | Path,
    out: str | Path,
    *,
    transcriptor: str | Path | None = None,
    separator: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    dvclive: bool = True,
) -> dict[str, Any]:
    """Train the run of ``resolved`` (a recipe and every setting) into the folder ``out``.

    Args:
        resolved: :func:`train.recipes.resolve`'s result.
        shards: root of the shards (``manifest.json``, ``train/``, ``validation/``).
        out: the run folder.
        transcriptor, separator: checkpoints to start from instead of the recipe's
            (``<runs>/<recipe>/best.pt`` beside ``out``).
        resume: continue from ``<out>/last.pt``.
        progress: show a tqdm bar (rank 0).
        dvclive: log metrics with dvclive under ``<out>/dvclive`` (rank 0); ``metrics.json`` is
            written either way (off where dvclive is not installed, e.g. a bare GPU image).

    Returns:
        The metrics written to ``<out>/metrics.json`` (best validation loss, epochs, last terms).

    Raises:
        Preempted: SIGTERM or SIGUSR1 arrived; the state is saved (exit code 75 if not caught).
    """
    recipe, config = resolved.recipe, resolved.config
    out, shards = Path(out), Path(shards)
    env = setup_distributed(config.train.device)
    instruments = list(ShardSet(shards, "train", verify_checksums=False).instruments)
    paths = starting_points(recipe, out, {"transcriptor": transcriptor, "separator": separator})
    # one set of handlers for the whole run: a signal that arrives between the baseline's two
    # phases stops the second after its first step rather than being lost
    with stop_signals():
        def fit(trainer: Trainer) -> dict[str, Any]:
            # the marker goes once a trainer has accepted the resume (its checks passed): a
            # refused resume leaves the run as it was, marker included
            if resume and env.main:
                clear_marker(out)
            return trainer.fit()

        try:
            init, starts = _load_starts(recipe, paths, instruments)
            record = {
                "recipe": {k: v for k, v in recipe.to_dict().items() if k != "settings"},
                "preset": resolved.preset,
                "starts_from": starts,
            }
            common = dict(record=record, progress=progress, dvclive=dvclive, env=env)
            if recipe.step != "baseline":
                spec = SPECS[recipe.step]
                return fit(Trainer(spec, shards, config, out, init=init, resume=resume, **common))
            # the baseline: phase 1 trains the classifier critic, phase 2 the separator against it
            phase1 = out / "classifier"
            metrics1 = phase1 / "metrics.json"
            if not (metrics1.is_file() and json.loads(metrics1.read_text()).get("stopped")):
                resume1 = resume and (phase1 / "last.pt").is_file()
                fit(Trainer(SPECS["classifier"], shards, config, phase1, resume=resume1, **common))
            env.barrier()
            command = f"train baseline --recipe {recipe.name} --shards ..."
            classifier, _ = load_pretrained(phase1 / "best.pt", "classifier", instruments, command)
            resume2 = resume and (out / "last.pt").is_file()
            return fit(Trainer(
                SPECS["baseline"], shards, config, out, init={"classifier": classifier},
                resume=resume2, **common,
            ))
        except Preempted as stopped:
            if env.main:  # a job script requeues on it; torchrun's own exit code is 1
                write_marker(out, stopped)
            raise
        finally:
            if env.world > 1 and dist.is_initialized():
                dist.destroy_process_group()
