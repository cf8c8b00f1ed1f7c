"""The CUDA path of the engine, on a real GPU: mixed precision against fp32, the fp16 loss
scaler recovering from an overflow, bit-identical resume under deterministic algorithms,
DDP over NCCL under torchrun, and the memory loader with data already on the device.

Marked `gpu` and skipped as a whole without CUDA. The one-command check on a GPU machine
is `scripts/gpu_check.sh` (these tests, then bench/gpu.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# cuBLAS reads this when it creates its first handle; set it before anything runs on the GPU
# (setup_runtime sets it too, but too late if another test touched cuBLAS first).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from helpers.engine import (
    Recorder,
    StopAt,
    assert_same_weights,
    max_diff,
    signal_data,
    tiny_model,
    train_spec,
    trainer_cfg,
    weights,
)
from trainlab.engine import Checkpointing, Hook, LoopState, TrainData, fit
from trainlab.engine.batches import BatchSource, epoch_order, step_plan, to_device

# One skip for the whole module (a mark, not pytest.skip at import: that collects nothing,
# and `pytest -m gpu` would then exit 5 instead of 0 on a machine without CUDA).
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the GPU tests run only on a machine with one (scripts/gpu_check.sh)")]
CUDA = torch.device("cuda")
TRAIN, VAL = signal_data(256, 0), signal_data(128, 1)
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}


def gpu_trainer(**overrides):
    return trainer_cfg(accelerator="cuda", **overrides)


# ---------------------------------------------------------------------------------------------
# mixed precision against fp32
# ---------------------------------------------------------------------------------------------
# How far reduced precision may move the final weights, as a share of how far fp32 training
# moved them from the initialisation. The CPU test in test_engine.py holds bf16 to 0.03 and
# fp16 to 0.003; cuBLAS's tensor-core kernels sum in other orders, so twice to six times that.
WEIGHT_TOLERANCE = {"bf16": 0.06, "fp16": 0.02}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_stays_close_to_fp32(precision: str) -> None:
    spec = train_spec(3, optimizer=SGD)
    init = weights(tiny_model())   # the MLP: it learns this task in 3 epochs (width-8 CNNs do not)
    runs = {}
    for p in ("fp32", precision):
        model, recorder = tiny_model(), Recorder()
        result = fit(model, TRAIN, VAL, spec, gpu_trainer(precision=p), seed=0, hooks=[recorder])
        assert next(model.parameters()).is_cuda
        runs[p] = (weights(model), result, recorder)

    ref_weights, ref, _ = runs["fp32"]
    got_weights, got, recorder = runs[precision]
    moved = max_diff(ref_weights, {k: v.to(CUDA) for k, v in init.items()})
    assert moved > 0.05
    assert got.precision == precision
    assert max_diff(got_weights, ref_weights) < WEIGHT_TOLERANCE[precision] * moved
    assert got.history[-1]["val/loss"] == pytest.approx(ref.history[-1]["val/loss"], abs=0.03)
    assert got.history[-1]["val/acc"] == pytest.approx(ref.history[-1]["val/acc"], abs=0.03)
    # The GradScaler runs for fp16 only.
    assert recorder.start["scaler_enabled"] == (precision == "fp16")


class HugeLossScale(Hook):
    """Starts fp16 loss scaling at 2**40: the scaled gradients overflow fp16 for sure."""

    def __init__(self) -> None:
        self.init: dict[str, torch.Tensor] = {}
        self.after_first_step: dict[str, torch.Tensor] = {}

    def on_fit_start(self, state: LoopState) -> None:
        state.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)
        self.init = weights(state.model)

    def on_step_end(self, state: LoopState) -> None:
        if state.step == 1:
            self.after_first_step = weights(state.model)


def test_fp16_overflow_is_recovered_by_the_grad_scaler() -> None:
    hook, recorder = HugeLossScale(), Recorder()
    result = fit(tiny_model(), TRAIN, VAL, train_spec(6, optimizer=SGD),
                 gpu_trainer(precision="fp16", batch_size=16, log_every_steps=1), seed=0, hooks=[hook, recorder])

    scale = recorder.series("loss_scale")   # by step, 0-based: the scale after that step's update
    # The overflowing step was skipped (weights untouched) and the scale halved...
    assert_same_weights(hook.after_first_step, hook.init)
    assert scale[0] == 2.0**39
    # ...until the gradients fit fp16 (65504 at most), then training went on with finite losses.
    assert 1.0 <= scale[max(scale)] <= 2.0**24
    assert all(torch.isfinite(torch.tensor(list(recorder.series("train/loss").values()))))
    assert result.steps == 6 * 16 and result.stop_reason == "completed all epochs"
    assert result.history[-1]["val/acc"] > 0.9   # chance is 1/3: it did learn after the ~20 skipped steps


# ---------------------------------------------------------------------------------------------
# resume under deterministic algorithms
# ---------------------------------------------------------------------------------------------
def test_resume_mid_epoch_on_cuda_is_bit_identical(tmp_path: Path) -> None:
    # Batch norm, dropout (CUDA generator), AdamW, cosine schedule and the fp16 scaler's state.
    spec = train_spec(3, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                      schedule={"name": "cosine", "warmup_epochs": 1})
    trainer = gpu_trainer(precision="fp16", checkpoint_every_steps=3)

    def model(init_seed: int = 0) -> torch.nn.Module:
        return tiny_model("cnn1d", seed=init_seed, batchnorm=True, dropout=0.2)

    reference = model()
    fit(reference, TRAIN, VAL, spec, trainer, seed=0)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark

    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):   # killed after step 13; the step-12 checkpoint is on disk
        fit(model(), TRAIN, VAL, spec, trainer, seed=0, hooks=[StopAt(step=13), Checkpointing(path, "fp", 3)])
    resumed = model(init_seed=1)             # whatever it ends with must come from the checkpoint
    result = fit(resumed, TRAIN, VAL, spec, trainer, seed=0, hooks=[Checkpointing(path, "fp", 3)])
    assert result.resumed_from_step == 12
    assert_same_weights(weights(resumed), weights(reference))


# ---------------------------------------------------------------------------------------------
# NCCL under torchrun
# ---------------------------------------------------------------------------------------------
# One GPU allows one NCCL rank. trainer.devices: 1 starts no process group by itself, so the
# child joins a group of one (as torchrun set it up) and the engine then runs its distributed
# path on it: DDP with NCCL all-reduces, SyncBatchNorm, metrics summed over the group.
TORCHRUN_CHILD = """
import os, sys
import torch, torch.distributed as dist
from helpers.engine import signal_data, tiny_model, train_spec, trainer_cfg, weights
from trainlab.engine import fit, setup_runtime, teardown_runtime

torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
dist.init_process_group("nccl")
trainer = trainer_cfg(accelerator="cuda", devices=1, sync_batchnorm=True)
runtime = setup_runtime(trainer)
model = tiny_model("cnn1d", batchnorm=True)
result = fit(model, signal_data(256, 0), signal_data(128, 1), train_spec(3, optimizer={sgd}), trainer,
             seed=0, runtime=runtime)
torch.save({{"backend": dist.get_backend(), "world": dist.get_world_size(), "distributed": runtime.distributed,
            "sync_bn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()),
            "weights": {{k: v.cpu() for k, v in weights(model).items()}}, "history": result.history}},
           sys.argv[1])
teardown_runtime()
"""


def test_one_gpu_under_torchrun_runs_ddp_over_nccl_like_a_plain_process(tmp_path: Path) -> None:
    script, out = tmp_path / "child.py", tmp_path / "rank0.pt"
    script.write_text(TORCHRUN_CHILD.format(sgd=SGD))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    child = torch.load(out, weights_only=True)
    assert (child["backend"], child["world"], child["distributed"], child["sync_bn"]) == ("nccl", 1, True, True)

    model = tiny_model("cnn1d", batchnorm=True)
    ref = fit(model, TRAIN, VAL, train_spec(3, optimizer=SGD), gpu_trainer(), seed=0)
    ref_weights = {k: v.cpu() for k, v in weights(model).items()}
    assert max_diff(ref_weights, weights(tiny_model("cnn1d", batchnorm=True))) > 0.05
    # SyncBatchNorm computes the batch statistics with other kernels: equal up to float rounding.
    assert max_diff(child["weights"], ref_weights) < 1e-4
    assert child["history"][-1]["val/acc"] == pytest.approx(ref.history[-1]["val/acc"], abs=0.01)


# ---------------------------------------------------------------------------------------------
# the memory loader with tensors on the device
# ---------------------------------------------------------------------------------------------
def _cnn_weights(train: TrainData, val: TrainData, **trainer) -> dict[str, torch.Tensor]:
    model = tiny_model("cnn1d", batchnorm=True, dropout=0.3)
    fit(model, train, val, train_spec(2), gpu_trainer(grad_accum=2, **trainer), seed=0)
    return weights(model)


def test_memory_loader_with_data_on_the_device_matches_host_arrays() -> None:
    on_gpu, val_on_gpu = to_device(TRAIN, CUDA), to_device(VAL, CUDA)
    assert on_gpu.x.is_cuda and on_gpu.y.is_cuda and on_gpu.y.dtype == torch.long
    assert to_device(on_gpu, CUDA).x.data_ptr() == on_gpu.x.data_ptr()   # already there: no copy

    plan = step_plan(len(on_gpu), 32, world_size=1, grad_accum=2)
    for _, micro in BatchSource(on_gpu, CUDA, None).epoch(epoch_order(len(on_gpu), 0, 0), plan, 0, 0, 1, 2):
        assert all(x.is_cuda and y.is_cuda for x, y in micro)

    host = _cnn_weights(TRAIN, VAL, loader="memory")
    assert_same_weights(_cnn_weights(on_gpu, val_on_gpu, loader="memory"), host)
    # The DataLoader path: pinned host batches, copied without blocking.
    assert_same_weights(_cnn_weights(TRAIN, VAL, loader="dataloader", num_workers=1), host)
