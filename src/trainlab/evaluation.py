"""Score the final models on the test split: the only code that ever loads it.

For each model: accuracy, loss, per-class precision/recall/F1, expected calibration
error before and after temperature scaling (the temperature was fitted on held-out
predictions, never on test), a reliability diagram and a confusion matrix. The model to
register is chosen by its calibrated *held-out* loss, so the test split never influences
any choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainlab import paths
from trainlab.data import load_split, task_info
from trainlab.calibration import apply_temperature, expected_calibration_error, probs_nll, reliability_rows
from trainlab.ensemble.combine import load_any, load_ensemble, member_probabilities
from trainlab.selection import HeldOut


@dataclass
class ModelScore:
    name: str
    test: dict[str, float]
    heldout_loss: float          # calibrated, on validation or out-of-fold predictions: chooses the champion
    heldout: str                 # what those held-out predictions were
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    predictions: np.ndarray = field(repr=False)
    reliability: list[dict[str, float]] = field(default_factory=list, repr=False)


def final_models() -> dict[str, Path]:
    """Every final model that exists: finetuned, the scratch and linear baselines, best search
    trial, ensemble."""
    candidates = {"finetuned": paths.FINETUNED, **paths.BASELINE_MODELS,
                  "best_trial": paths.SEARCH_MODELS / "top1.pt", "ensemble": paths.ENSEMBLE}
    return {name: path for name, path in candidates.items() if path.is_file()}


def score(name: str, raw_probs: np.ndarray, y: np.ndarray, temperature: float, heldout: HeldOut,
          classes: list[str], bins: int) -> ModelScore:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probs = apply_temperature(raw_probs, temperature)
    predicted = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=range(len(classes)), zero_division=0)
    test = {"acc": float((predicted == y).mean()),
            "loss": probs_nll(probs, y),
            "ece": expected_calibration_error(probs, y, bins),
            "ece_uncalibrated": expected_calibration_error(raw_probs, y, bins),
            "temperature": temperature, "f1_macro": float(f1.mean())}
    per_class = {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support)}
    confusion = confusion_matrix(y, predicted, labels=range(len(classes)))
    calibrated_heldout = HeldOut(heldout.kind, apply_temperature(heldout.probs, temperature), heldout.y)
    return ModelScore(name, test, calibrated_heldout.loss, heldout.describe(), per_class, confusion, predicted,
                      reliability_rows(probs, y, bins))


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return member_probabilities([model], x)[0].numpy()


def evaluate_all(bins: int) -> tuple[list[ModelScore], dict[str, float]]:
    """Scores of every final model, plus how the ensemble compares with its members."""
    test = load_split(paths.PREPARED, "target", "test")
    classes = task_info(paths.PREPARED, "target").class_names
    x_test = torch.as_tensor(test.x)
    scores, extra = [], {}
    for name, path in final_models().items():
        model, blob = load_any(path)
        meta = blob.get("meta", {})
        scores.append(score(name, probabilities(model, x_test), test.y, float(meta.get("temperature", 1.0)),
                            _heldout(meta, model), classes, bins))
        if name == "ensemble":
            extra.update(_member_comparison(path, x_test, test.y))
    return scores, extra


def _heldout(meta: dict, model: torch.nn.Module) -> HeldOut:
    if "heldout" in meta:
        return HeldOut.from_json(meta["heldout"])
    val = load_split(paths.PREPARED, "target", "val")   # a file from before held-out predictions were kept
    return HeldOut("val", probabilities(model, torch.as_tensor(val.x)), np.asarray(val.y))


def _member_comparison(path: Path, x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    ensemble, _ = load_ensemble(path)
    member_acc = [(p.argmax(-1).numpy() == y).mean() for p in member_probabilities(list(ensemble.members), x)]
    return {"test/acc/ensemble_member_mean": float(np.mean(member_acc)),
            "test/acc/ensemble_member_best": float(np.max(member_acc))}


def choose_best(scores: list[ModelScore]) -> ModelScore:
    """Lowest calibrated held-out loss: a loss, unlike accuracy, rarely ties on a small split."""
    return min(scores, key=lambda s: (s.heldout_loss, s.name))


def flat_metrics(scores: list[ModelScore], extra: dict[str, float]) -> dict[str, float]:
    """Stable keys for `dvc metrics`: test/<metric>/<model>."""
    metrics = {f"test/{metric}/{s.name}": value for s in scores for metric, value in s.test.items()}
    metrics.update({f"heldout/loss/{s.name}": s.heldout_loss for s in scores})
    return {**metrics, **extra}


def confusion_rows(score: ModelScore, y: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """Rows for DVC's confusion template (actual vs predicted)."""
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(y, score.predictions)]


def plot_confusion(score: ModelScore, classes: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainlab.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(score.confusion, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="actual", title=f"{score.name}: test acc {score.test['acc']:.3f}")
    for (i, j), count in np.ndenumerate(score.confusion):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > score.confusion.max() / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def plot_reliability(scores: list[ModelScore], path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, calibrated, every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainlab.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for s in scores:
        rows = s.reliability
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o",
                label=f"{s.name} (ECE {s.test['ece']:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title="test reliability")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def reliability_table(score: ModelScore) -> list[dict[str, object]]:
    """The champion's reliability diagram for `dvc plots` (x: confidence, y: accuracy); the PNG has all."""
    return [{"model": score.name, **row} for row in score.reliability]
