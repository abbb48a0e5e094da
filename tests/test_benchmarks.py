"""The benchmarks (benchmarks/perf, benchmarks/diagnostics) run as modules from the repository
root: each answers ``python -m benchmarks.<kind>.<name> --help`` with its usage, none edits
``sys.path`` or is named like a package it would shadow, and importing them loads neither torch
nor ``prep`` nor ``train`` (those load once the command line is parsed), so ``--help`` is instant
and does not depend on the trainer's API. A new script is found by pkgutil and checked too.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
KINDS = ("perf", "diagnostics")
# modules of shared code, not scripts: they have no command line of their own
HELPERS = {"benchmarks.diagnostics.validation_cli"}


def benchmark_modules() -> list[str]:
    """Every module under benchmarks/perf and benchmarks/diagnostics, by dotted name."""
    return sorted(
        info.name
        for kind in KINDS
        for info in pkgutil.iter_modules([str(BENCHMARKS / kind)], f"benchmarks.{kind}.")
    )


MODULES = benchmark_modules()
SCRIPTS = [name for name in MODULES if name not in HELPERS]


def test_modules_found():
    assert "benchmarks.perf.train_throughput" in SCRIPTS
    assert "benchmarks.diagnostics.separator_snr" in SCRIPTS
    assert HELPERS <= set(MODULES), "a helper listed here is gone: update HELPERS"


@pytest.mark.parametrize("module", SCRIPTS)
def test_help(module: str):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0] if result.stdout else ""
    assert first.startswith("usage:"), result.stdout + result.stderr
    assert module.rsplit(".", 1)[-1] in first


def test_importing_loads_no_torch_prep_or_train():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'prep', 'train') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", (
        "a benchmark imports these at module level; import them inside main(), after "
        f"parse_args: {result.stdout}"
    )


def benchmark_files() -> list[Path]:
    return sorted(p for p in BENCHMARKS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_no_benchmark_edits_sys_path():
    offenders = [str(p.relative_to(ROOT)) for p in benchmark_files()
                 if "sys.path" in p.read_text(errors="replace")]
    assert offenders == []


def test_no_benchmark_named_like_a_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert {"prep", "train"} <= packages
    shadowing = [str(p.relative_to(ROOT)) for p in benchmark_files()
                 if p.suffix == ".py" and p.stem in packages]
    assert shadowing == []


def test_preregistered_runner_lists_the_plan_and_refuses_to_score_early(tmp_path) -> None:
    script = BENCHMARKS / "quality" / "preregistered.sh"
    env = {"WORK": str(tmp_path / "work"), "PATH": "/usr/bin:/bin"}
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "preregistered.sh score" in usage.stdout
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True,
                            env=env, check=True).stdout.splitlines()
    assert len(status) == 3 * 6 + 5 + 2 * 5 and all(s.startswith("missing") for s in status)
    assert "missing seed2 scorecritic" in status and "missing seed1 supervised" in status
    score = subprocess.run(["bash", str(script), "score"], capture_output=True, text=True,
                           env=env)
    assert score.returncode == 1 and "refusing to score test" in score.stderr
    assert not (tmp_path / "work" / "TEST_SCORED").exists()


def test_gpu_util_attributes_samples_to_passes(tmp_path):
    (tmp_path / "all.log").write_text(
        "== paper-w6: --workers 6 (10:00:01)\nstep lines\n"
        "== paper-w2: --workers 2 (10:00:03)\ndone 10:00:05\n")
    (tmp_path / "util.csv").write_text(
        "timestamp, utilization.gpu [%], memory.used [MiB]\n"
        "2026/12/02 10:00:01.100, 50 %, 1000 MiB\n2026/12/02 10:00:02.900, 95 %, 2000 MiB\n"
        "2026/12/02 10:00:03.100, 91 %, 3000 MiB\n2026/12/02 10:00:06.100, 0 %, 0 MiB\n"
        "2026/12/02 10:00:0\n")  # a line nvidia-smi cut short
    result = subprocess.run([sys.executable, "-m", "benchmarks.perf.gpu_util", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "util.json").read_text())
    assert figures == {
        "paper-w6": {"samples": 2, "mean_util": 72.5, "busy_90_share": 0.5,
                     "peak_memory_mib": 2000.0},
        "paper-w2": {"samples": 1, "mean_util": 91.0, "busy_90_share": 1.0,
                     "peak_memory_mib": 3000.0}}  # the sample after "done" belongs to none
