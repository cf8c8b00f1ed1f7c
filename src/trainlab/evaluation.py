"""Score the final models on the test split: the only code that ever loads it.

For each model: accuracy, loss, per-class precision/recall/F1, expected calibration
error and a confusion matrix. The model to register is chosen on *validation*
accuracy, so the test split never influences any choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainlab import paths
from trainlab.data import load_split, task_info
from trainlab.ensemble import load_any, load_ensemble, member_probabilities

# Order used to break ties in validation accuracy: the more robust model first.
PREFERENCE = ("ensemble", "best_trial", "finetuned", "scratch")


@dataclass
class ModelScore:
    name: str
    test: dict[str, float]
    val_acc: float
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    predictions: np.ndarray = field(repr=False)


def final_models() -> dict[str, Path]:
    """Every final model that exists: finetuned, scratch baseline, best search trial, ensemble."""
    candidates = {"finetuned": paths.FINETUNED, "scratch": paths.SCRATCH,
                  "best_trial": paths.SEARCH_MODELS / "top1.pt", "ensemble": paths.ENSEMBLE}
    return {name: path for name, path in candidates.items() if path.is_file()}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs((predicted[in_bin] == y[in_bin]).mean() - confidence[in_bin].mean())
    return float(ece)


def score(name: str, probs: np.ndarray, y: np.ndarray, val_acc: float, classes: list[str], bins: int) -> ModelScore:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=range(len(classes)), zero_division=0)
    test = {"acc": float((predicted == y).mean()),
            "loss": float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()),
            "ece": expected_calibration_error(probs, y, bins), "f1_macro": float(f1.mean())}
    per_class = {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support)}
    confusion = confusion_matrix(y, predicted, labels=range(len(classes)))
    return ModelScore(name, test, val_acc, per_class, confusion, predicted)


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return member_probabilities([model], x)[0].numpy()


def evaluate_all(bins: int) -> tuple[list[ModelScore], dict[str, float]]:
    """Scores of every final model, plus how the ensemble compares with its members."""
    test = load_split(paths.PREPARED, "target", "test")
    val = load_split(paths.PREPARED, "target", "val")
    classes = task_info(paths.PREPARED, "target").class_names
    x_test, x_val = torch.as_tensor(test.x), torch.as_tensor(val.x)
    scores, extra = [], {}
    for name, path in final_models().items():
        model, _ = load_any(path)
        val_acc = float((probabilities(model, x_val).argmax(1) == val.y).mean())
        scores.append(score(name, probabilities(model, x_test), test.y, val_acc, classes, bins))
        if name == "ensemble":
            extra.update(_member_comparison(path, x_test, test.y))
    return scores, extra


def _member_comparison(path: Path, x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    ensemble, _ = load_ensemble(path)
    member_acc = [(p.argmax(-1).numpy() == y).mean() for p in member_probabilities(list(ensemble.members), x)]
    return {"test/acc/ensemble_member_mean": float(np.mean(member_acc)),
            "test/acc/ensemble_member_best": float(np.max(member_acc))}


def choose_best(scores: list[ModelScore]) -> ModelScore:
    """Highest validation accuracy; ties go to the earlier name in PREFERENCE."""
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    return min(scores, key=lambda s: (-s.val_acc, rank.get(s.name, len(rank))))


def flat_metrics(scores: list[ModelScore], extra: dict[str, float]) -> dict[str, float]:
    """Stable keys for `dvc metrics`: test/<metric>/<model>."""
    metrics = {f"test/{metric}/{s.name}": value for s in scores for metric, value in s.test.items()}
    metrics.update({f"val/acc/{s.name}": s.val_acc for s in scores})
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
