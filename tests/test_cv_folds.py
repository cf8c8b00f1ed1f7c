"""Cross-validation folds shared over processes (trainlab.training.jobs): the same numbers as
folds trained one after another, failures and pruning that reach the stage, no process left."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trainlab.config import validate
from trainlab.data import TaskInfo
from trainlab.engine import Hook, TrainData
from trainlab.errors import TrainingDiverged
from trainlab.training.curves import TIMING_KEYS
from trainlab.models import build_model
from trainlab.testing import small_params
from trainlab.training import TrainRequest, train_target


class Pids(Hook):
    """Appends the pid of the process that trains each fit to a file (fits run in children too)."""

    def __init__(self, log: Path, fail_in_child: bool = False):
        self.log, self.fail_in_child, self.parent = log, fail_in_child, os.getpid()

    def on_fit_start(self, state) -> None:
        with self.log.open("a") as out:
            out.write(f"{os.getpid()}\n")
        if self.fail_in_child and os.getpid() != self.parent:
            raise TrainingDiverged("training diverged: a fold in a child process")


def setup(tmp_path: Path, monkeypatch, threads: int):
    (tmp_path / "data/prepared").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/prepared/manifest.json").write_text(json.dumps({"tasks": {}}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 2
    x[y == 1] += 0.7
    data = (TrainData(x[:34], y[:34]), TrainData(x[34:], y[34:]), TaskInfo(2, ["a", "b"], (6,)))
    params = validate(small_params(**{"model.arch": "mlp", "model.width": 8, "model.depth": 1,
                                      "trainer.threads": threads, "trainer.progress": "off",
                                      "finetune.epochs": 4, "finetune.batch_size": 8, "selection.folds": 4}))
    return params, data


def factory(params, info: TaskInfo, hook: Hook):
    def build():
        torch.manual_seed(params.seed)
        return build_model(params.model, info.input_shape, info.num_classes), None, [hook]
    return build


def pids_of(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()]


def test_folds_shared_over_two_processes_give_the_serial_results(tmp_path: Path, monkeypatch) -> None:
    runs = {}
    for threads in (1, 2):
        params, data = setup(tmp_path / f"t{threads}", monkeypatch, threads)
        log = tmp_path / f"pids{threads}"
        trained = train_target(TrainRequest(params, params.finetune, "r"),
                               factory(params, data[2], Pids(log)), data)
        runs[threads] = (trained, pids_of(log))
    (serial, serial_pids), (shared, shared_pids) = runs[1], runs[2]
    assert set(serial_pids) == {os.getpid()}                     # 4 folds and the refit, here
    # Here: fold 0, the refit (alongside the folds, every epoch kept), fold 2; a child: folds 1 and 3.
    assert len(shared_pids) == 5 and len(set(shared_pids)) == 2
    assert shared_pids.count(os.getpid()) == 3
    assert shared.cross_validated and shared.heldout.folds == 4
    np.testing.assert_array_equal(shared.heldout.outputs, serial.heldout.outputs)
    for a, b in zip(shared.model.state_dict().values(), serial.model.state_dict().values()):
        assert torch.equal(a, b)
    assert shared.result.best_epoch == serial.result.best_epoch and shared.result.steps == serial.result.steps
    assert shared.result.stop_reason == serial.result.stop_reason
    untimed = lambda rows: [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]   # noqa: E731
    assert untimed(shared.result.history) == untimed(serial.result.history)
    assert {k: v for k, v in shared.curves.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in serial.curves.items() if k not in TIMING_KEYS}
    assert not multiprocessing.active_children()


def test_a_fold_failing_in_a_child_process_fails_the_fit(tmp_path: Path, monkeypatch) -> None:
    params, data = setup(tmp_path, monkeypatch, threads=2)
    log = tmp_path / "pids"
    with pytest.raises(TrainingDiverged, match="a fold in a child process"):
        train_target(TrainRequest(params, params.finetune, "r"),
                     factory(params, data[2], Pids(log, fail_in_child=True)), data)
    assert len(set(pids_of(log))) == 2
    assert not multiprocessing.active_children()


def test_a_trial_pruned_in_its_first_fold_stops_the_other_folds(tmp_path: Path, monkeypatch) -> None:
    class Prune(Exception):
        pass

    class PruneAtEpoch2(Hook):
        def on_epoch_end(self, state, metrics):
            if state.epoch == 1:
                raise Prune

    params, data = setup(tmp_path, monkeypatch, threads=2)
    with pytest.raises(Prune):
        train_target(TrainRequest(params, params.finetune, "r", pruning=PruneAtEpoch2()), data=data)
    assert not multiprocessing.active_children()   # the child's folds were stopped with the trial


CHILD_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import test_cv_folds as t

class Chdir:
    def chdir(self, path):
        import os
        os.chdir(path)

params, data = t.setup(Path({tmp!r}), Chdir(), threads=2)
params = params.model_copy(update={{"finetune": params.finetune.model_copy(update={{"epochs": 100000}})}})
t.train_target(t.TrainRequest(params, params.finetune, "r"),
               t.factory(params, data[2], t.Pids(Path({log!r}))), data)
"""


def test_fold_processes_die_with_a_killed_stage(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "pids"
    script = CHILD_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), log=str(log))
    stage = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and len(set(pids_of(log))) == 2):
            time.sleep(0.2)
        pids = set(pids_of(log))
        assert stage.pid in pids and len(pids) == 2, "the stage never started a fold process"
        (child,) = pids - {stage.pid}
        stage.send_signal(signal.SIGKILL)
        stage.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and \
                "Z" not in Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[-1].split()[0]:
            time.sleep(0.1)
        alive = Path(f"/proc/{child}").exists() and \
            "Z" not in Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        assert not alive, "a fold process outlived its SIGKILLed stage"
    finally:
        stage.kill()


def test_a_refit_resumed_past_the_chosen_epoch_is_refit_to_it_with_the_serial_result(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """A stage rerun after the refit alongside the folds had checkpointed its last epoch: the
    resumed refit has no per-epoch weights to take the chosen epoch from, so it is refit to that
    epoch after the folds, and ends with the weights the serial path gives."""
    params, data = setup(tmp_path / "serial", monkeypatch, threads=1)
    serial = train_target(TrainRequest(params, params.finetune, "r"),
                          factory(params, data[2], Hook()), data)
    params, data = setup(tmp_path / "shared", monkeypatch, threads=2)
    runs = []
    for _ in range(2):   # the first run's resume checkpoints stay (no finish()): the second resumes
        log = tmp_path / f"pids{len(runs)}"
        runs.append(train_target(TrainRequest(params, params.finetune, "r"),
                                 factory(params, data[2], Pids(log)), data))
    assert serial.result.best_epoch < params.finetune.epochs - 1, "the chosen epoch must precede the last"
    assert len(pids_of(tmp_path / "pids1")) == 6   # 4 folds and the refit resumed, then the serial refit
    for a, b in zip(runs[1].model.state_dict().values(), serial.model.state_dict().values()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(runs[1].heldout.outputs, serial.heldout.outputs)


def test_folds_score_the_weights_each_epoch_validated_under_ema(tmp_path: Path, monkeypatch) -> None:
    """With trainer.averaging ema an epoch validates the average: the folds' held-out predictions
    are the average's, so the last epoch's are the fit's output model's (early stopping off)."""
    from trainlab.config.schema import TrainerConfig
    from trainlab.engine import fit
    from trainlab.heldout import predict_outputs
    from trainlab.training.folds import EpochPredictions

    params, (train, val, info) = setup(tmp_path, monkeypatch, 1)
    model = factory(params, info, Hook())()[0]
    predictions = EpochPredictions(val.x)
    trainer = TrainerConfig.model_validate({**params.trainer.model_dump(), "averaging": "ema"})
    spec = params.finetune.model_copy(update={"early_stopping": params.finetune.early_stopping.model_copy(
        update={"enabled": False})})
    fit(model, train, val, spec, trainer, seed=0, hooks=[predictions])
    np.testing.assert_array_equal(predictions.per_epoch[-1], predict_outputs(model, val.x).astype(np.float32))


def test_under_swa_cross_validation_picks_no_epoch_inside_the_average(tmp_path: Path, monkeypatch) -> None:
    """SWA validates its average in the last epoch only: an epoch after its start and before the
    last would be refit to an average no fold scored, so cross-validation never picks one."""
    from trainlab.training.cross_validation import epochs_with_own_weights

    params, data = setup(tmp_path, monkeypatch, 1)
    swa = params.trainer.model_copy(update={"averaging": "swa", "swa_start": 0.5})
    assert epochs_with_own_weights(swa, 4) == [0, 1, 3]
    assert epochs_with_own_weights(params.trainer, 4) == [0, 1, 2, 3]
    params = params.model_copy(update={"trainer": swa})
    trained = train_target(TrainRequest(params, params.finetune, "r"), factory(params, data[2], Hook()), data)
    assert trained.cross_validated and trained.result.best_epoch in (0, 1, 3)
