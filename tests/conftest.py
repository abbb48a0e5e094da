"""Fixtures several test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data import write_synthetic_shards


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 train and 1 validation synthetic tracks of 5 s: what the crash-safety and preemption
    tests train on (a run of a few steps, in seconds)."""
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n_train=2, n_val=1,
                                  seconds=5.0)


@pytest.fixture(scope="module")
def shards(tiny_shards: Path) -> Path:
    """The shards a module's runs train on: ``tiny_shards`` unless the module defines its own."""
    return tiny_shards


@pytest.fixture(scope="module")
def params(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test module's ``PARAMS`` text as a ``params.yaml`` (its tiny nets and budgets)."""
    return params_file(tmp_path_factory, request.module.PARAMS)


def params_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> Path:
    """A ``params.yaml`` holding ``text``, in a fresh folder."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(text)
    return path
