"""Bad input, end to end: a fuzzed params.yaml, damaged model/resume/data files, bad user
data, a diverging run, and a failed stage next to the outputs of a good one.

The promise under test: whatever the user feeds a stage, it stops with the documented exit
code and one line naming the culprit (a dotted key, a YAML line, a file), writes nothing
it should not, never unpickles an arbitrary object, and leaves earlier outputs intact.
Unit-level checks of each message live in test_config.py, test_data.py, test_models.py and
test_engine_resume.py; here the real `trainlab` command is run on them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainlab.config import load_params
from trainlab.config.schema import Params
from trainlab.engine import Hook
from trainlab.errors import CheckpointError
from trainlab.models import build_model, read_checkpoint, save_model
from trainlab.testing import ROOT, copy_project, small_params, write_params

from helpers.console import console, error_line, invoke, without_tracking_uri

REAL_TEXT = (ROOT / "params.yaml").read_text()
REAL = yaml.safe_load(REAL_TEXT)
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included) -> its sha256."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def runs_of(project: Path, stage: str, uri: str | None = None) -> list:
    """MLflow runs of `stage` started in `project`, newest first."""
    client = MlflowClient(uri or f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`trainlab.stage` = '{stage}'",
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if Path(r.data.tags["trainlab.cwd"]).resolve() == project.resolve()
            and "mlflow.parentRunId" not in r.data.tags]


def assert_failed_run(project: Path, stage: str, error: str, uri: str | None = None) -> None:
    """The stage's newest MLflow run is FAILED with the error the user saw in its tag; none is left RUNNING."""
    runs = runs_of(project, stage, uri)
    assert runs, f"no {stage} run recorded"
    assert runs[0].info.status == "FAILED", runs[0].info.status
    assert runs[0].data.tags["trainlab.error"].endswith(error.removeprefix("error: ")), runs[0].data.tags
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.fixture
def torch_state():
    """In-process stages set torch's thread count and deterministic mode: put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture
def in_copy(prepared_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_state) -> Path:
    """A private copy of the prepared project (prepare and pretrain done) as the working directory."""
    project = copy_project(prepared_project, tmp_path / "project")
    monkeypatch.chdir(project)
    without_tracking_uri(monkeypatch)
    return project


# ============================================================================ params fuzz
@dataclass(frozen=True)
class Mutation:
    id: str
    text: str       # the whole mutated params.yaml
    stage: str      # the stage that reads the mutated section (dvc.yaml)
    names: str      # the dotted key, or "line N", the error line must name


def stage_reading(section: str) -> str:
    """The first pipeline stage that declares `section` of params.yaml in dvc.yaml (a key
    no stage declares: prepare, the first stage, which validates the whole file too)."""
    return next((name for name, stage in PIPELINE.items() if section in stage.get("params", [])), "prepare")


def walk(tree: dict, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, value) of the nested mapping, sections included (before their contents)."""
    for key, value in tree.items():
        yield (*path, key), value
        if isinstance(value, dict):
            yield from walk(value, (*path, key))


def node_at(tree: dict, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def with_value(path: tuple, value: Any) -> str:
    """The real params.yaml with the value at `path` set (a new key if it did not exist)."""
    raw = copy.deepcopy(REAL)
    node_at(raw, path[:-1])[path[-1]] = value
    return yaml.safe_dump(raw, sort_keys=False)


def misspell(word: str, taken: set[str], rng: random.Random) -> str:
    """A plausible typo of `word` that is none of `taken`."""
    while True:
        i = rng.randrange(len(word))
        edit = rng.choice(["drop", "double", "swap", "upper", "suffix"])
        if edit == "drop" and len(word) > 2:
            typo = word[:i] + word[i + 1:]
        elif edit == "double":
            typo = word[:i] + word[i] + word[i:]
        elif edit == "swap" and i < len(word) - 1:
            typo = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif edit == "upper":
            typo = word.upper()
        else:
            typo = word + rng.choice(["s", "2", "_", "x"])
        if typo not in taken:
            return typo


# Each wrong-type replacement is of a kind the schema must refuse for that kind of key.
WRONG_TYPE = {bool: "maybe", int: "ten", float: {"value": 0.5}, str: ["a", "b"], list: {"first": 1},
              type(None): {"first": 1}}
SIZES = ["data.train_samples", "data.mnist1d.num_samples", "data.source.num_samples", "model.width",
         "model.depth", "model.kernel_size", "trainer.batch_size", "trainer.grad_accum", "trainer.devices",
         "trainer.threads", "trainer.log_every_steps", "pretrain.epochs", "finetune.epochs",
         "finetune.batch_size", "pretrain.optimizer.lr", "finetune.optimizer.eps", "search.n_trials",
         "search.workers", "search.top_k", "search.grid_points", "ensemble.top_k", "evaluate.calibration_bins"]
NAMES = {"pretrain.optimizer.name": "sgd adam adamw rmsprop adagrad lbfgs",
         "finetune.schedule.name": "constant step cosine linear inverse_sqrt plateau",
         "model.arch": "logreg mlp cnn1d resnet1d cnn2d resnet2d", "data.name": "mnist1d digits file",
         "search.sampler": "grid random tpe", "trainer.precision": "auto fp32 bf16 fp16",
         "finetune.optimizer.name": "sgd adam adamw rmsprop adagrad lbfgs",
         "pretrain.schedule.name": "constant step cosine linear inverse_sqrt plateau"}
# Keys whose 1e12 would exhaust memory, time or processes: each needs an upper bound.
HUGE = ["pretrain.epochs", "finetune.epochs", "search.epochs", "data.train_samples", "data.mnist1d.num_samples",
        "data.source.num_samples", "model.width", "model.depth", "trainer.batch_size", "search.n_trials",
        "search.workers", "search.grid_points", "evaluate.calibration_bins"]


def dotted(key: str) -> tuple:
    return tuple(key.split("."))


def syntax_errors(rng: random.Random) -> list[Mutation]:
    """Broken YAML: unclosed [ and {, a tab in the indentation, a key indented one space too far or too little."""
    lines = REAL_TEXT.splitlines(keepends=True)
    code = [line.split("#")[0] for line in lines]

    def indent(i: int) -> int:
        return len(lines[i]) - len(lines[i].lstrip(" "))

    # A "key: value" line whose previous line is a sibling "key: value" (not a section header).
    siblings = [i for i in range(1, len(lines)) if indent(i) > 0 and re.match(r"\s+\w+: \S", code[i])
                and re.match(r"\s+\w+: \S", code[i - 1]) and indent(i - 1) == indent(i)]
    flow_lists = [i for i, c in enumerate(code) if "[" in c and "]" in c]
    flow_maps = [i for i, c in enumerate(code) if "{" in c and "}" in c]
    chosen = {
        "unclosed-list": (rng.choice(flow_lists), lambda s: s.replace("]", "", 1)),
        "unclosed-map": (rng.choice(flow_maps), lambda s: s[::-1].replace("}", "", 1)[::-1]),
        "tab-indent": (rng.choice(siblings), lambda s: "\t" + s.lstrip(" ")),
        "indent-too-far": (rng.choice(siblings), lambda s: " " + s),
        "indent-too-little": (rng.choice(siblings), lambda s: s[1:]),
        "tab-after-spaces": (rng.choice(siblings), lambda s: s.replace(" ", "\t", 1)),
    }
    mutations = []
    for kind, (i, edit) in chosen.items():
        broken = list(lines)
        broken[i] = edit(lines[i])
        assert broken[i] != lines[i]
        mutations.append(Mutation(f"yaml-{kind}-line{i + 1}", "".join(broken), "prepare", f"line {i + 1}"))
    return mutations


def fuzz_cases(seed: int = 9) -> list[Mutation]:
    """~50 deterministic mutations of the real params.yaml, each one a mistake the schema must refuse."""
    rng = random.Random(seed)
    entries = list(walk(REAL))
    leaves = [(p, v) for p, v in entries if not isinstance(v, dict) and p != ("finetune", "freeze")]
    sections = [p for p, v in entries if isinstance(v, dict)]
    cases: list[Mutation] = []

    def add(kind: str, path: tuple, value: Any) -> None:
        key = ".".join(path)
        cases.append(Mutation(f"{kind}-{key}", with_value(path, value), stage_reading(path[0]), key))

    for path, value in rng.sample(leaves, 10):
        add("wrong-type", path, WRONG_TYPE[type(value)])
    for path in rng.sample(sections, 3):
        add("list-for-section", path, [1, 2])
    for key in rng.sample(SIZES, 7):
        small = rng.choice([0, -1, -rng.randint(2, 10**6)])
        add("not-positive", dotted(key), float(small) if isinstance(real_value(key), float) else small)
    for key in rng.sample(sorted(NAMES), 6):
        add("unknown-name", dotted(key), misspell(real_value(key), set(NAMES[key].split()), rng))
    for path in rng.sample([(), *[p for p in sections if p[:2] != ("search", "space")]], 6):
        keys = node_at(REAL, path)
        add("unknown-key", (*path, misspell(rng.choice(sorted(keys)), set(keys), rng)), 1)
    for path in rng.sample(sections, 5):
        add("null-section", path, None)
    for key in HUGE:
        add("huge", dotted(key), rng.choice([10**12, 1.0e12, 10**15]))
    return cases + syntax_errors(rng)


def real_value(key: str) -> Any:
    """The real params.yaml's value at a dotted key."""
    return node_at(REAL, dotted(key))


CASES = fuzz_cases()
# Every 9th case also goes through the real console script in a subprocess.
THROUGH_CONSOLE = {case.id for case in CASES[::9]}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fuzzed_params_stop_the_stage_in_one_line(case: Mutation, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text(case.text)
    monkeypatch.chdir(tmp_path)
    without_tracking_uri(monkeypatch)   # so the stage would create ./mlflow.db
    if case.id in THROUGH_CONSOLE:
        outcome = console([case.stage], tmp_path)
    else:
        outcome = invoke([case.stage])
    line = error_line(outcome)
    assert line.startswith("error: params.yaml: "), line
    if case.names.startswith("line "):
        assert "invalid YAML" in line and re.search(rf"\b{case.names}\b", line), (case.names, line)
    else:
        assert line.startswith(f"error: params.yaml: {case.names}: "), (case.names, line)
    # Refused before any work: no outputs, no tracking store, so no run left RUNNING either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_fuzzer_mutates_every_kind_of_mistake() -> None:
    kinds = {case.id.split("-")[0] for case in CASES}
    assert {"wrong", "list", "not", "unknown", "null", "huge", "yaml"} <= kinds
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    assert len(THROUGH_CONSOLE) >= 5
    # The unmutated file is valid: each case fails because of its mutation alone.
    assert isinstance(load_params(ROOT / "params.yaml"), Params)
    assert all(case.text != REAL_TEXT and case.text != yaml.safe_dump(REAL, sort_keys=False) for case in CASES)


# ================================================================ damaged files on disk
def tensor_record_middle(path: Path) -> int:
    """Offset of the middle byte of the largest tensor record inside a torch.save zip archive."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if re.search(r"/data/\d+$", i.filename)), key=lambda i: i.file_size)
    lengths = raw[info.header_offset + 26:info.header_offset + 30]   # local header: name and extra field
    name_len, extra_len = int.from_bytes(lengths[:2], "little"), int.from_bytes(lengths[2:], "little")
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class WritesMarker:
    """Unpickling this object opens (creates) the marker file: proof that it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def damage_model(path: Path, how: str, marker: Path) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "bytes-flipped":
        flip(path, tensor_record_middle(path))
    else:   # a model file that carries an arbitrary object next to real weights
        blob = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({**blob, "meta": {"note": WritesMarker(marker)}}, path)


@pytest.mark.parametrize("how", ["truncated", "bytes-flipped", "pickle-payload"])
def test_damaged_pretrained_model_is_named_and_never_loaded(in_copy: Path, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "unpickled"
    damage_model(in_copy / "models/pretrained.pt", how, marker)
    line = error_line(invoke(["finetune"]))
    assert line.startswith("error: models/pretrained.pt: corrupt or not a trainlab checkpoint ("), line
    assert not marker.exists()
    assert not (in_copy / "models/finetuned.pt").exists()
    assert not list((in_copy / ".trainlab").rglob("finetune*.pt"))   # nothing trained
    assert_failed_run(in_copy, "finetune", line)
    if how == "pickle-payload":
        assert "not plain data, refused: Unsupported global: GLOBAL io.open" in line, line
        # The payload is live: an unrestricted load would have run it.
        torch.load(in_copy / "models/pretrained.pt", map_location="cpu", weights_only=False)
        assert marker.exists()


def test_every_flipped_byte_of_a_model_file_is_refused_or_harmless(prepared_project: Path, tmp_path: Path) -> None:
    # torch.load does not check its archive's CRCs: a flip in tensor data used to load as
    # other weights. Now every flip either fails to load or leaves the contents unchanged
    # (zip metadata such as timestamps). A seeded sample of offsets, plus tensor data for sure.
    original = prepared_project / "models/pretrained.pt"
    reference = torch.load(original, map_location="cpu", weights_only=True)
    size = original.stat().st_size
    rng = random.Random(3)
    offsets = sorted({*rng.sample(range(size), 150), tensor_record_middle(original)})
    path = tmp_path / "model.pt"
    refused = 0
    for offset in offsets:
        path.write_bytes(original.read_bytes())
        flip(path, offset)
        try:
            loaded = read_checkpoint(path)
        except CheckpointError as err:
            assert str(err).startswith(f"{path}: corrupt") and "\n" not in str(err)
            refused += 1
            continue
        assert loaded.keys() == reference.keys(), offset
        assert loaded["state_dict"].keys() == reference["state_dict"].keys(), offset
        for key, tensor in reference["state_dict"].items():
            assert torch.equal(loaded["state_dict"][key], tensor), (offset, key)
        assert {k: v for k, v in loaded.items() if k != "state_dict"} == \
            {k: v for k, v in reference.items() if k != "state_dict"}, offset
    assert refused > len(offsets) // 2   # most of a small model file is tensor data and pickle


@pytest.mark.slow
def test_pickle_payload_through_the_console_script(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    marker = tmp_path / "unpickled"
    damage_model(project / "models/pretrained.pt", "pickle-payload", marker)
    line = error_line(console(["finetune"], project))
    assert line.startswith("error: models/pretrained.pt: corrupt or not a trainlab checkpoint ("), line
    assert "not plain data, refused: Unsupported global: GLOBAL io.open" in line, line
    assert not marker.exists()
    assert_failed_run(project, "finetune", line)


class StopAtSecondEpochEnd(Hook):
    """Ctrl-C at the end of the second epoch (the first epoch's checkpoint is on disk)."""

    def on_epoch_end(self, state, metrics) -> None:
        if state.epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["truncated", "bytes-flipped"])
def test_damaged_resume_checkpoint_is_named_with_what_to_do(in_copy: Path, how: str) -> None:
    from trainlab.training.transfer import finetune, finetune_request

    params = load_params("params.yaml")
    checkpoint = in_copy / ".trainlab/resume/finetune.pt"
    with pytest.raises(KeyboardInterrupt):   # a real resume checkpoint: finetune stopped in epoch 2
        finetune(finetune_request(params, hooks=[StopAtSecondEpochEnd()]), Path("models/pretrained.pt"))
    torch.load(checkpoint, map_location="cpu", weights_only=True)   # intact so far
    if how == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size * 2 // 3])
    else:
        flip(checkpoint, tensor_record_middle(checkpoint))

    line = error_line(invoke(["finetune"]))
    assert line.startswith("error: .trainlab/resume/finetune.pt: corrupt resume checkpoint ("), line
    assert line.endswith("delete it to start the stage afresh"), line
    assert not (in_copy / "models/finetuned.pt").exists()
    assert_failed_run(in_copy, "finetune", line)
    # Following the advice works.
    checkpoint.unlink()
    write_params(in_copy, small_params(finetune__epochs=1, finetune__compare_scratch=False,
                                       finetune__linear_probe=False))
    done = invoke(["finetune"])
    assert done.exit_code == 0, done.stderr
    assert (in_copy / "models/finetuned.pt").is_file() and not checkpoint.exists()


def edit_manifest(root: Path, change) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def damage_prepared(root: Path, how: str) -> str:
    """Damage data/prepared; returns the start of the error line that must follow."""
    x = root / "target/train_x.npy"
    if how == "byte-flipped":
        flip(x, x.stat().st_size - 7)
        return "error: data/prepared/target/train_x.npy: content hash does not match manifest.json"
    if how == "manifest-hash-edited":
        def edit(m):
            m["tasks"]["target"]["splits"]["val"]["files"]["y"]["sha256"] = "0" * 64
        edit_manifest(root, edit)
        return "error: data/prepared/target/val_y.npy: content hash does not match manifest.json"
    if how == "truncated-and-rehashed":
        # Truncated, with a manifest hash that matches the damage: the array reader must catch it.
        x.write_bytes(x.read_bytes()[: x.stat().st_size // 2])

        def rehash(m):
            m["tasks"]["target"]["splits"]["train"]["files"]["x"]["sha256"] = sha256(x)
        edit_manifest(root, rehash)
        return "error: data/prepared/target/train_x.npy: unreadable array ("
    (root / "manifest.json").write_text((root / "manifest.json").read_text()[:200])
    return "error: data/prepared/manifest.json: corrupt manifest ("


@pytest.mark.parametrize("how", ["byte-flipped", "manifest-hash-edited", "truncated-and-rehashed", "manifest-truncated"])
def test_damaged_prepared_data_is_named(in_copy: Path, how: str) -> None:
    expected = damage_prepared(in_copy / "data/prepared", how)
    runs_before = len(runs_of(in_copy, "finetune"))
    line = error_line(invoke(["finetune"]))
    assert line.startswith(expected), (expected, line)
    assert not (in_copy / "models/finetuned.pt").exists()
    # Refused while loading its inputs, before its MLflow run began.
    assert len(runs_of(in_copy, "finetune")) == runs_before


def test_backbone_of_another_input_shape_is_one_checkpoint_error(in_copy: Path) -> None:
    params = load_params("params.yaml")
    data_shape = json.loads((in_copy / "data/prepared/manifest.json").read_text())["input_shape"]
    other = [data_shape[0] + 20]
    save_model(in_copy / "models/pretrained.pt", build_model(params.model, tuple(other), 10), params.model,
               tuple(other), [str(i) for i in range(10)])
    line = error_line(invoke(["finetune"]))
    assert line == (f"error: models/pretrained.pt: pretrained on inputs of shape {other}, "
                    f"but the target data has shape {data_shape}"), line
    assert_failed_run(in_copy, "finetune", line)


# ============================================================== bad user data in prepare
def animals(rows_per_class: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(3 * rows_per_class, 4)), columns=["f0", "f1", "f2", "f3"])
    frame["label"] = ["cat", "dog", "bird"] * rows_per_class
    return frame


def bad_data(case: str) -> tuple[pd.DataFrame, dict]:
    """A CSV with one problem, and the data.file settings that read it."""
    frame, settings = animals(), {}
    if case == "missing-column":
        settings["label"] = "species"
    elif case == "nan":   # a series must be complete (a table's empty cells are imputed)
        frame.loc[len(frame) - 1, "f2"] = np.nan
        settings["kind"] = "series"
    elif case == "strings-in-numbers":   # a series is numbers only (a table's strings are categories)
        frame["f1"] = frame["f1"].astype(object)
        frame.loc[5, "f1"] = "12 kg"
        settings["kind"] = "series"
    elif case == "single-class":
        frame["label"] = "cat"
    elif case == "unseen-test-class":
        frame["part"] = ["test" if i % 4 == 0 else "train" for i in range(len(frame))]
        frame.loc[[0, 4], "label"] = "fish"          # two 'fish' rows, both in test
        settings["split_column"] = "part"
    elif case == "empty-split":
        frame["part"] = "train"
        settings["split_column"] = "part"
    elif case == "too-few-per-class":
        frame.loc[0, "label"] = "fish"               # one sample: cannot be both train and test
    return frame, settings


# What tells each case's message apart (besides the file's name).
BAD_DATA = {
    "missing-column": "missing column(s) ['species']",
    "nan": "1 sample(s) contain NaN or infinite values (first at row 59)",
    "strings-in-numbers": "column(s) ['f1'] are not numbers, but series and images need numbers",
    "single-class": "only one class (cat) in the labels",
    "unseen-test-class": "test labels ['fish'] never appear in the train split",
    "empty-split": "the test split is empty",
    "too-few-per-class": "class 'fish' has only 1 sample",
}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for this module's in-process prepare runs (created once)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def user_data_project(directory: Path, case: str) -> Path:
    frame, settings = bad_data(case)
    frame.to_csv(directory / "data.csv", index=False)
    write_params(directory, small_params(data__name="file", data__file__path="data.csv", data__train_samples=None,
                                         **{f"data__file__{k}": v for k, v in settings.items()}))
    return directory


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_user_data_stops_prepare_with_its_own_message(case: str, tmp_path: Path, shared_store: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    project = user_data_project(tmp_path, case)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)   # restored after the test (mlflow sets it too)
    line = error_line(invoke(["prepare"]))
    assert line.startswith("error: data.csv: ") and BAD_DATA[case] in line, line
    # The distinguishing words belong to this case only.
    assert [c for c, words in BAD_DATA.items() if words in line] == [case]
    assert not (project / "data").exists()
    assert_failed_run(project, "prepare", line, shared_store)


def test_a_good_file_passes_the_same_checks(tmp_path: Path, shared_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference for the cases above: the unbroken CSV prepares.
    project = user_data_project(tmp_path, "none")
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)
    done = invoke(["prepare"])
    assert done.exit_code == 0, done.stderr
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert manifest["tasks"]["target"]["class_names"] == ["bird", "cat", "dog"]


@pytest.mark.slow
def test_bad_user_data_through_the_console_script(tmp_path: Path, shared_store: str) -> None:
    project = user_data_project(tmp_path, "nan")
    line = error_line(console(["prepare"], project, MLFLOW_TRACKING_URI=shared_store))
    assert line == f"error: data.csv: {BAD_DATA['nan']}", line
    assert_failed_run(project, "prepare", line, shared_store)


# ========================================================== divergence, failed reruns
@pytest.mark.slow
@pytest.mark.parametrize(("lr", "finishes_an_epoch"), [(1.0e4, False), (2000.0, True)],
                         ids=["diverges-in-epoch-1", "diverges-after-epoch-1"])
def test_divergence_exits_3_and_keeps_earlier_outputs(prepared_project: Path, tmp_path: Path, lr: float,
                                                      finishes_an_epoch: bool) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    kept = ["models/pretrained.pt", "reports/pretrain/metrics.json", "reports/pretrain/curves.json"]
    before = {name: sha256(project / name) for name in kept}
    write_params(project, small_params(pretrain__optimizer__name="sgd", pretrain__optimizer__lr=lr,
                                       trainer__clip_grad_norm=None))
    line = error_line(console(["pretrain"], project), exit_code=3)

    found = re.fullmatch(r"error: training diverged: loss became (nan|inf|-inf) at step (\d+) "
                         r"\(epoch (\d+), lr [^)]+\); the learning rate is likely too high [^;]+; (.+)", line)
    assert found, line
    step, epoch, kept_note = int(found[2]), int(found[3]), found[4]
    batch = small_params()["trainer"]["batch_size"]
    steps_per_epoch = -(-len(np.load(project / "data/prepared/source/train_y.npy")) // batch)
    assert (epoch - 1) * steps_per_epoch <= step < epoch * steps_per_epoch, (step, epoch)
    assert_failed_run(project, "pretrain", line)
    assert runs_of(project, "pretrain")[0].data.tags["trainlab.error"].startswith("TrainingDiverged: ")
    # The earlier run's outputs are untouched: the failed run wrote none of its own.
    assert {name: sha256(project / name) for name in kept} == before

    checkpoint = project / ".trainlab/resume/pretrain.pt"
    if not finishes_an_epoch:
        assert epoch == 1 and kept_note == "no epoch finished, no weights kept", line
        assert not checkpoint.exists()
        return
    assert epoch >= 2 and kept_note == "kept the best weights (epoch 1)", line
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert blob["counters"]["epoch"] == epoch - 1 and blob["counters"]["step"] == (epoch - 1) * steps_per_epoch
    # The weights kept are the best epoch's (by a finite val/loss; at this lr they are poor ones).
    best = blob["best"]
    assert best["best_epoch"] == 0 and np.isfinite(blob["history"][0]["val/loss"])
    assert best["best_state"].keys() == blob["model"].keys()
    for key, tensor in blob["model"].items():
        assert torch.equal(best["best_state"][key], tensor), key


def test_fp16_without_loss_scaling_is_detected_where_fp32_trains(in_copy: Path) -> None:
    from trainlab.errors import TrainingDiverged
    from trainlab.training import TrainRequest, finish, train_source

    # Reference: at this lr fp32 trains through every epoch (its loss is large but finite).
    steep = {"pretrain.optimizer.name": "sgd", "pretrain.optimizer.lr": 100.0, "trainer.clip_grad_norm": None}
    fp32 = load_params("params.yaml", overrides=steep)
    reference = train_source(TrainRequest(fp32, fp32.pretrain, "fp32-reference"))
    finish(reference)
    assert len(reference.result.history) == fp32.pretrain.epochs
    assert all(np.isfinite(row["val/loss"]) for row in reference.result.history)

    # fp16 overflows (its range ends at 65504); the stage names the step and the cause.
    write_params(in_copy, small_params(pretrain__optimizer__name="sgd", pretrain__optimizer__lr=100.0,
                                       trainer__clip_grad_norm=None, trainer__precision="fp16",
                                       trainer__fp16_loss_scaling=False))
    line = error_line(invoke(["pretrain"]), exit_code=3)
    assert re.search(r"training diverged: loss became (nan|inf) at step \d+ \(epoch \d+, lr [^)]+\); "
                     r"fp16 overflow without loss scaling;", line), line
    assert_failed_run(in_copy, "pretrain", line)

    # Loss scaling does not prevent it: the overflow is in the forward pass, not in small gradients.
    scaled = load_params("params.yaml", overrides={**steep, "trainer.precision": "fp16",
                                                   "trainer.fp16_loss_scaling": True})
    with pytest.raises(TrainingDiverged, match="the learning rate is likely too high"):
        train_source(TrainRequest(scaled, scaled.pretrain, "fp16-scaled"))


def test_failed_prepare_leaves_the_previous_data_intact(in_copy: Path) -> None:
    before = tree_digest(in_copy / "data")
    metrics_before = sha256(in_copy / "reports/prepare/metrics.json")
    # A readable file whose last row is NaN: the failure comes after reading the whole file.
    frame, settings = bad_data("nan")
    frame.to_csv(in_copy / "data.csv", index=False)
    write_params(in_copy, small_params(data__name="file", data__file__path="data.csv", data__train_samples=None,
                                       **{f"data__file__{k}": v for k, v in settings.items()}))
    line = error_line(invoke(["prepare"]))
    assert line == f"error: data.csv: {BAD_DATA['nan']}", line
    assert tree_digest(in_copy / "data") == before          # byte-identical, no staging dir left behind
    assert sha256(in_copy / "reports/prepare/metrics.json") == metrics_before
    assert_failed_run(in_copy, "prepare", line)
