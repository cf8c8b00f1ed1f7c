"""`trainlab lr-find STAGE`: the range test of `optimizer.lr: auto`, without training.

It runs the stage's own training code (the same model, frozen blocks, parameter groups,
budget, and data: the training split, or all labelled data under cross-validation) up to
the range test, prints the rate `auto` would choose and draws the curve into
`reports/lr-find/<stage>/` (git-ignored, no stage's declared output), also logged to an
MLflow run of its own. Whatever the stage's `optimizer.lr` says, the test runs.
"""

from __future__ import annotations

from pathlib import Path

from trainlab import paths
from trainlab.config import Params
from trainlab.engine.lr_range import RangeTest
from trainlab.errors import ParamsError
from trainlab.training.fit import TrainRequest
from trainlab.training.lr_choice import RangeTestOnly, write_range_test

LR_FIND = paths.REPORTS / "lr-find"


def find_lr(params: Params, stage: str) -> RangeTest:
    """The range test `stage` (pretrain or finetune) would run with `optimizer.lr: auto`."""
    from trainlab.training.task import train_source
    from trainlab.training.transfer import finetune, finetune_request

    try:
        if stage == "pretrain":
            if params.pretrain.imported() is not None:
                raise ParamsError(f"pretrain.from: {params.pretrain.from_file}: pretrain imports this file and "
                                  f"trains nothing; lr-find finetune measures the fine-tuning rate")
            train_source(TrainRequest(params, params.pretrain, "lr-find-pretrain", "lr-find pretrain",
                                      lr_test_only=True))
        else:
            finetune(finetune_request(params, resume_name="lr-find-finetune", label="lr-find finetune")
                     .derive(lr_test_only=True), paths.PRETRAINED)
    except RangeTestOnly as done:
        return done.test
    raise AssertionError("the stage trained without running its range test")   # a bug, not a user error


def record_lr_find(params: Params, stage: str, test: RangeTest) -> list[Path]:
    """The curve and the choice in reports/lr-find/<stage>/ and an MLflow run `lr-find <stage>`."""
    from trainlab.tracking import open_stage_run

    files = write_range_test(test, LR_FIND / stage, f"{stage}")
    with open_stage_run("lr-find", params, run_name=f"lr-find {stage}") as run:
        run.record_training({}, 0, {"trainlab.lr_find.stage": stage, "trainlab.lr_find.stop": test.stop},
                            [(files[1], "plots"), (files[0], None)],
                            params={"lr/chosen": test.chosen, "lr/steepest": test.steepest})
    return files
