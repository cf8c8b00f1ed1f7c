"""`trainer.strategy: fsdp | pipeline` on two gloo processes on CPU.

- Both reach the weights of one process on the same data and global batch (as DDP does in
  test_ddp.py): fsdp shards parameters, gradients and AdamW state and averages gradients
  with a reduce-scatter; pipeline runs the stages on the whole batch, micro-batch by
  micro-batch. Without batch norm or dropout the maths is the same, so the weights agree
  up to float summation order (64 fp32 ulps of the largest weight, as for DDP).
- A sharded run interrupted mid-epoch resumes from its checkpoint bit-identical to an
  uninterrupted sharded run (batch norm, dropout, AdamW, cosine, early stopping's best).
- Checkpoints are the single-process format: a sharded run's checkpoint resumes in one
  process and a single-process checkpoint in a sharded run.
The CLI test runs `dvc repro pretrain` in a temporary repo with each strategy, killing the
fsdp run with SIGKILL mid-run and resuming it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from trainlab.engine import Checkpointing, fit, setup_runtime, teardown_runtime
from trainlab.errors import ParamsError
from trainlab.testing import BIN, make_project, run, small_params

from helpers.distributed import SPEC as DDP_SPEC, TRAIN as DDP_TRAIN, VAL as DDP_VAL, free_port
from helpers.engine import StopAt, assert_same_weights, max_diff, signal_data, tiny_model, train_spec, trainer_cfg, weights
from helpers.tolerance import assert_close_fp32

STRATEGIES = ("fsdp", "pipeline")
GRAD_ACCUMS = (2,)   # micro-batches, and an uneven last batch (249 = 7 x 32 + 25)
TOLERANCE = 1e-5   # the metrics (~1) against one process's: 84 fp32 eps (measured <= 7e-8)
# Resume: 256 samples at batch 32 is 8 steps per epoch; checkpoints every 3 steps; stopped at 13.
RESUME_TRAIN, RESUME_VAL = signal_data(256, 0), signal_data(64, 1)
RESUME_SPEC = train_spec(3, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                         schedule={"name": "cosine", "warmup_epochs": 1},
                         early_stopping={"enabled": True, "patience": 10})
EVERY, STOP = 3, 13


def _trainer(strategy: str, devices: int, **extra):
    # Clipping on: the norm of a gradient that no rank holds whole must still be the global one.
    return trainer_cfg(batch_size=32, devices=devices, accelerator="cpu", strategy=strategy,
                       clip_grad_norm=0.5, **extra)


def _match(strategy: str, grad_accum: int, devices: int, runtime=None) -> tuple[dict, list]:
    trainer = _trainer(strategy, devices, grad_accum=grad_accum)
    model = tiny_model(depth=2)
    result = fit(model, DDP_TRAIN, DDP_VAL, DDP_SPEC, trainer, seed=0, runtime=runtime or setup_runtime(trainer))
    return weights(model), result.history


def _match_on(strategy: str, val, runtime) -> None:
    fit(tiny_model(depth=2), DDP_TRAIN, val, train_spec(1), _trainer(strategy, 2), seed=0, runtime=runtime)


def _resume_model(init_seed: int = 0) -> torch.nn.Module:
    return tiny_model("cnn1d", seed=init_seed, batchnorm=True, dropout=0.2, depth=2)


def _resume_fit(model, strategy: str, devices: int, path: Path | None, *hooks, runtime=None):
    trainer = _trainer(strategy, devices)
    extra = [Checkpointing(path, "fp", EVERY)] if path else []
    return fit(model, RESUME_TRAIN, RESUME_VAL, RESUME_SPEC, trainer, seed=0, hooks=[*hooks, *extra],
               runtime=runtime or setup_runtime(trainer))


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    runtime = setup_runtime(trainer_cfg(devices=world_size, accelerator="cpu"))
    out = Path(folder)
    try:
        results: dict = {}
        for strategy in STRATEGIES:
            # A one-sample val split: rank 1's shard is empty, yet it must join every forward.
            _match_on(strategy, signal_data(1, 2), runtime)
            for accum in GRAD_ACCUMS:
                results[strategy, accum] = _match(strategy, accum, world_size, runtime)
            model = _resume_model()
            result = _resume_fit(model, strategy, world_size, None, runtime=runtime)
            results[strategy, "uninterrupted"] = weights(model)
            results[strategy, "val_loss"] = [row["val/loss"] for row in result.history]
            path = out / f"{strategy}.pt"
            try:
                _resume_fit(_resume_model(), strategy, world_size, path, StopAt(step=STOP), runtime=runtime)
            except KeyboardInterrupt:
                pass
            if runtime.is_main:   # the resumed run below goes on writing to `path`
                shutil.copy(path, out / f"{strategy}-killed.pt")
            torch.distributed.barrier()
            model = _resume_model(init_seed=1)   # what it ends with must come from the checkpoint
            result = _resume_fit(model, strategy, world_size, path, runtime=runtime)
            results[strategy, "resumed"] = weights(model), result.resumed_from_step
            # The other way round: a checkpoint written by one process, resumed sharded.
            single = out / f"single-{strategy}.pt"
            model = _resume_model(init_seed=1)
            result = _resume_fit(model, strategy, world_size, single, runtime=runtime)
            results[strategy, "from_single"] = weights(model), result.resumed_from_step
        if runtime.is_main:
            torch.save(results, out / "results.pt")
    finally:
        teardown_runtime()


def _single_checkpoint(path: Path) -> None:
    """A one-process run stopped at step STOP: its checkpoint, for the sharded ranks to resume."""
    with pytest.raises(KeyboardInterrupt):
        _resume_fit(_resume_model(), "ddp", 1, path, StopAt(step=STOP))


def test_fsdp_and_pipeline_match_one_process_and_resume_from_any_checkpoint(tmp_path: Path) -> None:
    for strategy in STRATEGIES:
        _single_checkpoint(tmp_path / f"single-{strategy}.pt")
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = torch.load(tmp_path / "results.pt", weights_only=True)

    single_resume = _resume_model()
    _resume_fit(single_resume, "ddp", 1, None)
    for strategy in STRATEGIES:
        for accum in GRAD_ACCUMS:
            got, history = results[strategy, accum]
            ref, ref_history = _match(strategy, accum, devices=1)
            # fp32: sharded sums and reduce-scatters reorder every step's gradient, and the steps
            # carry that on: 64 ulps of the largest weight (measured <= 1.4, native/avx2/sse42).
            assert_close_fp32(got, ref, ulps=64, msg=f"{strategy}, grad_accum {accum}")
            assert max_diff(ref, weights(tiny_model(depth=2))) > 0.05      # training did move them
            for row, ref_row in zip(history, ref_history, strict=True):
                for key in ("epoch/train_loss", "epoch/train_acc", "val/loss", "val/acc", "epoch/lr"):
                    assert row[key] == pytest.approx(ref_row[key], abs=TOLERANCE), (strategy, key)

        # Batch-norm statistics stay finite (a stage's own shape inference once made them NaN).
        assert all(torch.isfinite(v).all() for v in results[strategy, "uninterrupted"].values())
        assert all(0 < loss < 2.5 for loss in results[strategy, "val_loss"]), results[strategy, "val_loss"]
        # Killed at step 13, resumed from the step-12 checkpoint: bit-identical to no kill.
        resumed, from_step = results[strategy, "resumed"]
        assert from_step == 12
        assert_same_weights(resumed, results[strategy, "uninterrupted"])

        # The sharded checkpoint is the single-process format: it resumes in one process.
        killed = torch.load(tmp_path / f"{strategy}-killed.pt", weights_only=True)
        assert killed["counters"]["step"] == 12
        assert killed["model"].keys() == single_resume.state_dict().keys()
        model = _resume_model(init_seed=1)
        assert _resume_fit(model, "ddp", 1, tmp_path / f"{strategy}-killed.pt").resumed_from_step == 12
        # ... and a one-process checkpoint resumes sharded.
        assert results[strategy, "from_single"][1] == 12
        # Batch norm sees other batches (fsdp: half of each) and dropout other masks, so
        # across process counts the weights are close, not equal.
        for other in (weights(model), results[strategy, "from_single"][0]):
            assert max_diff(other, weights(single_resume)) < 0.5
            assert max_diff(other, weights(_resume_model(init_seed=1))) > 0.05


def test_pipeline_needs_a_block_per_rank() -> None:
    from trainlab.engine.pipeline import split_stages

    model = tiny_model(depth=2)                      # stem, block1, block2 and the head
    assert [len(stage) for stage in split_stages(model, 4)] == [1, 1, 1, 1]
    with pytest.raises(ParamsError, match=r"trainer.devices: 5 pipeline stages need at least 5 blocks"):
        split_stages(model, 5)


def test_strategy_combinations_that_cannot_work_are_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="precision fp16 needs strategy ddp"):
        trainer_cfg(devices=2, strategy="fsdp", precision="fp16")
    with pytest.raises(ValueError, match="compile is not supported with strategy pipeline"):
        trainer_cfg(devices=2, strategy="pipeline", compile=True)
    assert trainer_cfg(devices=1, strategy="pipeline", precision="fp16").strategy == "pipeline"   # no-op


@pytest.mark.slow
def test_dvc_repro_pretrain_with_each_strategy_and_a_killed_fsdp_run(tmp_path: Path) -> None:
    from trainlab.models import load_model

    dvc = str(BIN / "dvc")
    project = make_project(tmp_path / "project", small_params(trainer__devices=2, trainer__strategy="fsdp"))
    run([dvc, "repro", "prepare"], project)
    # Each rank SIGKILLs itself after step 60, in the second of two epochs: epoch 1's checkpoint is there.
    killed = run([dvc, "repro", "pretrain"], project, check=False, TRAINLAB_TEST_SIGNAL_AT_STEP="60:SIGKILL")
    assert killed.returncode != 0
    assert (project / ".trainlab/resume/pretrain.pt").is_file()
    result = run([dvc, "repro", "pretrain"], project)
    assert "resuming from .trainlab/resume/pretrain.pt at epoch 2" in result.stdout + result.stderr
    fsdp_model, _ = load_model(project / "models/pretrained.pt")

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["trainer"]["strategy"] = "pipeline"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run([dvc, "repro", "pretrain"], project)
    assert "Running stage 'pretrain'" in result.stdout
    pipeline_model, blob = load_model(project / "models/pretrained.pt")
    x = torch.randn(5, *blob["input_shape"])
    assert pipeline_model(x).shape == fsdp_model(x).shape == (5, len(blob["class_names"]))
    assert "up to date" in run([dvc, "status", "pretrain"], project).stdout   # and prepare, upstream
