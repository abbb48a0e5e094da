"""Recipes: the named systems scorecritic trains, read from ``train/recipes.yaml``.

A :class:`Recipe` is a complete system: the step that trains it, the recipes whose checkpoints
it starts from, and its settings (``{section: {key: value}}`` over the defaults of
:mod:`train.config`). Run names are labels only: what a run is comes from its recipe, recorded
in its ``config.json`` and checkpoints.

The settings of a run are resolved in one order (:func:`resolve`), later wins:

1. the defaults of :class:`train.config.RunConfig`, sized by a size preset (``tiny``/``paper``);
2. the recipe's settings;
3. a params file's sections (``model:``, ``train:``, ``loss:``, an extension's), then its
   ``steps: {<step>: {section: {...}}}`` entry for the recipe's step;
4. ``--set section.key=value`` assignments.

>>> recipe = get_recipe("scorecritic")
>>> recipe.step, recipe.starts_from["separator"]
('step3', 'scorecritic-step2')
>>> config = resolve(recipe, assignments=["train.max_epochs=2"]).config
>>> config.anchor.weight, config.train.max_epochs
(1.0, 2)
>>> default_recipe("step3").name
'scorecritic'
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from train.config import (
    SIZE_PRESETS,
    ConfigError,
    RunConfig,
    did_you_mean,
    parse_assignment,
    sized,
)

__all__ = [
    "STEPS",
    "Recipe",
    "Resolved",
    "recipes",
    "get_recipe",
    "default_recipe",
    "read_params",
    "check_params",
    "resolve",
]

RECIPES_FILE = Path(__file__).with_name("recipes.yaml")
STEPS = ("step1", "step2", "step3", "baseline", "supervised")
# The earlier networks each step starts from (train/pipeline.py loads them).
STARTS_FROM: dict[str, tuple[str, ...]] = {
    "step1": (),
    "step2": ("transcriptor",),
    "step3": ("transcriptor", "separator"),
    "baseline": (),
    "supervised": (),
}
PARAMS_KEYS_READ = ("preset", "steps")  # besides the RunConfig sections
# Sections of a params file that belong to the dvc pipeline (dvc.yaml reads them; train does
# not): allowed, and left alone. Any other key that is not a RunConfig section or one of
# PARAMS_KEYS_READ is refused, so a misspelt section never trains the defaults in silence.
PIPELINE_KEYS = ("corpus", "shards", "runs", "evaluate")


@dataclass(frozen=True)
class Recipe:
    """One named system.

    Attributes:
        name: the recipe's name (``train <step> --recipe NAME``).
        step: the command that trains it (one of ``STEPS``).
        summary: one line saying what the system is.
        paper_row: the row of the paper's tables it reproduces as written ("" for ours).
        starts_from: network ("transcriptor", "separator") -> the recipe whose run made it.
        settings: ``{section: {key: value}}`` over the defaults (:class:`RunConfig`).
    """

    name: str
    step: str
    summary: str
    paper_row: str = ""
    starts_from: dict[str, str] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Resolved:
    """A recipe with every setting of the run it makes."""

    recipe: Recipe
    preset: str
    config: RunConfig


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in top.items():
        merged[section] = {**merged.get(section, {}), **dict(values or {})}
    return merged


def _parse(raw: Any, path: Path) -> tuple[dict[str, Recipe], dict[str, str]]:
    """Recipes and per-step defaults of a recipes file, every one checked."""
    if not isinstance(raw, dict) or not isinstance(raw.get("recipes"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'recipes:' mapping")
    entries: dict[str, dict[str, Any]] = raw["recipes"]
    built: dict[str, Recipe] = {}

    def build(name: str, chain: tuple[str, ...] = ()) -> Recipe:
        if name in built:
            return built[name]
        if name in chain:
            raise ConfigError(f"{path}: recipe {name!r} is its own base ({' -> '.join(chain)})")
        entry = entries.get(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: recipe {name!r} is not defined (or not a mapping)")
        unknown = sorted(set(entry) - {"base", "step", "summary", "paper_row", "starts_from",
                                       "settings"})
        if unknown:
            raise ConfigError(f"{path}: recipe {name!r} has unknown key(s) {unknown}")
        parent = build(entry["base"], (*chain, name)).to_dict() if "base" in entry else {}
        settings = _merge(parent.get("settings", {}), entry.get("settings") or {})
        recipe = Recipe(
            name=name,
            step=entry.get("step", parent.get("step", "")),
            summary=str(entry.get("summary", "")).strip(),
            paper_row="" if "base" in entry else str(entry.get("paper_row") or ""),
            starts_from=dict(entry.get("starts_from", parent.get("starts_from", {}))),
            settings=settings,
        )
        if recipe.step not in STEPS:
            raise ConfigError(f"{path}: recipe {name!r} has step {recipe.step!r}; steps: {STEPS}")
        if not recipe.summary:
            raise ConfigError(f"{path}: recipe {name!r} has no summary")
        needed = STARTS_FROM[recipe.step]
        if sorted(recipe.starts_from) != sorted(needed):
            raise ConfigError(
                f"{path}: recipe {name!r} ({recipe.step}) must start from exactly "
                f"{list(needed) or 'nothing'}, got {sorted(recipe.starts_from)}"
            )
        try:
            RunConfig().override(settings)
        except ConfigError as err:
            raise ConfigError(f"{path}: recipe {name!r}: {err}") from None
        built[name] = recipe
        return recipe

    for name in entries:
        build(name)
    for name, recipe in built.items():
        for network, source in recipe.starts_from.items():
            kind = {"transcriptor": ("step1",), "separator": ("step2", "step3")}[network]
            if source not in built or built[source].step not in kind:
                raise ConfigError(
                    f"{path}: recipe {name!r} starts its {network} from {source!r}, which is "
                    f"not a {' or '.join(kind)} recipe"
                )
    defaults = raw.get("defaults") or {}
    for step in STEPS:
        if built.get(defaults.get(step, ""), None) is None or built[defaults[step]].step != step:
            raise ConfigError(f"{path}: defaults.{step} must name a {step} recipe")
    return built, dict(defaults)


@functools.lru_cache(maxsize=1)
def _catalogue() -> tuple[dict[str, Recipe], dict[str, str]]:
    return _parse(yaml.safe_load(RECIPES_FILE.read_text()), RECIPES_FILE)


def recipes(step: str | None = None) -> dict[str, Recipe]:
    """Every recipe by name (only ``step``'s when given), in file order."""
    found = _catalogue()[0]
    return {n: r for n, r in found.items() if step is None or r.step == step}


def get_recipe(name: str, step: str | None = None) -> Recipe:
    """The recipe called ``name``; with ``step``, it must be trained by that step.

    Raises:
        ConfigError: unknown name (the message lists the known ones), or another step's recipe.
    """
    known = recipes()
    if name not in known:
        choices = ", ".join(recipes(step)) if step else ", ".join(known)
        raise ConfigError(f"unknown recipe {name!r}{did_you_mean(name, known)}; recipes: {choices}")
    recipe = known[name]
    if step is not None and recipe.step != step:
        raise ConfigError(
            f"recipe {name!r} is trained by `train {recipe.step}`, not `train {step}`"
        )
    return recipe


def default_recipe(step: str) -> Recipe:
    """The recipe ``train <step>`` runs without ``--recipe``."""
    return get_recipe(_catalogue()[1][step], step)


def read_params(path: str | Path) -> dict[str, Any]:
    """A params file (YAML) as a dict; ``!!python`` tags are refused, never constructed.

    Raises:
        ConfigError: unreadable, invalid YAML, or not a mapping at top level (names the file).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the params file ({err.strerror})") from err
    except yaml.YAMLError as err:
        problem = str(err).strip().splitlines()[0]
        raise ConfigError(f"{path}: invalid or unsafe YAML ({problem})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at top level")
    return data


def check_params(params: Mapping[str, Any], params_name: str = "params") -> None:
    """Refuse a params file that would not do what it says, naming the file and the key.

    Every top-level key must be a :class:`RunConfig` section, ``preset``, ``steps`` or one of
    the pipeline's ``PIPELINE_KEYS``; every section a mapping of that section's fields, with
    values of their types; ``steps`` a mapping from step names (``STEPS``) to such sections.
    All steps' entries are checked, not only the step being run, so a misspelt key fails the
    first run that reads the file.

    Raises:
        ConfigError: ``<file>: <the problem>``, one line.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"{params_name}: expected a mapping of sections at top level")
    sections = RunConfig.sections()
    known = (*sections, *PARAMS_KEYS_READ, *PIPELINE_KEYS)
    for key in params:
        if key not in known:
            raise ConfigError(
                f"{params_name}: unknown section {key!r}{did_you_mean(str(key), known)}; "
                f"a params file holds {', '.join(sections)}, {', '.join(PARAMS_KEYS_READ)} "
                f"(and the pipeline's {', '.join(PIPELINE_KEYS)})"
            )
    preset = params.get("preset")
    if preset is not None and preset not in SIZE_PRESETS:
        raise ConfigError(
            f"{params_name}: preset must be one of {', '.join(SIZE_PRESETS)}, got {preset!r}"
        )
    RunConfig().override({k: v for k, v in params.items() if k in sections}, where=params_name)
    steps = params.get("steps")
    if steps is None:
        return
    if not isinstance(steps, Mapping):
        raise ConfigError(
            f"{params_name}: steps must map step names ({', '.join(STEPS)}) to sections, "
            f"got {steps!r}"
        )
    for step, changes in steps.items():
        if step not in STEPS:
            raise ConfigError(
                f"{params_name}: unknown step {step!r} under steps{did_you_mean(str(step), STEPS)}"
                f"; steps: {', '.join(STEPS)} (a recipe's settings go in train/recipes.yaml, "
                "or on top with --recipe NAME --set section.key=value)"
            )
        if changes is not None and not isinstance(changes, Mapping):
            raise ConfigError(
                f"{params_name}: steps.{step} must be a mapping of sections, got {changes!r}"
            )
        RunConfig().override(changes or {}, where=f"{params_name}: steps.{step}")


def resolve(
    recipe: Recipe,
    preset: str | None = None,
    params: Mapping[str, Any] | None = None,
    assignments: Iterable[str] = (),
    params_name: str = "params",
) -> Resolved:
    """Every setting of a run of ``recipe``, in the order of the module docstring.

    Args:
        recipe: the system.
        preset: size preset; default the params' ``preset``, else ``tiny``.
        params: a params file's contents (:func:`read_params`), checked whole first
            (:func:`check_params`); the pipeline's ``PIPELINE_KEYS`` are not train's and ignored.
        assignments: ``section.key=value`` strings (``--set``).
        params_name: the params file's name, for error messages.
    """
    params = dict(params or {})
    check_params(params, params_name)
    preset = preset or params.get("preset") or "tiny"
    config = sized(str(preset)).override(recipe.settings, where=f"recipe {recipe.name!r}")
    sections = RunConfig.sections()
    config = config.override(
        {k: v for k, v in params.items() if k in sections}, where=params_name
    )
    steps = params.get("steps") or {}
    config = config.override(steps.get(recipe.step) or {}, where=f"{params_name}: steps.{recipe.step}")
    changes: dict[str, dict[str, Any]] = {}
    for text in assignments:
        section, key, value = parse_assignment(text)
        changes.setdefault(section, {})[key] = value
    config = config.override(changes, where="--set")
    return Resolved(recipe, str(preset), config)
