"""Every command of both CLIs answers --help with at least one example."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from prep.cli import main as prep_main
from train.cli import main as train_main

COMMANDS = [(prep_main, name) for name in prep_main.commands] + [
    (train_main, name) for name in train_main.commands
]


def test_the_clis_have_every_documented_command() -> None:
    assert {"synth-slakh", "build-shards", "verify", "index", "inspect", "card"} <= set(
        prep_main.commands
    )
    assert {
        "step1", "step2", "step3", "baseline", "supervised", "evaluate", "separate", "transcribe"
    } <= set(train_main.commands)  # fmt: skip


@pytest.mark.parametrize(("group", "name"), COMMANDS, ids=[name for _, name in COMMANDS])
def test_help_shows_examples(group, name: str) -> None:
    result = CliRunner().invoke(group, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    examples = result.output.split("Examples:", 1)[1]
    assert name in examples, f"the examples of {name} do not show the command itself"


@pytest.mark.parametrize("step", ["step1", "step2", "step3", "baseline", "supervised"])
def test_training_help_fits_a_screen_and_lists_the_recipes(step: str) -> None:
    from train.recipes import default_recipe, recipes

    result = CliRunner().invoke(train_main, [step, "--help"])
    assert result.exit_code == 0, result.output
    options = [line for line in result.output.splitlines() if line.startswith("  -")]
    assert len(options) <= 15, options
    for name in recipes(step):
        assert f" {name}: " in result.output, name
    assert f"default {default_recipe(step).name}" in result.output


def test_set_refuses_unknown_sections_keys_and_malformed_assignments(tmp_path) -> None:
    for value, message in (("nope.x=1", "unknown section"), ("loss.nope=1", "nope"),
                           ("loss.alpha2", "section.key=value"),
                           ("loss.alpha2=abc", "alpha2 must be of type float")):
        result = CliRunner().invoke(
            train_main, ["step3", "--shards", str(tmp_path), "--set", value, "--print-config"]
        )
        assert result.exit_code != 0 and message in result.output, (value, result.output)


def test_recipes_command_lists_every_recipe_and_prints_one_resolved() -> None:
    from train.recipes import recipes

    listing = CliRunner().invoke(train_main, ["recipes"])
    assert listing.exit_code == 0
    for name in recipes():
        assert name in listing.output
    one = CliRunner().invoke(train_main, ["recipes", "scorecritic"])
    assert one.exit_code == 0 and "critic_lr:\n  scale: 8.0" in one.output
    assert "separator: scorecritic-step2" in one.output
    bad = CliRunner().invoke(train_main, ["recipes", "nope"])
    assert bad.exit_code != 0 and "unknown recipe 'nope'" in bad.output


def test_build_shards_stems_choices_are_the_builds_modes() -> None:
    from prep.build import DEFAULT_STEMS_MODE, STEMS_MODES

    option = next(p for p in prep_main.commands["build-shards"].params if p.name == "stems")
    assert list(option.type.choices) == list(STEMS_MODES)
    assert option.default == DEFAULT_STEMS_MODE


def test_build_shards_backend_choices_are_the_builds_backends() -> None:
    from prep.build import BACKENDS

    option = next(p for p in prep_main.commands["build-shards"].params if p.name == "backend")
    assert list(option.type.choices) == list(BACKENDS)
    assert option.default == BACKENDS[0]


def test_prep_help_shows_the_harmonics_default_of_prep_features() -> None:
    from prep.features import DEFAULT_N_HARMONICS

    result = CliRunner().invoke(prep_main, ["build-shards", "--help"])
    assert f"[default: {DEFAULT_N_HARMONICS};" in result.output
    assert "prep.features]" not in result.output


def test_inspect_plot_takes_the_first_track_by_default(tiny_shards, tmp_path) -> None:
    shard = sorted((tiny_shards / "train").glob("*.h5"))[0]
    png = tmp_path / "window.png"
    result = CliRunner().invoke(prep_main, ["inspect", str(shard), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert f"wrote {png}" in result.output and png.stat().st_size > 10_000
    empty = tmp_path / "empty.h5"
    import h5py

    with h5py.File(empty, "w") as handle:
        handle.create_group("tracks")
    result = CliRunner().invoke(prep_main, ["inspect", str(empty), "--plot", str(png)])
    assert result.exit_code == 1 and f"{empty}: " in result.output


@pytest.mark.parametrize("step", ["step1", "step2", "step3", "baseline", "supervised"])
def test_training_help_shows_the_budget_a_bare_command_runs(step: str) -> None:
    from train.config import SIZE_PRESETS
    from train.recipes import default_recipe, resolve

    result = CliRunner().invoke(train_main, [step, "--help"])
    for preset in SIZE_PRESETS:  # the numbers come from the preset and recipe, never copied
        train = resolve(default_recipe(step), preset).config.train
        assert (f"{preset}: {train.max_epochs} epochs x {train.steps_per_epoch} steps x batch "
                f"{train.batch_size}, {train.num_workers} loader") in " ".join(result.output.split())
    assert "device auto" in result.output


def test_command_list_shows_whole_summaries() -> None:
    from train.cli import SHORT_HELP

    output = CliRunner().invoke(train_main, ["--help"]).output
    assert set(SHORT_HELP) == set(train_main.commands)
    for name, summary in SHORT_HELP.items():
        assert f"{name}" in output and summary in " ".join(output.split()), name
