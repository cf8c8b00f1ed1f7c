"""Per optimizer step on 2 CPU processes (gloo): trainer.strategy ddp vs fsdp vs pipeline.

Two ranks are started once; each builds the same model three times and wraps it with each
strategy the way fit() does (engine/parallel.py), then runs rounds of N steps of trainlab's
`train_step` per strategy, the order rotating from round to round, on the same random
global batches. Rank 0 times them; the ranks wait for each other at every step's
collectives, so its time is the step's time. Medians over rounds; ratios against ddp.
The model is params.yaml's (resnet1d, width 32, depth 3) unless --width/--depth say
otherwise; the inputs are random MNIST-1D-shaped rows (the step's cost does not depend on
their values), so nothing needs preparing.

    .venv/bin/python bench/strategies.py
    .venv/bin/python bench/strategies.py --rounds 12 --steps 20 --grad-accum 4
    .venv/bin/python bench/strategies.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

STRATEGIES = ("ddp", "fsdp", "pipeline")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps, a narrow model")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per strategy (the first 2 are warm-up)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per round")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (params.yaml's default)")
    parser.add_argument("--grad-accum", type=int, default=2, help="micro-batches per step, every strategy")
    parser.add_argument("--width", type=int, default=None, help="default: params.yaml's model.width")
    parser.add_argument("--depth", type=int, default=None, help="default: params.yaml's model.depth")
    return parser.parse_args()


def _setup(strategy: str, params, runtime):
    """(step function, model) for one strategy, as fit() sets them up."""
    import torch

    from trainlab.engine import ParamGroup, Schedule, build_optimizer
    from trainlab.engine.batches import micro_batches
    from trainlab.engine.hooks import LoopState
    from trainlab.engine.losses import build_loss
    from trainlab.engine.parallel import Parallel, data_shard
    from trainlab.engine.steps import StepRecorder, train_step
    from trainlab.models import build_model

    trainer = params.trainer.model_copy(update={"strategy": strategy})
    spec = params.pretrain.model_copy(update={"batch_size": params.trainer.batch_size, "epochs": 1})
    torch.manual_seed(params.seed)
    model = build_model(params.model, (40,), 10).train()
    parallel = Parallel(model, trainer, spec, runtime)
    optimizer = build_optimizer(parallel.groups([ParamGroup("all", list(model.parameters()))]), spec.optimizer,
                                trainer.batch_size)
    state = LoopState(parallel.model, optimizer, Schedule(spec.schedule, 1000, 1), runtime.grad_scaler(), runtime,
                      spec, trainer, params.seed, 1000)
    recorder = StepRecorder(state, parallel.model)
    loss_fn = build_loss(spec.loss)
    rank, ranks = data_shard(trainer, runtime)

    def step(x, y, order):
        micro = [(x[i], y[i]) for i in micro_batches(order, 0, len(order), rank, ranks, trainer.grad_accum)]
        train_step(state, parallel.forward, micro, len(order), loss_fn, recorder)
        state.step += 1
        if recorder.due():   # as fit() does, minus the hooks and the divergence check
            recorder.flush()

    return step


def _rank(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    import torch

    from trainlab.config import load_params
    from trainlab.engine import setup_runtime, teardown_runtime

    params = load_params(C.ROOT / "params.yaml")
    model = params.model.model_copy(update={k: v for k, v in (("width", args.width), ("depth", args.depth))
                                            if v is not None})
    trainer = params.trainer.model_copy(update={"devices": 2, "threads": 2, "accelerator": "cpu",
                                                "batch_size": args.batch_size, "grad_accum": args.grad_accum})
    params = params.model_copy(update={"model": model, "trainer": trainer})
    runtime = setup_runtime(trainer)            # 2 threads over 2 ranks: one each
    try:
        steps = {name: _setup(name, params, runtime) for name in STRATEGIES}
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(4096, 40, generator=generator)
        y = torch.randint(0, 10, (4096,), generator=generator)
        ms: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        for round_ in range(args.rounds):
            shift = round_ % len(STRATEGIES)
            for name in STRATEGIES[shift:] + STRATEGIES[:shift]:
                orders = [torch.randperm(len(y), generator=generator)[:args.batch_size] for _ in range(args.steps)]
                torch.distributed.barrier()
                started = time.perf_counter()
                for order in orders:
                    steps[name](x, y, order)
                ms[name].append((time.perf_counter() - started) / args.steps * 1000)
        if rank == 0:
            Path(out).write_text(json.dumps(ms))
    finally:
        teardown_runtime()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.rounds, args.steps, args.width, args.depth = 3, 3, 8, 2
    C.print_header("strategies: ddp vs fsdp vs pipeline per optimizer step, 2 gloo processes on CPU",
                   ["bench/strategies.py", *sys.argv[1:]], threads=1)
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        out = str(Path(tmp) / "ms.json")
        mp.spawn(_rank, args=(port, args, out), nprocs=2, join=True)
        ms = json.loads(Path(out).read_text())
    warm = 2 if args.rounds > 2 else 0
    ms = {name: values[warm:] for name, values in ms.items()}
    print(f"# {args.rounds} rounds x {args.steps} steps per strategy (first {warm} dropped), global batch "
          f"{args.batch_size}, grad_accum {args.grad_accum}, 1 thread per rank")
    base = C.median(ms["ddp"])
    print(C.table([[name, f"{C.median(v):.2f}", C.spread(v), f"{C.median(v) / base:.3f}"] for name, v in ms.items()],
                  ["strategy", "ms per step (median of rounds)", "min..max", "/ ddp"]))
    print(f"load average at the end: {C.load_average()}")
    print()
    C.print_ratio("fsdp/ddp ms_per_step", C.median(ms["fsdp"]) / base)
    C.print_ratio("pipeline/ddp ms_per_step", C.median(ms["pipeline"]) / base)


if __name__ == "__main__":
    main()
