"""Publish what one study produced: the top-k models, metrics, best params and plots.

Only files this study's own trials wrote are published (each copy is checked against
the SHA-256 its trial recorded), and searches in one folder publish one at a time, so
models/search and reports/search always come from a single study.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainlab import paths
from trainlab.dvc_metrics import write_stage_metrics
from trainlab.errors import CheckpointError, UserError
from trainlab.hashing import sha256_file
from trainlab.io import staging_dir
from trainlab.processes import host_lock
from trainlab.search.study import SLOT, counted_trials, killed_numbers, lost_slots
from trainlab.search.summary import write_best_params, write_plots
from trainlab.search.trials import MODEL_SHA256


@dataclass(frozen=True)
class Published:
    best: list[FrozenTrial]
    members: list[dict]
    metrics: dict[str, float]
    files: list[Path]   # for people: best_params.yaml and the study plots
    lost: dict[int, str]   # slots lost to a fault of the machine and not run again: slot -> fault


def publishing() -> ContextManager[None]:
    """The folder's publish lock: hold it while writing, and logging, what publish_study wrote."""
    return host_lock(paths.SEARCH_PUBLISH_LOCK)


def publish_study(study: optuna.Study, top_k: int, metric: str) -> Published:
    """Write models/search and reports/search from `study` (call it inside `publishing()`)."""
    reports, artifacts = paths.stage_reports("search"), paths.stage_artifacts("search")
    best = top_trials(study, top_k)
    if not best:
        raise UserError(f"search: no trial completed ({study_counts(study)}); see the trial messages above")
    members = publish_top_k(study.study_name, best, paths.SEARCH_MODELS)
    # The best trial's slot is in best_params.yaml and members.json, and a tag of the search run:
    # as a metric it was a column of `dvc metrics show` and the chart MLflow's view opened on.
    metrics = {f"best/{metric}": best[0].value, **study_counts(study)}
    write_stage_metrics(reports, "search", metrics)
    write_best_params(best[0], study.study_name, reports / "best_params.yaml")
    plots = write_plots(study, artifacts)
    return Published(best, members, metrics, [reports / "best_params.yaml", *plots], lost_slots(study))


def lost_line(lost: dict[int, str], n_trials: int) -> str | None:
    """The one line a study published with trials lost to the machine says, or None."""
    if not lost:
        return None
    slots = ", ".join(map(str, sorted(lost)))
    return (f"search: published without {len(lost)} of {n_trials} trials, lost to a fault of the machine and not "
            f"run again (slot {slots}: {lost[min(lost)]}); `trainlab search` runs them")


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best completed trials, best first (ties broken by slot, for a stable order)."""
    done = [t for t in counted_trials(study) if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(done, key=lambda t: (sign * t.value, int(t.user_attrs[SLOT])))[:k]


def publish_top_k(study_name: str, trials: list[FrozenTrial], out: Path) -> list[dict]:
    """Copy the top-k trial models of `study_name` into `out` (swapped in atomically) with an index."""
    # staging_dir: a plain 0777-less-umask folder named after this process, so one left by
    # a killed publisher is removed by the next one.
    with staging_dir(out) as staging:
        members = [_copy_member(study_name, rank, trial, staging) for rank, trial in enumerate(trials, start=1)]
        (staging / "members.json").write_text(json.dumps(members, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    return members


def _copy_member(study_name: str, rank: int, trial: FrozenTrial, staging: Path) -> dict:
    slot = int(trial.user_attrs[SLOT])
    source, name = paths.search_trial_model(study_name, slot), f"top{rank}.pt"
    if source.is_file():
        shutil.copyfile(source, staging / name)
    digest = sha256_file(staging / name) if (staging / name).is_file() else "missing"
    if digest != trial.user_attrs.get(MODEL_SHA256):
        raise CheckpointError(f"{source}: missing or not the model trial {slot} of study {study_name} wrote "
                              f"(SHA-256 differs); remove {paths.SEARCH_STATE} to run the search afresh")
    return {"rank": rank, "file": name, "slot": slot, "value": trial.value, "params": trial.params,
            "study": study_name, "trial": trial.number, "sha256": digest}


def study_counts(study: optuna.Study) -> dict[str, int]:
    trials = counted_trials(study)
    return {"trials/complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "trials/pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "trials/failed": sum(t.state == TrialState.FAIL for t in trials),
            "trials/killed_and_retried": len(killed_numbers(study.get_trials(deepcopy=False)))}
