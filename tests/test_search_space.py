"""search.space may only name keys a trial reads and can change: refused when params load."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainlab.config import validate
from trainlab.errors import ParamsError
from trainlab.testing import trainlab

from helpers.search import TINY_SPACE, new_project, search_params

RANGE = {"type": "float", "low": 1.0e-3, "high": 1.0e-2}
ACCEPTED = ("finetune.* (not compare_scratch, linear_probe, linear_baseline; not epochs while search.epochs is set), "
            "model.{dropout,activation}, trainer.{batch_size,grad_accum,precision,fp16_loss_scaling,"
            "clip_grad_norm,clip_grad_value,augment,averaging}")


def load_error(space: dict, **overrides) -> str:
    with pytest.raises(ParamsError) as info:
        validate(search_params(search__space={**TINY_SPACE, **space}, **overrides), source="params.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("key, spec, reason", [
    ("pretrain.optimizer.lr", RANGE, "no trial reads it"),
    ("data.train_samples", {"type": "int", "low": 100, "high": 200}, "no trial reads it"),
    ("tracking.experiment", {"type": "categorical", "choices": ["a", "b"]}, "no trial reads it"),
    ("search.seed", {"type": "int", "low": 0, "high": 3}, "no trial reads it"),
    ("seed", {"type": "int", "low": 0, "high": 3}, "no trial reads it"),
    ("ensemble.top_k", {"type": "int", "low": 1, "high": 3}, "no trial reads it"),
    ("trainer.threads", {"type": "int", "low": 1, "high": 2}, "no trial reads it"),
    ("trainer.progress", {"type": "categorical", "choices": ["off", "log"]}, "no trial reads it"),
    ("finetune.linear_probe", {"type": "categorical", "choices": [True, False]}, "no trial reads it"),
    ("model.width", {"type": "int", "low": 8, "high": 16},
     "it changes the backbone's layers, so models/pretrained.pt would not load into a trial's model"),
    ("model.arch", {"type": "categorical", "choices": ["mlp", "resnet1d"]},
     "it changes the backbone's layers, so models/pretrained.pt would not load into a trial's model"),
    ("finetune.epochs", {"type": "int", "low": 2, "high": 4}, "search.epochs sets every trial's epochs"),
])
def test_a_key_no_trial_can_use_is_refused_at_load_time(key: str, spec: dict, reason: str) -> None:
    assert load_error({key: spec}) == (f"params.yaml: search.space: {key} cannot be searched: {reason}; "
                                       f"searchable: {ACCEPTED}")


@pytest.mark.parametrize("key, spec", [
    ("finetune.optimizer.weight_decay", {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True}),
    ("finetune.backbone_lr_scale", {"type": "float", "low": 0.05, "high": 1.0}),
    ("finetune.epochs", {"type": "int", "low": 2, "high": 4}),
    ("model.activation", {"type": "categorical", "choices": ["relu", "gelu"]}),
    ("trainer.batch_size", {"type": "categorical", "choices": [32, 64]}),
    ("trainer.precision", {"type": "categorical", "choices": ["fp32", "bf16"]}),
    ("trainer.averaging", {"type": "categorical", "choices": ["none", "ema", "swa"]}),
    ("trainer.augment", {"type": "categorical", "choices": [False, True]}),
])
def test_a_key_trials_read_is_accepted(key: str, spec: dict) -> None:
    # finetune.epochs is searchable once search.epochs no longer overrides it.
    params = validate(search_params(search__space={**TINY_SPACE, key: spec}, search__epochs=None))
    assert key in params.search.space


def test_the_stage_refuses_it_in_one_line_before_any_work(prepared_project: Path, tmp_path: Path) -> None:
    project = new_project(prepared_project, tmp_path / "project",
                          search_params(search__space={**TINY_SPACE, "pretrain.optimizer.lr": RANGE}))
    result = trainlab(["search"], project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: params.yaml: search.space: pretrain.optimizer.lr cannot be searched: no trial reads it; "
        f"searchable: {ACCEPTED}"]
    assert not (project / ".trainlab/search").exists()


def test_a_study_name_that_cannot_name_a_directory_is_refused() -> None:
    with pytest.raises(ParamsError) as info:
        validate(search_params(search__study_name="../x"), source="params.yaml")
    assert str(info.value) == ("params.yaml: search.study_name: '../x': use 1-100 letters, digits, '.', '_' "
                               "or '-' (it names a directory)")
