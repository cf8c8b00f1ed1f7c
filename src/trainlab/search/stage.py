"""The search stage from loaded params to published results: the study run under the stage's
MLflow run, its top-k models and reports written, what the terminal is told."""

from __future__ import annotations

import sys

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes
from trainlab.params_record import ParamsRecord
from trainlab.search.identity import study_name
from trainlab.search.publish import lost_line, publish_study, publishing
from trainlab.search.runner import run_search
from trainlab.search.space import check_space
from trainlab.search.study import load_study_call, storage_label
from trainlab.tracking import StageRun


def run_search_stage(params: Params, params_path: str, ran_with: ParamsRecord) -> StageRun:
    """Run (or resume) the study named after its inputs, publish it; returns the stage's run."""
    check_space(params)
    name = study_name(params)
    print(f"search: study {name} in {storage_label(params)}", file=sys.stderr, flush=True)
    with StageRun("search", params, inputs=data_hashes(paths.PREPARED), params_file=params_path) as run:
        run.set_tags({"optuna.study_name": name})
        study = run_search(params, name, run.run_id)
        with publishing():   # another search in this folder publishes before or after, never between
            ran_with.check_unchanged()
            published = publish_study(study, params.search.top_k, params.search.metric)
            ran_with.write()   # models/search/params.json
            for path in published.files:
                run.log_artifact(path, "study")
        if published.lost:
            print(lost_line(published.lost, params.search.n_trials), file=sys.stderr, flush=True)
        best = published.best[0]
        run.log_metrics(published.metrics, step=0)
        run.set_tags({"optuna.best_slot": published.members[0]["slot"], "optuna.best_trial": best.number,
                      **{f"best.{key}": value for key, value in best.params.items()}})
        run.log_text(study.trials_dataframe().to_csv(index=False), "study/trials.csv")
    print(f"best {params.search.metric}: {best.value:.4f} with {best.params}")
    print(f"[search] open the study: {load_study_call(params, name)}", flush=True)
    return run
