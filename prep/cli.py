"""The ``prep`` command line: thin wrappers over functions in the ``prep`` package."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scorecritic")
def main() -> None:
    """Turn Slakh2100 (or the rendered demo corpus) into HDF5 training shards.

    \b
    Examples:
      prep synth-slakh --preset demo --out corpus/demo
      prep build-shards --instruments piano,guitar,bass
      prep verify data/
    """


# --- synth-slakh: the demo corpus (prep/synth.py) -------------------------------------------

# --- build-shards, index, verify, inspect: the shards (prep/build.py, prep/shards.py) -----
