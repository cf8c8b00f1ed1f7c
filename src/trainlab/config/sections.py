"""The params each stage reads: what its MLflow run logs, and what dvc.yaml declares.

A run that logged all ~130 params (prepare and evaluate included) offered ~250 columns
in the MLflow run table, most of them settings the stage never looked at. Each stage now
logs the sections that can change its results, the same list as its `params:` in
dvc.yaml (tests/test_tracking_params.py keeps the two equal). `tracking` is read by
every stage but changes no result; like every other key it stays in the run's
`config/resolved_params.json` artifact, which `trainlab rerun` restores from.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from trainlab.config.load import flatten
from trainlab.stage_registry import PIPELINE

# Each pipeline stage's sections (trainlab.stage_registry): dvc.yaml's `params:` lists the same.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {stage.name: stage.params for stage in PIPELINE}


def stage_params(params: BaseModel, stage: str) -> dict[str, Any]:
    """The flattened params under `stage`'s sections (all of them for a stage not listed)."""
    flat = flatten(params)
    sections = STAGE_PARAMS.get(stage)
    if sections is None:
        return flat
    return {key: value for key, value in flat.items()
            if any(key == s or key.startswith(f"{s}.") for s in sections)}
