"""The params.yaml schema: the real file validates; every mistake is one line naming its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from mnist1d.data import get_dataset_args
from pydantic import ValidationError

from trainlab.config import Params, flatten, load_params, params_hash, validate, with_overrides
from trainlab.config.schema import SourceConfig
from trainlab.errors import ParamsError
from trainlab.testing import ROOT, set_dotted

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())

def real_with(**changes: Any) -> dict:
    """A deep copy of the real params.yaml with dotted keys (`__` for dots) changed."""
    raw = copy.deepcopy(REAL)
    for key, value in changes.items():
        set_dotted(raw, key.replace("__", "."), value)
    return raw


def error_of(raw: Any) -> str:
    with pytest.raises(ParamsError) as info:
        validate(raw, source="params.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- the real file
def test_real_params_validate() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.name == "mnist1d"
    assert params.pretrain.optimizer.name == "adamw"
    assert params.pretrain.optimizer.betas == (0.9, 0.999)
    assert params.finetune.freeze == ("stem",)
    assert set(params.search.space) == {"finetune.optimizer.lr", "finetune.backbone_lr_scale", "model.dropout"}
    assert params.search.space["finetune.optimizer.lr"].log is True


def test_params_yaml_and_the_schema_defaults_are_one_source_of_truth() -> None:
    # Walks every key, so a key added to either side is covered: deleting any key from
    # params.yaml must give the value params.yaml showed, and params.yaml shows every key.
    shipped, defaults, written = flatten(load_params(ROOT / "params.yaml")), flatten(Params()), flatten(REAL)
    assert set(written) == set(defaults), ("keys only in params.yaml", set(written) - set(defaults),
                                           "keys only in the schema", set(defaults) - set(written))
    differing = {key: {"params.yaml": shipped[key], "schema": defaults[key]}
                 for key in shipped if shipped[key] != defaults[key]}
    assert differing == {}
    for key, value in written.items():   # what the file says is what a stage resolves
        if key != "search.space":
            assert shipped[key] == value, key


def test_deleting_any_key_from_params_yaml_keeps_the_value_it_showed() -> None:
    # Nested sections too: pretrain and finetune share TrainSpec but ship different values
    # (finetune's loss and early stopping included), and each keeps its own.
    shipped = flatten(load_params(ROOT / "params.yaml"))
    for dotted in flatten(REAL):
        raw = copy.deepcopy(REAL)
        *parents, leaf = dotted.split(".")
        section = raw
        for part in parents:
            section = section[part]
        del section[leaf]
        assert flatten(validate(raw))[dotted] == shipped[dotted], dotted


def test_target_defaults_are_the_mnist1d_papers_split() -> None:
    paper = get_dataset_args()
    for params in (Params(), load_params(ROOT / "params.yaml")):
        target = params.data.mnist1d
        assert (target.num_samples, target.seed, target.train_split) == (
            paper.num_samples, paper.seed, paper.train_split)
    assert SourceConfig().seed != paper.seed


def test_generation_comments_quote_the_papers_values() -> None:
    # params.yaml documents each generation override as "# paper: <value>"; check the quotes.
    text = (ROOT / "params.yaml").read_text()
    quoted = dict(re.findall(r"^\s+(\w+):\s*\S+\s*# paper: ([\d.]+)", text, flags=re.M))
    paper = vars(get_dataset_args())
    assert set(quoted) == set(REAL["data"]["source"]["generation"])
    for key, value in quoted.items():
        assert float(value) == float(paper[key]), key


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(("key", "value", "expected"), [
    ("pretrain.optimizer.name", "adma",
     "params.yaml: pretrain.optimizer.name: 'adma' is not one of sgd, adam, adamw, rmsprop, adagrad, lbfgs"),
    ("finetune.schedule.name", "cosin",
     "params.yaml: finetune.schedule.name: 'cosin' is not one of constant, step, cosine, linear, "
     "inverse_sqrt, plateau"),
    ("data.name", "cifar", "params.yaml: data.name: 'cifar' is not one of mnist1d, digits, file"),
    ("model.arch", "transformer",
     "params.yaml: model.arch: 'transformer' is not one of auto, logreg, mlp, cnn1d, resnet1d, cnn2d, resnet2d, "
     "resnet18, resnet34"),
    ("pretrain.loss.name", "hinge", "params.yaml: pretrain.loss.name: 'hinge' is not one of auto, cross_entropy, bce, mse, huber"),
    ("trainer.precision", "fp8", "params.yaml: trainer.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
    ("search.sampler", "cmaes", "params.yaml: search.sampler: 'cmaes' is not one of grid, random, tpe"),
    ("data.source.labels", "shuffled",
     "params.yaml: data.source.labels: 'shuffled' is not one of same, permuted, merged"),
])
def test_unknown_name_lists_the_accepted_names(key: str, value: str, expected: str) -> None:
    assert error_of(real_with(**{key: value})) == expected


@pytest.mark.parametrize(("key", "section_keys"), [
    ("pretrain.optimizzer", "epochs, batch_size, auto, loss, optimizer, schedule, early_stopping, from"),
    ("model.widht", "arch, width, depth, kernel_size, downsample, dropout, batchnorm, activation"),
    ("tracking.url", "uri, experiment, log_models, log_trial_models, system_metrics"),
    ("epochs", "seed, data, model, trainer, pretrain, finetune, search, ensemble, evaluate, selection, tracking"),
])
def test_unknown_key_lists_the_accepted_keys(key: str, section_keys: str) -> None:
    assert error_of(real_with(**{key: 1})) == (
        f"params.yaml: {key}: unknown key; accepted keys here: {section_keys}")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("data.train_samples", "many", "data.train_samples: expected an integer, got 'many'"),
    ("data.train_samples", 1.5, "data.train_samples: expected an integer, got 1.5"),
    ("model.width", "wide", "model.width: expected an integer, got 'wide'"),
    ("model.batchnorm", "maybe", "model.batchnorm: expected true or false, got 'maybe'"),
    ("pretrain.optimizer.lr", "fast", "pretrain.optimizer.lr: expected a number or auto, got 'fast'"),
    ("seed", "x", "seed: expected an integer, got 'x'"),
    ("pretrain.optimizer.betas", 0.9, "pretrain.optimizer.betas: expected a list, got 0.9"),
    ("data", [1, 2], "data: expected a mapping of keys, got [1, 2]"),
    ("finetune.freeze", True,
     "finetune.freeze: expected a number of blocks or a list of block names, got True"),
])
def test_wrong_type_names_key_and_expected_type(key: str, value: Any, expected: str) -> None:
    assert error_of(real_with(**{key: value})) == f"params.yaml: {expected}"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("data.train_samples", -5, "data.train_samples: must be > 0, got -5"),
    ("data.train_samples", 0, "data.train_samples: must be > 0, got 0"),
    ("data.train_samples", 10**12, "data.train_samples: must be <= 10000000, got 1000000000000"),
    ("data.train_samples", 1e12, "data.train_samples: must be <= 10000000, got 1000000000000.0"),
    ("data.source.num_samples", 10**12, "data.source.num_samples: must be <= 10000000, got 1000000000000"),
    ("pretrain.epochs", 10**6, "pretrain.epochs: must be <= 100000, got 1000000"),
    ("trainer.devices", 0, "trainer.devices: must be > 0, got 0"),
    ("pretrain.optimizer.lr", -1.0, "pretrain.optimizer.lr: must be > 0.0, got -1.0"),
    ("pretrain.optimizer.lr", 0, "pretrain.optimizer.lr: must be > 0.0, got 0"),
    ("data.val_fraction", 1.0, "data.val_fraction: must be < 1.0, got 1.0"),
    ("model.dropout", -0.1, "model.dropout: must be >= 0.0, got -0.1"),
    ("data.digits.source_classes", [0, 11], "data.digits.source_classes.1: must be <= 9, got 11"),
])
def test_out_of_range_names_key_and_bound(key: str, value: Any, expected: str) -> None:
    assert error_of(real_with(**{key: value})) == f"params.yaml: {expected}"


def test_batch_size_must_divide_by_accumulation_times_devices() -> None:
    message = error_of(real_with(trainer__batch_size=128, trainer__grad_accum=3))
    assert message == "params.yaml: trainer: batch_size 128 must be divisible by grad_accum x devices = 3"
    message = error_of(real_with(trainer__batch_size=64, trainer__devices=2, trainer__grad_accum=2,
                                 finetune__batch_size=6))
    assert message == ("params.yaml: (top level): finetune.batch_size 6 must be divisible by "
                       "trainer.grad_accum x trainer.devices = 4")
    # 128 = 4 x 2 x 16: fine.
    assert validate(real_with(trainer__grad_accum=4, trainer__devices=2)).trainer.devices == 2


def test_only_one_label_budget() -> None:
    assert error_of(real_with(data__train_samples_per_class=10)) == (
        "params.yaml: data: set train_samples or train_samples_per_class, not both")
    params = validate(real_with(data__train_samples=None, data__train_samples_per_class=10))
    assert params.data.train_samples_per_class == 10


def test_file_dataset_needs_a_path() -> None:
    assert error_of(real_with(data__name="file")) == (
        "params.yaml: data: data.name is 'file' but data.file.path is not set (it names data/own, the "
        "placeholder); set it to your .csv, .parquet or .npz file or image folder")


@pytest.mark.parametrize(("entry", "expected"), [
    ({"type": "float", "low": 0.3, "high": 0.1}, "a float parameter needs low < high"),
    ({"type": "int", "low": 4, "high": 4}, "a int parameter needs low < high"),
    ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "a log-scaled range needs low > 0"),
    ({"type": "categorical"}, "a categorical parameter needs a non-empty 'choices' list"),
    ({"type": "categorical", "choices": []}, "a categorical parameter needs a non-empty 'choices' list"),
])
def test_search_space_entry_problems(entry: dict, expected: str) -> None:
    raw = real_with(search__space={"model.dropout": entry})
    assert error_of(raw) == f"params.yaml: search.space.model.dropout: {expected}"


def test_search_space_unknown_key_lists_entry_keys() -> None:
    raw = real_with(search__space={"model.dropout": {"type": "float", "low": 0.0, "high": 0.1, "lo": 3}})
    assert error_of(raw) == ("params.yaml: search.space.model.dropout.lo: unknown key; "
                             "accepted keys here: type, low, high, log, step, choices")


def test_search_space_unknown_type() -> None:
    raw = real_with(search__space={"model.dropout": {"type": "uniform", "low": 0.0, "high": 0.1}})
    assert error_of(raw) == ("params.yaml: search.space.model.dropout.type: 'uniform' is not one of "
                             "float, int, categorical")


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    message = error_of(real_with(model__width=-1, model__depth=0, model__dropout=2.0))
    assert message == "params.yaml: model.width: must be > 0, got -1 (and 2 more problems)"


# ------------------------------------------------------------------------------ the file
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path / "params.yaml")
    assert str(info.value) == (f"{tmp_path / 'params.yaml'}: file not found "
                               f"(run from the project root, where params.yaml lives)")


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nmodel:\n  width: 8\n   depth: 2\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 4, column 9: invalid YAML: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "kind"), [("- 1\n- 2\n", "list"), ("just words\n", "str"), ("3\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: expected a mapping of sections at the top level, got {kind}"


def test_errors_name_the_file_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(real_with(model__activation="swish")))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: model.activation: 'swish' is not one of relu, gelu, tanh, sigmoid"


def test_load_params_applies_dotted_overrides(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(REAL))
    params = load_params(path, overrides={"model.width": 8, "finetune.optimizer.name": "sgd"})
    assert (params.model.width, params.finetune.optimizer.name) == (8, "sgd")
    with pytest.raises(ParamsError, match=r"model\.width: must be > 0, got 0"):
        load_params(path, overrides={"model.width": 0})


# ----------------------------------------------------------------------- frozen, overrides
def test_config_objects_are_frozen() -> None:
    params = validate(REAL)
    with pytest.raises(ValidationError, match="frozen"):
        params.seed = 1
    with pytest.raises(ValidationError, match="frozen"):
        params.pretrain.optimizer.lr = 1.0
    with pytest.raises(ValidationError, match="frozen"):
        params.search.space["model.dropout"].low = 0.5
    with pytest.raises(TypeError):
        params.finetune.freeze[0] = "block1"   # tuples, not lists
    assert params.seed == 0 and params.pretrain.optimizer.lr == 3.0e-3


def test_with_overrides_returns_a_new_validated_config() -> None:
    params = validate(REAL)
    changed = with_overrides(params, {"finetune.optimizer.lr": 0.01, "model.dropout": 0.25})
    assert (changed.finetune.optimizer.lr, changed.model.dropout) == (0.01, 0.25)
    assert (params.finetune.optimizer.lr, params.model.dropout) == (3.0e-3, 0.1)
    assert flatten(changed) == {**flatten(params), "finetune.optimizer.lr": 0.01, "model.dropout": 0.25}


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"pretrain.optimizer.name": "adma"},
     "override: pretrain.optimizer.name: 'adma' is not one of sgd, adam, adamw, rmsprop, adagrad, lbfgs"),
    ({"model.dropout": 1.5}, "override: model.dropout: must be < 1.0, got 1.5"),
    ({"model.dropuot": 0.1}, "override: model.dropuot: unknown key; accepted keys here: arch, width, depth, "
                             "kernel_size, downsample, dropout, batchnorm, activation"),
    ({"trainer.grad_accum": 3}, "override: trainer: batch_size 128 must be divisible by grad_accum x devices = 3"),
])
def test_with_overrides_revalidates(overrides: dict, expected: str) -> None:
    with pytest.raises(ParamsError) as info:
        with_overrides(validate(REAL), overrides)
    assert str(info.value) == expected


# ------------------------------------------------------------------------ flatten, hash
def test_flatten_gives_dotted_leaves_with_defaults() -> None:
    params = validate(REAL)
    flat = flatten(params)
    assert flat["pretrain.optimizer.lr"] == 3.0e-3
    assert flat["finetune.optimizer.momentum"] == 0.9          # a default, not in params.yaml
    assert flat["search.metric"] == "val/loss"                 # likewise
    assert flat["pretrain.optimizer.betas"] == "[0.9, 0.999]"  # lists as JSON text
    assert flat["data.train_samples_per_class"] is None
    assert yaml.safe_load(flat["search.space"]) == params.model_dump(mode="json")["search"]["space"]
    assert not any(isinstance(v, dict) for v in flat.values())
    assert flatten(params.model_dump(mode="json")) == flat
    # Every leaf of the schema appears exactly once.
    def leaves(tree: dict) -> int:
        return sum(leaves(v) if isinstance(v, dict) and v and k != "space" else 1 for k, v in tree.items())
    assert len(flat) == leaves(params.model_dump(mode="json"))


def test_params_hash_is_stable_and_content_sensitive() -> None:
    params = validate(REAL)
    digest = params_hash(params)
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    reordered = dict(reversed(list(params.model_dump(mode="json").items())))
    assert params_hash(reordered) == digest
    assert params_hash(validate(copy.deepcopy(REAL))) == digest
    assert params_hash(with_overrides(params, {"data.split_seed": 2})) != digest
    assert params_hash(params.data) != params_hash(with_overrides(params, {"data.split_seed": 2}).data)
    # A section's hash ignores other sections.
    assert params_hash(params.data) == params_hash(with_overrides(params, {"model.width": 16}).data)


@pytest.mark.parametrize("section", ["data", "finetune", "tracking"])
def test_a_missing_section_is_an_error_not_silent_defaults(tmp_path: Path, section: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params[section]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}: {section}: required section is missing"):
        load_params(path)


def test_an_empty_params_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ParamsError, match="required section is missing"):
        load_params(path)


# ------------------------------------------------- issue 18: what cannot take effect or would crash later
def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_a_repeated_section_is_refused_naming_key_and_both_lines(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text()
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("finetune:"))
    repeated = text + "finetune:\n  epochs: 3\n"
    last = len(repeated.splitlines()) - 1
    assert load_error(tmp_path, repeated) == (
        f"{tmp_path / 'params.yaml'}: line {last}, column 1: invalid YAML: "
        f"duplicate key 'finetune' (first at line {first})")


def test_a_repeated_key_inside_a_section_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, yaml.safe_dump(REAL, sort_keys=False).replace(
        "  width: ", "  width: 8\n  width: ", 1))
    assert "duplicate key 'width'" in message


def test_merge_keys_may_still_override(tmp_path: Path) -> None:
    # `<<: *anchor` then the same key is how YAML overrides merged values: not a duplicate.
    raw = yaml.safe_dump(REAL, sort_keys=False).replace("model:\n", "model: &m\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(raw)
    assert load_params(path).model == Params.model_validate(REAL).model


@pytest.mark.parametrize(("written", "expected"), [("1e3", 1000), ("2.0e+2", 200), ("12", 12)])
def test_exponent_integers_are_numbers_as_dvc_reads_them(tmp_path: Path, written: str, expected: int) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(REAL, sort_keys=False).replace("  epochs: auto\n", f"  epochs: {written}\n", 1))
    assert load_params(path).pretrain.epochs == expected


def test_a_fractional_epoch_count_is_refused_with_its_value(tmp_path: Path) -> None:
    text = yaml.safe_dump(REAL, sort_keys=False).replace("  epochs: auto\n", "  epochs: 1e-3\n", 1)
    assert load_error(tmp_path, text).endswith("pretrain.epochs: expected an integer or auto, got 0.001")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("search.n_trials", True, "search.n_trials: expected an integer, got true"),
    ("trainer.batch_size", False, "trainer.batch_size: expected an integer, got false"),
    ("finetune.optimizer.lr", True, "finetune.optimizer.lr: expected a number or auto, got true"),
    ("finetune.optimizer.betas", [True, 0.9], "finetune.optimizer.betas: expected a number, got [True, 0.9]"),
    ("finetune.freeze", True, "finetune.freeze: expected a number of blocks or a list of block names, got True"),
])
def test_booleans_are_not_numbers(key: str, value: Any, expected: str) -> None:
    assert error_of(real_with(**{key.replace(".", "__"): value})) == f"params.yaml: {expected}"


def test_booleans_still_set_boolean_keys() -> None:
    assert validate(real_with(trainer__compile=True, search__space={
        "finetune.model_free": {"type": "categorical", "choices": [True, False]}})).trainer.compile is True


@pytest.mark.parametrize("key", ["seed", "data.split_seed", "data.mnist1d.seed", "data.source.seed"])
@pytest.mark.parametrize(("value", "bound"), [(99999999999999999999999, "<= 4294967295"), (-1, ">= 0")])
def test_seeds_must_fit_numpy(key: str, value: int, bound: str) -> None:
    assert error_of(real_with(**{key.replace(".", "__"): value})) == f"params.yaml: {key}: must be {bound}, got {value}"


def test_the_largest_seed_is_accepted_and_usable() -> None:
    import numpy as np

    params = validate(real_with(seed=2**32 - 1, data__split_seed=2**32 - 1))
    np.random.seed(params.seed)   # what mnist1d and Optuna's samplers do with it
    assert error_of(real_with(search__seed=400_001)) == "params.yaml: search.seed: must be <= 400000, got 400001"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("evaluate.model_name", "modèle 🙂/x", "'modèle 🙂/x' contains '/'; a registered model name may not contain"),
    ("evaluate.model_name", "a:b", "contains ':'"),
    ("evaluate.model_name", "..", "is not a plain name"),
    ("evaluate.model_name", " ", "must not be empty"),
    ("evaluate.alias", "latest", "'latest' is reserved by MLflow"),
    ("evaluate.alias", "v2", "'v2' is reserved by MLflow"),
    ("evaluate.alias", "my alias", "an alias may only contain letters, digits, _ and -"),
    ("evaluate.alias", "challenger", "'challenger' is the alias of the versions evaluate does not promote"),
    ("evaluate.promote", "sometimes", "'sometimes' is not one of auto, always, never"),
    ("tracking.experiment", "x" * 600, "600 characters; MLflow stores at most 256"),
    ("tracking.uri", "not-a-uri", "'not-a-uri' is not a tracking URI MLflow can open; accepted: http(s)://HOST"),
    ("tracking.uri", "/srv/mlruns", "'/srv/mlruns' is not a tracking URI MLflow can open"),
    ("tracking.uri", "file:///srv/mlruns", "is not a tracking URI MLflow can open"),
    ("tracking.uri", "sqlite://mlflow.db", "a sqlite URI needs three slashes and a path"),
    ("tracking.uri", "http://", "no host after http://"),
])
def test_names_and_uris_mlflow_would_refuse(key: str, value: str, expected: str) -> None:
    message = error_of(real_with(**{key.replace(".", "__"): value}))
    assert message.startswith(f"params.yaml: {key}: ") and expected in message, message


@pytest.mark.parametrize(("key", "value"), [
    ("evaluate.model_name", "modèle 🙂"), ("evaluate.alias", "champion-2"), ("tracking.experiment", "x" * 256),
    ("tracking.uri", "sqlite:///mlflow.db"), ("tracking.uri", "sqlite:////abs/path/m.db"),
    ("tracking.uri", "http://127.0.0.1:5000"), ("tracking.uri", "postgresql+psycopg2://user@host/db"),
])
def test_names_and_uris_mlflow_accepts(key: str, value: str) -> None:
    validate(real_with(**{key.replace(".", "__"): value}))


def test_mlflow_itself_accepts_our_model_name_rules() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    from trainlab.config.names import check_model_name

    for name in ("modèle 🙂", "a/b", "a:b", "../x", "x" * 300, "trainlab"):
        ours = _accepted(check_model_name, name)
        assert not (ours and not _accepted(_validate_model_name, name, MlflowException)), name


def _accepted(check, value: str, error: type[Exception] = ValueError) -> bool:
    try:
        check(value)
    except error:
        return False
    return True


def test_a_huge_params_file_is_refused_at_once(tmp_path: Path) -> None:
    import time

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(REAL) + "unknown: [" + ",".join(["1"] * 3_000_000) + "]\n")
    started = time.perf_counter()
    message = load_error(tmp_path, path.read_text())
    assert time.perf_counter() - started < 2.0
    assert message.startswith(f"{path}: 6,") and "a params file is a few KB" in message
