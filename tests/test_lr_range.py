"""`optimizer.lr: auto`: the learning-rate range test (engine/lr_range.py) and the stage's use of it.

The engine tests run real training on the tiny signal task of tests/helpers/engine.py; the
stage tests run the real `trainlab finetune` and `trainlab lr-find` in a copy of the shared
prepared project.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from trainlab.config import load_params
from trainlab.config.schema import TrainSpec
from trainlab.engine import fit, setup_runtime, teardown_runtime
from trainlab.engine.lr_range import END_LR, START_LR, check_range_test_offered, lr_range_test, range_test_steps
from trainlab.errors import ParamsError, TrainingDiverged
from trainlab.testing import copy_project, small_params, trainlab, write_params
from trainlab.training.fit import TrainRequest
from trainlab.training.lr_choice import measured_lr, never_fell_line

from helpers.distributed import free_port
from helpers.engine import signal_data, tiny_model, train_spec, trainer_cfg, weights
from helpers.tracking import artifact_paths, client_of, stage_runs

TRAIN, VAL = signal_data(400, 0, noise=1.0), signal_data(400, 1, noise=1.0)
COSINE = {"name": "cosine", "warmup_epochs": 1}


def spec_at(lr, optimizer: str = "adamw", epochs: int = 15) -> TrainSpec:
    return train_spec(epochs, optimizer={"name": optimizer, "lr": lr}, schedule=COSINE)


def run_test(model=None, train=TRAIN, steps: int = 100, spec: TrainSpec | None = None, **trainer):
    return lr_range_test(model or tiny_model(width=16), train, spec or spec_at("auto"),
                         trainer_cfg(clip_grad_norm=1.0, **trainer), seed=0, steps=steps)


def test_the_rate_rises_exponentially_until_the_loss_diverges() -> None:
    test = run_test(steps=100)
    ratios = np.diff(np.log(test.lrs))
    assert test.lrs[0] == pytest.approx(START_LR)
    assert np.allclose(ratios, math.log(END_LR / START_LR) / 99)   # one factor per step
    assert "diverged" in test.stop and len(test.lrs) < 100       # stopped early, past the minimum
    low = int(np.argmin(test.smoothed))
    assert test.smoothed[low] < 0.5 * test.smoothed[0]            # the loss fell before it diverged
    # The knee: where the loss first comes within 10% of its fall to the minimum, interpolated
    # between the steps around it; x 100/1000 of it is chosen.
    fall = np.median(test.smoothed[:11]) - test.smoothed[low]
    knee = next(i for i, loss in enumerate(test.smoothed) if loss <= test.smoothed[low] + 0.1 * fall)
    assert 0 < knee <= low and test.lrs[knee - 1] / 10 < test.chosen <= test.lrs[knee] / 10
    assert test.steps == 100 and test.steps_run == len(test.lrs)
    assert test.steepest is not None and test.lrs[0] < test.steepest <= test.lrs[low]


def test_the_model_and_every_random_generator_are_put_back() -> None:
    model = tiny_model(width=16)
    before = weights(model)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    run_test(model)
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert all(torch.equal(before[k], v) for k, v in weights(model).items())
    assert torch.equal(expected[0], after[0]) and np.array_equal(expected[1], after[1]) and expected[2] == after[2]


def test_training_after_the_test_is_bit_identical_to_training_at_that_fixed_rate() -> None:
    measured = tiny_model(width=16)
    chosen = run_test(measured).chosen
    fit(measured, TRAIN, VAL, spec_at(chosen, epochs=2), trainer_cfg(clip_grad_norm=1.0), seed=0)
    fresh = tiny_model(width=16)
    fit(fresh, TRAIN, VAL, spec_at(chosen, epochs=2), trainer_cfg(clip_grad_norm=1.0), seed=0)
    assert all(torch.equal(weights(fresh)[k], v) for k, v in weights(measured).items())


def test_gradient_accumulation_and_mixed_precision_choose_about_the_same_rate() -> None:
    plain = run_test().chosen
    # Four micro-batches are the same maths in another summation order; bf16 and fp16 round
    # every activation (fp16 with its loss scaling): each may move the knee by a step or two
    # of the ramp, not more.
    step = math.log(END_LR / START_LR) / 99
    assert abs(math.log(run_test(grad_accum=4).chosen / plain)) <= 2 * step + 1e-9
    for precision in ("bf16", "fp16"):
        assert abs(math.log(run_test(precision=precision).chosen / plain)) <= math.log(3), precision


def test_a_fixed_rate_too_high_diverges_and_auto_trains() -> None:
    sgd = {"name": "sgd", "momentum": 0.9}
    too_high = train_spec(10, optimizer={**sgd, "lr": 1000.0}, schedule=COSINE)
    with pytest.raises(TrainingDiverged):
        fit(tiny_model(width=16), TRAIN, VAL, too_high, trainer_cfg(), seed=0)
    auto = train_spec(10, optimizer={**sgd, "lr": "auto"}, schedule=COSINE)
    model = tiny_model(width=16)
    chosen = lr_range_test(model, TRAIN, auto, trainer_cfg(), seed=0, steps=100).chosen
    result = fit(model, TRAIN, VAL, train_spec(10, optimizer={**sgd, "lr": chosen}, schedule=COSINE),
                 trainer_cfg(), seed=0)
    assert chosen < 1.0 and result.history[-1]["val/acc"] > 0.9


def test_a_loss_that_never_falls_gets_one_line_naming_the_cause() -> None:
    # Noise to predict from noise: nothing to learn, no rate makes the training loss fall.
    rng = np.random.default_rng(0)
    noise = type(TRAIN)(rng.standard_normal(TRAIN.x.shape).astype(np.float32),
                        rng.standard_normal(len(TRAIN)).astype(np.float32))
    test = run_test(tiny_model(width=16, num_classes=1), train=noise)
    assert test.chosen is None and test.steepest is None
    assert len(test.lrs) > 100 and "run again at 300 steps" in test.stop   # measured longer before giving up
    line = never_fell_line("finetune", test)
    assert "\n" not in line and line.startswith("finetune.optimizer.lr: auto:")
    assert "did not fall beyond its noise" in line and "not a rate problem" in line


@pytest.mark.parametrize("change, words", [
    ({"optimizer": "lbfgs"}, "not offered for lbfgs"),
    ({"strategy": "fsdp"}, "not offered with trainer.strategy fsdp"),
    ({"strategy": "pipeline"}, "not offered with trainer.strategy pipeline"),
])
def test_where_auto_is_not_offered_it_says_so_in_one_line(change, words) -> None:
    spec = spec_at("auto", change.get("optimizer", "adamw"))
    trainer = trainer_cfg(devices=2, strategy=change.get("strategy", "ddp"))
    with pytest.raises(ParamsError, match=words) as err:
        check_range_test_offered(spec, trainer, "finetune")
    assert "\n" not in str(err.value)


def test_auto_in_a_search_space_is_refused_in_one_line(tmp_path: Path) -> None:
    from trainlab.search.space import check_space

    params = load_params(write_params(tmp_path, small_params(search__space={
        "finetune.optimizer.lr": {"type": "categorical", "choices": [0.001, "auto"]}})))
    with pytest.raises(ParamsError, match="auto is not offered in a search space"):
        check_space(params)


def test_the_test_is_a_small_share_of_the_training() -> None:
    assert range_test_steps(200) == 25            # the shortest test
    assert range_test_steps(520) == 26            # MNIST-1D's fine-tuning at 400 labels: 5%
    assert range_test_steps(3000) == 150          # 5 folds and a refit of 500 steps: 5%
    assert range_test_steps(100_000) == 300


def test_a_test_too_short_to_read_runs_again_longer() -> None:
    """A conv net's loss shows no fall within 25 steps (bench/lr_rule.py): the test runs again
    4x longer from the same state; the rule scales with the length that was read."""
    test = run_test(tiny_model("cnn1d", seed=0, width=16), steps=25)
    assert test.steps in (100, 300) and "run again" in test.stop and test.chosen is not None
    assert test.steps_run > len(test.lrs) and test.steps_run <= 25 + 100 + 300
    assert abs(math.log(test.lrs[0] / START_LR)) < 1e-9 and len(test.lrs) <= test.steps
    fall = np.median(test.smoothed[:len(test.smoothed) // 10 + 1]) - min(test.smoothed)
    knee = next(i for i, loss in enumerate(test.smoothed) if loss <= min(test.smoothed) + 0.1 * fall)
    scale = test.steps / 1000
    assert test.lrs[knee - 1] * scale < test.chosen <= test.lrs[knee] * scale


def _ddp_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    trainer = trainer_cfg(devices=2, accelerator="cpu", clip_grad_norm=1.0)
    runtime = setup_runtime(trainer)
    try:
        test = lr_range_test(tiny_model(width=16), TRAIN, spec_at("auto"), trainer, seed=0, steps=100,
                             runtime=runtime)
        Path(f"{out}.{rank}").write_text(json.dumps(test.to_dict()))
    finally:
        teardown_runtime()


def test_under_ddp_every_rank_chooses_the_same_rate(tmp_path: Path) -> None:
    out = str(tmp_path / "rank")
    mp.spawn(_ddp_rank, args=(free_port(), out), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    assert ranks[0]["chosen"] is not None and ranks[0]["chosen"] == ranks[1]["chosen"]
    assert ranks[0]["losses"] == ranks[1]["losses"]   # the all-reduced loss of the global batch
    single = run_test().chosen
    assert abs(math.log(ranks[0]["chosen"] / single)) <= math.log(3)   # same global batches, other sums


@pytest.mark.slow
def test_auto_lands_within_one_step_of_the_best_rate_of_a_grid() -> None:
    """7 fixed rates a factor of 3 apart, 3 seeds each: the best is the lowest median
    validation loss; `auto` (one test, seed 0) must be within one grid step of it."""
    trainer = trainer_cfg(clip_grad_norm=1.0)
    grid = [1e-4 * 3 ** k for k in range(7)]
    medians = {}
    for lr in grid:
        losses = []
        for seed in range(3):
            try:
                result = fit(tiny_model(width=16, seed=seed), TRAIN, VAL, spec_at(lr), trainer, seed=seed)
                losses.append(min(row["val/loss"] for row in result.history))
            except TrainingDiverged:
                losses.append(math.inf)
        medians[lr] = statistics.median(losses)
    best = min(medians, key=medians.get)
    steps = range_test_steps(15 * (len(TRAIN) // 32))
    chosen = lr_range_test(tiny_model(width=16), TRAIN, spec_at("auto"), trainer, seed=0, steps=steps).chosen
    assert abs(math.log(chosen / best, 3)) <= 1.0, (chosen, best, medians)


# ------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def auto_project(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the prepared project fine-tuned with `finetune.optimizer.lr: auto`, no baselines."""
    project = copy_project(prepared_project, tmp_path_factory.mktemp("lr-auto") / "project")
    params = load_params(project / "params.yaml").model_dump(mode="json", by_alias=True)
    params["finetune"].update(optimizer={**params["finetune"]["optimizer"], "lr": "auto"}, compare_scratch=False,
                              linear_probe=False, linear_baseline=False)
    write_params(project, params)
    return project


@pytest.mark.slow
def test_finetune_with_auto_records_the_rate_and_its_curve(auto_project: Path) -> None:
    finetune = trainlab(["finetune"], auto_project)
    said = [line for line in finetune.stdout.splitlines() if "lr: auto chose" in line]
    assert len(said) == 1
    chosen = float(said[0].split("lr: auto chose ")[1].split()[0])
    artifacts = auto_project / "reports" / "finetune" / "artifacts"
    recorded = json.loads((artifacts / "lr_range.json").read_text())
    assert f"{recorded['chosen']:.3g}" == f"{chosen:.3g}"
    assert (artifacts / "lr_range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The schedule's peak (warmup, then cosine) is the chosen rate: no other rate trained.
    curves = json.loads((auto_project / "reports" / "finetune" / "curves.json").read_text())
    peak = max(row["lr"] for row in curves if "lr" in row)
    assert peak == pytest.approx(recorded["chosen"], rel=1e-6)
    run = stage_runs(client_of(auto_project), "finetune")[0]
    assert float(run.data.params["lr/chosen"]) == pytest.approx(recorded["chosen"], rel=1e-9)
    assert "plots/lr_range.png" in artifact_paths(client_of(auto_project), run.info.run_id)
    assert not (auto_project / ".trainlab" / "resume" / "finetune-lr.json").exists()   # dropped with the checkpoints


@pytest.mark.slow
def test_lr_find_prints_and_plots_without_training(auto_project: Path) -> None:
    finetuned = (auto_project / "models" / "finetuned.pt")
    before = finetuned.stat().st_mtime_ns if finetuned.exists() else None
    found = trainlab(["lr-find", "finetune"], auto_project)
    assert "finetune: lr: auto would choose" in found.stdout
    folder = auto_project / "reports" / "lr-find" / "finetune"
    assert (folder / "lr_range.png").is_file() and json.loads((folder / "lr_range.json").read_text())["chosen"] > 0
    assert (finetuned.stat().st_mtime_ns if finetuned.exists() else None) == before
    run = stage_runs(client_of(auto_project), "lr-find")[0]
    assert float(run.data.params["lr/chosen"]) == pytest.approx(json.loads((folder / "lr_range.json").read_text())["chosen"])


def test_a_resumed_stage_reads_the_rate_it_measured(auto_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainlab.training.lr_choice as lr_choice

    monkeypatch.chdir(auto_project)
    params = load_params("params.yaml")
    spec = params.finetune.model_copy(update={"epochs": 2, "batch_size": 32})
    request = TrainRequest(params, spec, "unit-lr", "unit")
    first = measured_lr(request, lambda: (tiny_model(width=16), None, []), TRAIN)
    assert first.spec.optimizer.lr == first.lr_test.chosen and first.lr_record.path.is_file()

    def no_second_test(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(lr_choice, "lr_range_test", no_second_test)
    again = measured_lr(request, lambda: (tiny_model(width=16), None, []), TRAIN)
    assert again.spec.optimizer.lr == first.spec.optimizer.lr
    first.lr_record.remove()
    assert not first.lr_record.path.exists()



def test_a_stage_whose_loss_never_falls_stops_with_that_line(auto_project: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import trainlab.training.lr_choice as lr_choice
    from trainlab.engine.lr_range import RangeTest

    monkeypatch.chdir(auto_project)
    params = load_params("params.yaml")
    flat = RangeTest(lrs=[1e-7, 10.0], losses=[2.3, 2.3], smoothed=[2.3, 2.3], stop="reached the end of the range")
    monkeypatch.setattr(lr_choice, "lr_range_test", lambda *args, **kwargs: flat)
    request = TrainRequest(params, params.finetune.model_copy(update={"epochs": 2, "batch_size": 32}), "flat-lr")
    with pytest.raises(ParamsError) as err:
        measured_lr(request, lambda: (tiny_model(width=16), None, []), TRAIN)
    assert str(err.value) == never_fell_line("finetune", flat) and "\n" not in str(err.value)
    assert "poor_initialization" in str(err.value)


def test_a_faint_fall_is_read_only_on_the_second_look() -> None:
    """A fall of 5 noise units: too faint for the first test (8), read on the longer one (3)."""
    from trainlab.engine.lr_range import FELL_AT_ALL, FELL_BY_NOISE, RangeTest, _choose

    lrs = list(np.geomspace(1e-6, 1.0, 100))
    smoothed = [1.0] * 60 + list(np.linspace(1.0, 0.95, 30)) + [0.95] * 10
    faint = RangeTest(lrs=lrs, losses=smoothed, smoothed=smoothed, noise=0.01, steps=100)
    assert FELL_AT_ALL < 5 < FELL_BY_NOISE
    assert not _choose(faint, FELL_BY_NOISE) and faint.chosen is None
    assert _choose(faint, FELL_AT_ALL)
    # Level 0.955 is crossed a tenth of the way from step 86 (0.9552) to 87 (0.9534): geometric.
    assert faint.chosen == pytest.approx(lrs[86] ** 0.9 * lrs[87] ** 0.1 / 10)

