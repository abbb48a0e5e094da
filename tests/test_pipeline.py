"""The DVC pipeline: dvc.yaml parses, and a parameter change invalidates exactly its stages.

The pipeline itself takes minutes (``make demo``); here every dependency and output is a
stand-in file, recorded with ``dvc commit``, so ``dvc status`` answers in seconds which stages a
change to ``params.yaml`` would rerun.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def _dvc(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [*DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def _status(cwd: Path) -> dict:
    return json.loads(_dvc(cwd, "status", "--json") or "{}")


def _stage_names(root: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.name for stage in repo.index.stages}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A copy of dvc.yaml with params/bench.yaml (every system of Table 1 and our ablations) as
    its params.yaml, every dep and out a committed stand-in."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params" / "bench.yaml", root / "params.yaml")
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "config", "core.analytics", "false")
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        paths = {Path(d.def_path) for s in stages for d in s.deps if d.def_path != "params.yaml"}
        paths |= {Path(o.def_path) for s in stages for o in s.outs}
    for path in sorted(paths):
        target = root / path
        if target.suffix:  # a file (code, checkpoint, json, markdown)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"stand-in for {path}\n")
        else:  # a folder output (corpus, shards, plots, figures)
            target.mkdir(parents=True, exist_ok=True)
            (target / "stand-in.txt").write_text(f"stand-in for {path}\n")
    _dvc(root, "commit", "--force", "-q")
    return root


BENCH_RUNS = yaml.safe_load((REPO / "params" / "bench.yaml").read_text())["runs"]
STEP2 = {f"step2@{recipe}" for recipe in BENCH_RUNS["step2"]}
STEP3 = {f"step3@{recipe}" for recipe in BENCH_RUNS["step3"]}
PAPER = {"step2@step2-cmix", "step2@step2-hmix", "step2@step2", "step2@scorecritic-step2",
         "step3@step3", "step3@step3-aml", "step3@step3-atl", "step3@scorecritic"}


def test_every_stage_of_the_paper_and_our_recipe_is_declared(pipeline: Path) -> None:
    names = _stage_names(pipeline)
    assert {"corpus", "align", "shards", "step1", "baseline@baseline", "supervised",
            "evaluate"} <= names
    assert PAPER <= STEP2 | STEP3 <= names
    assert _status(pipeline) == {}


def test_the_demo_trains_our_chain_and_the_reference_only(tmp_path: Path) -> None:
    """params.yaml (the demo) trains step 1, our recipe's step 2 and step 3 and the supervised
    reference: its 20 minutes go to one weakly supervised system; the rest is the bench's."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _dvc(tmp_path, "init", "--no-scm", "-q")
    names = _stage_names(tmp_path)
    assert names == {"corpus", "align", "shards", "shards-stems", "step1",
                     "step2@scorecritic-step2", "step3@scorecritic", "supervised", "evaluate"}


def _set(cwd: Path, path: str, value) -> None:
    file = cwd / "params.yaml"
    params = yaml.safe_load(file.read_text())
    *parents, key = path.split(".")
    node = params
    for parent in parents:
        node = node.setdefault(parent, {})
    node[key] = value
    file.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # a loss or extension setting reaches every recipe that trains with losses
        ("loss.alpha3", 0.5, {"step1", "baseline@baseline"} | STEP2 | STEP3),
        ("anchor.weight", 0.5, {"step1"} | STEP2 | STEP3),
        # a step's own section reaches that step's runs only
        ("steps.step3.train.max_epochs", 5, STEP3),
        ("steps.step2.loss.beta2", 0.01, STEP2),
        ("steps.supervised.train.max_epochs", 5, {"supervised"}),
        ("evaluate.segment_seconds", 2.0, {"evaluate"}),
        # the aligned-score variant: one switch rebuilds the shards (and, as their bytes
        # change, all that follows)
        ("corpus.slakh_root", "corpus/bench-aligned", {"shards", "shards-stems"}),
    ],
)
def test_a_parameter_change_invalidates_only_its_stages(
    pipeline: Path, path: str, value, expected: set[str]
) -> None:
    original = (pipeline / "params.yaml").read_text()
    try:
        _set(pipeline, path, value)
        assert set(_status(pipeline)) == expected
    finally:
        (pipeline / "params.yaml").write_text(original)
    assert _status(pipeline) == {}


@pytest.mark.parametrize("name", ["params.yaml", "params/bench.yaml", "params/paper.yaml"])
def test_every_params_file_runs_recipes_wired_as_the_recipes_say(name: str) -> None:
    """`runs.step3` names each step-3 recipe's step-2 start for DVC's dependency graph; it
    must be the recipe's own `starts_from`, and every run a recipe of its step."""
    from train.recipes import get_recipe, resolve

    params = yaml.safe_load((REPO / name).read_text())
    for recipe in params["runs"]["step2"]:
        assert get_recipe(recipe, "step2")
    for recipe, separator in params["runs"]["step3"].items():
        assert get_recipe(recipe, "step3").starts_from == {"transcriptor": "step1",
                                                           "separator": separator}, recipe
        assert separator in params["runs"]["step2"], separator
        resolve(get_recipe(recipe), params=params, params_name=name)  # every section valid


def test_alternative_parameter_files_have_the_same_keys() -> None:
    """params/bench.yaml and params/paper.yaml must drop in for params.yaml."""

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, dict) and key in ("corpus", "shards", "evaluate", "steps"):
                out |= keys(value, prefix + key + ".")
        return out

    demo = keys(yaml.safe_load((REPO / "params.yaml").read_text()))
    for name in ("bench.yaml", "paper.yaml"):
        other = keys(yaml.safe_load((REPO / "params" / name).read_text()))
        assert demo <= other, f"params/{name} lacks {sorted(demo - other)}"


def test_only_the_evaluation_headline_is_a_dvc_metric_and_results_are_plotted() -> None:
    # `dvc metrics show` / `dvc exp show` print every declared metric whole: one small file.
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    declared = []
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        declared += [next(iter(m)) if isinstance(m, dict) else m for m in body.get("metrics", [])]
    assert declared == ["reports/metrics.json"]
    plotted = [next(iter(p)) for p in pipeline["plots"]]
    assert plotted == ["reports/table1.json", "reports/gain.json"]
    assert all(p[next(iter(p))]["template"] == "paper_bars" for p in pipeline["plots"])
    assert (REPO / ".dvc" / "plots" / "paper_bars.json").is_file()
    assert "/dvc_plots/" in (REPO / ".gitignore").read_text().splitlines()
