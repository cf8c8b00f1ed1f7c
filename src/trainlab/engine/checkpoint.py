"""Resume checkpoints: everything needed to continue a killed run and end bit-identical.

A checkpoint holds model, optimizer, schedule, scaler, RNG states, the step counters,
the best epoch so far (its weights included), every hook's state by name and a fingerprint of the
configuration. It is written atomically and read with `weights_only=True`, so it
holds only tensors and primitives and never unpickles arbitrary objects.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.engine.hooks import Hook, LoopState
from trainlab.engine.parallel import gathered_state, load_gathered_state, strategy_of
from trainlab.errors import CheckpointError
from trainlab.io import check_archive, load_error_line, torch_save

FORMAT = "trainlab.resume/2"   # /2: hook states keyed by name, the best-so-far apart


class Checkpointing(Hook):
    """Save at epoch ends (and every N steps); resume from the file at fit start.

    `min_interval_s` > 0 skips an epoch-end save made sooner than that after the last one
    (the first and the last epoch are always saved): a run of hundreds of sub-second
    epochs would otherwise spend most of its time writing and syncing checkpoints. Resume
    is exact from any epoch, so this only bounds how much work a kill can cost.
    """

    def __init__(self, path: str | Path, fingerprint: str | dict[str, str], every_steps: int | None = None,
                 min_interval_s: float = 0.0):
        self.path, self.fingerprint, self.every_steps = Path(path), fingerprint, every_steps
        self.min_interval_s = min_interval_s
        self.last_saved: float | None = None
        self.resumed_from: int | None = None

    def on_fit_start(self, state: LoopState) -> None:
        if not self.path.is_file():
            return
        blob = load_resume(self.path)
        if blob["format"] != FORMAT or blob.get("fingerprint") != self.fingerprint:
            if state.runtime.is_main:
                why = ("an older trainlab" if blob["format"] != FORMAT
                       else changed_inputs(blob.get("fingerprint"), self.fingerprint))
                print(f"note: {self.path} was made with {why}; starting afresh", file=sys.stderr)
            return
        restore(state, blob)
        self.resumed_from = state.step
        if state.runtime.is_main:
            print(f"resuming from {self.path} at epoch {state.epoch + 1}, step {state.step}",
                  file=sys.stderr)

    def on_step_end(self, state: LoopState) -> None:
        if self.every_steps and state.step % self.every_steps == 0 and state.step_in_epoch < state.steps_per_epoch:
            self.save(state)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        last = state.should_stop or state.epoch + 1 >= state.spec.epochs
        # Under DDP every rank must take the same branch (save() ends in a barrier), and their
        # clocks differ: distributed runs save every epoch.
        recent = (not state.runtime.distributed and self.last_saved is not None
                  and time.monotonic() - self.last_saved < self.min_interval_s)
        if last or not recent:
            self.save(state, epoch_done=True)

    def save(self, state: LoopState, epoch_done: bool = False) -> None:
        self.last_saved = time.monotonic()
        # Under fsdp and pipeline, gathering the full weights takes every rank.
        if state.runtime.is_main or strategy_of(state.trainer, state.runtime) != "ddp":
            blob = snapshot(state, self.fingerprint, epoch_done)
            if state.runtime.is_main:
                torch_save(blob, self.path)
        if state.runtime.distributed:
            torch.distributed.barrier()

    def remove(self) -> None:
        """Forget the resume point once the run's final outputs are safely written."""
        self.path.unlink(missing_ok=True)


def changed_inputs(old: object, new: object) -> str:
    """What differs between a checkpoint's fingerprint and this run's, in words.

    A fingerprint given as a mapping (input name: value or digest) names the inputs that
    changed, e.g. `other trainer.threads (2, now 1)`; a plain string only says that one did."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return "other params or data"
    changed = []
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name), new.get(name)
        if was != now:
            short = all(len(str(v)) <= 12 for v in (was, now))   # a setting, not a digest
            changed.append(f"{name} ({was}, now {now})" if short else name)
    return "other " + ", ".join(changed)


def snapshot(state: LoopState, fingerprint: str | dict[str, str], epoch_done: bool = False) -> dict[str, Any]:
    """The checkpoint contents: tensors, numbers, strings, lists and dicts only.

    At an epoch end the counters already point at the next epoch, which is where a
    resumed run continues. Model, optimizer and hook states are full, unsharded and in
    the single-process format whatever `trainer.strategy` (None off rank 0 under fsdp
    and pipeline, where every rank takes part in gathering them).
    """
    model, optimizer, best, hooks = gathered_state(state)
    np_state = np.random.get_state()
    epoch, step_in_epoch = (state.epoch + 1, 0) if epoch_done else (state.epoch, state.step_in_epoch)
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "model": model,
        "optimizer": optimizer,
        "schedule": state.schedule.state_dict(),
        "scaler": state.scaler.state_dict(),
        "counters": {"epoch": epoch, "step": state.step, "step_in_epoch": step_in_epoch,
                     "should_stop": state.should_stop, "stop_reason": state.stop_reason},
        "history": state.history,
        "epoch_sums": {} if epoch_done else state.epoch_sums,
        "best": best,
        "hooks": hooks,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": _python_state(),
        },
    }


def restore(state: LoopState, blob: dict[str, Any]) -> None:
    """Put a checkpoint back into the loop state (the inverse of `snapshot`)."""
    load_gathered_state(state, blob["model"], blob["optimizer"], blob["best"], blob["hooks"])
    state.schedule.load_state_dict(blob["schedule"])
    state.scaler.load_state_dict(blob["scaler"])
    counters = blob["counters"]
    state.epoch, state.step, state.step_in_epoch = counters["epoch"], counters["step"], counters["step_in_epoch"]
    state.should_stop, state.stop_reason = counters["should_stop"], counters["stop_reason"]
    state.history, state.epoch_sums = list(blob["history"]), dict(blob["epoch_sums"])
    rng = blob["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def load_resume(path: Path) -> dict[str, Any]:
    """Read a resume checkpoint; a truncated or tampered file is named, never unpickled."""
    try:
        check_archive(path)
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises several types for damaged zip/pickle data
        raise CheckpointError(f"{path}: corrupt resume checkpoint ({load_error_line(err)[:160]}); "
                              f"delete it to start the stage afresh") from None
    # An earlier format is still recognised, so that the run starts afresh instead of failing.
    if not isinstance(blob, dict) or not str(blob.get("format", "")).startswith("trainlab.resume/"):
        raise CheckpointError(f"{path}: not a trainlab resume checkpoint; delete it to start afresh")
    return blob
