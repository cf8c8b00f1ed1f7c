"""A user's own small data: budgets that scale with it, cross-validated selection when the
validation split is tiny, no leakage into pretraining, greedy ensembles that drop useless
members, and temperature-scaled probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainlab import paths
from trainlab.calibration import apply_temperature, expected_calibration_error, fit_temperature, log_softmax
from trainlab.config import validate
from trainlab.data.build import build_splits
from trainlab.data.user_file import load_user_data
from trainlab.diagnose import diagnose
from trainlab.engine.budget import resolve_budget
from trainlab.ensemble.combine import greedy_selection
from trainlab.heldout import HeldOut
from trainlab.training.folds import stratified_folds
from trainlab.testing import make_project, small_params, trainlab


def shipped_params(**overrides):
    return validate(small_params(**overrides))


# ---------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("kind, n, batch, epochs", [
    ("series", 400, 32, 40),      # MNIST-1D's 400 labels: the shipped numbers, unchanged
    ("series", 60, 6, 200),       # a few dozen samples: a tenth of the set per batch, capped at 2,000 steps
    ("series", 8, 2, 500),        # two samples a batch at least
    ("table", 60, 15, 125),       # tables (and images): a quarter of the set per batch, 500 steps
    ("image", 8, 2, 125),
    ("image", 2_881, 32, 21),     # 4,000 images' train split: capped at 2,000 steps (40 epochs would be 3,640)
    ("table", 100_000, 32, 1),    # 3,125 steps an epoch: one epoch, never none
])
def test_auto_finetune_budget_scales_with_the_training_set(kind: str, n: int, batch: int, epochs: int) -> None:
    params = validate(small_params(finetune__epochs="auto", finetune__batch_size="auto"))
    budget = resolve_budget(params.finetune, params.trainer, n, kind)
    assert (budget.spec.batch_size, budget.spec.epochs) == (batch, epochs)
    assert "budget:" in budget.note
    steps = budget.spec.epochs * -(-n // batch)
    assert steps >= min(params.finetune.auto.min_steps, 40 * -(-n // batch))
    assert steps <= max(params.finetune.auto.max_steps, -(-n // batch))
    if steps < 40 * -(-n // batch):
        assert "at most 2000 optimizer steps" in budget.note


@pytest.mark.parametrize("n, batch, epochs, why", [
    (400, 32, 40, "auto.min_epochs"),                      # the batch is not capped: nothing changes
    (300, 30, 54, "at least 16000 samples seen"),          # 540 steps where min_steps alone gives 500
    (100, 10, 160, "at least 16000 samples seen"),         # 1,600 steps of 10
    (16, 2, 250, "at most 2000 optimizer steps"),          # two samples a batch at least; the step cap
])
def test_min_samples_gives_small_sets_more_epochs_not_fewer_samples_seen(n: int, batch: int, epochs: int,
                                                                        why: str) -> None:
    params = validate(small_params(finetune__epochs="auto", finetune__batch_size="auto"))   # as shipped: auto
    budget = resolve_budget(params.finetune, params.trainer, n, "series")
    assert (budget.spec.batch_size, budget.spec.epochs) == (batch, epochs)
    assert budget.note.endswith(f"({why})")
    assert (budget.spec.auto.max_batch_fraction, budget.spec.auto.min_samples) == (0.1, 16_000)
    # The note says why the batch is what it is: a tenth of the set, or batch norm's floor of two.
    assert (f"batch {batch} (two samples per micro-batch at least" in budget.note) == (batch > n * 0.1)
    # A number in params.yaml is used as it is, whatever the kind.
    params = validate(small_params(finetune__epochs="auto", finetune__batch_size="auto",
                                   finetune__auto__max_batch_fraction=0.25, finetune__auto__min_samples=0))
    assert resolve_budget(params.finetune, params.trainer, 60, "series").spec.batch_size == 15


@pytest.mark.parametrize("key, value, says", [
    ("max_batch_fraction", 0, "must be > 0.0, got 0"), ("max_batch_fraction", "half", "expected a number or auto"),
    ("min_samples", -1, "must be >= 0, got -1"), ("min_samples", "many", "expected an integer or auto")])
def test_bad_budget_values_are_refused_naming_the_key(key: str, value, says: str) -> None:
    from trainlab.errors import ParamsError

    with pytest.raises(ParamsError, match=rf"finetune\.auto\.{key}: {says}"):
        validate(small_params(**{f"finetune__auto__{key}": value}))


def test_auto_pretrain_budget_keeps_mnist1d_source_run() -> None:
    params = validate(small_params(pretrain__epochs="auto", pretrain__batch_size="auto"))
    budget = resolve_budget(params.pretrain, params.trainer, 38_000)
    assert (budget.spec.batch_size, budget.spec.epochs) == (128, 12)


def test_min_steps_above_max_steps_is_refused_naming_both() -> None:
    from trainlab.errors import ParamsError

    with pytest.raises(ParamsError, match=r"finetune\.auto.*min_steps \(3000\) is above max_steps \(2000\)"):
        validate(small_params(finetune__auto__min_steps=3000))


def test_explicit_numbers_win_and_print_nothing() -> None:
    params = validate(small_params(finetune__epochs=7, finetune__batch_size=64))
    budget = resolve_budget(params.finetune, params.trainer, 60)
    assert (budget.spec.batch_size, budget.spec.epochs, budget.note) == (64, 7, "")


# ---------------------------------------------------------------------------------- leakage
def pool_csv(tmp_path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 6)) + y[:, None]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["row"] = np.arange(n, dtype=float) * 1000.0   # a unique value per row, to trace rows
    frame["label"] = np.where(y == 1, "yes", "no")
    frame["split"] = np.where(np.arange(n) < n * 3 // 4, "train", "test")
    path = tmp_path / "pool.csv"
    frame.to_csv(path, index=False)
    return path


def test_pretraining_never_sees_validation_test_or_labels(tmp_path: Path) -> None:
    path = pool_csv(tmp_path)
    cfg = shipped_params(data__name="file", data__train_samples=10, data__file__path=str(path),
                         data__file__split_column="split", data__file__kind="series",
                         data__file__normalize="none").data
    raw = load_user_data(cfg.file)
    splits = build_splits(raw, cfg)
    rows = {task: {split: set(a.x[:, 6].tolist()) for split, a in parts.items()} for task, parts in splits.items()}
    source_rows = rows["source"]["train"] | rows["source"]["val"]
    assert not source_rows & rows["target"]["val"], "pretraining saw validation samples"
    assert not source_rows & rows["target"]["test"], "pretraining saw test samples"
    # The inputs outside the 10-label budget may be used, but never a label.
    assert source_rows - rows["target"]["train"], "the unlabelled inputs outside the budget are unused"
    for part in splits["source"].values():
        assert set(part.y.tolist()) == {0}
    assert raw.source is None


# ---------------------------------------------------------------------------------- calibration
def synthetic_predictions(scale: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Labels drawn from known probabilities; logits scaled by `scale` (> 1 over-, < 1 under-confident)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(scale=2.0, size=(n, classes))
    true_probs = np.exp(log_softmax(true_logits))
    y = np.array([rng.choice(classes, p=p) for p in true_probs])
    return true_logits * scale, y


@pytest.mark.parametrize("scale, direction", [(4.0, 1), (0.25, -1)])
def test_temperature_scaling_lowers_ece_of_a_miscalibrated_model(scale: float, direction: int) -> None:
    logits, y = synthetic_predictions(scale)
    fit, held = slice(0, 2000), slice(2000, None)
    temperature = fit_temperature(logits[fit], y[fit])
    assert np.sign(np.log(temperature)) == direction     # over-confident: T > 1; under-confident: T < 1
    assert temperature == pytest.approx(scale, rel=0.15)
    raw = np.exp(log_softmax(logits[held]))
    before = expected_calibration_error(raw, y[held], 15)
    after = expected_calibration_error(apply_temperature(raw, temperature), y[held], 15)
    assert after < 0.5 * before and after < 0.03
    assert (apply_temperature(raw, temperature).argmax(1) == raw.argmax(1)).all()   # never changes the class


def test_a_saturated_validation_split_does_not_drive_the_temperature_to_zero() -> None:
    # 400 held-out predictions, all right, at confidence ~0.9 (a label-smoothed model):
    # plain NLL would sharpen without limit; the fitted T stays finite and sane.
    y = np.arange(400) % 10
    logits = np.where(np.eye(10)[y] == 1, 3.0, 0.0)
    temperature = fit_temperature(logits, y)
    assert 0.2 < temperature < 0.8
    sharpened = apply_temperature(np.exp(log_softmax(logits)), temperature)
    assert 0.99 < sharpened.max(1).mean() < 0.9999


def test_a_calibrated_model_keeps_temperature_one() -> None:
    logits, y = synthetic_predictions(1.0)
    assert fit_temperature(logits, y) == pytest.approx(1.0, rel=0.1)


# ---------------------------------------------------------------------------------- ensembles
def test_greedy_selection_never_loses_to_its_best_member_and_drops_noise() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    flip = rng.random(300) < 0.2
    good[flip] = good[flip][:, ::-1]
    noise = rng.dirichlet(np.ones(3), size=300)
    weights = greedy_selection(np.stack([noise, good, noise]), y, rounds=20)
    assert weights[1] == pytest.approx(1.0)
    members = np.stack([noise, good, noise])
    mix = np.einsum("m,mnc->nc", weights, members)
    nll = lambda p: -np.log(p[np.arange(len(y)), y]).mean()   # noqa: E731
    assert nll(mix) <= min(nll(p) for p in members) + 1e-12


def test_ensemble_stage_drops_a_chance_level_member(tmp_path: Path, monkeypatch) -> None:
    from trainlab.ensemble.assemble import build_ensemble
    from trainlab.models import build_model, save_model, write_manifest
    from trainlab.hashing import sha256_file as sha256_of

    params = shipped_params(model__arch="mlp", ensemble__top_k=2, ensemble__include_finetuned=True)
    monkeypatch.chdir(tmp_path)
    y = np.array([0, 1] * 20)
    good = np.where(np.eye(2)[y] == 1, 0.9, 0.1)
    chance = np.full((40, 2), 0.5)
    model = build_model(params.model, (4,), 2)
    for path, probs in ((paths.SEARCH_MODELS / "top1.pt", good), (paths.SEARCH_MODELS / "top2.pt", chance),
                        (paths.FINETUNED, good * 0.9 + 0.05), (paths.SCRATCH, good * 0.8 + 0.1),
                        (paths.LINEAR, good * 0.7 + 0.15)):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, model, params.model, (4,), ["a", "b"],
                   meta={"heldout": HeldOut("cv", probs, y, 5).to_json(), "temperature": 1.0})
    # What search and finetune record of their files: ensemble checks every file it reads.
    (paths.SEARCH_MODELS / "members.json").write_text(json.dumps(
        [{"rank": rank, "file": f"top{rank}.pt", "sha256": sha256_of(paths.SEARCH_MODELS / f"top{rank}.pt")}
         for rank in (1, 2)]))
    write_manifest("finetune", [paths.FINETUNED, paths.SCRATCH, paths.LINEAR])
    built = build_ensemble(params)
    weights = {m["name"]: m["weight"] for m in built.members}
    assert weights["search_top2"] == 0.0
    assert set(weights) == {"search_top1", "search_top2", "finetuned", "scratch", "linear"}
    assert built.metrics["heldout/acc/ensemble"] >= built.metrics["heldout/acc/member_best"]
    assert "search_top2" not in torch.load(paths.ENSEMBLE, weights_only=True)["names"]


def test_the_scratch_and_linear_baselines_are_ensemble_candidates_unless_switched_off(tmp_path: Path, monkeypatch) -> None:
    from trainlab.ensemble.assemble import member_files

    def names(**overrides) -> list[str]:
        return [name for name, _ in member_files(shipped_params(**overrides))]

    monkeypatch.chdir(tmp_path)
    paths.SEARCH_MODELS.mkdir(parents=True)
    (paths.SEARCH_MODELS / "members.json").write_text(json.dumps([{"rank": 1, "file": "top1.pt"}]))
    assert names()[-3:] == ["finetuned", "scratch", "linear"]
    assert names(ensemble__include_baselines=False)[-1] == "finetuned"
    assert names(finetune__compare_scratch=False)[-2:] == ["finetuned", "linear"]   # only what finetune trained
    assert names(finetune__linear_baseline=False)[-2:] == ["finetuned", "scratch"]


# ---------------------------------------------------------------------------------- selection
def test_folds_are_stratified_and_cover_every_sample() -> None:
    y = np.array([0] * 9 + [1] * 6)
    folds = stratified_folds(y, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(15))
    assert all(set(y[f].tolist()) == {0, 1} for f in folds)
    assert len(stratified_folds(np.array([0, 0, 1, 1, 1]), 5, seed=0)) == 2   # rarest class has 2


def overfit_curves() -> dict:
    """Train loss falls to ~0 while val loss turns up after epoch 8 of 30 (a textbook overfit)."""
    t = np.arange(30, dtype=float)
    val = np.where(t <= 8, 0.45 + 1.85 * np.exp(-t / 2.5), 0.45 + 0.02 * (t - 8) + 0.0015 * (t - 8) ** 2)
    points = lambda values: [(i, float(v)) for i, v in enumerate(values)]   # noqa: E731
    return {"epoch/train_loss": points(0.005 + 2.3 * np.exp(-(t + 0.5) / 3.5)), "val/loss": points(val),
            "epoch/train_acc": points(1.0 - 0.9 * np.exp(-(t + 0.5) / 3.5)),
            "val/acc": points(0.86 - 0.76 * np.exp(-(t + 1) / 2.5)), "epoch/lr": points(np.full(30, 1e-3))}


def test_small_validation_is_named_instead_of_overfitting() -> None:
    curves = overfit_curves()
    assert "overfitting" in {f.name for f in diagnose(curves, num_classes=10)}
    names = {f.name for f in diagnose(curves, num_classes=10, val_samples=6)}
    assert "small_validation" in names and "overfitting" not in names
    assert "small_validation" not in {f.name for f in diagnose(curves, num_classes=10, val_samples=400)}


@pytest.mark.slow
def test_tiny_validation_split_switches_finetune_to_cross_validation(tmp_path: Path) -> None:
    path = pool_csv(tmp_path, n=80)
    params = small_params(data__name="file", data__train_samples=None, data__file__path=str(path),
                          data__file__split_column="split", model__arch="mlp", pretrain__epochs=2,
                          finetune__epochs=4, finetune__batch_size="auto", finetune__compare_scratch=False,
                          finetune__linear_probe=False)
    project = make_project(tmp_path / "project", params)
    trainlab(["prepare"], project)
    pretext = trainlab(["pretrain"], project)
    # The masked-reconstruction pretext regresses values: no accuracy line, file or curve.
    assert "pretext: masked reconstruction" in pretext.stdout and "[pretrain] epoch 1/" in pretext.stderr
    assert "acc" not in pretext.stderr and "val/acc" not in pretext.stdout
    assert "val/acc" not in json.loads((project / "reports/pretrain/details.json").read_text())
    out = trainlab(["finetune"], project)
    assert "selection: 5-fold CV (validation split has 6 samples" in out.stdout
    blob = torch.load(project / paths.FINETUNED, weights_only=True)
    heldout = HeldOut.from_json(blob["meta"]["heldout"])
    assert heldout.kind == "cv" and heldout.folds == 5 and len(heldout.y) == 60   # train 54 + val 6
    metrics = json.loads((project / "reports/finetune/details.json").read_text())
    assert metrics["selection/cv_folds"] == 5 and metrics["selection/heldout_samples"] == 60
    assert 1 <= metrics["best_epoch"] <= 4
    assert not list((project / paths.RESUME).glob("*.pt")), "fold checkpoints left behind"


def test_checkpoints_are_throttled_but_first_and_last_epochs_are_saved(tmp_path: Path, monkeypatch) -> None:
    from trainlab.config.schema import ModelConfig, TrainerConfig, TrainSpec
    from trainlab.engine import Checkpointing, TrainData, fit
    from trainlab.models import build_model

    saves: list[int] = []

    class Counting(Checkpointing):
        def save(self, state, epoch_done=False):
            saves.append(state.epoch)
            super().save(state, epoch_done)

    spec = TrainSpec.model_validate({"epochs": 6, "batch_size": 16, "early_stopping": {"enabled": False}})
    trainer = TrainerConfig(threads=1, progress="off")
    rng = np.random.default_rng(0)
    data = TrainData(torch.as_tensor(rng.normal(size=(32, 8)), dtype=torch.float32),
                     torch.as_tensor(rng.integers(0, 2, 32)))

    def run(checkpointing: Checkpointing) -> None:
        fit(build_model(ModelConfig(arch="mlp", width=8, depth=1), (8,), 2), data, data, spec, trainer, seed=0,
            hooks=[checkpointing])

    run(Counting(tmp_path / "a.pt", "fp", min_interval_s=3600))
    assert saves == [0, 5]                      # an hour between saves: only the first and the last epoch
    saves.clear()
    run(Counting(tmp_path / "b.pt", "fp"))
    assert saves == list(range(6))               # the engine's default: every epoch


def test_a_search_trials_pruner_watches_the_first_fold_under_cross_validation(tmp_path: Path, monkeypatch) -> None:
    from trainlab.data import TaskInfo
    from trainlab.engine import Hook, TrainData
    from trainlab.training import TrainRequest, train_target

    class Prune(Exception):
        pass

    class Watcher(Hook):
        def __init__(self, prune_at: int | None):
            self.prune_at, self.seen = prune_at, []

        def on_epoch_end(self, state, metrics):
            self.seen.append(state.epoch)
            if state.epoch == self.prune_at:
                raise Prune

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/manifest.json").write_text(json.dumps({"tasks": {}}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    y = np.arange(30) % 2
    data = (TrainData(x[:25], y[:25]), TrainData(x[25:], y[25:]), TaskInfo(2, ["a", "b"], (6,)))
    params = shipped_params(**{"model.arch": "mlp", "model.width": 8, "model.depth": 1, "trainer.threads": 1,
                               "trainer.progress": "off", "finetune.epochs": 3, "finetune.batch_size": 8,
                               "selection.folds": 3})
    watcher = Watcher(prune_at=None)
    trained = train_target(TrainRequest(params, params.finetune, "t", pruning=watcher), data=data)
    assert trained.cross_validated and trained.heldout.folds == 3
    assert watcher.seen == [0, 1, 2]     # the first fold's epochs, once each
    # A trial pruned in its first fold trains no other fold and no refit.
    with pytest.raises(Prune):
        train_target(TrainRequest(params, params.finetune, "u", pruning=Watcher(prune_at=1)), data=data)


# ---------------------------------------------------------------------------------- speed on small data
def fit_recording_threads(n_features: int, batch: int, targets: str = "classes") -> tuple[list[int], dict]:
    """Fit a small MLP; returns torch's thread count seen at every epoch end, and the last epoch's metrics."""
    from trainlab.config.schema import LossConfig, ModelConfig, TrainerConfig, TrainSpec
    from trainlab.engine import Hook, TrainData, fit
    from trainlab.models import build_model

    class Threads(Hook):
        def __init__(self):
            self.seen, self.metrics, self.kernels = [], {}, set()

        def on_epoch_end(self, state, metrics):
            self.seen.append(torch.get_num_threads())
            self.metrics = metrics
            self.kernels.add((torch.backends.mkldnn.enabled, bool(state.optimizer.defaults.get("fused"))))

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(32, n_features)), dtype=torch.float32)
    regression = targets == "regression"
    y = x.clone() if regression else torch.as_tensor(rng.integers(0, 2, 32))
    spec = TrainSpec.model_validate({"epochs": 2, "batch_size": batch, "early_stopping": {"enabled": False}})
    if regression:
        spec = spec.model_copy(update={"loss": LossConfig(name="mse")})
    hook = Threads()
    outputs = n_features if regression else 2
    fit(build_model(ModelConfig(arch="mlp", width=8, depth=1), (n_features,), outputs), TrainData(x, y),
        TrainData(x, y), spec, TrainerConfig(threads=2, progress="off"), seed=0, hooks=[hook])
    KERNELS[targets, n_features, batch] = hook.kernels
    return hook.seen, hook.metrics


KERNELS: dict = {}   # (mkldnn enabled, fused optimizer) seen during each fit_recording_threads


def test_tiny_steps_train_on_one_thread_with_native_kernels_and_the_stage_settings_come_back() -> None:
    from trainlab.engine.runtime import NATIVE_CONVOLUTIONS_BELOW_VALUES, SINGLE_THREAD_BELOW_VALUES

    before, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(2)
    try:
        tiny, _ = fit_recording_threads(n_features=8, batch=16)           # 128 values a step
        assert 16 * 8 < NATIVE_CONVOLUTIONS_BELOW_VALUES and tiny == [1, 1]
        assert KERNELS["classes", 8, 16] == {(False, True)}                # native convs, fused optimizer
        assert torch.get_num_threads() == 2 and torch.backends.mkldnn.enabled == mkldnn   # restored
        small, _ = fit_recording_threads(n_features=32, batch=16)         # 512 values a step
        assert NATIVE_CONVOLUTIONS_BELOW_VALUES <= 16 * 32 < SINGLE_THREAD_BELOW_VALUES and small == [1, 1]
        assert KERNELS["classes", 32, 16] == {(mkldnn, True)}              # oneDNN convs, fused optimizer
        big, _ = fit_recording_threads(n_features=128, batch=16)          # 2,048 values a step
        assert 16 * 128 >= SINGLE_THREAD_BELOW_VALUES and big == [2, 2]
        assert KERNELS["classes", 128, 16] == {(mkldnn, False)}
    finally:
        torch.set_num_threads(before)


def test_mnist1d_default_steps_keep_the_configured_threads() -> None:
    from trainlab.engine.runtime import SINGLE_THREAD_BELOW_VALUES

    params = validate(small_params(finetune__epochs="auto", finetune__batch_size="auto"))
    batch = resolve_budget(params.finetune, params.trainer, 400, "series").spec.batch_size
    assert batch * 40 >= SINGLE_THREAD_BELOW_VALUES   # MNIST-1D: 40 values a sample, 400 labels


def test_regression_targets_report_no_accuracy() -> None:
    _, metrics = fit_recording_threads(n_features=6, batch=8, targets="regression")
    assert "val/loss" in metrics and "val/acc" not in metrics and "epoch/train_acc" not in metrics
    _, metrics = fit_recording_threads(n_features=6, batch=8)
    assert {"val/acc", "epoch/train_acc"} <= set(metrics)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop", "lbfgs"])
def test_every_optimizer_builds_for_tiny_steps(name: str) -> None:
    from trainlab.config.schema import OptimizerConfig
    from trainlab.engine.optim import ParamGroup, build_optimizer

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([ParamGroup("all", [weight])], OptimizerConfig(name=name), 8, fused=True)
    loss = lambda: (weight ** 2).sum()   # noqa: E731
    optimizer.zero_grad()
    loss().backward()
    optimizer.step((lambda: (optimizer.zero_grad(), loss().backward(), loss())[-1]) if name == "lbfgs" else None)
    assert bool(optimizer.defaults.get("fused")) == (name in {"sgd", "adam", "adamw", "adagrad"})
    assert float(loss()) < 3.0
