"""Issue 32 on the training side: integrity that cannot be fooled.

Every bad input to ``train`` answers with one line naming the file and the problem and a
non-zero exit, and leaves nothing behind that looks complete: a misspelt params section or step,
a section that is not a mapping, a resume with settings its saved state fixes (learning rate,
preset, model shape, instruments), checkpoints of random bytes, outputs of the wrong kind,
evaluation settings out of range, and an evaluation with nothing to score.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner, Result
from test_data import write_synthetic_shards

import train.evaluate as E
from train.cli import main as train_cli
from train.config import RESUME_MAY_CHANGE, ModelConfig
from train.model import Separator, Transcriptor, save_checkpoint
from train.recipes import PIPELINE_KEYS, check_params, read_params

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTS = ["piano", "guitar", "bass"]
TINY = ModelConfig(bottleneck_channels=16, hidden_channels=32, blocks_per_repeat=4, repeats=1)
PARAMS = """\
model: {bottleneck_channels: 16, hidden_channels: 32, blocks_per_repeat: 4, repeats: 1}
train: {val_windows: 2, num_workers: 0, device: cpu, batch_size: 2, window_frames: 32,
        max_epochs: 1, steps_per_epoch: 1}
"""


@pytest.fixture(scope="module")
def run(shards, params, tmp_path_factory) -> Path:
    """A finished one-step step-1 run (its last.pt is what the resume tests start from)."""
    out = tmp_path_factory.mktemp("runs") / "step1"
    result = invoke(train_args("step1", shards, out, params))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny separator and transcriptor checkpoint, a file of random bytes named .pt, and a
    second of audio."""
    root = tmp_path_factory.mktemp("files")
    extra = {"instruments": INSTRUMENTS}
    rand = root / "random.pt"
    rand.write_bytes(np.random.default_rng(0).bytes(4096))
    wav = root / "song.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    return {
        "separator": save_checkpoint(root / "separator.pt", Separator(TINY), extra),
        "transcriptor": save_checkpoint(root / "transcriptor.pt", Transcriptor(TINY), extra),
        "random": rand,
        "wav": wav,
    }


def train_args(step: str, shards: Path, out: Path, params: Path, *extra: str) -> list[str]:
    return [step, "--shards", str(shards), "--out", str(out), "--params", str(params),
            "--no-progress", *extra]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(train_cli, [str(a) for a in args])


def refused(result: Result, *texts: object, exit_code: int = 1) -> str:
    """The one ``Error:`` line of a refusal holding every one of ``texts``; no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    if exit_code == 1:  # a ClickException prints its line alone
        assert [line for line in result.output.splitlines() if line.strip()] == errors
    for text in texts:
        assert str(text) in errors[0], (text, errors[0])
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- case 5: settings ignored in silence ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("modle: {preset: paper}\n", ["unknown section 'modle'", "did you mean 'model'"]),
        ("train: {max_epoch: 3}\n", ["max_epoch", "did you mean 'max_epochs'"]),
        ("model: {preset: paper}\n", ["unknown ModelConfig key(s) ['preset']"]),
        # a run's name is not a params section: steps are keyed by step
        ("steps: {step2-cmx: {loss: {alpha2: 0.5}}}\n",
         ["unknown step 'step2-cmx' under steps", "did you mean 'step2'"]),
        ("steps: {step3: {train: {max_epochs: 2}, los: {}}}\n", ["steps.step3", "'los'"]),
        ("preset: huge\n", ["preset must be one of tiny, paper, got 'huge'"]),
    ],
    ids=["misspelt-section", "misspelt-key", "key-in-wrong-section", "unknown-step",
         "other-steps-checked-too", "unknown-preset"],
)
def test_misspelt_params_are_refused_naming_the_file(text, expected, shards, tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    refused(invoke(train_args("step1", shards, out, path)), f"{path}: ", *expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [1, 2]\n", "section 'model' must be a mapping"),
        ("train:\n  - lr: 0.1\n", "section 'train' must be a mapping"),
        ("steps: [step1]\n", "steps must map step names"),
        ("steps: {step1: [1]}\n", "steps.step1 must be a mapping of sections"),
        ("- model\n", "expected a mapping of sections at top level"),
    ],
    ids=["section", "section-block", "steps", "steps-entry", "top-level"],
)
def test_params_section_that_is_a_list_is_one_line(text, expected, shards, tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    refused(invoke(train_args("step1", shards, tmp_path / "run", path)), f"{path}: ", expected)
    assert not (tmp_path / "run").exists()


def test_the_projects_params_files_pass_the_check() -> None:
    """params.yaml and params/*.yaml are what dvc and the README run: valid as they stand, and
    their pipeline sections are the only keys train leaves to others."""
    for path in [ROOT / "params.yaml", *sorted((ROOT / "params").glob("*.yaml"))]:
        data = read_params(path)
        check_params(data, str(path))
        assert set(PIPELINE_KEYS) >= {k for k in data if k not in
                                      ("preset", "steps", "model", "train", "loss",
                                       "aml_positives", "anchor", "owned_remix",
                                       "weight_average", "critic_lr")}, path


def test_params_files_name_every_knob_dvc_may_set_and_null_keeps_the_recipes() -> None:
    """``dvc exp run -S loss.alpha2=3`` needs the key in params.yaml: the loss and extension
    sections list every field, null keeping each recipe's own value."""
    from train.config import RunConfig
    from train.recipes import get_recipe, resolve

    fields = RunConfig().to_dict()
    for path in [ROOT / "params.yaml", *sorted((ROOT / "params").glob("*.yaml"))]:
        data = read_params(path)
        for section in ("loss", "aml_positives", "anchor", "owned_remix", "weight_average",
                        "critic_lr"):
            assert set(data[section]) == set(fields[section]), (path, section)
    nulls = {"loss": dict.fromkeys(fields["loss"]), "anchor": {"weight": None}}
    for name in ("step3-aml", "scorecritic"):
        recipe = get_recipe(name)
        assert resolve(recipe, "tiny", nulls).config == resolve(recipe, "tiny", {}).config
    set_one = resolve(get_recipe("scorecritic"), "tiny", {"loss": {**nulls["loss"], "alpha2": 3}})
    assert set_one.config.loss.alpha2 == 3


def test_set_with_a_misspelt_section_is_refused(shards, params, tmp_path) -> None:
    result = invoke(train_args("step1", shards, tmp_path / "run", params, "--set",
                               "los.alpha2=1"))
    refused(result, "--set: unknown section(s) ['los']", "did you mean 'loss'")


def test_out_named_after_another_recipe_is_announced(shards, params, files, tmp_path) -> None:
    """Run names are labels: a folder named like another recipe trains the recipe asked for,
    and says so on one line (here before the start checkpoint is refused)."""
    out = tmp_path / "step2-cmix"
    result = invoke(train_args("step2", shards, out, params, "--transcriptor",
                               files["random"]))
    note = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "trains recipe 'scorecritic-step2', not 'step2-cmix'" in note[0]
    assert "--recipe step2-cmix" in note[0]
    assert result.exit_code == 1 and not out.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--set", "train.lr=0.5"], ["train.lr 0.001 -> 0.5"]),
        (["--set", "critic_lr.scale=4", "--set", "loss.alpha1=0.5"],
         ["critic_lr.scale 1.0 -> 4.0", "loss.alpha1 0.03 -> 0.5"]),
        (["--preset", "paper", "--set", "model.hidden_channels=64"],
         ["preset 'tiny', this command asks 'paper'", "model.hidden_channels 32 -> 64"]),
    ],
    ids=["lr", "two-settings", "preset"],
)
def test_resume_with_settings_its_state_fixes_is_refused(extra, expected, run, shards, params):
    marker = run / "preempted.json"  # as a preempted run leaves it, for its job script
    marker.write_text('{"epoch": 0}')
    before = {name: digest(run / name) for name in ("last.pt", "best.pt", "config.json",
                                                    "preempted.json")}
    result = invoke(train_args("step1", shards, run, params, "--resume",
                               "--set", "train.max_epochs=2", *extra))
    refused(result, f"{run / 'last.pt'}: cannot resume with other settings", *expected,
            "train.max_epochs")  # names what may change
    assert {name: digest(run / name) for name in before} == before
    marker.unlink()


def test_resume_on_other_instruments_or_shapes_is_one_line(run, shards, params, tmp_path):
    """Instruments, and the model shape of a state that predates the recorded config, are
    compared before any weights are loaded: no size-mismatch traceback."""
    state = torch.load(run / "last.pt", weights_only=True)
    for name, change, expected in [
        ("instruments", {"instruments": ["bass", "guitar", "piano"]},
         "trained on instruments ['bass', 'guitar', 'piano'] and these shards hold"),
        ("shape", {"config": None, "model_config": {**state["model_config"],
                                                    "hidden_channels": 48}},
         "model.hidden_channels 48 -> 32"),
    ]:
        out = tmp_path / name
        out.mkdir()
        torch.save({**state, **change}, out / "last.pt")
        result = invoke(train_args("step1", shards, out, params, "--resume"))
        refused(result, f"{out / 'last.pt'}: cannot resume", expected)
        assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_readme_and_help_name_what_a_resume_may_change() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    for setting in RESUME_MAY_CHANGE:
        assert f"`{setting}`" in readme, setting
    assert ", ".join(RESUME_MAY_CHANGE) in " ".join(invoke(["step1", "--help"]).output.split())


def test_resume_may_extend_the_budget(run, shards, params, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pt", "best.pt", "config.json"):
        (out / name).write_bytes((run / name).read_bytes())
    result = invoke(train_args("step1", shards, out, params, "--resume",
                               "--set", "train.max_epochs=2", "--set", "train.log_every=5"))
    assert result.exit_code == 0, result.output
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["epoch"] == 2


# --- case 6: one line where a traceback was ---------------------------------------------------


def test_supervised_on_shards_without_train_stems_is_one_line(shards, params, tmp_path):
    out = tmp_path / "supervised"
    refused(invoke(train_args("supervised", shards, out, params)),
            f"{shards}: the train split holds no stems", "--stems all")
    assert not out.exists()


def test_transcribe_out_an_existing_folder(files, tmp_path) -> None:
    out = tmp_path / "midi"
    out.mkdir()
    result = invoke(["transcribe", "--checkpoint", files["transcriptor"], files["wav"],
                     "--out", out])
    refused(result, f"{out}: is a folder; --out must name a file")
    assert list(out.iterdir()) == []


def test_separate_out_an_existing_file(files, tmp_path) -> None:
    out = tmp_path / "separated"
    out.write_text("mine")
    result = invoke(["separate", "--checkpoint", files["separator"], files["wav"],
                     "--out", out])
    refused(result, f"{out}: is a file; --out must name a folder")
    assert out.read_text() == "mine"


def test_separate_and_transcribe_still_write(files, tmp_path) -> None:
    result = invoke(["separate", "--checkpoint", files["separator"], files["wav"], "--out",
                     tmp_path / "sep"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sep").iterdir()) == [
        f"{name}.wav" for name in sorted(INSTRUMENTS)]
    result = invoke(["transcribe", "--checkpoint", files["transcriptor"], files["wav"],
                     "--out", tmp_path / "t" / "song.mid"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "song.mid").is_file()
    assert not list(tmp_path.rglob(".*.partial"))


def evaluate_args(shards: Path, out: Path, *extra: object) -> list[object]:
    return ["evaluate", "--shards", shards, "--split", "validation", "--out", out,
            "--device", "cpu", *extra]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--segment-seconds", "0"), ("--segment-seconds", "-1"), ("--threshold", "1.5"),
     ("--max-tracks", "0"), ("--figure-tracks", "-1")],
)
def test_evaluate_option_out_of_range(option, value, shards, files, tmp_path) -> None:
    out = tmp_path / "report"
    result = invoke(evaluate_args(shards, out, "--checkpoint", f"a={files['separator']}",
                                  option, value))
    refused(result, f"Invalid value for '{option}'", exit_code=2)
    assert not out.exists()


def test_evaluate_library_refuses_a_zero_segment(shards, files, tmp_path) -> None:
    with pytest.raises(E.EvaluationError, match="segment_seconds must be > 0, got 0"):
        E.evaluate(shards, "validation", {"a": files["separator"]}, tmp_path / "r",
                   segment_seconds=0.0, device="cpu")
    assert not (tmp_path / "r").exists()


def test_evaluate_out_a_file(shards, files, tmp_path) -> None:
    out = tmp_path / "report.md"
    out.write_text("mine")
    result = invoke(evaluate_args(shards, out, "--checkpoint", f"a={files['separator']}"))
    refused(result, f"{out}: exists and is not a folder")
    assert out.read_text() == "mine" and sorted(tmp_path.iterdir()) == [out]


def test_evaluate_failing_midway_leaves_no_report_folder(shards, files, tmp_path,
                                                         monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise E.EvaluationError("broken track")

    monkeypatch.setattr(E, "evaluate_track", broken)
    out = tmp_path / "reports" / "mine"
    with pytest.raises(E.EvaluationError, match="broken track"):
        E.evaluate(shards, "validation", {"a": files["separator"]}, out, device="cpu")
    assert not out.exists()


@pytest.mark.parametrize("command", ["separate", "transcribe", "evaluate", "step2", "resume"])
def test_random_bytes_checkpoint_is_one_line(command, shards, params, files, tmp_path) -> None:
    rand = files["random"]
    out = tmp_path / "out"
    if command == "separate":
        args = ["separate", "--checkpoint", rand, files["wav"], "--out", out]
    elif command == "transcribe":
        args = ["transcribe", "--checkpoint", rand, files["wav"], "--out", out / "x.mid"]
    elif command == "evaluate":
        args = evaluate_args(shards, out, "--checkpoint", f"a={rand}")
    elif command == "step2":
        args = train_args("step2", shards, out, params, "--transcriptor", rand)
    else:
        out.mkdir()
        (out / "last.pt").write_bytes(rand.read_bytes())
        args = train_args("step1", shards, out, params, "--resume")
    path = out / "last.pt" if command == "resume" else rand
    line = refused(invoke(args), f"{path}: ", "unsafe or corrupt")
    assert "weights_only" not in line  # never the advice to unpickle it unsafely
    expected = ["last.pt"] if command == "resume" else []
    assert sorted(p.name for p in out.iterdir()) == expected if out.exists() else True


# --- case 7: quiet failure ----------------------------------------------------------------------


def test_evaluate_runs_on_an_empty_folder(shards, tmp_path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "step1").mkdir()  # a run folder without checkpoints scores nothing either
    out = tmp_path / "report"
    result = invoke(evaluate_args(shards, out, "--runs", runs))
    refused(result, f"{runs}: no checkpoints to score")
    assert not out.exists()


def test_evaluate_with_only_classifiers_has_nothing_to_score(shards, tmp_path) -> None:
    from train.model import Classifier

    path = save_checkpoint(tmp_path / "c.pt", Classifier(TINY), {"instruments": INSTRUMENTS})
    out = tmp_path / "report"
    refused(invoke(evaluate_args(shards, out, "--checkpoint", f"c={path}")),
            "nothing to score", str(path))
    assert not out.exists()


def test_evaluate_still_scores(shards, files, tmp_path) -> None:
    shards_with_stems = write_synthetic_shards(tmp_path / "stems", n_train=1, n_val=1,
                                               seconds=5.0, stems=True)
    out = tmp_path / "report"
    result = invoke(evaluate_args(shards_with_stems, out, "--checkpoint",
                                  f"a={files['separator']}", "--figure-tracks", "0"))
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and (out / "results.md").is_file()
