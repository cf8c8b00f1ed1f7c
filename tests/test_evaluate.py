"""Evaluation: calibration error by hand, model choice on held-out predictions only, and
the evaluate stage's metrics, per-class scores, confusion rows and registered model,
checked against scores recomputed here from the saved model files and temperatures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainlab import paths
from trainlab.calibration import apply_temperature
from trainlab.data import load_split, task_info
from trainlab.ensemble.combine import load_any
from trainlab.data import TaskInfo
from trainlab.evaluation.scores import ModelScore, champion_line, choose_best, compare_runner_up, expected_calibration_error
from trainlab.heldout import HeldOut
from trainlab.testing import copy_project, trainlab

from helpers.tracking import client_of, experiment_id, label

MODELS = ("finetuned", "scratch", "linear", "best_trial", "ensemble")
FILES = {"finetuned": paths.FINETUNED, "scratch": paths.SCRATCH, "linear": paths.LINEAR,
         "best_trial": paths.SEARCH_MODELS / "top1.pt", "ensemble": paths.ENSEMBLE}

# Four samples, three classes: confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.4 (wrong).
PROBS = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.4, 0.3, 0.3]])
LABELS = np.array([0, 0, 2, 1])


def test_ece_two_bins_by_hand() -> None:
    # (0, .5]: one sample, accuracy 0, confidence .4       -> 1/4 * .4               = .1
    # (.5, 1]: three samples, accuracy 2/3, confidence .7667 -> 3/4 * |2/3 - 2.3/3| = .075
    assert expected_calibration_error(PROBS, LABELS, bins=2) == pytest.approx(0.175, abs=1e-7)


def test_ece_one_sample_per_bin_by_hand() -> None:
    # Ten bins put each sample alone in its bin: mean of |correct - confidence|.
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6) + abs(0 - 0.4)) / 4
    assert expected_calibration_error(PROBS, LABELS, bins=10) == pytest.approx(expected, abs=1e-7)


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    # Confidence 0.5 and right half of the time; confidence 1 and always right.
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1, 0, 1]), bins=4) == pytest.approx(0.0, abs=1e-7)


def scored(name: str, heldout_loss: float, test_acc: float, predictions: np.ndarray | None = None) -> ModelScore:
    y = np.array([0, 1])
    return ModelScore(name, {"acc": test_acc}, heldout_loss, "validation", HeldOut("val", np.eye(2), y),
                      predictions=np.zeros(2) if predictions is None else predictions)


def test_a_champion_the_runner_up_ties_is_reported_as_a_tie() -> None:
    y = np.arange(40) % 2
    info = TaskInfo(2, ["a", "b"], (3,))
    champion = y.copy()
    champion[:3] = 1 - champion[:3]                  # 3 wrong
    close = y.copy()
    close[3:7] = 1 - close[3:7]                      # 4 wrong, other samples: McNemar p = 1.0
    scores = [scored("ensemble", 0.10, 0.925, champion), scored("finetuned", 0.12, 0.9, close)]
    comparison = compare_runner_up(scores, y, info)
    assert (comparison.other, comparison.test, comparison.tied) == ("finetuned", "McNemar exact", True)
    assert comparison.p_value == pytest.approx(1.0)
    scores[0].test.update(acc_ci_low=0.8, acc_ci_high=0.97)
    assert champion_line(scores[0], comparison, False) == (
        "champion: ensemble, test acc 0.9250 (95% Wilson interval 0.8000 to 0.9700); statistically tied with "
        "finetuned (McNemar exact p = 1 on the same test samples)")
    far = 1 - y                                      # wrong everywhere the champion is right
    apart = compare_runner_up([scores[0], scored("finetuned", 0.12, 0.075, far)], y, info)
    assert not apart.tied and apart.p_value < 1e-6


def test_a_regression_champion_is_compared_on_paired_squared_errors() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    info = TaskInfo(1, ["price"], (3,), task="regression", target_scale=(10.0, 2.0))
    actual = y * 2.0 + 10.0
    good, bad = actual + rng.normal(0, 0.1, 60), actual + rng.normal(0, 2.0, 60)
    scores = [scored("ensemble", 0.1, 0.0, good), scored("linear", 0.2, 0.0, bad)]
    comparison = compare_runner_up(scores, y, info)
    assert comparison.test == "Wilcoxon signed-rank" and not comparison.tied
    same = compare_runner_up([scores[0], scored("linear", 0.2, 0.0, good.copy())], y, info)
    assert same.tied and same.p_value == 1.0


def test_choose_best_uses_heldout_loss_never_test() -> None:
    scores = [scored("finetuned", 0.30, 0.95), scored("ensemble", 0.20, 0.60), scored("scratch", 0.25, 0.99)]
    assert choose_best(scores).name == "ensemble"


def test_choose_best_is_not_decided_by_an_accuracy_tie() -> None:
    # Two models with val accuracy 1.0 on a saturated split: the loss still ranks them.
    y = np.array([0, 1, 0, 1])
    sure = HeldOut("val", np.array([[0.99, 0.01], [0.01, 0.99]] * 2), y)
    unsure = HeldOut("val", np.array([[0.6, 0.4], [0.4, 0.6]] * 2), y)
    assert sure.acc == unsure.acc == 1.0
    scores = [scored("ensemble", unsure.loss, 0.9), scored("finetuned", sure.loss, 0.9)]
    assert choose_best(scores).name == "finetuned" == choose_best(scores[::-1]).name


# --------------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def evaluated(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(prepared_project, tmp_path_factory.mktemp("evaluate") / "project")
    for stage in ("finetune", "search", "ensemble", "evaluate"):
        trainlab([stage], project)
    return project


def reference_scores(project: Path) -> dict[str, dict]:
    """Recompute every model's test predictions from its saved file and temperature."""
    test = load_split(project / paths.PREPARED, "target", "test")
    out = {}
    for name in MODELS:
        model, blob = load_any(project / FILES[name])
        temperature = blob["meta"]["temperature"]
        heldout = HeldOut.from_json(blob["meta"]["heldout"])
        with torch.inference_mode():
            raw = model(torch.as_tensor(test.x)).float().softmax(-1).double().numpy()
        probs = apply_temperature(raw, temperature)
        calibrated = HeldOut(heldout.kind, apply_temperature(heldout.outputs, temperature), heldout.y)
        out[name] = {"raw": raw, "probs": probs, "pred": probs.argmax(1), "temperature": temperature,
                     "heldout_loss": calibrated.loss}
    return out


def macro_f1(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = np.sum((pred == c) & (y == c))
        precision = tp / max(np.sum(pred == c), 1)
        recall = tp / max(np.sum(y == c), 1)
        scores.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def test_dvc_sees_the_champions_figures_and_each_models_test_score(evaluated: Path) -> None:
    """metrics.json, the file DVC shows, is the headline of details.json (trainlab.dvc_metrics)."""
    details = json.loads((evaluated / "reports/evaluate/details.json").read_text())
    headline = json.loads((evaluated / "reports/evaluate/metrics.json").read_text())
    champion = json.loads((evaluated / "reports/evaluate/champion.json").read_text())["model"]
    assert headline == {"acc": details[f"test/acc/{champion}"], "acc_low": details[f"test/acc_ci_low/{champion}"],
                        "acc_high": details[f"test/acc_ci_high/{champion}"], "loss": details[f"test/loss/{champion}"],
                        "ece": details[f"test/ece/{champion}"],
                        "gain": details["test/acc/finetuned"] - details["test/acc/scratch"],
                        **{f"test/{name}": details[f"test/acc/{name}"] for name in MODELS}}


@pytest.mark.slow
def test_metrics_have_stable_keys_and_match_recomputed_scores(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "reports/evaluate/details.json").read_text())
    measures = ("acc", "acc_ci_low", "acc_ci_high", "loss", "ece", "ece_uncalibrated", "temperature", "f1_macro")
    expected_keys = ({f"test/{m}/{name}" for m in measures for name in MODELS}
                     | {f"heldout/loss/{name}" for name in MODELS}
                     | {f"champion/{m}" for m in measures}
                     | {"test/acc/ensemble_member_mean", "test/acc/ensemble_member_best"})
    assert set(metrics) == expected_keys

    y = load_split(evaluated / paths.PREPARED, "target", "test").y
    classes = task_info(evaluated / paths.PREPARED, "target").num_classes
    for name, ref in reference_scores(evaluated).items():
        probs = ref["probs"]
        assert metrics[f"test/acc/{name}"] == pytest.approx(float((ref["pred"] == y).mean()), abs=1e-12)
        nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        assert metrics[f"test/loss/{name}"] == pytest.approx(nll, rel=1e-5)
        assert metrics[f"test/ece/{name}"] == pytest.approx(expected_calibration_error(probs, y, 15), abs=1e-6)
        assert metrics[f"test/ece_uncalibrated/{name}"] == pytest.approx(
            expected_calibration_error(ref["raw"], y, 15), abs=1e-6)
        assert metrics[f"test/temperature/{name}"] == ref["temperature"]
        assert metrics[f"test/f1_macro/{name}"] == pytest.approx(macro_f1(y, ref["pred"], classes), abs=1e-9)
        assert metrics[f"heldout/loss/{name}"] == pytest.approx(ref["heldout_loss"], rel=1e-6)
        low, high = wilson(int((ref["pred"] == y).sum()), len(y))
        assert (metrics[f"test/acc_ci_low/{name}"], metrics[f"test/acc_ci_high/{name}"]) == (
            pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927; Brown, Cai & DasGupta 2001, eq. 4)."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.slow
def test_per_class_and_confusion_reports(evaluated: Path) -> None:
    per_class = json.loads((evaluated / "reports/evaluate/per_class.json").read_text())
    info = task_info(evaluated / paths.PREPARED, "target")
    y = load_split(evaluated / paths.PREPARED, "target", "test").y
    assert set(per_class) == set(MODELS)
    pred = reference_scores(evaluated)["ensemble"]["pred"]
    for c, name in enumerate(info.class_names):
        row = per_class["ensemble"][name]
        assert set(row) == {"precision", "recall", "f1", "support"}
        tp = int(np.sum((pred == c) & (y == c)))
        assert row["support"] == int(np.sum(y == c))
        assert row["recall"] == pytest.approx(tp / row["support"], abs=1e-12)
        assert row["precision"] == pytest.approx(tp / max(int(np.sum(pred == c)), 1), abs=1e-12)
    for model in MODELS:
        assert list(per_class[model]) == info.class_names

    # The confusion matrix DVC draws is the champion's.
    champion = json.loads((evaluated / "reports/evaluate/champion.json").read_text())["model"]
    champion_pred = reference_scores(evaluated)[champion]["pred"]
    rows = json.loads((evaluated / "reports/evaluate/confusion.json").read_text())
    assert len(rows) == len(y) and all(set(r) == {"actual", "predicted"} for r in rows)
    assert [r["actual"] for r in rows] == [info.class_names[i] for i in y]
    assert [r["predicted"] for r in rows] == [info.class_names[i] for i in champion_pred]
    # Its reliability diagram covers every test sample, bin by bin, calibrated.
    bins = json.loads((evaluated / "reports/evaluate/reliability.json").read_text())
    assert sum(b["count"] for b in bins) == len(y) and {b["model"] for b in bins} == {champion}
    probs = reference_scores(evaluated)[champion]["probs"]
    hits = sum(b["accuracy"] * b["count"] for b in bins)
    assert hits == pytest.approx(float((probs.argmax(1) == y).sum()), abs=1e-6)
    assert (evaluated / "reports/evaluate/artifacts/reliability.png").stat().st_size > 1000


@pytest.mark.slow
def test_registered_model_is_chosen_on_heldout_loss(evaluated: Path) -> None:
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    metrics = json.loads((evaluated / "reports/evaluate/details.json").read_text())
    expected = min(MODELS, key=lambda n: (metrics[f"heldout/loss/{n}"], n))
    assert json.loads((evaluated / "reports/evaluate/champion.json").read_text())["model"] == expected

    uri = f"sqlite:///{evaluated / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trainlab")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if label(r) == "evaluate"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["best_model"] == expected

    version = client.get_model_version_by_alias("trainlab", "champion")
    assert version.run_id == run.info.run_id
    assert str(version.version) == run.data.tags["registry.version"]
    # The served model predicts what the chosen model file predicts, temperature-scaled,
    # as probabilities under the class names, for float32, float64 and list input alike.
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/trainlab@champion")
    chosen, blob = load_any(evaluated / FILES[expected])
    x = load_split(evaluated / paths.PREPARED, "target", "val").x[:16].astype(np.float32)
    with torch.inference_mode():
        expected_probs = torch.softmax(chosen(torch.as_tensor(x)).float() / blob["meta"]["temperature"], -1).numpy()
    classes = task_info(evaluated / paths.PREPARED, "target").class_names
    for given in (x, x.astype(np.float64), x.tolist()):
        probs = served.predict(given)
        assert list(probs.columns) == classes
        assert np.allclose(probs.to_numpy().sum(axis=1), 1.0, atol=1e-6)
        assert np.allclose(probs.to_numpy(), expected_probs, atol=1e-5)


@pytest.mark.slow
def test_every_model_a_stage_trains_is_an_mlflow_model_with_signature_and_example(evaluated: Path) -> None:
    from mlflow.models import Model

    client = client_of(evaluated)
    models = client.search_logged_models(experiment_ids=[experiment_id(client)])
    found = client.search_runs([experiment_id(client)])
    runs = {r.info.run_id: label(r) for r in found}
    by_run = {runs[m.source_run_id]: m for m in models}
    assert set(by_run) == {"pretrain", "finetune", "finetune scratch baseline", "finetune linear probe",
                           "finetune linear baseline", "ensemble", "evaluate"}
    # Search trials keep their model file as a plain artifact (tracking.log_trial_models
    # is off by default; bench/trial_models.py logs them as MLflow models).
    trials = [r for r in found if r.data.tags.get("optuna.state") == "COMPLETE"]
    assert trials and all(client.list_artifacts(r.info.run_id, "model") for r in trials)
    target = task_info(evaluated / paths.PREPARED, "target")
    source = task_info(evaluated / paths.PREPARED, "source")
    for run_name, logged in by_run.items():
        model = Model.load(logged.artifact_location)   # the store of this project, not the global tracking URI
        assert model.signature is not None and "python_function" in model.flavors, run_name
        classes = source.class_names if run_name == "pretrain" else target.class_names
        assert model.signature.outputs.input_names() == classes, run_name
        assert len(model.signature.inputs.inputs) == int(np.prod(target.input_shape)), run_name
        example = np.asarray(model.load_input_example(logged.artifact_location))
        assert example.shape == (2, int(np.prod(target.input_shape))), run_name


@pytest.mark.slow
def test_registered_version_has_a_model_card_and_tags(evaluated: Path) -> None:
    client = client_of(evaluated)
    version = client.get_model_version_by_alias("trainlab", "champion")
    run = client.get_run(version.run_id)
    metrics = json.loads((evaluated / "reports/evaluate/details.json").read_text())
    champion = run.data.tags["best_model"]
    classes = task_info(evaluated / paths.PREPARED, "target").class_names
    manifest = json.loads((evaluated / paths.PREPARED / "manifest.json").read_text())
    tags = version.tags
    assert tags["trainlab.model"] == champion and json.loads(tags["class_names"]) == classes
    assert float(tags["test.acc"]) == pytest.approx(metrics[f"test/acc/{champion}"], rel=1e-5)
    assert float(tags["test.ece"]) == pytest.approx(metrics[f"test/ece/{champion}"], rel=1e-5)
    assert tags["git.commit"] == run.data.tags["git.commit"] != "unknown"
    hashes = {f"input.{task}/{split}/{name}.sha256": f["sha256"] for task, t in manifest["tasks"].items()
              for split, sp in t["splits"].items() for name, f in sp["files"].items()}
    assert {k: tags[k] for k in hashes} == hashes
    card = version.description
    assert card.startswith(f"# trainlab v{version.version}: {champion}")
    assert f"Registered as version {version.version} with alias `champion`: no champion yet." in card
    assert tags["trainlab.promotion"] == "no champion yet"
    for needed in (f"trainlab rerun {run.info.run_id}", "dvc repro", run.data.tags["git.commit"],
                   f"{metrics[f'test/acc/{champion}']:.4f}", next(iter(hashes.values()))):
        assert needed in card
    logged = Path(client.download_artifacts(run.info.run_id, "model_card.md", str(evaluated / "card")))
    assert logged.read_text() == card


def test_bootstrap_intervals_are_seeded_and_wilson_matches_its_formula() -> None:
    from trainlab.evaluation.stats import bootstrap_interval, r2, wilson_interval

    rng = np.random.default_rng(1)
    actual = rng.normal(size=50)
    predicted = actual + rng.normal(0, 0.5, 50)
    first, again = bootstrap_interval(actual, predicted, r2), bootstrap_interval(actual, predicted, r2)
    assert first == again                                  # a rerun writes the same report
    assert first[0] < r2(actual, predicted) < first[1]
    assert wilson_interval(18, 20) == pytest.approx(wilson(18, 20), abs=1e-12)
    assert wilson_interval(20, 20)[1] == pytest.approx(1.0) and wilson_interval(20, 20)[0] < 1.0
