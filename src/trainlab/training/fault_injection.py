"""Faults at an exact step, for the reliability tests that kill or break a real stage process.

A test cannot reach into a `trainlab pretrain` subprocess, and a wall-clock delay lands
anywhere on a busy machine; so the test sets an environment variable and the fit adds
one of these hooks. Ordinary runs never carry them: nothing else reads the variables.
"""

from __future__ import annotations

import errno
import os
import signal

from trainlab.engine import Hook, LoopState

# "STEP" or "STEP:SIGNAME": send the signal (SIGINT by default) right after that step.
TEST_SIGNAL_ENV = "TRAINLAB_TEST_SIGNAL_AT_STEP"
# "STEP:ERRNAME": fail there with that OSError (ENOSPC by default), as a full disk would.
TEST_FAULT_ENV = "TRAINLAB_TEST_FAULT_AT_STEP"


class SignalAtStep(Hook):
    """Send a signal to this process once optimizer step `step` has ended (and been checkpointed)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, state: LoopState) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), self.signum)


class FaultAtStep(Hook):
    """Raise OSError(`code`) once optimizer step `step` has ended: a full disk (ENOSPC), a
    read-only file system (EROFS) or a failing disk (EIO) at an exact moment."""

    def __init__(self, step: int, code: int):
        self.step, self.code = step, code

    def on_step_end(self, state: LoopState) -> None:
        if state.step == self.step:
            raise OSError(self.code, os.strerror(self.code), f"(test fault at step {self.step})")


def requested_faults() -> list[Hook]:
    """The signal or fault a test asked for (after the step's checkpoint is written: the hooks
    run after the checkpointing hook)."""
    hooks: list[Hook] = []
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if spec:
        step, _, name = spec.partition(":")
        hooks.append(SignalAtStep(int(step), getattr(signal, name or "SIGINT")))
    spec = os.environ.get(TEST_FAULT_ENV)
    if spec:
        step, _, name = spec.partition(":")
        hooks.append(FaultAtStep(int(step), getattr(errno, name or "ENOSPC")))
    return hooks
