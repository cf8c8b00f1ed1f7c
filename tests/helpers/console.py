"""Running a stage in-process or as the console script, and reading its one-line error."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainlab.cli import cli
from trainlab.testing import trainlab


# ------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def invoke(args: list[str]) -> Outcome:
    """The `trainlab` Click group in this process (the fast path): stdout and stderr apart."""
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"trainlab {' '.join(args)} raised {result.exception!r}\n{result.stderr}")
    return Outcome(result.exit_code, result.stdout, result.stderr)


def console(args: list[str], cwd: Path, **env: str) -> Outcome:
    """The real console script in a subprocess."""
    done = trainlab(args, cwd, check=False, **env)
    return Outcome(done.returncode, done.stdout, done.stderr)


def error_line(outcome: Outcome, exit_code: int = 2) -> str:
    """The one `error:` line of a failed stage; fails on a traceback, a second error line or another exit code."""
    said = outcome.stdout + outcome.stderr
    assert outcome.exit_code == exit_code, f"exit {outcome.exit_code}\n{said[-3000:]}"
    assert "Traceback" not in said, said[-3000:]
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.stderr[-3000:]
    return errors[0]


def without_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLFLOW_TRACKING_URI during the test, and its original state after it: an in-process
    stage calls mlflow.set_tracking_uri, which sets the variable for the whole process."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")   # records the original for the undo
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


def message(call, *args) -> str:
    """The text of the user error `call(*args)` raises (DataError or ParamsError): one line."""
    from trainlab.errors import DataError, ParamsError

    with pytest.raises((DataError, ParamsError)) as caught:
        call(*args)
    text = str(caught.value)
    assert "\n" not in text
    return text
