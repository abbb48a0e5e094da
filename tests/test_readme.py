"""Every `prep` and `train` command the README shows parses as written: the command exists,
its options exist and take the values shown, its required options are there (click's own
validation, on stand-ins for the files it names), and `--help` answers."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from prep.cli import main as prep_main
from train.cli import main as train_main

README = Path(__file__).resolve().parents[1] / "README.md"
GROUPS = {"prep": prep_main, "train": train_main}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks (and inline code) that start with prep/train."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.splitlines()
    # inline code that is a whole command line (with options), not a command's name
    lines += [c for c in re.findall(r"`((?:prep|train) [^`]+)`", text) if " -" in c or
              "/" in c]
    commands = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        words = line.split()
        if len(words) >= 2 and words[0] in GROUPS and words[1] in GROUPS[words[0]].commands:
            if words[1:2] != ["NAME"]:
                commands.append(line)
    return sorted(set(commands))


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_users_type() -> None:
    shown = " | ".join(COMMANDS)
    for expected in ("train step3 --shards data/", "train step3 --shards data/ --recipe step3",
                     "train evaluate --shards data/ --split test", "prep build-shards"):
        assert expected in shown, expected


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses_as_written(line: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    group, name, *args = shlex.split(line)
    command = GROUPS[group].commands[name]
    args = [arg.lstrip("/") for arg in args]  # an absolute path gets a stand-in here too
    for arg in args:  # stand-ins for the files and folders the line names
        if arg.startswith("-") or ("/" not in arg and "." not in arg) or "=" in arg:
            continue
        path = Path(arg)
        if path.suffix in (".wav", ".pt", ".yaml", ".mid", ".json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".wav":
                import numpy as np
                import soundfile as sf

                sf.write(path, np.zeros(1600, dtype=np.float32), 16000)
            else:
                path.write_text("{}\n")
        elif "/" in arg:
            path.mkdir(parents=True, exist_ok=True)
    try:
        context = command.make_context(name, list(args))
    except click.exceptions.ClickException as error:
        pytest.fail(f"README: `{line}`: {error.format_message()}")
    if group == "train" and "assignments" in context.params:  # a training command
        from train.recipes import default_recipe, get_recipe, resolve

        options = context.params
        recipe = get_recipe(options["recipe"], name) if options["recipe"] else default_recipe(name)
        resolve(recipe, options["preset"], assignments=options["assignments"])
    result = CliRunner().invoke(GROUPS[group], [name, "--help"])
    assert result.exit_code == 0, result.output
