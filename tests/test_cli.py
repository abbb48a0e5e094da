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


@pytest.mark.parametrize("form", ["clamped", "flipped", "positives"])
def test_step3_accepts_every_aml_form_of_the_loss_config(form: str, tmp_path) -> None:
    """--aml-form offers LossConfig's forms: the report's `positives` ablation is reachable."""
    result = CliRunner().invoke(
        train_main, ["step3", "--shards", str(tmp_path), "--aml-form", form, "--max-epochs", "0"]
    )
    assert "Invalid value for '--aml-form'" not in result.output
    bad = CliRunner().invoke(train_main, ["step3", "--shards", str(tmp_path), "--aml-form", "nope"])
    assert bad.exit_code == 2 and "Invalid value for '--aml-form'" in bad.output
