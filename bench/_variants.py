"""Zoo sets run once per variant of the settings, side by side (bench/augment.py, bench/lr_averaging.py).

A variant is a name and the params keys it sets on top of a set's `data.*` keys; every set
runs each variant one after the other in throwaway projects exactly as bench/own_data.py builds
them. `keeps` is DEVELOPERS.md's "keeps its results": no test score (the champion's, every final
model's) lower by more than one test sample or 1 point, whichever is larger.
"""

from __future__ import annotations

import shutil
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
