"""Training budgets that scale with the data: `epochs: auto` and `batch_size: auto`.

A budget in epochs is a budget in the wrong unit for small data: 12 epochs of 60
samples at batch 128 are 12 optimizer steps. The auto rule keeps the batch at most a
fraction of the training set (so every epoch has several steps) and runs at least a
minimum number of optimizer steps and of samples seen; a large training set gets fewer
epochs, so that a run stays under a maximum number of steps. Explicit numbers in
params.yaml are used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainlab.config.schema import AutoBudget, TrainerConfig, TrainSpec


# `auto` max_batch_fraction and min_samples by the data's kind (bench/budget.py, RESULTS section 21).
# Series follow the published recipes for small series sets (Ismail Fawaz et al. 2019: batch at
# most a tenth of the set, many epochs): at least the 16,000 samples that 500 steps of 32 see, so
# a set whose batch is capped gets more epochs, not fewer samples seen (japanese_vowels 97.3 ->
# 98.9, unit_test 90.9 -> 95.5, MNIST-1D at 100 labels 99.5 -> 100.0). Tables keep a quarter and
# no minimum: their MLPs lost test samples with it (iris, wine). Images too: the zoo has no image
# set small enough for the rule to change anything (digits' budget is the same), so unmeasured.
AUTO_BY_KIND = {"series": (0.1, 16_000)}
AUTO_OTHERWISE = (0.25, 0)


@dataclass(frozen=True)
class Budget:
    spec: TrainSpec    # with concrete epochs and batch_size
    note: str          # what the auto rule decided, for the terminal ("" when nothing was auto)


def resolve_budget(spec: TrainSpec, trainer: TrainerConfig, n_train: int, kind: str | None = None) -> Budget:
    """`spec` with `auto` epochs/batch size (and null batch size) replaced by numbers for
    `n_train` samples of `kind` (table, series, image; what `auto` inside spec.auto means)."""
    rule = auto_rule(spec, kind)
    per_step = trainer.grad_accum * trainer.devices
    batch = spec.batch_size
    notes = []
    if batch == "auto":
        # Two samples per micro-batch at least: batch norm cannot normalise a lone sample's features.
        cap = max(2 * per_step, int(n_train * rule.max_batch_fraction) // per_step * per_step)
        batch = min(rule.batch_size, cap)
        if batch == 2 * per_step and batch > n_train * rule.max_batch_fraction:
            notes.append(f"batch {batch} (two samples per micro-batch at least, for batch norm)")
        elif batch < rule.batch_size:
            notes.append(f"batch {batch} (at most {rule.max_batch_fraction:g} of {n_train} samples)")
        else:
            notes.append(f"batch {batch}")
    elif batch is None:
        batch = trainer.batch_size
    epochs = spec.epochs
    if epochs == "auto":
        steps_per_epoch = math.ceil(n_train / batch)
        for_steps, for_samples = math.ceil(rule.min_steps / steps_per_epoch), math.ceil(rule.min_samples / n_train)
        epochs = min(rule.max_epochs, max(rule.min_epochs, for_steps, for_samples))
        why = ("auto.min_epochs" if max(for_steps, for_samples) <= rule.min_epochs
               else f"at least {rule.min_steps} optimizer steps" if for_steps >= for_samples
               else f"at least {rule.min_samples} samples seen")
        if epochs * steps_per_epoch > rule.max_steps:   # large sets: fewer epochs, at least one
            epochs = max(1, rule.max_steps // steps_per_epoch)
            why = f"at most {rule.max_steps} optimizer steps"
        notes.append(f"{epochs} epochs of {steps_per_epoch} steps ({why})")
    resolved = spec.model_copy(update={"epochs": epochs, "batch_size": batch, "auto": rule})
    return Budget(resolved, ("budget: " + ", ".join(notes)) if notes else "")


def auto_rule(spec: TrainSpec, kind: str | None) -> AutoBudget:
    """spec.auto with its own `auto` values (batch fraction, samples seen) set for `kind`."""
    fraction, samples = AUTO_BY_KIND.get(kind or "", AUTO_OTHERWISE)
    rule = spec.auto
    return rule.model_copy(update={
        "max_batch_fraction": fraction if rule.max_batch_fraction == "auto" else rule.max_batch_fraction,
        "min_samples": samples if rule.min_samples == "auto" else rule.min_samples})
