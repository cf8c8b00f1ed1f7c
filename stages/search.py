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

    from trainlab.search.stage import run_search_stage

    finished(run_search_stage(params, params_path, ran_with), "search")
