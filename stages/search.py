"""`trainlab search`: hyperparameter search over the finetune config (Optuna).

search.space declares dotted keys with ranges or choices; each trial fine-tunes
models/pretrained.pt with its sampled params and is a child run of this stage's
MLflow run. The study lives in .trainlab/search (or search.storage, an RDB URL
shared by workers on many machines), so an interrupted search resumes. Writes the
top-k trial models to models/search/ and the best params to reports/search/.
"""

import click

from stages.options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from trainlab import paths
    from trainlab.config import load_params
    from trainlab.errors import UserError
    from trainlab.io import write_json
    from trainlab.search import check_space, publish_top_k, run_search, study_counts, top_trials
    from trainlab.search.summary import write_best_params, write_plots
    from trainlab.tracking import StageRun
    from trainlab.training import data_hashes

    params = load_params(params_path)
    check_space(params)
    reports = paths.stage_reports("search")
    with StageRun("search", params, inputs=data_hashes(), params_file=params_path) as run:
        study = run_search(params, run.run_id)
        best = top_trials(study, params.search.top_k)
        if not best:
            raise UserError(f"search: no trial completed ({study_counts(study)}); see the trial messages above")
        members = publish_top_k(best, paths.SEARCH_MODELS)
        metric = params.search.metric
        metrics = {f"best/{metric}": best[0].value, "best/slot": members[0]["slot"], **study_counts(study)}
        write_json(reports / "metrics.json", metrics)
        write_best_params(best[0], reports / "best_params.yaml")
        artifacts = paths.stage_artifacts("search")
        artifacts.mkdir(parents=True, exist_ok=True)
        run.log_metrics(metrics, step=0)
        run.set_tags({f"best.{key}": value for key, value in best[0].params.items()})
        for path in [reports / "best_params.yaml", *write_plots(study, artifacts)]:
            run.log_artifact(path, "study")
        run.log_text(study.trials_dataframe().to_csv(index=False), "study/trials.csv")
    click.echo(f"best {metric}: {best[0].value:.4f} with {best[0].params}")
