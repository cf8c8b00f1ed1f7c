"""Tiny report files with the columns the stages write, for `dvc plots show` tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_reports(root: Path) -> None:
    """Tiny files with the columns the stages write (training/curves.py, evaluation/report.py)."""
    curves = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 1 / (e + 1),
               "val_acc": 0.9 - 1 / (e + 2)} for e in (1, 2, 3)]
    for stage in ("pretrain", "finetune"):
        (root / f"reports/{stage}").mkdir(parents=True)
        (root / f"reports/{stage}/curves.json").write_text(json.dumps(curves))
    (root / "reports/evaluate").mkdir(parents=True)
    reliability = [{"confidence": c, "accuracy": c - 0.05, "count": 3, "model": "ensemble"} for c in (0.5, 0.7, 0.9)]
    (root / "reports/evaluate/reliability.json").write_text(json.dumps(reliability))
    confusion = [{"actual": str(a), "predicted": str(p)} for a in range(3) for p in range(3)]
    (root / "reports/evaluate/confusion.json").write_text(json.dumps(confusion))
    predictions = [{"actual": a, "predicted": a + 0.1} for a in (1.0, 2.0, 3.0)]
    (root / "reports/evaluate/predictions.json").write_text(json.dumps(predictions))
