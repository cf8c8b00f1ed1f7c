"""Zoo sets run once per variant of the settings, side by side (bench/augment.py, bench/lr_averaging.py).

A variant is a name and the params keys it sets on top of a set's `data.*` keys; every set
runs each variant one after the other in throwaway projects exactly as bench/own_data.py builds
them. `keeps` is DEVELOPERS.md's "keeps its results": no test score (the champion's, every final
model's) lower by more than one test sample or 1 point, whichever is larger.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from typing import Any

import _common as C
import own_data as OD

SLACK = OD.CLASSIFICATION_SLACK   # one point, or one test sample where that is more


@dataclass(frozen=True)
class Variant(OD.Dataset):
    """A zoo set with a variant's keys set (its project directory named after the variant)."""

    overrides: tuple[tuple[str, Any], ...] = ()

    def data_overrides(self) -> dict[str, Any]:
        return {**super().data_overrides(), **dict(self.overrides)}


def variant_of(dataset: OD.Dataset, name: str, overrides: dict[str, Any]) -> Variant:
    fields = {k: getattr(dataset, k) for k in dataset.__dataclass_fields__}
    return Variant(**{**fields, "name": f"{dataset.name}-{name}"}, overrides=tuple(overrides.items()))


def measure_variants(datasets: list[OD.Dataset], variants: dict[str, dict[str, Any]], prefix: str, quick: bool,
                     timeout: float, keep: bool) -> tuple[dict[str, dict[str, OD.Row]], bool]:
    """{set: {variant: row}} for every set and variant, in that order, and whether a Ctrl-C
    stopped it early (what finished is still returned, for the table)."""
    runs: dict[str, dict[str, OD.Row]] = {}
    with C.kept_workspace(prefix, keep) as base:
        try:
            for dataset in datasets:
                for name, overrides in variants.items():
                    run = variant_of(dataset, name, overrides)
                    print(f"{run.name}: dvc repro with {run.data_overrides()} (load {C.load_average()})", flush=True)
                    runs.setdefault(dataset.name, {})[name] = OD.measure(run, base, quick, timeout)
                    print(OD.progress_line(runs[dataset.name][name]), flush=True)
                    if not keep:   # a run's project is read by now; the disk is shared
                        shutil.rmtree(base / run.name, ignore_errors=True)
        except KeyboardInterrupt:   # a long run stopped early still prints what it measured
            print(f"interrupted: the table holds the {sum(map(len, runs.values()))} finished run(s)", flush=True)
            return runs, True
    return runs, False


def failed(runs: dict[str, dict[str, OD.Row]]) -> bool:
    return any(r.error or r.missing for by in runs.values() for r in by.values())


def keeps(base: OD.Row | None, other: OD.Row | None) -> bool | None:
    """Does `other` keep `base`'s results: no test score (the champion's, every final model's)
    lower by more than the slack? None where either run is missing or has no score."""
    if base is None or other is None or base.score is None or other.score is None:
        return None
    return not lower(base, other)


def lower(base: OD.Row, other: OD.Row) -> list[str]:
    """The scores `other` has lower than `base` by more than one test sample or 1 point."""
    slack = max(SLACK, 1 / base.n_test if base.n_test else 0.0)
    pairs = {"champion": (base.score, other.score),
             **{m: (v, other.models[m]) for m, v in base.models.items() if m in other.models}}
    return [name for name, (a, b) in pairs.items() if b < a - slack - 1e-12]


def rows_text(runs: dict[str, dict[str, OD.Row]], variants: list[str]) -> list[list[str]]:
    """One row per set and variant: the champion, its change against the first variant, whether it keeps."""
    first = variants[0]
    out = []
    for name, by_variant in runs.items():
        base = by_variant.get(first)
        for variant in variants:
            row = by_variant.get(variant)
            if row is None:
                out.append([name, variant, "not run", "-", "-", "-", "-"])
                continue
            diff = "-" if base is None or variant == first or row.score is None or base.score is None \
                else f"{100 * (row.score - base.score):+.1f}"
            ok = None if variant == first else keeps(base, row)
            verdict = "-" if ok is None else "yes" if ok else f"NO ({', '.join(lower(base, row))} lower)"
            cpu = "-" if row.cpu_s is None else f"{row.cpu_s:.0f}"
            out.append([name, variant, OD.champion_text(row), diff, verdict, OD.models_text(row),
                        f"{OD.wall_text(row)} / {cpu}"])
    return out


def header(first: str) -> list[str]:
    return ["dataset", "variant", "champion test acc % (model)", f"champion - {first} (points)",
            f"keeps {first}'s results", "all models test acc %", "dvc repro wall s / CPU s"]


def default_verdicts(runs: dict[str, dict[str, OD.Row]], variants: list[str], names: list[str]) -> dict[str, str]:
    """Per variant: may it become a default? Only if it kept the first variant's results on every set."""
    first, verdicts = variants[0], {}
    for variant in variants[1:]:
        results = {n: keeps(runs.get(n, {}).get(first), runs.get(n, {}).get(variant)) for n in names}
        lost = [n for n, ok in results.items() if ok is False]
        missing = [n for n, ok in results.items() if ok is None]
        verdicts[variant] = (f"not a default (lost on {', '.join(lost)})" if lost else
                             f"undecided (not measured: {', '.join(missing)})" if missing else
                             "may be a default (kept the results on every set)")
    return verdicts


def parse_args(doc: str, sets: list[str], quick_set: str, variants: dict[str, dict[str, Any]]) -> argparse.Namespace:
    """--only, --variants (the first is the one compared with), --quick, --timeout, --keep."""
    first = next(iter(variants))
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated sets (default: {', '.join(sets)})")
    parser.add_argument("--variants", default=",".join(variants),
                        help=f"comma-separated variants, {first} first (default: {', '.join(variants)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{quick_set} only (unless --only), budgets shrunk: proves the script runs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per dvc repro")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs (path printed)")
    args = parser.parse_args()
    args.names = args.only.split(",") if args.only else ([quick_set] if args.quick else sets)
    args.variant_list = args.variants.split(",")
    zoo = {d.name: d for d in OD.ZOO_SETS}
    if unknown := [n for n in args.names if n not in zoo]:
        parser.error(f"--only: unknown set(s) {unknown}; accepted: {', '.join(zoo)}")
    if unknown := [v for v in args.variant_list if v not in variants]:
        parser.error(f"--variants: unknown {unknown}; accepted: {', '.join(variants)}")
    if args.variant_list[0] != first:
        parser.error(f"--variants: start with {first}, the settings every other variant is compared with")
    args.datasets = [zoo[n] for n in args.names]
    return args


def variant_bench(doc: str, title: str, script: str, prefix: str, sets: list[str], quick_set: str,
                  variants: dict[str, dict[str, Any]]) -> int:
    """A script's main: parse its arguments (`parse_args`), run every chosen set under every chosen
    variant, print the table, the verdicts and the worst ratio; the exit status."""
    args = parse_args(doc, sets, quick_set, variants)
    C.print_header(title, [script, *sys.argv[1:]])
    print(f"# params: params.yaml as shipped, only data.* and each variant's keys changed"
          f"{'; --quick: budgets shrunk, numbers mean nothing' if args.quick else ''}", flush=True)
    chosen = args.variant_list
    runs, interrupted = measure_variants(args.datasets, {v: variants[v] for v in chosen}, prefix, args.quick,
                                         args.timeout, args.keep)
    print()
    print(C.table(rows_text(runs, chosen), header(chosen[0])))
    print()
    for variant, verdict in default_verdicts(runs, chosen, args.names).items():
        print(f"{variant}: {verdict}")
    print(f"\nload average at the end: {C.load_average()}")
    for variant in chosen[1:]:
        pairs = [(r[chosen[0]].score, r[variant].score) for r in runs.values()
                 if keeps(r.get(chosen[0]), r.get(variant)) is not None]
        C.print_ratio(f"{variant}/{chosen[0]} champion_test_acc (worst set)",
                      min((b / a for a, b in pairs if a), default=float("nan")))
    return 130 if interrupted else 1 if failed(runs) else 0
