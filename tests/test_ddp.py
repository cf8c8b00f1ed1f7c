"""Data-parallel training on CPU: two gloo processes equal one process with the same global batch.

The engine shards each global batch across ranks itself; DDP averages the gradients.
Without batch norm or dropout the two runs compute the same maths, so the weights agree
up to float summation order (a bound in fp32 ulps, tests/helpers/tolerance.py). The CLI
test runs the real `trainlab pretrain` with `trainer.devices: 2`, which relaunches itself
as two local processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from trainlab.engine import fit, setup_runtime, teardown_runtime
from trainlab.testing import make_project, small_params, trainlab

from helpers.distributed import SPEC, TRAIN, VAL, free_port
from helpers.engine import max_diff, tiny_model, trainer_cfg, weights
from helpers.tolerance import assert_close_fp32

GRAD_ACCUMS = (1, 2)


def _train(grad_accum: int, devices: int, runtime=None) -> tuple[dict, list]:
    trainer = trainer_cfg(batch_size=32, grad_accum=grad_accum, devices=devices, accelerator="cpu")
    model = tiny_model(depth=2)
    result = fit(model, TRAIN, VAL, SPEC, trainer, seed=0, runtime=runtime or setup_runtime(trainer))
    return weights(model), result.history


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One DDP rank, set up the way torchrun sets up a process."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    runtime = setup_runtime(trainer_cfg(devices=world_size, accelerator="cpu"))
    try:
        assert runtime.distributed and runtime.rank == rank
        results = {accum: _train(accum, world_size, runtime) for accum in GRAD_ACCUMS}
        if runtime.is_main:
            torch.save(results, out)
    finally:
        teardown_runtime()


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)

    for accum in GRAD_ACCUMS:
        ddp_weights, ddp_history = distributed[accum]
        ref_weights, ref_history = _train(accum, devices=1)
        # fp32: two ranks sum half-batch gradients and all-reduce them, in another order than one
        # process; steps carry the difference on: 64 ulps of the largest weight (measured <= 1.1,
        # native/avx2/sse42).
        assert_close_fp32(ddp_weights, ref_weights, ulps=64, msg=f"grad_accum {accum}")
        assert max_diff(ref_weights, weights(tiny_model(depth=2))) > 0.05   # training did move them
        assert len(ddp_history) == len(ref_history) == SPEC.epochs
        for ddp_row, ref_row in zip(ddp_history, ref_history):
            # Train metrics are summed over ranks, val is sharded and summed: same as one process.
            # Values ~1: 1e-5 is 84 fp32 eps (measured <= 6e-8, native/avx2/sse42).
            for key in ("epoch/train_loss", "epoch/train_acc", "val/loss", "val/acc", "epoch/lr"):
                assert ddp_row[key] == pytest.approx(ref_row[key], abs=1e-5), key


@pytest.mark.slow
def test_cli_pretrain_on_two_devices_under_torchrun(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from trainlab.models import load_model

    project = make_project(tmp_path / "project", small_params(trainer__devices=2))
    trainlab(["prepare"], project)
    trainlab(["pretrain"], project)

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`trainlab.stage` = 'pretrain'")
    assert len(runs) == 1                      # rank 1 opened no run of its own
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["world_size"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2   # pretrain.epochs

    # Written by rank 0 alone, inside that run; no half-written temporaries left behind.
    model, blob = load_model(project / "models" / "pretrained.pt")
    # The run id stays out of the file (it would change its bytes on every rerun).
    assert blob["meta"] == {"stage": "pretrain"}
    assert sorted(p.name for p in (project / "models").iterdir()) == ["manifests", "pretrained.pt"]
    assert [p.name for p in (project / "models/manifests").iterdir()] == ["pretrain.json"]
    assert not any((project / ".trainlab" / "resume").glob("*.pt"))   # resume point dropped
    x = torch.randn(3, *blob["input_shape"])
    assert model(x).shape == (3, len(blob["class_names"]))
