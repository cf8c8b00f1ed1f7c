"""Errors that mean "the user asked for something we cannot do".

The CLI turns these into one line on stderr and exit code 2, without a traceback.
Anything else that escapes is a bug in trainlab and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (params, data, checkpoints): reported in one line."""

    exit_code = 2


class ParamsError(UserError):
    """params.yaml is malformed or violates the schema."""


class StaleParams(UserError):
    """params.yaml no longer matches what a stage ran with: edited while it ran, or dvc.lock
    records other values than the ones an upstream stage's outputs were made with."""


class DataError(UserError):
    """Input data is missing, corrupt or unusable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not fit the configured model."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the step and the likely cause."""

    exit_code = 3

    def __init__(self, message: str, curves: dict | None = None, num_classes: int | None = None):
        super().__init__(message)
        # trainlab.training re-raises fit()'s error with the curves up to the blow-up, so
        # the stage that trained the model can still diagnose it (see trainlab.training.outputs).
        self.curves, self.num_classes = curves, num_classes


class ResourceUnavailable(UserError):
    """The machine cannot give what the run needs: disk space, a writable folder, a
    readable tracking database, a database driver. Exit code 4: not the input's fault."""

    exit_code = 4


class TrackingUnavailable(UserError):
    """The MLflow tracking backend cannot be reached."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """An error's first line for a one-line message (its type's name when it has no text),
    cut at a word with ' ...' past `limit` characters (a hub's or a library's run long)."""
    line = (str(err).splitlines() or [""])[0] or type(err).__name__
    if limit is None or len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit)
    return line[:cut if cut > 0 else limit] + " ..."
