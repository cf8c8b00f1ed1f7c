"""The `trainlab` console script's contract: bad input is exit 2, one line, nothing written."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainlab import __version__
from trainlab.cli import COMMANDS
from trainlab.testing import ROOT, clean_env, small_params, trainlab, write_params

# (name, how to break the shrunk params, text the error line must contain)
BAD_PARAMS = [
    ("yaml-syntax", "data:\n  name: [mnist1d\nmodel: {}\n", "invalid YAML"),
    ("unknown-optimizer", {"pretrain.optimizer.name": "adma"},
     "pretrain.optimizer.name: 'adma' is not one of sgd, adam, adamw, rmsprop, adagrad, lbfgs"),
    ("unknown-key", {"model.widht": 8}, "model.widht: unknown key; accepted keys here: arch, width,"),
    ("huge", {"data.train_samples": 10**12}, "data.train_samples: must be <= 10000000"),
    ("indivisible", {"trainer.grad_accum": 3}, "trainer: batch_size 64 must be divisible by grad_accum x devices = 3"),
]
# (Every kind of message is checked in test_config.py; here, that the command line keeps the contract.)


def write_bad_params(directory: Path, breakage: str | dict) -> None:
    if isinstance(breakage, str):
        (directory / "params.yaml").write_text(breakage)
    else:
        write_params(directory, small_params(**{k.replace(".", "__"): v for k, v in breakage.items()}))


def running_runs(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'")]


def assert_one_line_error(result: subprocess.CompletedProcess, starts: str, contains: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starts), lines[0]
    assert contains in lines[0], lines[0]


# Every bad file through `prepare`; `pretrain` (slower to start: it imports torch) gets two.
CASES = [("prepare", *case) for case in BAD_PARAMS] + [
    ("pretrain", *case) for case in BAD_PARAMS if case[0] in {"yaml-syntax", "unknown-optimizer"}]


@pytest.mark.parametrize(("stage", "name", "breakage", "contains"), CASES,
                         ids=[f"{case[0]}-{case[1]}" for case in CASES])
def test_bad_params_exit_2_with_one_line_and_write_nothing(tmp_path: Path, stage: str, name: str,
                                                          breakage: str | dict, contains: str) -> None:
    write_bad_params(tmp_path, breakage)
    result = trainlab([stage], tmp_path, check=False)
    assert_one_line_error(result, "error: params.yaml:", contains)
    if name == "yaml-syntax":
        assert result.stderr.startswith("error: params.yaml: line 3, column 6: invalid YAML:")
    # Refused before anything started: no outputs, no tracking store, no run left RUNNING.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_missing_params_file_is_one_line(tmp_path: Path) -> None:
    result = trainlab(["prepare"], tmp_path, check=False)
    assert_one_line_error(result, "error: params.yaml: file not found", "project root")
    assert list(tmp_path.iterdir()) == []


def test_params_option_names_the_other_file(tmp_path: Path) -> None:
    write_params(tmp_path, small_params())
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(small_params(model__arch="vit")))
    result = trainlab(["prepare", "--params", "exp.yaml"], tmp_path, check=False)
    assert_one_line_error(result, "error: exp.yaml: model.arch:", "'vit' is not one of")


@pytest.mark.slow  # creates an MLflow sqlite store (schema migrations take a while)
def test_bad_data_fails_the_run_and_leaves_no_running_run(tmp_path: Path) -> None:
    # Valid params, but the data file does not exist: found only inside the MLflow run.
    write_params(tmp_path, small_params(data__name="file", data__file__path="missing.csv"))
    result = trainlab(["prepare"], tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # MLflow may log its own database set-up first; the error itself is the one last line.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data.file.path: missing.csv not found"]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "data" / "prepared").exists()
    db = tmp_path / "mlflow.db"
    if db.exists():
        assert running_runs(db) == []
        with sqlite3.connect(db) as connection:
            statuses = [row[0] for row in connection.execute("SELECT status FROM runs")]
        assert statuses == ["FAILED"]


def test_help_lists_every_command_and_every_dvc_stage(tmp_path: Path) -> None:
    result = trainlab(["--help"], tmp_path)
    commands = result.stdout.split("Commands:")[1]
    listed = [line.split()[0] for line in commands.strip().splitlines()]
    assert listed == list(COMMANDS)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"trainlab {name}"
        assert name in listed


def test_help_imports_neither_torch_nor_mlflow() -> None:
    code = (
        "import sys\n"
        "from trainlab.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], prog_name='trainlab', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'optuna', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=clean_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout            # the help really was printed
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_prepare_help_documents_the_stage(tmp_path: Path) -> None:
    result = trainlab(["prepare", "--help"], tmp_path)
    assert result.stdout.startswith("Usage: trainlab prepare [OPTIONS]")
    assert "data/prepared" in result.stdout
    assert "--params FILE" in result.stdout and "[default: params.yaml]" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_version(tmp_path: Path) -> None:
    result = trainlab(["--version"], tmp_path)
    assert result.stdout.strip() == f"trainlab, version {__version__}"


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = trainlab(["pretrian"], tmp_path, check=False)
    assert result.returncode == 2
    assert "No such command 'pretrian'" in result.stderr
    assert "Traceback" not in result.stderr


def test_stage_commands_come_from_the_checkout_of_the_running_library(tmp_path: Path) -> None:
    """`stages/` is a project folder, not an installed package: a checkout whose src/ is
    imported (as `trainlab rerun` imports an older commit's) runs its own stage commands."""
    checkout = tmp_path / "checkout"
    for tree in ("src", "stages"):
        shutil.copytree(ROOT / tree, checkout / tree, ignore=shutil.ignore_patterns("__pycache__"))
    prepare = checkout / "stages" / "prepare.py"
    prepare.write_text(prepare.read_text().replace('"""', '"""THIS CHECKOUT\'S PREPARE. ', 1))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = clean_env(PYTHONPATH=str(checkout / "src"))
    result = subprocess.run([sys.executable, "-m", "trainlab", "prepare", "--help"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "THIS CHECKOUT'S PREPARE." in result.stdout
    # Nothing named `stages` is installed into the environment.
    installed = subprocess.run([sys.executable, "-c", "import stages"], cwd=work, env=clean_env(),
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 1 and "No module named 'stages'" in installed.stderr


def test_a_library_without_its_stages_folder_is_one_line(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-m", "trainlab", "prepare"], cwd=work,
                            env=clean_env(PYTHONPATH=str(checkout / "src")), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no stages/ folder with the stage commands beside {checkout / 'src'}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(work.iterdir()) == []


EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from trainlab.cli import exit_now
folder = Path(sys.argv[1])
atexit.register(lambda: (folder / "atexit-ran").write_text("yes"))
if sys.argv[2] == "thread":   # a non-daemon thread still at work: the ordinary exit waits for it
    threading.Thread(target=lambda: (time.sleep(0.5), (folder / "thread-done").write_text("yes"))).start()
print("buffered, not flushed", end="")
sys.stderr.write("to stderr")
exit_now({"int": 3, "none": None, "text": "a message", "thread": 4}[sys.argv[2]])
"""


@pytest.mark.parametrize(("how", "code"), [("int", 3), ("none", 0), ("text", 1), ("thread", 4)])
def test_the_fast_exit_keeps_what_an_exit_must_do(tmp_path: Path, how: str, code: int) -> None:
    """exit_now skips the interpreter's teardown, never the exit code, the atexit handlers,
    buffered output or a running non-daemon thread."""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), how], capture_output=True,
                          text=True, timeout=120, env=clean_env())
    assert done.returncode == code, done.stderr
    assert done.stdout == "buffered, not flushed"
    assert done.stderr == "to stderr" + ("a message\n" if how == "text" else "")
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "thread-done").exists() == (how == "thread")
