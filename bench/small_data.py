"""The whole default pipeline on small user data, this checkout's code vs an earlier commit's (issue 13).

Issue 13 wants a 50-sample dataset end to end in <= 2 minutes and 4,000 28x28 images with
a 2-D model in <= 10 minutes, on 2 cores. This builds throwaway projects the way
bench/own_data.py does (params.yaml as shipped, only data.* keys set; the images also set
`model.arch: resnet2d`), runs `dvc repro` in each, and with `--before REF` alternates
REF's code and this checkout's (before, after, before, after, ...) so that both see the
same load on the shared machine. Each run prints its wall time, CPU time and the load
average; the last line is the ratio of the medians, after/before (or, without --before,
the median against the issue's target).

Datasets:
- `unit_test` (default): the zoo's UnitTest series (bench/zoo/README.md), 20 labelled
  + 22 test samples, the zoo's smallest set (issue 13's "50-sample dataset").
- `digits28`: 4,000 images of 28x28 made from sklearn's bundled 8x8 digits (1,797
  images): each drawn image is upsampled bilinearly and shifted by a random whole number
  of pixels (up to 2), so no two rows are equal. Written to an NPZ at run time; no
  download. 20% test (`data.file.test_fraction`), the rest train + val.

`--steps` prints instead what the auto budgets plan for the dataset (samples, batch,
epochs, optimizer steps per fit, and how many fits), then measures one optimizer step of
the shipped model on 1 vs 2 intra-op threads at a few step sizes (what
`trainlab.engine.runtime.SINGLE_THREAD_BELOW_VALUES` rests on), rounds alternating, in
this process: planned steps x ms per step is the training time to expect.

    .venv/bin/python bench/small_data.py --before a41f37c~1            # unit_test, 1 round
    .venv/bin/python bench/small_data.py --before a41f37c~1 --until finetune   # prepare..finetune only
    .venv/bin/python bench/small_data.py --dataset digits28            # the images, this code only
    .venv/bin/python bench/small_data.py --steps                        # threads per step size
    .venv/bin/python bench/small_data.py --quick                        # shrunk budgets: does it run?
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import own_data  # noqa: E402

TARGET_S = {"unit_test": 120.0, "digits28": 600.0}   # issue 13's "done when"
IMAGES, IMAGE_SIDE, MAX_SHIFT = 4000, 28, 2
QUICK_BUDGET = {**own_data.QUICK_BUDGET, "search.n_trials": 1}


# ------------------------------------------------------------------------- data
def digits28(path: Path, n: int = IMAGES, seed: int = 0) -> Path:
    """`n` 28x28 images from sklearn's 8x8 digits (upsampled, randomly shifted) as an NPZ."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.target), n)
    small = torch.as_tensor(digits.images[pick], dtype=torch.float32)[:, None]
    big = torch.nn.functional.interpolate(small, size=(IMAGE_SIDE, IMAGE_SIDE), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(n, 2))
    x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(big, shifts)]).astype(np.float32)
    np.savez(path, x=x.reshape(n, -1), y=digits.target[pick].astype(np.int64))
    return path


def data_overrides(dataset: str, file: str) -> dict:
    """The data keys a user sets (and the 2-D model for images); everything else as shipped."""
    if dataset == "unit_test":
        return own_data.Dataset("unit_test", "unit_test.npz").data_overrides()
    return {"data.name": "file", "data.file.path": f"zoo/{file}", "data.file.shape": [IMAGE_SIDE, IMAGE_SIDE],
            "data.train_samples": None, "model.arch": "resnet2d"}


# ------------------------------------------------------------------------- projects
CODE = ("src", "stages", "dvc.yaml")


def snapshot_code(ref: str | None, into: Path) -> Path:
    """`ref`'s code (git archive), or this checkout's as it is now, copied into `into`.

    Taken once at start, so editing the checkout during an hour-long run changes neither variant."""
    into.mkdir(parents=True)
    if ref:
        archive = subprocess.run(["git", "archive", ref, *CODE], cwd=C.ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        return into
    for tree in CODE[:2]:
        shutil.copytree(C.ROOT / tree, into / tree, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(C.ROOT / "dvc.yaml", into / "dvc.yaml")
    return into


def new_project(where: Path, dataset: str, data_file: Path, code: Path, quick: bool) -> Path:
    """A project with `data_file`, the shipped params and the code snapshot `code`."""
    params = C.real_params(**data_overrides(dataset, data_file.name), **(QUICK_BUDGET if quick else {}))
    (where / "zoo").mkdir(parents=True)
    shutil.copy(data_file, where / "zoo" / data_file.name)
    project = C.make_project(where, params)
    for tree in CODE[:2]:
        shutil.rmtree(project / tree)
        shutil.copytree(code / tree, project / tree)
    shutil.copy(code / "dvc.yaml", project / "dvc.yaml")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", f"code of {code.name}"], cwd=project, check=True,
                   env=C.env())
    return project


def timed_repro(project: Path, log: Path, timeout: float, until: str | None) -> tuple[float, float]:
    """(wall s, CPU s of dvc repro and its stages): CPU time moves less with the load than wall time.

    `until`: `dvc repro STAGE`, that stage and the ones it depends on only."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, wall = own_data.repro(project, log, timeout, [until] if until else [])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise RuntimeError(f"dvc repro exited {code}: {own_data.last_error(log.read_text())} (log: {log})")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pipeline_rounds(args: argparse.Namespace, base: Path) -> dict[str, list[float]]:
    """Alternate before/after runs; returns the wall seconds of each variant."""
    data_file = (own_data.ZOO / "unit_test.npz" if args.dataset == "unit_test"
                 else digits28(base / "digits28.npz", n=300 if args.quick else IMAGES))
    variants = [("before", args.before), ("after", None)] if args.before else [("after", None)]
    code = {name: snapshot_code(ref, base / f"code-{name}") for name, ref in variants}
    walls: dict[str, list[float]] = {name: [] for name, _ in variants}
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for name, ref in order:
            where = base / f"{name}-{round_}"
            project = new_project(where, args.dataset, data_file, code[name], args.quick)
            load = C.load_average()
            wall, cpu = timed_repro(project, base / f"{name}-{round_}.log", args.timeout, args.until)
            walls[name].append(wall)
            print(f"{name} ({ref or 'this checkout'}) round {round_ + 1}: dvc repro {wall:.0f} s wall, "
                  f"{cpu:.0f} s CPU; load at start {load}, at end {C.load_average()}", flush=True)
            if not args.keep:
                shutil.rmtree(where, ignore_errors=True)
    return walls


# ------------------------------------------------------------------------- per step
def step_ms(shape: tuple[int, ...], batch: int, threads: int, steps: int, tiny: bool = False) -> float:
    """ms per optimizer step (forward, backward, clip, AdamW) of the shipped model on `threads` threads.

    `tiny`: as the engine runs tiny steps (runtime.tiny_steps): native convolutions instead
    of oneDNN's, and AdamW's fused kernel."""
    import torch

    from trainlab.config import validate
    from trainlab.models import build_model

    model_cfg = validate(C.real_params(**({"model.arch": "resnet2d"} if len(shape) == 2 else {}))).model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_cfg, shape, 10)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=tiny or None)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = not tiny   # as runtime.tiny_step_kernels does below 256 values a step
    try:
        for i in range(steps + 5):
            if i == 5:   # the first steps allocate; not timed
                started = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    finally:
        torch.backends.mkldnn.enabled = mkldnn
    return (time.perf_counter() - started) / steps * 1000


STEP_CASES = [((24,), 4), ((24,), 16), ((40,), 32), ((275,), 16), ((IMAGE_SIDE, IMAGE_SIDE), 32),
              ((IMAGE_SIDE, IMAGE_SIDE), 128)]


def planned_steps(dataset: str) -> list[list[str]]:
    """What the shipped auto budgets plan for `dataset` (before early stopping and pruning), per fit.

    Sizes are computed from the split fractions, not read from a prepared project: the
    pretext row can be a sample or a batch off (prepare also carves its own validation)."""
    from trainlab.config import validate
    from trainlab.engine.budget import resolve_budget
    from trainlab.training.pretext import VIEWS, reconstruction_spec

    params = validate(C.real_params(**data_overrides(dataset, f"{dataset}.npz")))
    pool = 20 if dataset == "unit_test" else int(IMAGES * (1 - params.data.file.test_fraction))
    val = round(pool * params.data.val_fraction)
    cv = val < params.selection.cv_below
    rows = []
    for name, spec, n in (("pretrain (pretext)", reconstruction_spec(params.pretrain), (pool - val) * VIEWS),
                          ("one finetune fit", params.finetune, pool - pool // params.selection.folds if cv
                           else pool - val)):
        budget = resolve_budget(spec, params.trainer, n, "series" if dataset == "unit_test" else "image")
        steps = budget.spec.epochs * -(-n // budget.spec.batch_size)
        rows.append([name, f"~{n}", budget.spec.batch_size, budget.spec.epochs, steps])
    fits = (params.selection.folds + 1 if cv else 1)
    rows.append([f"fits: finetune stage 4 x {fits}, search {params.search.n_trials} x {fits}", "", "", "", ""])
    return rows


def thread_steps(quick: bool) -> float:
    """Per step size: 1 vs 2 threads, and 1 thread with the tiny-step kernels, rounds alternating;
    returns the median ratio 1/2 threads at the smallest size."""
    rounds, steps = (1, 3) if quick else (3, 40)
    rows, smallest = [], []
    variants = [(1, False), (2, False), (1, True)]
    for shape, batch in STEP_CASES:
        times: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
        for round_ in range(rounds):
            for threads, tiny in (variants if round_ % 2 == 0 else variants[::-1]):
                n = steps if len(shape) == 1 else max(3, steps // 4)
                times[threads, tiny].append(step_ms(shape, batch, threads, n, tiny))
        one, two, native = (statistics.median(times[v]) for v in variants)
        values = batch * int(np.prod(shape))
        rows.append([f"{list(shape)} x batch {batch}", values, f"{one:.2f}", f"{two:.2f}", f"{one / two:.2f}",
                     f"{native:.2f}", f"{native / one:.2f}"])
        if not smallest:
            smallest.append(one / two)
    print(C.table(rows, ["step", "input values", "1 thread ms", "2 threads ms", "1/2",
                         "1 thread, native convs + fused AdamW ms", "native+fused / 1 thread"]))
    return smallest[0]


# ------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(TARGET_S), default="unit_test")
    parser.add_argument("--before", default=None, help="a commit whose code runs alternately with this checkout's")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant")
    parser.add_argument("--until", default=None, metavar="STAGE",
                        help="dvc repro STAGE: stop after that stage (e.g. finetune), the stages before it included")
    parser.add_argument("--steps", action="store_true", help="per-step time on 1 vs 2 threads instead")
    parser.add_argument("--quick", action="store_true", help="budgets shrunk: proves the script runs, numbers mean nothing")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per dvc repro")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs (path printed)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    C.print_header("small data: the default pipeline end to end (issue 13's speed targets)",
                   ["bench/small_data.py", *sys.argv[1:]])
    if args.steps:
        print(C.table(planned_steps(args.dataset), [f"{args.dataset}: fit", "samples", "batch", "epochs", "steps"]))
        C.print_ratio("1_thread/2_threads ms_per_step (smallest step)", thread_steps(args.quick))
        return 0
    with C.kept_workspace("small-data", args.keep) as base:
        try:
            walls = pipeline_rounds(args, base)
        except (RuntimeError, subprocess.TimeoutExpired) as err:   # one line, not a traceback
            print(f"failed: {str(err).splitlines()[0]}", flush=True)
            return 1
    after = statistics.median(walls["after"])
    print(f"\nload average at the end: {C.load_average()}")
    if args.before:
        before = statistics.median(walls["before"])
        print(f"median dvc repro: before {before:.0f} s, after {after:.0f} s (target {TARGET_S[args.dataset]:.0f} s)")
        C.print_ratio("after/before dvc_repro_wall", after / before)
    else:
        print(f"median dvc repro: {after:.0f} s (target {TARGET_S[args.dataset]:.0f} s)")
        C.print_ratio(f"dvc_repro_wall/target_{TARGET_S[args.dataset]:.0f}s", after / TARGET_S[args.dataset])
    return 0


if __name__ == "__main__":
    sys.exit(main())
