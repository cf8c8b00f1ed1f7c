"""Training budgets that scale with the data: `epochs: auto` and `batch_size: auto`.

A budget in epochs is a budget in the wrong unit for small data: 12 epochs of 60
samples at batch 128 are 12 optimizer steps. The auto rule keeps the batch at most a
fraction of the training set (so every epoch has several steps) and runs at least a
minimum number of optimizer steps; a large training set gets fewer epochs, so that a run
stays under a maximum number of steps. Explicit numbers in params.yaml are used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainlab.config.schema import TrainerConfig, TrainSpec


@dataclass(frozen=True)
class Budget:
    spec: TrainSpec    # with concrete epochs and batch_size
    note: str          # what the auto rule decided, for the terminal ("" when nothing was auto)


def resolve_budget(spec: TrainSpec, trainer: TrainerConfig, n_train: int) -> Budget:
    """`spec` with `auto` epochs/batch size (and null batch size) replaced by numbers for `n_train` samples."""
    rule = spec.auto
    per_step = trainer.grad_accum * trainer.devices
    batch = spec.batch_size
    notes = []
    if batch == "auto":
        cap = max(per_step, int(n_train * rule.max_batch_fraction) // per_step * per_step)
        batch = min(rule.batch_size, cap)
        if batch < rule.batch_size:
            notes.append(f"batch {batch} (at most {rule.max_batch_fraction:g} of {n_train} samples)")
        else:
            notes.append(f"batch {batch}")
    elif batch is None:
        batch = trainer.batch_size
    epochs = spec.epochs
    if epochs == "auto":
        steps_per_epoch = math.ceil(n_train / batch)
        needed = math.ceil(rule.min_steps / steps_per_epoch)
        epochs = min(rule.max_epochs, max(rule.min_epochs, needed))
        why = (f"at least {rule.min_steps} optimizer steps" if needed > rule.min_epochs
               else "auto.min_epochs")
        if epochs * steps_per_epoch > rule.max_steps:   # large sets: fewer epochs, at least one
            epochs = max(1, rule.max_steps // steps_per_epoch)
            why = f"at most {rule.max_steps} optimizer steps"
        notes.append(f"{epochs} epochs of {steps_per_epoch} steps ({why})")
    resolved = spec.model_copy(update={"epochs": epochs, "batch_size": batch})
    return Budget(resolved, ("budget: " + ", ".join(notes)) if notes else "")
