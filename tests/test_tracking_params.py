"""Less clutter in MLflow: each stage logs the params it reads, its scores as summary metrics
(not eleven 0/1 diagnosis charts), and no bookkeeping metric for the chart view to open on."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from trainlab.config import flatten, load_params
from trainlab.config.sections import STAGE_PARAMS, stage_params
from trainlab.testing import ROOT
from trainlab.tracking.mlflow_fields import summary_key

from helpers.tracking import only_run


def test_each_stage_logs_the_params_its_dvc_yaml_entry_declares() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {name: set(stage["params"]) for name, stage in stages.items()} == \
        {name: set(sections) for name, sections in STAGE_PARAMS.items()}


def test_evaluate_and_ensemble_log_a_handful_of_params_not_all() -> None:
    params = load_params(ROOT / "params.yaml")
    every = flatten(params)
    baselines = {"finetune.compare_scratch", "finetune.linear_baseline"}   # which candidates exist
    for stage, sections, keys in (("evaluate", {"evaluate"}, set()), ("ensemble", {"ensemble", "selection"}, baselines)):
        logged = stage_params(params, stage)
        assert logged == {key: value for key, value in every.items()
                          if key.split(".")[0] in sections or key in keys}
        assert len(logged) < 25 < 100 < len(every), (stage, len(logged), len(every))
    # A dotted entry (data.split_seed) brings that one key, not its whole section.
    finetune = stage_params(params, "finetune")
    assert [key for key in finetune if key.startswith("data.")] == ["data.split_seed"]


def test_summary_metrics_are_the_scores_and_the_diagnosis_a_tag(prepared_project: Path) -> None:
    run = only_run(prepared_project, "pretrain")
    reported = json.loads((prepared_project / "reports/pretrain/details.json").read_text())
    flags = {key for key in reported if key.startswith("diagnosis/")}
    # details.json keeps a key per finding made; MLflow has the tag.
    assert flags and {reported[key] for key in flags} == {1}
    assert {key.split("/", 1)[1] for key in flags} == set(run.data.tags["trainlab.diagnosis"].split(","))
    finals = {key for key in run.data.metrics if key.startswith("final.")}
    assert finals == {summary_key(key) for key in set(reported) - flags}
    assert not [key for key in run.data.metrics if "diagnosis" in key]   # no one-point charts
