"""One epoch axis in MLflow: epoch metrics at step = epoch number (1-based, as in DVC's curves).

The engine counts epochs from 0 and calls its per-step train loss `train/loss` and its
per-epoch one `epoch/train_loss`. In MLflow that gave epoch charts 0..11 beside DVC's
and curves.png's 1..12 (and `final.best_epoch` = 12 off the chart), and a `train/loss`
per optimizer step that no chart could overlay with the per-epoch `val/loss`. So, at
the door to MLflow only:

- every per-epoch metric is logged at step = epoch + 1;
- the per-epoch train loss/accuracy are `train/loss`, `train/acc`, beside `val/loss`,
  `val/acc` on the same axis; the per-optimizer-step loss is `train/step_loss`.

Runs logged this way carry EPOCH_AXIS_TAG, and `from_mlflow` turns their curves back
into the engine's names and 0-based epochs for the diagnosis (`trainlab diagnose`).
"""

from __future__ import annotations

from typing import Iterable, Mapping

EPOCH_AXIS_TAG = "trainlab.epoch_axis"
EPOCH_AXIS = "1-based"
STEP_NAMES = {"train/loss": "train/step_loss"}
EPOCH_NAMES = {"epoch/train_loss": "train/loss", "epoch/train_acc": "train/acc"}
_STEP_BACK = {v: k for k, v in STEP_NAMES.items()}
_EPOCH_BACK = {v: k for k, v in EPOCH_NAMES.items()}

Curves = dict[str, list[tuple[int, float]]]


def is_epoch_metric(name: str) -> bool:
    """The engine's per-epoch metrics (loop.py's epoch row): val/* and epoch/*."""
    return name.startswith(("val/", "epoch/"))


def epoch_metrics(metrics: Mapping[str, float], epoch: int) -> tuple[dict[str, float], int]:
    """An epoch row of the engine (0-based `epoch`) as MLflow names and step."""
    return {EPOCH_NAMES.get(k, k): v for k, v in metrics.items()}, epoch + 1


def step_rows(rows: Iterable[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """Per-optimizer-step rows (step unchanged) with MLflow names."""
    return [(STEP_NAMES.get(k, k), v, s) for k, v, s in rows]


def curve_rows(curves: Mapping[str, list[tuple[int, float]]]) -> list[tuple[str, float, int]]:
    """Recorded curves (engine names, 0-based epochs) as MLflow (key, value, step) rows."""
    rows = []
    for name, points in curves.items():
        if is_epoch_metric(name):
            key = EPOCH_NAMES.get(name, name)
            rows.extend((key, v, s + 1) for s, v in points)
        else:
            rows.extend((STEP_NAMES.get(name, name), v, s) for s, v in points)
    return rows


def from_mlflow(curves: Curves, tags: Mapping[str, str]) -> Curves:
    """A logged run's curves in the engine's names and 0-based epochs; other tools' runs as they are."""
    if tags.get(EPOCH_AXIS_TAG) != EPOCH_AXIS:
        return curves
    back: Curves = {}
    for key, points in curves.items():
        if key in _STEP_BACK:
            back[_STEP_BACK[key]] = points
            continue
        name = _EPOCH_BACK.get(key, key)
        back[name] = [(s - 1, v) for s, v in points] if is_epoch_metric(name) else points
    return back
