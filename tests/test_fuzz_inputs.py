"""A seeded fuzz of what users bring, through the real CLI: it fails on any traceback.

Generated from one seed, so a failure reproduces: duplicate YAML keys, seeds out of
numpy's range, booleans and exponents where integers go, kernel sizes odd and even (every
one in range must train), names MLflow would refuse, odd data files (directories, symlink
loops, text and random bytes under a data suffix, empty, 1-D, one-hot, mismatched, non-array
members) and odd environments (store paths blocked by a file, a missing database driver, a
damaged mlflow.db), and damaged state files read by the next stage: the study journal (torn,
zero-filled, garbled), members.json and the models' SHA-256 manifests (torn, garbled, retyped,
removed) and model files (torn, flipped, another model copied over them). Each case must end
with exit 0, 2 (bad input) or 4 (the machine), and a failure in exactly one `error:` line.
Bounded in time by construction: a fixed number of cases, each subprocess under a timeout;
most run in-process.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import string
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from trainlab.config import load_params
from trainlab.config.schema import ModelConfig
from trainlab.models import build_model
from trainlab.testing import ROOT, copy_project, small_params, write_params

from helpers.console import Outcome, console, invoke, without_tracking_uri

SEED = 18
REAL_TEXT = (ROOT / "params.yaml").read_text()
SEED_KEYS = ["seed", "data.split_seed", "data.mnist1d.seed", "data.source.seed", "search.seed"]
INT_KEYS = ["search.n_trials", "pretrain.epochs", "model.width", "trainer.batch_size", "search.top_k",
            "ensemble.top_k", "model.depth", "finetune.epochs"]


@dataclass(frozen=True)
class Case:
    id: str
    params: dict | str                  # a params tree, or the whole params.yaml text
    expect: str                         # a fragment of the one error line ("" for exit 0)
    files: Callable[[Path], None] = field(default=lambda folder: None)


def one_error_or_success(outcome: Outcome, codes: set[int]) -> str:
    """The outcome's error line (or "" on success); fails on a traceback or a stray line."""
    said = outcome.stdout + outcome.stderr
    assert outcome.exit_code in codes, f"exit {outcome.exit_code}\n{said[-3000:]}"
    assert "Traceback" not in said, said[-3000:]
    if outcome.exit_code == 0:
        return ""
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.stderr[-3000:]
    return errors[0]


def with_key(key: str, value: Any, **more: Any) -> dict:
    return small_params(**{key.replace(".", "__"): value}, **more)


# --------------------------------------------------------------------------- params cases
def duplicate_key_cases(rng: random.Random) -> list[Case]:
    lines = REAL_TEXT.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if re.match(r"\s+[a-z_]+: [^#\s]", line)]
    sections = [i for i, line in enumerate(lines) if re.match(r"[a-z_]+:", line)]
    cases = []
    for i in rng.sample(keyed, 4):
        key = lines[i].split(":")[0].strip()
        text = "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
        cases.append(Case(f"duplicate-{key}-line{i + 2}", text, f"duplicate key '{key}' (first at line {i + 1})"))
    for i in rng.sample(sections, 2):
        key = lines[i].split(":")[0]
        cases.append(Case(f"duplicate-section-{key}", REAL_TEXT + f"{key}:\n  x: 1\n", f"duplicate key '{key}'"))
    return cases


def seed_cases(rng: random.Random) -> list[Case]:
    # 1e23: a float past any integer (it said "Unable to parse input string as an integer").
    values = [-1, -rng.randint(2, 10**9), 2**32, 2**64 + rng.randint(0, 10**6), 99999999999999999999999,
              float(f"1e{rng.randint(20, 300)}")]
    return [Case(f"seed-{key}-{value}", with_key(key, value), f"{key}: must be ")
            for key, value in zip(rng.sample(SEED_KEYS * 2, len(values)), values)]


def _or_auto(key: str) -> str:
    """Budget keys take `auto` as well as a number, and their messages say so."""
    return " or auto" if key.endswith((".epochs", ".batch_size")) and key.split(".")[0] in ("pretrain", "finetune") else ""


def number_cases(rng: random.Random) -> list[Case]:
    cases = [Case(f"bool-{key}", with_key(key, flag), f"{key}: expected an integer{_or_auto(key)}, got "
                  f"{str(flag).lower()}") for key, flag in zip(rng.sample(INT_KEYS, 3), (True, False, True))]
    cases += [Case(f"fraction-{key}", with_key(key, 2.5), f"{key}: expected an integer{_or_auto(key)}, got 2.5")
              for key in rng.sample(INT_KEYS, 2)]
    exponent = re.sub(r"^  epochs: auto\b", f"  epochs: {rng.choice(['1e1', '2E1', '1.2e1'])}", REAL_TEXT,
                      count=1, flags=re.M)
    assert exponent != REAL_TEXT
    return cases + [Case("exponent-epochs", exponent, "")]


def kernel_cases(rng: random.Random) -> list[Case]:
    bad = [0, -rng.randint(1, 9), 65, rng.randint(66, 10**6)]
    return [Case(f"kernel-{k}", with_key("model.kernel_size", k), "model.kernel_size: must be ") for k in bad]


def name_cases(rng: random.Random) -> list[Case]:
    def word(n: int) -> str:
        return "".join(rng.choice(string.ascii_letters + "éü🙂 ") for _ in range(n)).strip() or "x"

    forbidden = rng.choice("/:%\\")
    return [
        Case("model-name", with_key("evaluate.model_name", word(6) + forbidden + word(3)), "evaluate.model_name: "),
        Case("alias", with_key("evaluate.alias", rng.choice(["latest", "v7", word(4) + " x"])), "evaluate.alias: "),
        Case("experiment", with_key("tracking.experiment", word(rng.randint(300, 900))), "tracking.experiment: "),
        Case("uri", with_key("tracking.uri", rng.choice(["not-a-uri", "/abs/path", "mlruns", "file:./x"])),
             "tracking.uri: "),
    ]


# ---------------------------------------------------------------------------- file cases
def write_npz(name: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda folder: np.savez(folder / name, **arrays)


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def file_cases(rng: random.Random) -> list[Case]:
    gen = np.random.default_rng(rng.randint(0, 2**31))
    x, y = gen.normal(size=(60, 6)), np.repeat([0, 1, 2], 20)

    def loop(folder: Path) -> None:
        (folder / "in.csv").symlink_to(folder / "in.csv")

    def members(folder: Path) -> None:
        with zipfile.ZipFile(folder / "in.npz", "w") as archive:
            archive.writestr("x.npy", gen.bytes(40))
            archive.writestr("y.npy", b"")

    def truncated(folder: Path) -> None:
        np.savez(folder / "full.npz", x=x, y=y)
        data = (folder / "full.npz").read_bytes()
        (folder / "in.npz").write_bytes(data[: rng.randint(10, len(data) - 10)])

    def header_only(folder: Path) -> None:
        pd.DataFrame(columns=["a", "b", "label"]).to_csv(folder / "in.csv", index=False)

    def continuous(folder: Path) -> None:
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
        frame["label"] = gen.normal(size=60)
        frame.to_csv(folder / "in.csv", index=False)

    makers = {
        "directory": ("in.csv", lambda folder: (folder / "in.csv").mkdir(), "is a directory"),
        "symlink-loop": ("in.csv", loop, "is a symlink loop"),
        "text-as-npz": ("in.npz", write_bytes("in.npz", b"x,y\n1,2\n"), "not an NPZ archive"),
        "random-npz": ("in.npz", write_bytes("in.npz", gen.bytes(rng.randint(1, 4000))), "in.npz: "),
        "random-csv": ("in.csv", write_bytes("in.csv", gen.bytes(rng.randint(1, 4000))), "in.csv: "),
        "random-parquet": ("in.parquet", write_bytes("in.parquet", gen.bytes(rng.randint(1, 4000))), "in.parquet: "),
        "truncated-npz": ("in.npz", truncated, "in.npz: "),
        "members-not-arrays": ("in.npz", members, "in.npz: "),
        "empty-npz": ("in.npz", write_npz("in.npz", x=np.zeros((0, 6)), y=np.zeros(0)), "holds no samples"),
        "one-dim-x": ("in.npz", write_npz("in.npz", x=x[:, 0], y=y), "one value per sample"),
        "one-hot-y": ("in.npz", write_npz("in.npz", x=x, y=np.eye(3)[y]), "one-hot encoded"),
        "widths": ("in.npz", write_npz("in.npz", x_train=x, y_train=y, x_test=x[:, :5], y_test=y),
                   "both splits need the same features"),
        "header-only-csv": ("in.csv", header_only, "no rows of data"),
        "continuous-labels-as-classes": ("in.csv", continuous, "has only 1 sample"),
        "one-class": ("in.npz", write_npz("in.npz", x=x, y=np.zeros(60)), "only one class"),
    }
    # A number to predict is a regression unless the user says the values are classes.
    task = {"continuous-labels-as-classes": "classification"}
    return [Case(f"file-{kind}", small_params(data__name="file", data__file__path=name, data__train_samples=None,
                                              data__file__task=task.get(kind, "auto")),
                 expect, make) for kind, (name, make, expect) in makers.items()]


CASES = (duplicate_key_cases(random.Random(SEED)) + seed_cases(random.Random(SEED + 1))
         + number_cases(random.Random(SEED + 2)) + kernel_cases(random.Random(SEED + 3))
         + name_cases(random.Random(SEED + 4)) + file_cases(random.Random(SEED + 5)))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fuzzed_input_ends_in_one_line_never_a_traceback(case: Case, tmp_path: Path, store: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(case.params, str):
        (tmp_path / "params.yaml").write_text(case.params)
    else:
        write_params(tmp_path, case.params)
    case.files(tmp_path)
    monkeypatch.chdir(tmp_path)
    without_tracking_uri(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    if case.expect == "":
        load_params(tmp_path / "params.yaml")   # accepted: that is all this case needs to show
        return
    line = one_error_or_success(invoke(["prepare"]), {2})
    assert case.expect in line, (case.id, line)
    assert not (tmp_path / "data/prepared").exists()


# ---------------------------------------------------------------- kernel sizes that must work
@pytest.mark.parametrize("arch", ["cnn1d", "resnet1d", "cnn2d", "resnet2d"])
def test_every_kernel_size_in_range_builds_and_runs(arch: str) -> None:
    rng = random.Random(SEED + 6)
    shape = (40,) if arch.endswith("1d") else (3, 10, 10)
    for _ in range(6):
        depth = rng.randint(1, 4)
        cfg = ModelConfig(arch=arch, width=4, depth=depth, downsample=rng.randint(0, depth),
                          kernel_size=rng.randint(1, 64), batchnorm=rng.random() < 0.5)
        assert build_model(cfg, shape, 3)(torch.randn(2, *shape)).shape == (2, 3), cfg


@pytest.mark.slow
def test_an_even_kernel_pretrains_through_the_console(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    kernel = random.Random(SEED + 7).choice([2, 4, 6, 8])
    write_params(project, small_params(model__kernel_size=kernel, pretrain__epochs=1))
    one_error_or_success(console(["pretrain"], project), {0})
    assert (project / "models/pretrained.pt").is_file()


# ------------------------------------------------------------------------- odd environments
def damaged_store(project: Path, rng: random.Random) -> dict[str, str]:
    db = project / "mlflow.db"
    db.write_bytes(db.read_bytes()[: rng.randint(100, 4096)] if rng.random() < 0.5 else rng.randbytes(4096))
    return {}


def store_under_a_file(project: Path, rng: random.Random) -> dict[str, str]:
    (project / "blocker").write_text("a file, not a folder\n")
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{project}/blocker/{rng.choice(['m.db', 'x/y.db'])}"}


def missing_driver(project: Path, rng: random.Random) -> dict[str, str]:
    scheme = rng.choice(["postgresql", "mysql", "mssql"])
    return {"MLFLOW_TRACKING_URI": f"{scheme}://user:secret@127.0.0.1:9/db"}


def models_is_a_file(project: Path, rng: random.Random) -> dict[str, str]:
    shutil.rmtree(project / "models")   # its model files and models/manifests/
    (project / "models").write_text("x")
    return {}


ENVIRONMENTS: dict[str, Callable[[Path, random.Random], dict[str, str]]] = {
    "store-under-a-file": store_under_a_file, "missing-driver": missing_driver,
    "damaged-store": damaged_store, "models-is-a-file": models_is_a_file,
}


@pytest.mark.slow
@pytest.mark.parametrize("environment", list(ENVIRONMENTS))
def test_odd_environments_end_in_one_line(environment: str, prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    (project / "models/pretrained.pt").unlink(missing_ok=True)
    env = ENVIRONMENTS[environment](project, random.Random(f"{SEED}-{environment}"))
    line = one_error_or_success(console(["pretrain"], project, **env), {4})
    assert "secret" not in line and not (project / "models/pretrained.pt").is_file()


# ---------------------------------------------------------------------- damaged state files
def tear(path: Path, rng: random.Random) -> None:
    """Cut at a random byte, as a full disk or a power loss leaves a file."""
    data = path.read_bytes()
    path.write_bytes(data[: rng.randint(1, len(data) - 1)])


def garble(path: Path, rng: random.Random) -> None:
    path.write_bytes(rng.randbytes(rng.randint(1, 3000)))


def flip(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def empty(path: Path, rng: random.Random) -> None:
    path.write_bytes(b"")


def remove(path: Path, rng: random.Random) -> None:
    path.unlink()


def retype(path: Path, rng: random.Random) -> None:
    """A JSON state file with one value replaced by a value of another type (or a key dropped)."""
    data = json.loads(path.read_text())
    node = data
    while True:
        keys = list(range(len(node))) if isinstance(node, list) else list(node)
        key = rng.choice(keys)
        if not isinstance(node[key], (dict, list)) or not node[key] or rng.random() < 0.3:
            break
        node = node[key]
    if isinstance(node, dict) and rng.random() < 0.3:
        del node[key]
    else:
        node[key] = rng.choice([None, "x", -1, 1.5, [], {}, True, "../../pretrained.pt"])
    path.write_text(json.dumps(data))


def append_garbage(path: Path, rng: random.Random) -> None:
    with path.open("ab") as handle:
        handle.write(rng.randbytes(rng.randint(1, 200)))


def zero_tail(path: Path, rng: random.Random) -> None:
    """What a power loss can leave on some file systems: the file's end as zero bytes."""
    data = path.read_bytes()
    keep = rng.randint(len(data) // 2, len(data) - 1)
    path.write_bytes(data[:keep] + b"\0" * rng.randint(1, 4096))


def middle_line(path: Path, rng: random.Random) -> None:
    lines = path.read_bytes().split(b"\n")
    i = rng.randrange(1, len(lines) - 2)
    lines[i] = rng.randbytes(rng.randint(1, 80)).replace(b"\n", b" ")
    path.write_bytes(b"\n".join(lines))


def swap(other: str) -> Callable[[Path, random.Random], None]:
    """Another model file of the project (`other`) copied over this one: a file that loads fine."""
    def copy_over(path: Path, rng: random.Random) -> None:
        project = next(folder for folder in path.parents if (folder / "params.yaml").is_file())
        path.write_bytes((project / other).read_bytes())
    copy_over.__name__ = "swap"
    return copy_over


@dataclass(frozen=True)
class StateCase:
    id: str
    file: str                                   # relative to the project
    damage: Callable[[Path, random.Random], None]
    stage: str                                  # the stage that reads the file
    codes: frozenset[int]                       # its allowed exit codes: 0 where the damage is harmless


JOURNAL, MEMBERS = ".trainlab/search/study.journal", "models/search/members.json"
STATE_FILES = {   # file -> (the stage that reads it, exit codes when damaged, the damages that apply)
    JOURNAL: ("search", {0, 4}, [tear, append_garbage, zero_tail, middle_line, flip, empty]),
    MEMBERS: ("ensemble", {0, 2}, [tear, garble, flip, retype, empty, remove]),
    "models/manifests/finetune.json": ("ensemble", {0, 2}, [tear, garble, flip, retype, remove]),
    "models/manifests/ensemble.json": ("evaluate", {0, 2}, [tear, flip, retype, remove]),
    "models/manifests/pretrain.json": ("search", {0, 2}, [garble, retype, remove]),
    "models/finetuned.pt": ("evaluate", {2}, [tear, garble, flip, swap("models/pretrained.pt")]),
    "models/search/top2.pt": ("ensemble", {2}, [tear, flip, swap("models/search/top1.pt")]),
    "models/ensemble.pt": ("evaluate", {2}, [tear, swap("models/finetuned.pt")]),
    "models/pretrained.pt": ("search", {2}, [flip, swap("models/baselines/scratch.pt")]),
}


STATE_CASES = [StateCase(f"{Path(file).name}-{damage.__name__.replace('_', '-')}", file, damage, stage,
                          frozenset(codes))
               for file, (stage, codes, damages) in STATE_FILES.items() for damage in damages]


@pytest.mark.slow
@pytest.mark.parametrize("case", STATE_CASES, ids=[case.id for case in STATE_CASES])
def test_damaged_state_files_end_in_one_line(case: StateCase, ensembled_project: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project(ensembled_project, tmp_path / "project")
    case.damage(project / case.file, random.Random(f"{SEED}-{case.id}"))
    monkeypatch.chdir(project)
    without_tracking_uri(monkeypatch)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        line = one_error_or_success(invoke([case.stage]), set(case.codes))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    if line:
        assert case.file in line or Path(case.file).parent.as_posix() in line, (case.id, line)


def test_the_fuzz_covers_every_kind() -> None:
    kinds = {case.id.split("-")[0] for case in CASES}
    assert kinds == {"duplicate", "seed", "bool", "fraction", "exponent", "kernel", "model", "alias",
                     "experiment", "uri", "file"}
    assert len({case.id for case in CASES}) == len(CASES)
    assert all(yaml.safe_load(case.params) for case in CASES if isinstance(case.params, str))
    # Every kind of state file (journal, members.json, manifests, model files) is damaged.
    assert {case.file for case in STATE_CASES} == set(STATE_FILES)
    assert len({case.id for case in STATE_CASES}) == len(STATE_CASES)
