"""`trainlab search`: hyperparameter search over the finetune config (Optuna).

search.space declares dotted keys with ranges or choices; each trial fine-tunes
models/pretrained.pt with its sampled params and is a child run of this stage's
MLflow run. The study lives in .trainlab/search/study.journal (or search.storage, an
RDB URL shared by workers on many machines), named search.study_name plus a hash of
everything its trials depend on (printed at the start), so an interrupted search
resumes and a changed input starts a new study. Writes the top-k trial models to
models/search/ and the best params and study plots to reports/search/.
"""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("search")   # before the imports below, which take seconds
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.search.workers import start_worker_server

    params, ran_with = load_stage_params("search", params_path)   # ran_with: checked before publishing
    check_upstream("search")   # prepare's and pretrain's outputs were made with what dvc.lock records
    start_worker_server(params.search.workers)   # its imports overlap this process's own, below

    from trainlab.search.identity import study_name
    from trainlab.search.publish import lost_line, publish_study, publishing
    from trainlab.search.runner import run_search
    from trainlab.search.space import check_space
    from trainlab.search.study import load_study_call, storage_label
    from trainlab.tracking import StageRun
    from trainlab.training import data_hashes

    check_space(params)
    name = study_name(params)
    click.echo(f"search: study {name} in {storage_label(params)}", err=True)
    with StageRun("search", params, inputs=data_hashes(), params_file=params_path) as run:
        run.set_tags({"optuna.study_name": name})
        study = run_search(params, name, run.run_id)
        with publishing():   # another search in this folder publishes before or after, never between
            ran_with.check_unchanged()
            published = publish_study(study, params.search.top_k, params.search.metric)
            ran_with.write()   # models/search/params.json
            for path in published.files:
                run.log_artifact(path, "study")
        if published.lost:
            click.echo(lost_line(published.lost, params.search.n_trials), err=True)
        best = published.best[0]
        run.log_metrics(published.metrics, step=0)
        run.set_tags({"optuna.best_slot": published.members[0]["slot"], "optuna.best_trial": best.number,
                      **{f"best.{key}": value for key, value in best.params.items()}})
        run.log_text(study.trials_dataframe().to_csv(index=False), "study/trials.csv")
    click.echo(f"best {params.search.metric}: {best.value:.4f} with {best.params}")
    click.echo(f"[search] open the study: {load_study_call(params, name)}")
    finished(run, "search")
