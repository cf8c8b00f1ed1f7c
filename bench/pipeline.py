"""Seconds per stage of the whole default pipeline, from a clean clone.

`git clone` of this repository (its committed HEAD, not the working tree) into a
temporary directory, then one `dvc repro` with the committed params.yaml, as a new
user would run it. The clone's own code runs (PYTHONPATH puts the clone's src/ ahead of
the editable install, and `trainlab` loads the stages/ beside the src/ it was imported from). Per-stage seconds are the gaps between DVC's
"Running stage" lines, timestamped as they are printed, so each stage's figure also
holds DVC's hashing and caching of its outputs. Target: the whole repro <= 10 min.

    .venv/bin/python bench/pipeline.py
    .venv/bin/python bench/pipeline.py --threads 1  # the same with 1 torch thread (robust to load)
    .venv/bin/python bench/pipeline.py --quick      # trainlab.testing's shrunk params
    .venv/bin/python bench/pipeline.py --against REV --repeats 3
        # old (REV) and new (HEAD) side by side: a fresh clone of each per run, alternating
        # old/new then new/old; the median of each and the ratio new/old
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_S = 600.0
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shrunk params (trainlab.testing's SMALL)")
    parser.add_argument("--source", default=str(C.ROOT), help="repository to clone (default: this one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="set trainer.threads in the clone's params.yaml (default: keep the committed value)")
    parser.add_argument("--against", metavar="REV", help="also time this older commit, side by side")
    parser.add_argument("--repeats", type=int, default=3, help="with --against: runs of each (default 3)")
    return parser.parse_args()


def repro(clone: Path) -> tuple[list[tuple[str, float]], float, str]:
    """Run `dvc repro`, stamping each line; returns ([(stage, seconds)], total seconds, output)."""
    env = C.env(PYTHONPATH=f"{clone / 'src'}:{clone}", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    marks, lines = [], []
    with subprocess.Popen([str(C.BIN / "dvc"), "repro"], cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            for line in proc.stdout:
                now = time.perf_counter() - started
                lines.append(f"[{now:7.1f}] {line.rstrip()}")
                match = STAGE_LINE.search(line)
                if match:
                    marks.append((match.group(1), now))
                    print(f"  {now:7.1f} s  stage {match.group(1)} starts", flush=True)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)   # interrupted: leave no dvc repro or stage behind
            raise
        code = proc.wait()
    total = time.perf_counter() - started
    output = "\n".join(lines)
    if code != 0:
        print(output, file=sys.stderr)
        raise RuntimeError(f"dvc repro exited {code}\n{output[-5000:]}")
    ends = [t for _, t in marks[1:]] + [total]
    return [(name, end - start) for (name, start), end in zip(marks, ends)], total, output


def clone_at(source: str, rev: str, into: Path) -> str:
    """A clone of `source` at `rev` whose own stage commands are the ones loaded; its short commit."""
    C.output(["git", "clone", "-q", source, str(into)], into.parent)
    C.output(["git", "checkout", "-q", rev], into)
    imported = C.output([C.PYTHON, "-c", "from trainlab import cli; print(cli.load_stages_package().__file__)"],
                        into, PYTHONPATH=str(into / "src")).strip()
    if not imported.startswith(str(into)):
        raise RuntimeError(f"the clone's stage commands are not the ones loaded: {imported}")
    return C.output(["git", "rev-parse", "--short", "HEAD"], into).strip()


def side_by_side(args: argparse.Namespace) -> None:
    """Old (--against) and new (HEAD) whole pipelines alternating, each run in a fresh clone."""
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    revs = {"old": args.against, "new": "HEAD"}
    with C.workspace("pipeline") as tmp:
        for run in range(args.repeats):
            for name in (("old", "new") if run % 2 == 0 else ("new", "old")):
                clone = Path(tmp) / f"{name}-{run}"
                commit = clone_at(args.source, revs[name], clone)
                _, total, _ = repro(clone)
                seconds[name].append(total)
                print(f"run {run + 1} {name} ({commit}): {total:.1f} s (load {C.load_average()})", flush=True)
                shutil.rmtree(clone)
    print()
    print(C.table([[name, revs[name], " / ".join(f"{s:.1f}" for s in runs), f"{C.median(runs):.1f}"]
                   for name, runs in seconds.items()], ["code", "rev", "dvc repro s per run", "median s"]))
    C.print_ratio("pipeline_new/old (median wall)", C.median(seconds["new"]) / C.median(seconds["old"]))


def main() -> None:
    args = parse_args()
    C.print_header("pipeline: dvc repro from a clean clone", ["bench/pipeline.py", *sys.argv[1:]])
    if args.against:
        side_by_side(args)
        return
    with C.workspace("pipeline") as tmp:
        clone = Path(tmp) / "clone"
        started = time.perf_counter()
        commit = clone_at(args.source, "HEAD", clone)
        clone_s = time.perf_counter() - started
        if args.quick:
            C.write_params(clone, C.small_params(**{"search.n_trials": 1, "search.top_k": 1, "ensemble.top_k": 1,
                                                    "evaluate.register_model": False}))
        if args.threads:
            import yaml

            params = yaml.safe_load((clone / "params.yaml").read_text())
            params["trainer"]["threads"] = args.threads
            C.write_params(clone, params)
        print(f"# cloned {args.source} at {commit} in {clone_s:.1f} s; params: "
              f"{'trainlab.testing SMALL (quick)' if args.quick else 'the committed params.yaml'}"
              f"{f', trainer.threads set to {args.threads}' if args.threads else ''}", flush=True)
        stages, total, output = repro(clone)
        status = C.output([str(C.BIN / "dvc"), "status"], clone, PYTHONPATH=f"{clone / 'src'}:{clone}")
        if "up to date" not in status:
            raise RuntimeError(f"after dvc repro the pipeline is not up to date:\n{status}\n{output[-3000:]}")
    print()
    print(C.table([[name, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%"] for name, seconds in stages]
                  + [["total (dvc repro)", f"{total:.1f}", "100%"]], ["stage", "seconds", "share"]))
    print(f"\nload average at the end: {C.load_average()}")
    C.print_ratio("pipeline_total/target_10min", total / TARGET_S)


if __name__ == "__main__":
    main()
