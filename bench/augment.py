"""Augmentation on vs off on the zoo's series and image sets (issue 26, item 2).

For every series and image set of bench/own_data.py's zoo (MNIST-1D at 100, 400 and all
labels, trace, japanese_vowels, unit_test; digits as 8x8 images) this runs the whole default
pipeline twice, in throwaway projects exactly as own_data.py builds them (params.yaml as
shipped, its `data.*` keys for the set), once with `trainer.augment: false` and once with
`trainer.augment: true` (the knobs of `trainer.augmentation` as shipped), one after the other
per set. It prints, per set, the champion's test accuracy with augmentation off and on,
every final model's, and whether "on" keeps the set's results: no test score (the
champion's, every final model's) lower than "off" by more than one test sample or 1 point,
whichever is larger. Last, per data kind, whether `auto`
may turn augmentation on for it: only if every measured set of the kind keeps its results
and none failed or was left out.

    .venv/bin/python bench/augment.py                        # every series and image set (hours)
    .venv/bin/python bench/augment.py --only unit_test,digits
    .venv/bin/python bench/augment.py --quick                # unit_test, budgets shrunk: does it run?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import own_data as OD  # noqa: E402
from _variants import failed, keeps, lower, measure_variants  # noqa: E402

KINDS = {"digits": "image", "unit_test": "series", "trace": "series", "japanese_vowels": "series",
         "mnist1d-100": "series", "mnist1d-400": "series", "mnist1d-all": "series"}
ORDER = list(KINDS)   # quickest first: an interrupted run still says something
QUICK_SET = "unit_test"


def rows_text(pairs: dict[str, dict[str, OD.Row]]) -> list[list[str]]:
    out = []
    for name, runs in pairs.items():
        off, on = runs.get("off"), runs.get("on")
        ok = keeps(off, on)
        diff = "-" if ok is None else f"{100 * (on.score - off.score):+.1f}"
        cell = lambda row, text: "not run" if row is None else text(row)   # noqa: E731
        out.append([name, KINDS[name], (off or on).sizes, cell(off, OD.champion_text), cell(on, OD.champion_text),
                    diff, "-" if ok is None else "yes" if ok else f"NO ({', '.join(lower(off, on))} lower)",
                    cell(off, OD.models_text),
                    cell(on, OD.models_text), f"{cell(off, OD.wall_text)} / {cell(on, OD.wall_text)}"])
    return out


HEADER = ["dataset", "kind", "train+val/test", "off: champion test acc % (model)", "on: champion test acc % (model)",
          "champion on - off (points)", "on keeps (every test score >= off - max(1 pt, 1 test sample))", "off: all models test acc %",
          "on: all models test acc %", "dvc repro s off / on"]


def kind_verdicts(pairs: dict[str, dict[str, OD.Row]]) -> dict[str, str]:
    """Per kind: may `auto` turn augmentation on? Only if every set of the kind was measured and kept."""
    verdicts = {}
    for kind in sorted(set(KINDS.values())):
        names = [n for n in KINDS if KINDS[n] == kind]
        results = {n: keeps(pairs[n].get("off"), pairs[n].get("on")) if n in pairs else None for n in names}
        if any(v is False for v in results.values()):
            verdicts[kind] = f"off (lost on {', '.join(n for n, v in results.items() if v is False)})"
        elif all(v for v in results.values()):
            verdicts[kind] = "on (every set kept its results)"
        else:
            missing = [n for n, v in results.items() if v is None]
            verdicts[kind] = f"off (not measured: {', '.join(missing)})"
    return verdicts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated sets (default: all of {', '.join(ORDER)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SET} only (unless --only), budgets shrunk: proves the script runs, numbers mean nothing")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per dvc repro")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs (path printed)")
    parser.add_argument("--augment", choices=["both", "off", "on"], default="both",
                        help="which runs: both (side by side, the default), or one of them (two processes "
                             "sharing the work: their rows are put side by side by hand)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else ([QUICK_SET] if args.quick else ORDER)
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        parser.error(f"--only: unknown set(s) {unknown}; accepted: {', '.join(ORDER)}")
    zoo = {d.name: d for d in OD.ZOO_SETS}
    args.datasets = [zoo[n] for n in names]
    return args


def main() -> int:
    args = parse_args()
    C.print_header("augmentation on vs off: the default pipeline on the zoo's series and images",
                   ["bench/augment.py", *sys.argv[1:]])
    print(f"# params: params.yaml as shipped, only data.* and trainer.augment changed"
          f"{'; --quick: budgets shrunk, numbers mean nothing' if args.quick else ''}", flush=True)
    variants = {name: {"trainer.augment": name == "on"}
                for name in (("off", "on") if args.augment == "both" else (args.augment,))}
    pairs, interrupted = measure_variants(args.datasets, variants, "augment", args.quick, args.timeout, args.keep)
    print()
    print(C.table(rows_text(pairs), HEADER))
    print()
    for kind, verdict in kind_verdicts(pairs).items():
        print(f"auto for {kind}: {verdict}")
    print(f"\nload average at the end: {C.load_average()}")
    scored = [(r["off"].score, r["on"].score) for r in pairs.values() if keeps(r.get("off"), r.get("on")) is not None]
    C.print_ratio("augment_on/off champion_test_acc (worst set)", min((b / a for a, b in scored if a), default=float("nan")))
    return 130 if interrupted else 1 if failed(pairs) else 0


if __name__ == "__main__":
    sys.exit(main())
