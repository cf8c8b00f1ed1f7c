"""The pretrain stage end to end: real `dvc repro pretrain` in a tiny throwaway project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from trainlab.config.schema import LossConfig
from trainlab.data import load_split
from trainlab.engine import Runtime, TrainData, evaluate
from trainlab.engine.losses import build_loss
from trainlab.models import load_model
from trainlab.testing import BIN, run


@pytest.mark.slow
def test_dvc_repro_pretrain_writes_a_model_reports_and_is_then_up_to_date(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    run([str(BIN / "dvc"), "repro", "pretrain"], project)

    model, blob = load_model(project / "models" / "pretrained.pt")
    classes = len(blob["class_names"])
    metrics = json.loads((project / "reports" / "pretrain" / "details.json").read_text())
    assert metrics["val/acc"] > 1.5 / classes, metrics            # learnt something beyond chance

    curves = json.loads((project / "reports" / "pretrain" / "curves.json").read_text())
    epochs = params["pretrain"]["epochs"]
    assert [row["epoch"] for row in curves] == list(range(1, epochs + 1))
    assert {"train_loss", "val_loss", "train_acc", "val_acc"} <= curves[0].keys()

    # The saved weights are the reported (best) epoch's: re-evaluating them on the source
    # validation split gives the metrics the stage wrote.
    val = load_split(project / "data" / "prepared", "source", "val")
    loss_fn = build_loss(LossConfig.model_validate(params["pretrain"]["loss"]))
    val_loss, val_acc = evaluate(model, TrainData(torch.as_tensor(val.x, dtype=torch.float32),
                                                  torch.as_tensor(val.y, dtype=torch.long)),
                                 loss_fn, Runtime(torch.device("cpu"), "fp32"))
    # Batched and threaded otherwise than in the stage, fp32 logits differ in their last bits:
    # a near-tie may flip one prediction, and the mean loss moves by far less than 1e-4 (840 eps).
    assert val_acc == pytest.approx(metrics["val/acc"], abs=1.5 / len(val.y))
    assert val_loss == pytest.approx(metrics["val/loss"], rel=1e-4)

    again = run([str(BIN / "dvc"), "repro", "pretrain"], project)
    said = again.stdout + again.stderr
    assert "didn't change" in said or "up to date" in said, said
    assert "Running stage 'pretrain'" not in said
    status = run([str(BIN / "dvc"), "status", "pretrain"], project)   # its upstream included
    assert "up to date" in status.stdout, status.stdout
