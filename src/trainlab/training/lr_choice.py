"""`optimizer.lr: auto`: one range test per trained model of a stage, its rate used by every fit.

The test (engine/lr_range.py) runs once on the data the model trains on: the training split,
or under cross-validation all labelled data (the refit's), and every fold and the refit use
the rate it chose. Its result is kept beside the resume checkpoints, keyed on everything
that decides it, so a killed and resumed stage reads it instead of measuring again; it goes
with them once the stage's outputs are written. The curve and the choice are drawn in
`<report>/artifacts/lr_range.png`, logged to MLflow with the param `lr/chosen`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainlab import paths
from trainlab.config.schema import PretrainConfig
from trainlab.engine import TrainData
from trainlab.engine.batches import step_plan
from trainlab.engine.lr_range import RangeTest, check_range_test_offered, lr_range_test, range_test_steps
from trainlab.engine.optim import effective_lr
from trainlab.errors import ParamsError
from trainlab.hashing import fingerprint
from trainlab.io import atomic_path, write_json
from trainlab.training.fit import ModelFactory, TrainRequest, run_identity


def measured_lr(request: TrainRequest, build: ModelFactory, train: TrainData, fits: int = 1) -> TrainRequest:
    """`request` with `optimizer.lr: auto` replaced by the rate a range test on `train` chooses
    (the request itself when the rate is a number), measured on a model from `build` (the one
    the stage would train). `fits`: how many fits of about that many samples use the rate
    (folds and refit), which the test's length is a share of."""
    spec, params = request.spec, request.params
    if spec.optimizer.lr != "auto" and not request.lr_test_only:
        return request
    section = "pretrain" if isinstance(spec, PretrainConfig) else "finetune"
    check_range_test_offered(spec, params.trainer, section)
    record = RateRecord(request.resume_name)
    key = fingerprint(run_identity(request))   # params, budget, data, seed, what else decides the fit
    test = None if request.lr_test_only else record.read(key)
    if test is None:
        plan = step_plan(len(train), spec.batch_size, params.trainer.devices, params.trainer.grad_accum)
        model, groups, _ = build()
        test = lr_range_test(model, train, spec, params.trainer, seed=params.seed, groups=groups,
                             steps=range_test_steps(fits * spec.epochs * max(1, len(plan))), runtime=request.runtime)
        if request.lr_test_only:
            raise RangeTestOnly(test)
        if request.runtime is None or request.runtime.is_main:
            record.write(key, test)
    if test.chosen is None:
        raise ParamsError(never_fell_line(section, test))
    request.say(f"lr: auto chose {test.chosen:.3g} for {section}.optimizer.lr (range test of {test.steps_run} "
                f"steps in {test.seconds:.1f} s: the rate where the loss's fall levels off x {test.steps}/1000 steps; "
                f"{test.stop})")
    # The test swept the main group's rate after the batch-size scaling rule: undo the rule.
    unit = effective_lr(spec.optimizer.model_copy(update={"lr": 1.0}), spec.batch_size)
    optimizer = spec.optimizer.model_copy(update={"lr": test.chosen / unit})
    return request.derive(spec=spec.model_copy(update={"optimizer": optimizer}), lr_test=test, lr_record=record)


class RangeTestOnly(Exception):
    """How `trainlab lr-find` stops a stage's training code once its range test has run."""

    def __init__(self, test: RangeTest):
        super().__init__("range test done")
        self.test = test


def never_fell_line(section: str, test: RangeTest) -> str:
    """The one line for a range test whose loss did not fall at any rate, in the diagnosis's words."""
    from trainlab.diagnose.rules import stuck_loss_advice

    finite = [loss for loss in test.smoothed if math.isfinite(loss)]
    span = f"{test.lrs[0]:.1g} to {test.lrs[-1]:.2g}" if test.lrs else "no step"
    seen = (f" (smoothed loss {finite[0]:.4g} at the start, {min(finite):.4g} at best, noise "
            f"{test.noise:.2g})" if finite else "")
    return (f"{section}.optimizer.lr: auto: the training loss did not fall beyond its noise, at any rate "
            f"from {span}{seen}: "
            f"not a rate problem (diagnosis: poor_initialization): {stuck_loss_advice(section)[:-1]}; "
            f"or give the rate as a number")


class RateRecord:
    """A range test's result beside the resume checkpoints, for a resumed stage to reuse.

    Removed with the resume checkpoints (`training.fit.finish`), once the outputs are written."""

    def __init__(self, resume_name: str):
        self.path = paths.resume_checkpoint(f"{resume_name}-lr").with_suffix(".json")

    def read(self, key: str) -> RangeTest | None:
        try:
            blob = json.loads(self.path.read_text())
            return RangeTest.from_dict(blob["test"]) if blob.get("key") == key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None   # none yet, or unreadable: measure again (the test is deterministic)

    def write(self, key: str, test: RangeTest) -> None:
        write_json(self.path, {"key": key, "test": test.to_dict()})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def write_range_test(test: RangeTest, folder: Path, title: str = "") -> list[Path]:
    """`lr_range.json` (the curve and the choice) and `lr_range.png` (loss against rate, log
    axis, the choice marked) in `folder`."""
    write_json(folder / "lr_range.json", test.to_dict())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(test.lrs, test.losses, color="lightgrey", label="step loss")
    ax.plot(test.lrs, test.smoothed, label="smoothed loss")
    if test.chosen is not None:
        ax.axvline(test.chosen, color="tab:red", linestyle="--", label=f"chosen {test.chosen:.3g}")
    if test.steepest is not None:
        ax.axvline(test.steepest, color="grey", linestyle=":", label=f"steepest descent {test.steepest:.3g}")
    finite = [v for v in test.smoothed if v == v and v != float("inf")]
    if finite:   # the diverged tail would squash the curve that matters
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), finite[0] * 1.5 + 1e-12)
    ax.set(xscale="log", xlabel="learning rate (main group)", ylabel="training loss",
           title=f"{title} lr range test".strip())
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = folder / "lr_range.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return [folder / "lr_range.json", png]
