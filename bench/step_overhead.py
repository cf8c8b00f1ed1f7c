"""Per optimizer step, in one process: a hand-written step vs trainlab's `train_step`.

engine_overhead.py compares whole processes, and on this VM identical processes differ by
10-20% in wall time, more than the 5% it looks for. This script removes that noise: one
process, the default pretrain model and data, the same random mini-batches, and rounds of
N steps alternating A B / B A between the two, medians over rounds. The hand-written step
is forward, cross-entropy, zero_grad, backward, clip_grad_norm_, AdamW step. trainlab's is
`train_step` as fit() calls it (schedule, per-step dropout seeding, loss/accuracy/grad-norm
recorded on the device, per-layer grad norms every `layer_grad_norm_every` steps) plus the
recorder's flush every `log_every_steps` (hooks excluded: tracking_cost.py measures them).

    .venv/bin/python bench/step_overhead.py
    .venv/bin/python bench/step_overhead.py --rounds 30 --steps 50
    .venv/bin/python bench/step_overhead.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 4 rounds of 5 steps")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per side (the first 2 are warm-up)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per round")
    parser.add_argument("--threads", type=int, default=None, help="default: params.yaml's trainer.threads")
    return parser.parse_args()


def steppers(project: Path, threads: int):
    """(hand-written step, trainlab step, the train tensors), two identically initialised models."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import torch._dynamo  # noqa: F401  (the first optimizer imports it lazily: keep it out of the rounds)
    from trainlab.config import load_params
    from trainlab.engine.budget import resolve_budget
    from trainlab.engine import ParamGroup, Schedule, build_optimizer, setup_runtime
    from trainlab.engine.hooks import BestSoFar, Hooks, LoopState
    from trainlab.engine.loop import DivergenceCheck
    from trainlab.engine.losses import build_loss
    from trainlab.engine.steps import StepRecorder, train_step
    from trainlab.models import build_model

    os.chdir(project)
    params = load_params("params.yaml")
    trainer = params.trainer
    runtime = setup_runtime(trainer)
    torch.set_num_threads(threads)
    x = torch.as_tensor(np.load("data/prepared/source/train_x.npy"))
    y = torch.as_tensor(np.load("data/prepared/source/train_y.npy"))
    spec = resolve_budget(params.pretrain, trainer, len(y)).spec   # the numbers fit() uses for `auto`
    models = []
    for _ in range(2):
        torch.manual_seed(params.seed)
        models.append(build_model(params.model, tuple(x.shape[1:]), int(y.max()) + 1).train())
    hand_model, trainlab_model = models
    batch = spec.batch_size
    steps_per_epoch = -(-len(y) // batch)
    adamw = torch.optim.AdamW(hand_model.parameters(), lr=spec.optimizer.lr, betas=spec.optimizer.betas,
                              eps=spec.optimizer.eps, weight_decay=spec.optimizer.weight_decay)
    optimizer = build_optimizer([ParamGroup("all", list(trainlab_model.parameters()))], spec.optimizer, batch)
    state = LoopState(trainlab_model, optimizer, Schedule(spec.schedule, steps_per_epoch, spec.epochs),
                      runtime.grad_scaler(), runtime, spec, trainer, params.seed, steps_per_epoch,
                      BestSoFar(spec.early_stopping), Hooks([]))
    recorder, divergence, loss_fn = StepRecorder(state, trainlab_model), DivergenceCheck(state), build_loss(spec.loss)

    def hand(index):
        loss = F.cross_entropy(hand_model(x[index]), y[index])
        adamw.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hand_model.parameters(), trainer.clip_grad_norm)
        adamw.step()

    def trainlab(index):
        train_step(state, trainlab_model, [(x.index_select(0, index), y.index_select(0, index))], len(index),
                   loss_fn, recorder)
        state.step += 1
        if recorder.due():   # as fit() does: the hooks (none here) get the rows, then the divergence check
            divergence.check(recorder.flush())

    return hand, trainlab, len(y), batch


def main() -> None:
    args = parse_args()
    if args.quick:
        args.rounds, args.steps = 4, 5
    params = C.workload_params(args)
    threads = params["trainer"]["threads"]
    C.print_header("step overhead: hand-written step vs trainlab's train_step, in one process",
                   ["bench/step_overhead.py", *sys.argv[1:]], threads)
    import torch

    with C.workspace("step") as tmp:
        project = C.prepare_data(Path(tmp) / "project", params)
        hand, trainlab, n, batch = steppers(project, threads)
        generator = torch.Generator().manual_seed(0)
        ms = {"handwritten": [], "trainlab": []}
        for round_ in range(args.rounds):
            order = [("handwritten", hand), ("trainlab", trainlab)]
            for name, step in order if round_ % 2 == 0 else order[::-1]:
                batches = [torch.randperm(n, generator=generator)[:batch] for _ in range(args.steps)]
                started = time.perf_counter()
                for index in batches:
                    step(index)
                ms[name].append((time.perf_counter() - started) / args.steps * 1000)
    warm = 2 if args.rounds > 2 else 0
    ms = {name: values[warm:] for name, values in ms.items()}
    per_round = [b / a for a, b in zip(ms["handwritten"], ms["trainlab"])]
    print(f"# {args.rounds} rounds x {args.steps} steps per side (first {warm} rounds dropped), batch {batch}")
    print(C.table([[name, f"{C.median(values):.3f}", C.spread(values)] for name, values in ms.items()],
                  ["step", "ms per step (median of rounds)", "min..max"]))
    print(f"per-round ratio trainlab/handwritten: median {C.median(per_round):.3f}, range {C.spread(per_round)}")
    print(f"load average at the end: {C.load_average()}")
    print()
    C.print_ratio("trainlab_step/handwritten_step", C.median(ms["trainlab"]) / C.median(ms["handwritten"]))


if __name__ == "__main__":
    main()
