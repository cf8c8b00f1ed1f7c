"""How the processes of `trainer.devices > 1` share the work: `trainer.strategy`.

    ddp       every rank holds the whole model and a shard of each batch; DistributedDataParallel
              averages the gradients. Fastest while the model, its gradients and optimizer
              state fit on one device.
    fsdp      every rank holds 1/N of each backbone block's parameters, gradients and optimizer
              state (FSDP2 `fully_shard` per block, then the root) and a shard of each batch; a
              block's weights are gathered for its forward and backward only.
    pipeline  rank r runs the r-th run of consecutive blocks on the whole batch, micro-batch
              after micro-batch (torch.distributed.pipelining; see engine/pipeline.py).

Whatever the strategy, checkpoints hold full, unsharded tensors in the single-process
format (a sharded run's checkpoint loads in one process and the other way round), and
`fit()` hands the caller back its own, plain module with the trained weights.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainlab.config.schema import TrainerConfig, TrainSpec
from trainlab.engine.optim import ParamGroup
from trainlab.engine.pipeline import PipelinedModel, owned_parameters, sync_stages
from trainlab.engine.runtime import Runtime
from trainlab.errors import ParamsError


def strategy_of(trainer: TrainerConfig, runtime: Runtime) -> str:
    """The strategy in effect: with one process every strategy is plain training ("ddp")."""
    return trainer.strategy if runtime.distributed else "ddp"


def data_shard(trainer: TrainerConfig, runtime: Runtime) -> tuple[int, int]:
    """(rank, ranks) over which each global batch is split; pipeline stages all see the whole batch."""
    if strategy_of(trainer, runtime) == "pipeline":
        return 0, 1
    return runtime.rank, runtime.world_size


class Parallel:
    """The training-side view of a model under a strategy, built once per fit.

    `model` is what the loop state holds (hooks read and checkpoint it), `forward` what the
    loop calls. For fsdp both are a sharded copy of the caller's module; `finish()` writes
    the trained weights back into the caller's module.
    """

    def __init__(self, model: torch.nn.Module, trainer: TrainerConfig, spec: TrainSpec, runtime: Runtime):
        self.original, self.trainer, self.runtime = model, trainer, runtime
        self.strategy = strategy_of(trainer, runtime)
        if self.strategy != "ddp" and spec.optimizer.name == "lbfgs":
            raise ParamsError(f"optimizer.name: lbfgs re-evaluates the whole model in a closure; "
                              f"use another optimizer with trainer.strategy: {self.strategy}")
        if self.strategy == "fsdp":
            self.model = _fully_shard(model, trainer, runtime)
            self.forward = torch.compile(self.model) if trainer.compile else self.model
        elif self.strategy == "pipeline":
            self.model = model
            self.forward = PipelinedModel(model, runtime)
        else:
            self.model, self.forward = model, _ddp(model, trainer, runtime)

    def groups(self, groups: list[ParamGroup]) -> list[ParamGroup]:
        """The param groups over the trained module's parameters (fsdp replaced them by shards)."""
        if self.model is self.original:
            return groups
        name_of = {id(p): name for name, p in self.original.named_parameters()}
        sharded = dict(self.model.named_parameters())
        return [ParamGroup(g.name, [sharded[name_of[id(p)]] for p in g.params], g.lr_scale) for g in groups]

    def finish(self) -> None:
        """Leave the trained weights in the caller's module, on every rank."""
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
            self.original.load_state_dict(full)
            self.original.to(self.runtime.device)
        elif self.strategy == "pipeline":
            sync_stages(self.model, self.runtime)


def _ddp(model: torch.nn.Module, trainer: TrainerConfig, runtime: Runtime) -> torch.nn.Module:
    """The module the loop calls: DDP-wrapped across ranks, optionally compiled."""
    wrapped = model
    if runtime.distributed:
        # SyncBatchNorm is CUDA-only (DDP refuses it on CPU); with gloo each rank normalises
        # with its own batch statistics and DDP broadcasts rank 0's running statistics.
        if trainer.sync_batchnorm and runtime.device.type == "cuda":
            wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=ids)
    if trainer.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _fully_shard(model: torch.nn.Module, trainer: TrainerConfig, runtime: Runtime) -> torch.nn.Module:
    """A copy of `model` with each backbone block, then the rest, sharded over all ranks.

    A copy, because fully_shard turns the module's parameters into shards in place and the
    caller keeps using its module after fit (saving, evaluating it in one process).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # On a GPU the caller's full copy waits on the CPU (fully_shard moves only the shards
    # to the device), so no device ever holds the whole model during training.
    sharded = copy.deepcopy(model.cpu() if runtime.device.type != "cpu" else model)
    if trainer.sync_batchnorm and runtime.device.type == "cuda":
        sharded = torch.nn.SyncBatchNorm.convert_sync_batchnorm(sharded)
    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    # One unit per block: a block's weights are gathered just before it runs and freed after,
    # so at most one block is ever whole on a rank (plus the prefetched next one).
    for block in getattr(sharded, "backbone", torch.nn.Sequential()).children():
        if any(True for _ in block.parameters()):
            fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    if any(True for _ in sharded.buffers()):
        sharded.register_forward_pre_hook(_broadcast_buffers)
    return sharded


def _broadcast_buffers(module: torch.nn.Module, _inputs) -> None:
    # FSDP shards parameters, not buffers: without this each rank's batch-norm statistics
    # would drift apart on its own shard of the data. As DDP does, every forward starts
    # from rank 0's, which are also what a checkpoint keeps, so resume is exact.
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


@contextmanager
def _fsdp_no_sync(model: torch.nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def no_sync(model: torch.nn.Module):
    """Accumulate this micro-batch's gradients locally; they are reduced with the last one."""
    if hasattr(model, "no_sync"):                          # DDP
        return model.no_sync()
    target = getattr(model, "_orig_mod", model)            # under torch.compile
    if hasattr(target, "set_requires_gradient_sync"):      # FSDP2
        return _fsdp_no_sync(target)
    return nullcontext()


def grad_norm(params: list[torch.nn.Parameter], trainer: TrainerConfig, runtime: Runtime) -> torch.Tensor:
    """The L2 norm of the whole model's gradient, whichever rank holds which part of it."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=runtime.device)
    strategy = strategy_of(trainer, runtime)
    if strategy == "fsdp":
        return full_value(norm)
    if strategy == "pipeline":
        # Each stage holds the gradients of its own blocks only: sum the squares over stages.
        squares = norm.detach().double().square().to(runtime.device)
        dist.all_reduce(squares)
        return squares.sqrt().to(norm.dtype)
    return norm


def full_value(value: Any) -> Any:
    """A DTensor's full value (a collective: every rank calls it); anything else as it is."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: full_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [full_value(v) for v in value]
    return value


# ------------------------------------------------------------------ checkpoint contents
def gathered_state(state) -> tuple[dict | None, dict | None, dict | None, dict | None]:
    """(model, optimizer, best-so-far, hook states) in the single-process format, on rank 0;
    None elsewhere. A collective under fsdp and pipeline: every rank must call it.
    """
    runtime, strategy = state.runtime, strategy_of(state.trainer, state.runtime)
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model = get_model_state_dict(state.model, options=options)
        optim = get_optimizer_state_dict(state.model, state.optimizer, options=options)
        optim = _indexed(optim) if runtime.is_main else None   # cpu_offload: rank 0 alone gets it
        best, hooks = full_value(state.best.state_dict()), full_value(state.hooks.state_dict())
    elif strategy == "pipeline":
        sync_stages(state.model, runtime)
        model, best, hooks = state.model.state_dict(), state.best.state_dict(), state.hooks.state_dict()
        optim = _gather_optimizer(state, owned_parameters(state.model, runtime))
    else:
        return state.model.state_dict(), state.optimizer.state_dict(), state.best.state_dict(), \
            state.hooks.state_dict()
    return (model, optim, best, hooks) if runtime.is_main else (None, None, None, None)


def load_gathered_state(state, model: dict, optim: dict, best: dict, hooks: dict) -> None:
    """Load full (single-process format) states into the loop state, whatever the strategy."""
    if strategy_of(state.trainer, state.runtime) != "fsdp":
        state.model.load_state_dict(model)
        state.optimizer.load_state_dict(optim)
    else:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(state.model, model, options=options)
        set_optimizer_state_dict(state.model, state.optimizer, _named(optim, state), options=options)
        best, hooks = _shard_like(state.model, best), _shard_like(state.model, hooks)
    state.best.load_state_dict(best)
    state.hooks.load_state_dict(hooks)


def _indexed(named: dict) -> dict:
    """torch.distributed.checkpoint's optimizer state (keyed by parameter name) keyed by
    position instead, as `Optimizer.state_dict()` of the same model in one process is."""
    index = {name: i for i, name in enumerate(n for g in named["param_groups"] for n in g["params"])}
    return {"state": {index[name]: value for name, value in named["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]}


def _named(indexed: dict, state) -> dict:
    """The inverse of `_indexed`, for this run's optimizer."""
    name_of = {id(p): name for name, p in state.model.named_parameters()}
    names = [name_of[id(p)] for g in state.optimizer.param_groups for p in g["params"]]
    return {"state": {names[i]: value for i, value in indexed["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in indexed["param_groups"]]}


def _shard_like(model: torch.nn.Module, value: Any) -> Any:
    """Hook state holding full weights (early stopping's best) sharded like the model's own."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(value, list):
        return [_shard_like(model, v) for v in value]
    if not isinstance(value, dict):
        return value
    own = model.state_dict()
    if value and all(isinstance(v, torch.Tensor) for v in value.values()) and value.keys() <= own.keys():
        return {k: distribute_tensor(v.to(own[k].device), own[k].device_mesh, own[k].placements)
                if isinstance(own[k], DTensor) else v for k, v in value.items()}
    return {k: _shard_like(model, v) for k, v in value.items()}


def _gather_optimizer(state, owned: set[int]) -> dict:
    """Each stage's optimizer state of its own parameters, merged on rank 0."""
    full = state.optimizer.state_dict()
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    mine = {i: s for i, s in full["state"].items() if id(params[i]) in owned}
    parts: list[Any] = [None] * state.runtime.world_size
    dist.all_gather_object(parts, mine)
    merged = {i: s for part in parts for i, s in part.items()}
    return {"state": dict(sorted(merged.items())), "param_groups": full["param_groups"]}
