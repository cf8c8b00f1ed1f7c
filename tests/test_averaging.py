"""Weight averaging, `trainer.averaging: ema | swa` (engine/averaging.py), on tiny real training.

Each behaviour is checked against a reference computed here from what the loop exposes:
an EMA recomputed by hand from the weights after every step, the plain mean of the epoch-end
weights, batch-norm statistics taken from the definition (the mean of the per-batch statistics
of each norm's input), closed-form learning rates, and uninterrupted runs for resume.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

from trainlab.config import validate
from trainlab.config.schema import ScheduleConfig, TrainerConfig
from trainlab.engine import (Checkpointing, FitResult, Hook, LoopState, ParamGroup, Schedule, TrainData, fit,
                             setup_runtime, teardown_runtime)
from trainlab.engine.optim import SwaTail
from trainlab.errors import ParamsError, TrainingDiverged
from trainlab.models.networks import set_frozen
from trainlab.testing import ROOT

from helpers.distributed import free_port
from helpers.engine import (BlowUpAt, Recorder, StopAt, assert_same_weights, max_diff, signal_data, tiny_model, train_spec,
                            trainer_cfg, weights)
from helpers.tolerance import EPS32, assert_close_fp32

TRAIN, VAL = signal_data(256, 0), signal_data(64, 1)   # 8 steps per epoch at batch 32
STEPS_PER_EPOCH = 8


def bn_model(init_seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """A cnn1d with two batch norms (running statistics and an integer num_batches_tracked)."""
    return tiny_model("cnn1d", seed=init_seed, batchnorm=True, dropout=dropout)


def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def params_only(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: state[name] for name, _ in model.named_parameters()}


class StepWeights(Hook):
    """The trained model's weights after every optimizer step, and each step's lr per group."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.lrs: list[list[float]] = []

    def on_step_end(self, state: LoopState) -> None:
        self.weights.append(weights(state.model))
        self.lrs.append([group["lr"] for group in state.optimizer.param_groups])


class AverageAtEpochEnd(Hook):
    """The averaged weights at each epoch end, as the loop's averaging hook holds them."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self.weights[state.epoch] = weights(state.hooks.keyed()["Averaging"].module)


def reference_ema(steps: list[dict[str, torch.Tensor]], decay: float, warmup: bool = True) -> dict[str, torch.Tensor]:
    """The EMA by its definition, in float64: the first step's weights, then after n updates
    ema += (1 - d) (w - ema) with d = min(decay, (1 + n) / (10 + n)); counts are copied."""
    ema = {k: v.double() if v.is_floating_point() else v.clone() for k, v in steps[0].items()}
    for n, step in enumerate(steps[1:], start=1):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        for k, v in step.items():
            ema[k] = ema[k] + (1 - d) * (v.double() - ema[k]) if v.is_floating_point() else v.clone()
    return ema


@torch.no_grad()
def val_scores(model: torch.nn.Module, state: dict[str, torch.Tensor], data: TrainData) -> tuple[float, float]:
    """Cross-entropy and accuracy of `model` with `state`'s weights, in eval mode, in plain torch."""
    probe = copy.deepcopy(model)
    probe.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    probe.eval()
    logits = probe(torch.as_tensor(data.x))
    y = torch.as_tensor(data.y)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


# ---------------------------------------------------------------------------------------------
# 1. EMA
# ---------------------------------------------------------------------------------------------
def test_ema_hands_back_the_moving_average_of_the_step_weights() -> None:
    # decay 0.6: the warmup (1 + n) / (10 + n) rules the first 12 updates, 0.6 the other 11.
    steps, averages, model = StepWeights(), AverageAtEpochEnd(), bn_model()
    fit(model, TRAIN, VAL, train_spec(3), trainer_cfg(averaging="ema", ema_decay=0.6), seed=0,
        hooks=[steps, averages])
    plain = bn_model()
    fit(plain, TRAIN, VAL, train_spec(3), trainer_cfg(), seed=0)

    assert len(steps.weights) == 3 * STEPS_PER_EPOCH
    # The average watches training without changing it: the last step is plain training's.
    assert_same_weights(steps.weights[-1], weights(plain))
    got, expected = weights(model), reference_ema(steps.weights, 0.6)
    # The EMA is a contraction: each update's rounding (an ulp or two of the weights) is
    # damped by later ones, so the fp32 result stays within a few ulps of the exact value.
    assert_close_fp32(floats(got), floats(expected), ulps=16)
    # After the first epoch's 8 updates, all in the warmup: the warmup is what was applied.
    first = steps.weights[:STEPS_PER_EPOCH]
    assert_close_fp32(floats(averages.weights[0]), floats(reference_ema(first, 0.6)), ulps=16)
    assert max_diff(floats(averages.weights[0]), floats(reference_ema(first, 0.6, warmup=False))) > 1e-3
    assert max_diff(floats(got), floats(weights(plain))) > 1e-3                  # not the last weights
    # num_batches_tracked is a count: copied, not averaged (torch's EMA would truncate it).
    counts = {k: v for k, v in got.items() if not v.is_floating_point()}
    assert counts and all(v.item() == 3 * STEPS_PER_EPOCH for v in counts.values())


def _overfitting(epochs: int, trainer: dict[str, Any], early_stopping: dict, *hooks: Hook
                 ) -> tuple[torch.nn.Module, FitResult, Recorder]:
    """16 very noisy train samples, a large Adam lr: val loss falls for a few epochs, then rises."""
    model, recorder = tiny_model(width=16), Recorder()
    spec = train_spec(epochs, optimizer={"name": "adam", "lr": 0.03}, early_stopping=early_stopping)
    result = fit(model, signal_data(16, 0, noise=2.0), signal_data(200, 1, noise=2.0), spec,
                 trainer_cfg(batch_size=8, **trainer), seed=0, hooks=[*hooks, recorder])
    return model, result, recorder


def test_ema_validates_the_average_and_early_stopping_keeps_its_best() -> None:
    patience, averages = 3, AverageAtEpochEnd()
    val = signal_data(200, 1, noise=2.0)
    model, result, recorder = _overfitting(30, {"averaging": "ema", "ema_decay": 0.9},
                                           {"enabled": True, "patience": patience}, averages)
    epochs = len(result.history)
    assert epochs < 30 and result.stop_reason.startswith("early stopping")   # the setup overfits
    raw_gap = 0.0
    for epoch, row in enumerate(result.history):
        loss, acc = val_scores(model, averages.weights[epoch], val)
        assert row["val/loss"] == pytest.approx(loss, rel=64 * EPS32)   # another order of sums
        assert row["val/acc"] == acc                                    # a count of 200: exact
        raw_gap = max(raw_gap, abs(val_scores(model, recorder.epoch_weights[epoch], val)[0] - loss))
    assert raw_gap > 1e-3   # the raw weights score otherwise: the rows are the average's

    losses = [row["val/loss"] for row in result.history]
    best = losses.index(min(losses))
    assert result.best_epoch == best and epochs == best + 1 + patience
    assert_same_weights(weights(model), averages.weights[best])     # the best average, restored
    assert max_diff(weights(model), recorder.epoch_weights[best]) > 1e-3


def test_ema_without_early_stopping_hands_back_the_last_average() -> None:
    averages = AverageAtEpochEnd()
    model, result, recorder = _overfitting(6, {"averaging": "ema", "ema_decay": 0.9}, {"enabled": False}, averages)
    assert result.stop_reason == "completed all epochs"
    assert_same_weights(weights(model), averages.weights[5])
    assert max_diff(weights(model), recorder.epoch_weights[5]) > 1e-3


def test_ema_divergence_falls_back_to_the_best_average() -> None:
    averages, model = AverageAtEpochEnd(), tiny_model()
    spec = train_spec(3, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.0})
    with pytest.raises(TrainingDiverged, match=r"kept the best weights \(epoch 1\)"):
        fit(model, signal_data(128, 0), signal_data(32, 1), spec, trainer_cfg(averaging="ema"), seed=0,
            hooks=[BlowUpAt(1, lr=1e8), averages])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert_same_weights(weights(model), averages.weights[0])


# ---------------------------------------------------------------------------------------------
# 2. SWA's learning rate
# ---------------------------------------------------------------------------------------------
def test_swa_tail_anneals_from_the_schedule_to_a_constant() -> None:
    cosine = ScheduleConfig.model_validate({"name": "cosine", "warmup_epochs": 0})
    schedule = Schedule(cosine, steps_per_epoch=10, epochs=4, swa=SwaTail(start_step=20, anneal_steps=10, factor=0.1))
    plain = Schedule(cosine, steps_per_epoch=10, epochs=4)
    assert [schedule.factor(s) for s in range(21)] == [plain.factor(s) for s in range(21)]   # up to the start
    assert schedule.factor(20) == pytest.approx(0.5)
    assert schedule.factor(25) == pytest.approx(0.1 + 0.4 * 0.5)                            # half way down
    assert [schedule.factor(s) for s in range(30, 60)] == [0.1] * 30                         # then constant
    at_once = Schedule(cosine, steps_per_epoch=10, epochs=4, swa=SwaTail(20, 0, 0.1))
    assert at_once.factor(19) == plain.factor(19) and at_once.factor(20) == 0.1

    # plateau: the tail starts from the scale reached, which val no longer lowers.
    plateau = Schedule(ScheduleConfig.model_validate({"name": "plateau", "warmup_epochs": 0, "plateau_patience": 0,
                                                      "gamma": 0.5}), 10, 4, swa=SwaTail(20, 10, 0.1))
    plateau.end_epoch(1.0, True, step=10)
    plateau.end_epoch(2.0, True, step=20)   # worse, but SWA has started: no reduction
    assert plateau.plateau_scale == 1.0 and plateau.factor(20) == 1.0
    plateau.plateau_bad_epochs, plateau.swa = 0, None
    plateau.end_epoch(2.0, True, step=20)
    assert plateau.plateau_scale == 0.5    # the control: without SWA the same epoch reduces


def test_swa_lr_tail_keeps_each_groups_share_of_the_rate() -> None:
    base, swa_lr, steps, model = 0.01, 0.2, StepWeights(), bn_model()
    groups = [ParamGroup("backbone", list(model.backbone.parameters()), 0.1),
              ParamGroup("head", list(model.head.parameters()), 1.0)]
    spec = train_spec(6, optimizer={"lr": base}, schedule={"name": "cosine"})
    trainer = trainer_cfg(averaging="swa", swa_start=0.5, swa_lr=swa_lr, swa_anneal_epochs=1)
    result = fit(model, TRAIN, VAL, spec, trainer, seed=0, hooks=[steps], groups=groups)

    total, start, anneal = 6 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH, STEPS_PER_EPOCH
    assert all(backbone == pytest.approx(0.1 * head, rel=1e-12) for backbone, head in steps.lrs)

    def expected(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, start) / total))
        if step < start:
            return cosine
        done = min(step - start, anneal)
        return swa_lr + (cosine - swa_lr) * 0.5 * (1 + math.cos(math.pi * done / anneal))

    head = [lrs[1] for lrs in steps.lrs]
    assert head == pytest.approx([base * expected(s) for s in range(total)], rel=1e-12)
    assert head[start] == pytest.approx(base * 0.5) and set(head[start + anneal:]) == {base * swa_lr}
    assert result.stop_reason == "completed all epochs; SWA averaged the weights of epochs 4-6"


# ---------------------------------------------------------------------------------------------
# 3. SWA's average and its batch-norm statistics
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def batchnorm_statistics(model: torch.nn.Module, data: TrainData, batch: int) -> dict[str, torch.Tensor]:
    """Each batch norm's running statistics by definition, with momentum None: the mean over the
    training batches of each batch's per-channel input mean and unbiased variance."""
    probe, seen = copy.deepcopy(model).train(), {}

    def record(name: str):
        def hook(_module, inputs):
            x = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1).double()   # channels first
            seen.setdefault(name, []).append((x.mean(1), x.var(1, unbiased=True)))
        return hook

    for name, module in probe.named_modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.register_forward_pre_hook(record(name))
    x = torch.as_tensor(data.x)
    for start in range(0, len(x), batch):
        probe(x[start:start + batch])
    stats = {}
    for name, per_batch in seen.items():
        stats[f"{name}.running_mean"] = torch.stack([m for m, _ in per_batch]).mean(0)
        stats[f"{name}.running_var"] = torch.stack([v for _, v in per_batch]).mean(0)
    return stats


def _swa_fit(model: torch.nn.Module, *hooks: Hook) -> tuple[FitResult, Recorder]:
    """4 epochs, the last two averaged."""
    recorder = Recorder()
    result = fit(model, TRAIN, VAL, train_spec(4), trainer_cfg(averaging="swa", swa_start=0.5), seed=0,
                 hooks=[*hooks, recorder])
    return result, recorder


def test_swa_hands_back_the_epoch_average_with_batchnorm_refitted() -> None:
    model = bn_model()
    result, recorder = _swa_fit(model)
    out = weights(model)
    # The parameters: the mean of the weights at the ends of epochs 3 and 4 (torch keeps a
    # running mean, a + (b - a) / 2: an ulp or so from (a + b) / 2).
    mean = {k: (recorder.epoch_weights[2][k] + recorder.epoch_weights[3][k]) / 2 for k in params_only(model, out)}
    assert_close_fp32(params_only(model, out), mean, ulps=2)

    # The statistics: recomputed for the averaged weights on the training split, batch 32.
    stats = batchnorm_statistics(model, TRAIN, 32)
    assert len(stats) == 4
    # Each batch's statistics come out of a sum over 32 x 32 values in another order: a few
    # hundred fp32 ulps of the largest statistic at most.
    assert_close_fp32({k: out[k] for k in stats}, stats, ulps=256)
    raw_last = recorder.epoch_weights[3]
    assert max_diff({k: raw_last[k] for k in stats}, stats) > 1e-3   # not the trained model's own
    assert all(out[k].item() == len(TRAIN) // 32 for k in out if k.endswith("num_batches_tracked"))

    # The last epoch validated the average, and it is the kept epoch.
    loss, acc = val_scores(model, out, VAL)
    assert result.history[-1]["val/loss"] == pytest.approx(loss, rel=64 * EPS32)
    assert result.history[-1]["val/acc"] == acc
    assert result.best_epoch == 3 and result.best_value == result.history[-1]["val/loss"]
    assert result.stop_reason == "completed all epochs; SWA averaged the weights of epochs 3-4"


def frozen_stem_model() -> torch.nn.Module:
    """bn_model with its stem frozen (finetune.freeze), whose statistics are not the reset values
    (as a pretrained backbone's are not)."""
    model = bn_model()
    set_frozen(model, ["stem"])
    norm = model.backbone.stem[2]
    norm.running_mean.fill_(0.3), norm.running_var.fill_(2.0)
    return model


def test_swa_leaves_frozen_blocks_batchnorm_statistics_alone() -> None:
    model = frozen_stem_model()
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.stem.2.running")}
    _swa_fit(model)
    after = model.state_dict()
    assert_same_weights({k: after[k] for k in frozen_before}, frozen_before)
    # The block after it refits on the stem's trained statistics (which the probe's eval-mode stem uses).
    stats = batchnorm_statistics(model, TRAIN, 32)
    trained = {k: after[k] for k in stats if k.startswith("backbone.block1")}
    assert len(trained) == 2
    assert_close_fp32(trained, {k: stats[k] for k in trained}, ulps=256)


class UnfreezeAt(Hook):
    """Gradual unfreezing in one step: every block trains from epoch `epoch` on."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, state: LoopState) -> None:
        if state.epoch == self.epoch:
            set_frozen(state.model, [])


def test_swa_refits_a_block_unfrozen_during_the_fit() -> None:
    model = frozen_stem_model()
    _swa_fit(model, UnfreezeAt(1))
    stats = batchnorm_statistics(model, TRAIN, 32)   # nothing frozen now: every norm in training mode
    assert len(stats) == 4
    assert_close_fp32({k: model.state_dict()[k] for k in stats}, stats, ulps=256)


# ---------------------------------------------------------------------------------------------
# 4. SWA and early stopping
# ---------------------------------------------------------------------------------------------
def test_early_stopping_before_swa_starts_averages_nothing() -> None:
    model, result, recorder = _overfitting(12, {"averaging": "swa", "swa_start": 0.75},
                                           {"enabled": True, "patience": 2})
    epochs = len(result.history)
    assert epochs < 9                                    # stopped before epoch 10, SWA's first
    assert result.stop_reason.startswith("early stopping")
    assert result.stop_reason.endswith("; SWA would have started at epoch 10: no weights averaged")
    assert_same_weights(weights(model), recorder.epoch_weights[result.best_epoch])


def test_early_stopping_does_not_stop_a_run_that_swa_averages() -> None:
    # swa_lr 1 over a constant schedule keeps the rate: the run trains as it would without SWA,
    # and that run stops early.
    plain_model, plain, _ = _overfitting(12, {}, {"enabled": True, "patience": 2})
    assert len(plain.history) < 12 and plain.stop_reason.startswith("early stopping")

    swa = {"averaging": "swa", "swa_start": 0.25, "swa_lr": 1.0}
    model, result, recorder = _overfitting(12, swa, {"enabled": True, "patience": 2})
    assert len(result.history) == 12
    assert result.stop_reason == "completed all epochs; SWA averaged the weights of epochs 4-12"
    assert result.best_epoch == 11
    # The average of epochs 4-12, not the best epoch's weights (no batch norm to refit here).
    mean = {k: torch.stack([recorder.epoch_weights[e][k] for e in range(3, 12)]).mean(0) for k in weights(model)}
    assert_close_fp32(weights(model), mean, ulps=8)
    assert max_diff(weights(model), recorder.epoch_weights[plain.best_epoch]) > 1e-3


# ---------------------------------------------------------------------------------------------
# 5. kill and resume
# ---------------------------------------------------------------------------------------------
SPEC = train_spec(4, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                  schedule={"name": "cosine", "warmup_epochs": 1}, early_stopping={"enabled": True, "patience": 10})
EVERY = 3
AVERAGING = {"ema": {"averaging": "ema", "ema_decay": 0.9}, "swa": {"averaging": "swa", "swa_start": 0.25}}
# (mode, where the first run is killed, the checkpoint's step, updates in the checkpoint's average)
KILLS = [("ema", StopAt(epoch=2), 16, 16), ("ema", StopAt(step=13), 12, 12),
         ("swa", StopAt(epoch=3), 24, 2), ("swa", StopAt(step=29), 27, 2)]
TIMING = ("epoch/time_s", "epoch/samples_per_s")


def _resumable(mode: str, *hooks: Hook, init_seed: int = 0,
               checkpointing: Checkpointing | None = None) -> tuple[torch.nn.Module, FitResult]:
    model = bn_model(init_seed, dropout=0.2)
    trainer = trainer_cfg(checkpoint_every_steps=EVERY, **AVERAGING[mode])
    return model, fit(model, TRAIN, VAL, SPEC, trainer, seed=0, hooks=list(hooks), checkpointing=checkpointing)


def _history(result: FitResult) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in result.history]


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, tuple[dict[str, torch.Tensor], FitResult]]:
    runs = {}
    for mode in AVERAGING:
        model, result = _resumable(mode)
        runs[mode] = weights(model), result
    return runs


@pytest.mark.parametrize(("mode", "stop", "step", "updates"), KILLS,
                         ids=[f"{m}-{'epoch' if s.epoch is not None else 'step'}" for m, s, _, _ in KILLS])
def test_kill_and_resume_is_bit_identical(tmp_path: Path, uninterrupted, mode: str, stop: StopAt, step: int,
                                          updates: int) -> None:
    ref_weights, ref_result = uninterrupted[mode]
    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        # Step checkpoints only where the kill is mid-epoch: an epoch kill resumes from an epoch end.
        _resumable(mode, stop, checkpointing=Checkpointing(path, "fp", EVERY if stop.step else None))
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["counters"]["step"] == step
    saved = blob["hooks"]["Averaging"]
    assert saved["averaged"]["n_averaged"].item() == updates and saved["bn_fitted"] is False

    # Another initialisation: whatever the rerun ends with comes from the checkpoint.
    model, result = _resumable(mode, init_seed=1, checkpointing=Checkpointing(path, "fp", EVERY))
    assert result.resumed_from_step == step
    assert_same_weights(weights(model), ref_weights)
    assert _history(result) == _history(ref_result)
    assert (result.stop_reason, result.best_epoch, result.best_value) == \
        (ref_result.stop_reason, ref_result.best_epoch, ref_result.best_value)

    # Rerun after completion: nothing left to train, the same weights handed back.
    model, again = _resumable(mode, init_seed=1, checkpointing=Checkpointing(path, "fp", EVERY))
    assert again.resumed_from_step == 4 * STEPS_PER_EPOCH
    assert_same_weights(weights(model), ref_weights)
    assert again.stop_reason == ref_result.stop_reason


# ---------------------------------------------------------------------------------------------
# 6. settings
# ---------------------------------------------------------------------------------------------
REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


def _params_error(**trainer: Any) -> str:
    raw = copy.deepcopy(REAL)
    raw["trainer"].update(trainer)
    with pytest.raises(ParamsError) as info:
        validate(raw, source="params.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("strategy", "averaging"), [("fsdp", "ema"), ("pipeline", "swa")])
def test_averaging_is_refused_where_no_rank_holds_the_whole_model(strategy: str, averaging: str) -> None:
    message = _params_error(devices=2, strategy=strategy, averaging=averaging)
    assert message == (f"params.yaml: trainer: averaging {averaging} is not offered with strategy {strategy} "
                       f"(every rank would hold a full copy of the model); use ddp or averaging: none")
    # ddp, and any strategy on one device (plain training), are fine.
    assert TrainerConfig(devices=2, strategy="ddp", averaging=averaging).averaging == averaging
    assert TrainerConfig(devices=1, strategy=strategy, averaging=averaging).averaging == averaging


@pytest.mark.parametrize(("key", "value"), [
    ("averaging", "mean"), ("averaging", None), ("ema_decay", 1.0), ("ema_decay", 0.0), ("swa_start", 0.0),
    ("swa_start", 1.0), ("swa_lr", 0.0), ("swa_lr", 1.5), ("swa_anneal_epochs", -1),
    ("swa_anneal_epochs", 1.5), ("swa_anneal_epochs", True)])
def test_bad_averaging_values_are_refused_naming_the_key(key: str, value: Any) -> None:
    assert _params_error(**{key: value}).startswith(f"params.yaml: trainer.{key}: ")


def test_averaging_is_off_by_default_and_part_of_the_maths() -> None:
    assert TrainerConfig().averaging == "none" and REAL["trainer"]["averaging"] == "none"
    base = TrainerConfig().maths()
    changed = {"averaging": "ema", "ema_decay": 0.99, "swa_start": 0.5, "swa_lr": 0.05, "swa_anneal_epochs": 2}
    for key, value in changed.items():
        assert key in base
        # Another value is another training: a resume checkpoint or search study does not carry over.
        assert TrainerConfig(**{key: value}).maths() != base, key


# ---------------------------------------------------------------------------------------------
# 7. two gloo ranks
# ---------------------------------------------------------------------------------------------
def _rank(rank: int, world_size: int, port: int, folder: str) -> None:
    """One DDP rank (set up as torchrun sets up a process): an ema and an swa fit, weights saved."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    runtime = setup_runtime(trainer_cfg(devices=world_size, accelerator="cpu"))
    try:
        out = {}
        for mode in AVERAGING:
            model = bn_model()
            trainer = trainer_cfg(devices=world_size, accelerator="cpu", **AVERAGING[mode])
            result = fit(model, TRAIN, VAL, train_spec(3), trainer, seed=0, runtime=runtime)
            out[mode] = weights(model), _history(result)
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        teardown_runtime()


def test_every_rank_hands_back_the_same_average(tmp_path: Path) -> None:
    """On CPU each rank's batch norms track their own shard of the batch (no SyncBatchNorm on
    gloo): the EMA's statistics are rank 0's, SWA's are refitted on the whole split on every rank."""
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for mode in AVERAGING:
        (first, first_history), (second, second_history) = ranks[0][mode], ranks[1][mode]
        assert_same_weights(first, second)
        assert first_history == second_history
        assert any(k.endswith("running_mean") for k in first)


# ------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module", params=["ema", "swa"])
def averaged_project(request, prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the prepared project fine-tuned with trainer.averaging (a validation split of
    its own, no cross-validation; no baselines)."""
    from trainlab.config import load_params
    from trainlab.testing import copy_project, trainlab, write_params

    project = copy_project(prepared_project, tmp_path_factory.mktemp(f"avg-{request.param}") / "project")
    params = load_params(project / "params.yaml").model_dump(mode="json", by_alias=True)
    params["trainer"]["averaging"] = request.param
    params["selection"]["cv_below"] = 0
    params["finetune"].update(epochs=4, compare_scratch=False, linear_probe=False, linear_baseline=False)
    write_params(project, params)
    trainlab(["finetune"], project)
    return project, request.param


@pytest.mark.slow
def test_the_stage_selects_writes_and_serves_the_averaged_weights(averaged_project: tuple[Path, str]) -> None:
    import json

    import mlflow

    from trainlab.data import load_split
    from trainlab.models import load_model

    project, mode = averaged_project
    model, saved = load_model(project / "models/finetuned.pt")
    val = load_split(project / "data/prepared", "target", "val")
    with torch.no_grad():
        logits = model(torch.as_tensor(val.x)).double()
    # Selection read the scores of the weights written: the history's kept epoch validated them.
    details = json.loads((project / "reports/finetune/details.json").read_text())
    smoothing = 0.1   # finetune.loss.label_smoothing as shipped
    log_p = logits.log_softmax(-1)
    y = torch.as_tensor(val.y)
    loss = ((1 - smoothing) * F.nll_loss(log_p, y) - smoothing * log_p.mean(-1).mean()).item()
    assert details["val/loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert details["val/acc"] == pytest.approx((logits.argmax(-1) == y).double().mean().item())
    # The MLflow model (what evaluate registers and `mlflow models serve` loads) is the same weights.
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab").experiment_id
    (logged,) = [m for m in client.search_logged_models(experiment_ids=[experiment]) if m.name == "finetuned"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/{logged.model_id}").unwrap_python_model()
    for name, tensor in model.state_dict().items():   # the served module holds the written weights
        assert torch.equal(served.module.state_dict()[name].cpu(), tensor), name
    assert served.temperature == pytest.approx(saved["meta"]["temperature"])
    run = client.get_run(logged.source_run_id)
    if mode == "swa":
        assert "SWA averaged the weights of epoch" in run.data.tags["trainlab.stop_reason"]
    else:
        assert run.data.params["trainer.averaging"] == "ema"
