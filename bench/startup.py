"""How long the commands people type most take to answer: `trainlab --help`, a no-op `dvc repro`.

`trainlab --help` is timed as a whole process (median of 10). The no-op `dvc repro`
runs in a throwaway project (trainlab.testing's make_project, params shrunk so the
first, real `dvc repro` takes a minute or two) whose pipeline is already up to date:
it only checks hashes and prints "up to date" (median of 5). Targets: 0.5 s and 2 s;
the ratios printed are measured wall time / target (<= 1 meets it). Each command's CPU
time (user+sys) is printed beside its wall time: on a loaded machine it is the better
guess of the quiet-machine wall time of these single-threaded commands.

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --quick    # 2 help runs; the prepare stage only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HELP_TARGET_S = 0.5
REPRO_TARGET_S = 2.0

# On top of trainlab.testing's SMALL: the first repro only has to make the pipeline up to date.
TINY = {"finetune.compare_scratch": False, "finetune.linear_probe": False, "search.n_trials": 1,
        "search.top_k": 1, "ensemble.top_k": 1, "finetune.epochs": 1, "search.epochs": 1,
        "pretrain.epochs": 1, "data.source.num_samples": 1000}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 help runs, 1 no-op repro of prepare only")
    parser.add_argument("--help-runs", type=int, default=10)
    parser.add_argument("--repro-runs", type=int, default=5)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    stage = []
    if args.quick:
        args.help_runs, args.repro_runs, stage = 2, 1, ["prepare"]
    C.print_header("startup: trainlab --help and a no-op dvc repro", ["bench/startup.py", *sys.argv[1:]])
    trainlab, dvc = str(C.BIN / "trainlab"), str(C.BIN / "dvc")
    helps, help_cpu = zip(*[C.timed_cpu([trainlab, "--help"], C.ROOT) for _ in range(args.help_runs)])
    print(f"trainlab --help: {', '.join(f'{t:.3f}' for t in helps)} s", flush=True)
    with C.workspace("startup") as tmp:
        project = C.make_project(Path(tmp) / "project", C.small_params(**TINY))
        first = C.timed([dvc, "repro", *stage], project)
        print(f"first dvc repro {' '.join(stage) or '(whole pipeline)'}: {first:.1f} s (makes it up to date)",
              flush=True)
        repros, repro_cpu = zip(*[C.timed_cpu([dvc, "repro", *stage], project) for _ in range(args.repro_runs)])
        status = C.output([dvc, "status", *stage], project)
        if "up to date" not in status:
            raise RuntimeError(f"the project is not up to date, the timings are not of a no-op:\n{status}")
        print(f"no-op dvc repro: {', '.join(f'{t:.3f}' for t in repros)} s; dvc status: {status.strip()}",
              flush=True)
    help_s, repro_s = C.median(helps), C.median(repros)
    print()
    print(C.table([["trainlab --help", f"{help_s:.3f}", C.spread(helps), f"{C.median(help_cpu):.3f}", HELP_TARGET_S],
                   ["no-op dvc repro", f"{repro_s:.3f}", C.spread(repros), f"{C.median(repro_cpu):.3f}",
                    REPRO_TARGET_S]],
                  ["command", "median wall s", "min..max", "median CPU s (user+sys)", "target s"]))
    print("(CPU seconds barely move with the machine's load; for these single-threaded commands they "
          "approximate the wall time on a quiet machine)")
    print()
    C.print_ratio("trainlab_help/target", help_s / HELP_TARGET_S)
    C.print_ratio("noop_dvc_repro/target", repro_s / REPRO_TARGET_S)


if __name__ == "__main__":
    main()
