"""What a training run leaves for DVC and people: scores JSON, curves for `dvc plots`, a PNG.

`CurveRecorder` is an engine hook that keeps every metric the loop emits, in the same
{name: [(step, value)]} shape MLflow stores, so the diagnosis reads a live run and a
logged run the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.dvc_metrics import write_stage_metrics
from trainlab.engine import FitResult, Hook, LoopState, MetricRows
from trainlab.io import atomic_path, write_json

Curves = dict[str, list[tuple[int, float]]]
TIMING_KEYS = ("epoch/time_s", "epoch/samples_per_s")


class CurveRecorder(Hook):
    """Collects step and epoch metrics in memory (a few MB for long runs)."""

    def __init__(self) -> None:
        self.curves: Curves = {}

    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        for name, value, step in rows:
            self.curves.setdefault(name, []).append((step, value))

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.curves.setdefault(name, []).append((state.epoch, value))

    def state_dict(self) -> dict[str, Any]:
        # Kept in the resume checkpoint so a resumed run is diagnosed on its whole history.
        return {"curves": {k: [list(p) for p in v] for k, v in self.curves.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {k: [(int(s), float(v)) for s, v in pts] for k, pts in state["curves"].items()}


def summary_metrics(result: FitResult) -> dict[str, float]:
    """The best epoch's metrics (the weights that are kept), plus how the run ended."""
    best = result.history[result.best_epoch] if 0 <= result.best_epoch < len(result.history) else result.history[-1]
    summary = {
        "val/acc": best.get("val/acc"), "val/loss": best["val/loss"],
        "train/loss": best["epoch/train_loss"], "train/acc": best.get("epoch/train_acc"),
        "best_epoch": result.best_epoch + 1, "epochs_run": len(result.history), "steps": result.steps,
    }
    # A regression target (a pretext task) has no accuracy: its keys are absent, not zero.
    return {key: value for key, value in summary.items() if value is not None}


# Fields dvc.yaml's accuracy panels read: present (null) also where there is no accuracy (a
# regression target, a pretext task), since DVC drops a whole panel over a missing field.
ACCURACY_FIELDS = ("train_acc", "val_acc")


def curve_rows(result: FitResult) -> list[dict[str, float]]:
    """Per-epoch rows for `dvc plots` (x: epoch). Timings stay in MLflow: in a git-tracked
    file they would change on every rerun and hide real differences."""
    rows = []
    for i, metrics in enumerate(result.history):
        row = {"epoch": i + 1, **{k.replace("epoch/", "").replace("/", "_"): _finite(v)
                                  for k, v in metrics.items() if k not in TIMING_KEYS}}
        rows.append({**row, **{name: row.get(name) for name in ACCURACY_FIELDS}})
    return rows


def write_training_reports(folder: Path, result: FitResult, extra: dict[str, Any] | None = None,
                           stage: str | None = None) -> dict[str, Any]:
    """details.json (every score), curves.json (for `dvc plots`), artifacts/curves.png, and for a
    stage's own report folder its metrics.json (the headline `dvc metrics` shows). Returns every score."""
    metrics = {**summary_metrics(result), **(extra or {})}
    if stage is not None:
        write_stage_metrics(folder, stage, metrics)
    else:
        write_json(folder / "details.json", metrics)
    write_json(folder / "curves.json", curve_rows(result))
    plot_curves(result, folder / "artifacts" / "curves.png")
    return metrics


def plot_curves(result: FitResult, path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and val, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(result.history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("epoch/train_loss", "train"), ("val/loss", "val")):
        ax_loss.plot(epochs, [h[key] for h in result.history], label=label)
    for key, label in (("epoch/train_acc", "train"), ("val/acc", "val")):
        if all(key in h for h in result.history):   # absent for regression targets
            ax_acc.plot(epochs, [h[key] for h in result.history], label=label)
    if result.best_epoch >= 0:
        for ax in (ax_loss, ax_acc):
            ax.axvline(result.best_epoch + 1, color="grey", linestyle=":", label="best epoch")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title} loss".strip())
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy".strip())
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class DiagnosisReport:
    names: list[str]
    summary: dict[str, int]      # diagnosis/<finding>: 1 per finding made, for details.json
    markdown: str                # diagnosis.md
    terminal: str                # what the stage prints


def diagnose_training(curves: Curves, num_classes: int | None, label: str = "",
                      stage: str | None = None, val_samples: int | None = None) -> DiagnosisReport:
    """Run the learning-curve diagnosis and render it for files, MLflow and the terminal.

    `stage` (pretrain or finetune) fills the params keys the suggestions name.
    """
    from trainlab.diagnose import diagnose, render_markdown, summary

    findings = diagnose(curves, num_classes=num_classes, stage=stage, val_samples=val_samples)
    lines = [f"diagnosis{f' ({label})' if label else ''}: {', '.join(f.name for f in findings)}"]
    for finding in findings:
        lines.append(f"  - {finding.name}: {finding.evidence}")
        if finding.name != "healthy":
            lines.append(f"    try: {finding.suggestion}")
    return DiagnosisReport([f.name for f in findings], summary(findings), render_markdown(findings),
                           "\n".join(lines))
