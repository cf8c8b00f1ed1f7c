"""`optimizer.lr: auto` and weight averaging against the shipped settings (issue 32, item 3).

On a representative part of bench/own_data.py's zoo (MNIST-1D at 400 labels, two small
series sets, one table, one image set) this runs the whole default pipeline once per
variant, in throwaway projects exactly as own_data.py builds them (params.yaml as shipped,
its `data.*` keys for the set, plus the variant's keys), the variants of a set one after
the other:

    fixed   params.yaml as shipped (lr 3e-3 in pretrain and finetune; no averaging)
    auto    pretrain.optimizer.lr and finetune.optimizer.lr: auto (the range test chooses)
    ema     trainer.averaging: ema (every training: pretrain, finetune, baselines, trials)
    swa     trainer.averaging: swa

It prints per set every variant's champion test accuracy (and every final model's), whether
the variant keeps `fixed`'s results (no test score, the champion's or any final model's,
lower by more than one test sample or 1 point, whichever is larger: DEVELOPERS.md), and
each `dvc repro`'s wall and CPU seconds (`auto` - `fixed` is what the range tests add).
Last, per variant, whether it may become a default: only if it kept the results on every
measured set.

    .venv/bin/python bench/lr_averaging.py                          # 5 sets x 4 variants (about an hour)
    .venv/bin/python bench/lr_averaging.py --variants fixed,auto    # the learning-rate table only
    .venv/bin/python bench/lr_averaging.py --quick                  # unit_test, shrunk: does it run?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import own_data as OD  # noqa: E402
from _variants import failed, keeps, lower, measure_variants  # noqa: E402

SETS = ["unit_test", "iris", "trace", "digits", "mnist1d-400"]   # quickest first
QUICK_SET = "unit_test"
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {},
    "auto": {"pretrain.optimizer.lr": "auto", "finetune.optimizer.lr": "auto"},
    "ema": {"trainer.averaging": "ema"},
    "swa": {"trainer.averaging": "swa"},
}


def rows_text(runs: dict[str, dict[str, OD.Row]], variants: list[str]) -> list[list[str]]:
    out = []
    for name, by_variant in runs.items():
        base = by_variant.get("fixed")
        for variant in variants:
            row = by_variant.get(variant)
            if row is None:
                out.append([name, variant, "not run", "-", "-", "-", "-"])
                continue
            diff = "-" if base is None or variant == "fixed" or row.score is None or base.score is None \
                else f"{100 * (row.score - base.score):+.1f}"
            ok = None if variant == "fixed" else keeps(base, row)
            verdict = "-" if ok is None else "yes" if ok else f"NO ({', '.join(lower(base, row))} lower)"
            cpu = "-" if row.cpu_s is None else f"{row.cpu_s:.0f}"
            out.append([name, variant, OD.champion_text(row), diff, verdict, OD.models_text(row),
                        f"{OD.wall_text(row)} / {cpu}"])
    return out


HEADER = ["dataset", "variant", "champion test acc % (model)", "champion - fixed (points)",
          "keeps fixed's results", "all models test acc %", "dvc repro wall s / CPU s"]


def default_verdicts(runs: dict[str, dict[str, OD.Row]], variants: list[str], names: list[str]) -> dict[str, str]:
    """Per variant: may it become a default? Only if it kept `fixed`'s results on every set."""
    verdicts = {}
    for variant in (v for v in variants if v != "fixed"):
        results = {n: keeps(runs.get(n, {}).get("fixed"), runs.get(n, {}).get(variant)) for n in names}
        lost = [n for n, ok in results.items() if ok is False]
        missing = [n for n, ok in results.items() if ok is None]
        verdicts[variant] = (f"not a default (lost on {', '.join(lost)})" if lost else
                             f"undecided (not measured: {', '.join(missing)})" if missing else
                             "may be a default (kept the results on every set)")
    return verdicts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated sets (default: {', '.join(SETS)})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated variants, fixed first (default: {', '.join(VARIANTS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SET} only (unless --only), budgets shrunk: proves the script runs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per dvc repro")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs (path printed)")
    args = parser.parse_args()
    args.names = args.only.split(",") if args.only else ([QUICK_SET] if args.quick else SETS)
    args.variant_list = args.variants.split(",")
    zoo = {d.name: d for d in OD.ZOO_SETS}
    if unknown := [n for n in args.names if n not in zoo]:
        parser.error(f"--only: unknown set(s) {unknown}; accepted: {', '.join(zoo)}")
    if unknown := [v for v in args.variant_list if v not in VARIANTS]:
        parser.error(f"--variants: unknown {unknown}; accepted: {', '.join(VARIANTS)}")
    if args.variant_list[0] != "fixed":
        parser.error("--variants: start with fixed, the settings every other variant is compared with")
    args.datasets = [zoo[n] for n in args.names]
    return args


def main() -> int:
    args = parse_args()
    C.print_header("lr: auto and weight averaging against the shipped settings, on part of the zoo",
                   ["bench/lr_averaging.py", *sys.argv[1:]])
    print(f"# params: params.yaml as shipped, only data.* and each variant's keys changed"
          f"{'; --quick: budgets shrunk, numbers mean nothing' if args.quick else ''}", flush=True)
    runs, interrupted = measure_variants(args.datasets, {v: VARIANTS[v] for v in args.variant_list},
                                         "lr-averaging", args.quick, args.timeout, args.keep)
    print()
    print(C.table(rows_text(runs, args.variant_list), HEADER))
    print()
    for variant, verdict in default_verdicts(runs, args.variant_list, args.names).items():
        print(f"{variant}: {verdict}")
    print(f"\nload average at the end: {C.load_average()}")
    for variant in args.variant_list[1:]:
        pairs = [(r["fixed"].score, r[variant].score) for r in runs.values()
                 if keeps(r.get("fixed"), r.get(variant)) is not None]
        C.print_ratio(f"{variant}/fixed champion_test_acc (worst set)",
                      min((b / a for a, b in pairs if a), default=float("nan")))
    return 130 if interrupted else 1 if failed(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
