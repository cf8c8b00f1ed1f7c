"""Where and how training runs: device, precision, threads, seeds, and the DDP process group."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from trainlab.config.schema import TrainerConfig
from trainlab.errors import ParamsError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The resolved execution context of one training process."""

    device: torch.device
    precision: str          # fp32 | bf16 | fp16, never auto
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    loss_scaling: bool = True

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, logs metrics and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """One rank of a process group: several ranks, or a group of one the caller joined
        (one GPU under torchrun runs the same DDP/NCCL code as N; tests/test_gpu.py)."""
        return self.world_size > 1 or dist.is_initialized()

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        # fp16 has a narrow exponent range: small gradients underflow to zero unless the
        # loss is scaled up before backward and the gradients scaled down before the step.
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16" and self.loss_scaling)


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: the fastest precision that keeps accuracy on this device.

    CUDA: bf16 where supported, else fp16 (with loss scaling). CPU: bf16 only with AMX
    matrix units; with avx512_bf16 alone, bf16 autocast measured no faster than fp32 for
    the default model (0.91x to 1.13x across runs, bench/RESULTS.md), so the simpler,
    exact fp32 is kept. fp16 is never chosen on CPUs: without fp16 units it ran at 0.08x.
    """
    if requested != "auto":
        if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ParamsError("trainer.precision: bf16 is not supported by this GPU; use fp16 or auto")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cpu._is_amx_tile_supported() else "fp32"


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(cfg: TrainerConfig, world_size: int = 1) -> int:
    """Set torch's intra-op threads deliberately: results are bit-identical only at equal counts."""
    if cfg.threads is not None:
        torch.set_num_threads(max(1, cfg.threads // world_size))
    return torch.get_num_threads()


# A CPU fit whose optimizer steps carry fewer input values than this (batch x values per
# sample) has tiny steps: many kernels of a few microseconds each, where fixed costs per
# call decide the time. Such a fit runs (see `tiny_step_kernels`):
# - on one intra-op thread: splitting a tiny kernel over two threads buys nothing and pays
#   an OpenMP barrier, which on a shared machine waits for a core held by another process
#   (batch 4 of 24 values: 12 ms a step on 1 thread against 192 ms on 2, at load ~9);
# - with the fused optimizer kernel, one call for all parameters instead of a loop of
#   small ones (oneDNN, batch 4 of 24 values: 5.2-5.4 ms against 6.8-7.0);
# - and, below NATIVE_CONVOLUTIONS_BELOW_VALUES, with torch's native convolutions instead of
#   oneDNN's, whose per-call set-up dominates convolutions this small (96 values a step:
#   0.44x oneDNN's time), but not much larger ones (384 values: 1.41x; the crossover was
#   between ~300 and 384 values).
# Measured with bench/small_data.py --steps (bench/RESULTS.md 8b). Both thresholds sit below
# MNIST-1D's fine-tuning step (batch 32 x 40 = 1,280 values), where oneDNN is 2.4x faster
# than the native kernels: the shipped default pipeline keeps its kernels and results.
SINGLE_THREAD_BELOW_VALUES = 1024
NATIVE_CONVOLUTIONS_BELOW_VALUES = 256


def tiny_steps(runtime: Runtime, batch_size: int, sample_values: int) -> bool:
    """True for a single-process CPU fit whose steps are too small to share out (see above)."""
    if runtime.device.type != "cpu" or runtime.distributed:
        return False
    return batch_size * sample_values < SINGLE_THREAD_BELOW_VALUES


@contextmanager
def tiny_step_kernels(active: bool, values_per_step: int) -> Iterator[None]:
    """One intra-op thread inside when `active`, and native convolutions when the steps are
    smaller still (NATIVE_CONVOLUTIONS_BELOW_VALUES); both restored after."""
    if not active:
        yield
        return
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = mkldnn and values_per_step >= NATIVE_CONVOLUTIONS_BELOW_VALUES
    try:
        with intra_op_threads(1):
            yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside, restored after (None: unchanged)."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


# The file local DDP processes rendezvous through (trainlab.launch sets it); else env:// (torchrun).
STORE_ENV = "TRAINLAB_DIST_STORE"


def setup_runtime(cfg: TrainerConfig) -> Runtime:
    """Pick the device and join the DDP process group when started as one of several ranks."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.accelerator == "cuda" or (cfg.accelerator == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ParamsError("trainer.accelerator: 'cuda' asked but no CUDA device is available; use auto or cpu")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        store = os.environ.get(STORE_ENV)   # set by trainlab's local launcher: no listening socket
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method=f"file://{store}" if store else None,
                                rank=rank if store else -1, world_size=world_size if store else -1)
    configure_threads(cfg, world_size if not use_cuda else 1)
    if use_cuda:
        # CPU kernels are deterministic at a fixed thread count already; on CUDA ask for the
        # deterministic variants. (On CPU this call would also cost ~3 s of imports.)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return Runtime(device, resolve_precision(cfg.precision, device), rank, world_size, local_rank,
                   cfg.fp16_loss_scaling)


def teardown_runtime() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum a metric tensor over ranks (no-op in a single process)."""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
