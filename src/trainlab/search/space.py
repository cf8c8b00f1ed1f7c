"""The search space: dotted keys of params.yaml with a range or choices, checked before trial one."""

from __future__ import annotations

import itertools
import math
from typing import Any

from trainlab.config import Params, with_overrides
from trainlab.config.schema import SpaceParam
from trainlab.errors import ParamsError

def check_space(params: Params) -> None:
    """Every key must name a setting, and every bound or choice must be a valid value for it.

    (Which sections a trial reads, hence may be searched, the schema checks at load time.)
    """
    space = params.search.space
    if not space:
        raise ParamsError("search.space: empty; declare at least one key, e.g. "
                          "finetune.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    tree = params.model_dump(mode="json")
    for key, spec in space.items():
        where = f"search.space.{key}"
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"{where}: no such setting in params.yaml")
            node = node[part]
        if isinstance(node, dict):
            raise ParamsError(f"{where}: is a section, not a setting")
        if key.endswith("optimizer.lr") and "auto" in (spec.choices or ()):
            raise ParamsError(f"{where}: auto is not offered in a search space (each trial would measure "
                              f"its own rate); search numbers, or set {key}: auto outside the search")
        for value in _probe_values(spec):
            try:
                with_overrides(params, {key: value})
            except ParamsError as err:
                reason = str(err).split(": ", 2)[-1]
                raise ParamsError(f"{where}: value {value!r} is invalid for this setting ({reason})") from None


def _probe_values(spec: SpaceParam) -> list[Any]:
    if spec.type == "categorical":
        return list(spec.choices or [])
    cast = int if spec.type == "int" else float
    return [cast(spec.low), cast(spec.high)]


def suggest(trial, space: dict[str, SpaceParam]) -> dict[str, Any]:
    """Ask an Optuna trial for one value per key."""
    values = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec.choices))
        elif spec.type == "int":
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log,
                                            step=int(spec.step or 1))
        else:
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log,
                                              step=None if spec.log else spec.step)
    return values


def grid(space: dict[str, SpaceParam], points_per_range: int) -> list[dict[str, Any]]:
    """Every combination of the declared choices, ranges cut into `points_per_range` values."""
    axes = {key: _axis(spec, points_per_range) for key, spec in space.items()}
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _axis(spec: SpaceParam, n: int) -> list[Any]:
    if spec.type == "categorical":
        return list(spec.choices)
    low, high = float(spec.low), float(spec.high)
    if spec.log:
        values = [math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / max(n - 1, 1)) for i in range(n)]
    else:
        values = [low + i * (high - low) / max(n - 1, 1) for i in range(n)]
    if spec.type == "int":
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.6g}") for v in values]
