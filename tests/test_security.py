"""Security: nothing in src/ or stages/ can run code hidden in a file, servers the project
documents or starts listen on 127.0.0.1 only, and every checkpoint it writes loads with
`torch.load(weights_only=True)` as plain data.

The source check parses the code (comments and strings cannot fool it) and is itself
tested on a snippet holding every forbidden form.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from trainlab.engine import Checkpointing, fit
from trainlab.ensemble.combine import Ensemble, save_ensemble
from trainlab.errors import CheckpointError
from trainlab.models import load_model, read_checkpoint
from trainlab.testing import ROOT

from helpers.engine import signal_data, tiny_model, train_spec, trainer_cfg

CODE = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").rglob("*.py")])
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader",
                     "ParamsLoader"}   # params.yaml's: a safe loader (checked below) that refuses duplicate keys


def call_name(node: ast.AST) -> str:
    """'torch.load' for torch.load(...), 'eval' for eval(...); '' for anything fancier."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = call_name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """Every call that could execute code from a file or a string, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module in {"pickle", "_pickle", "dill", "marshal", "shelve"}:
            found.append(f"{filename}:{node.lineno}: from {node.module} import")
        if not isinstance(node, ast.Call):
            continue
        name, keywords = call_name(node.func), {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}: {name or '?'}"
        if name in {"eval", "exec", "builtins.eval", "builtins.exec", "compile"}:
            found.append(where)
        elif re.fullmatch(r"(c?pickle|_pickle|dill|marshal|shelve)\.(load|loads|Unpickler|open)", name):
            found.append(where)
        elif name in {"yaml.load", "yaml.load_all"}:
            loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if call_name(loader) not in SAFE_YAML_LOADERS:
                found.append(f"{where} without SafeLoader")
        elif name in {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}:
            found.append(where)
        elif name in {"torch.load", "torch.serialization.load"} and not is_true(keywords.get("weights_only")):
            found.append(f"{where} without weights_only=True")
        elif name in {"np.load", "numpy.load"} and is_true(keywords.get("allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        elif name in {"pd.read_pickle", "pandas.read_pickle", "joblib.load"}:
            found.append(where)
        elif is_true(keywords.get("shell")):
            found.append(f"{where} with shell=True")
    return found


def test_the_checker_finds_every_forbidden_form() -> None:
    snippet = "\n".join([
        "import pickle, yaml, torch, numpy as np, pandas as pd, subprocess",
        "from pickle import loads",
        "eval('1')",
        "exec('x = 1')",
        "pickle.load(open('f', 'rb'))",
        "pickle.loads(b'')",
        "yaml.load(text)",
        "yaml.load(text, Loader=yaml.FullLoader)",
        "yaml.unsafe_load(text)",
        "torch.load('m.pt')",
        "torch.load('m.pt', weights_only=False)",
        "np.load('a.npy', allow_pickle=True)",
        "pd.read_pickle('f')",
        "subprocess.run('ls', shell=True)",
        # Safe forms: none of these may be reported.
        "yaml.safe_load(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "torch.load('m.pt', map_location='cpu', weights_only=True)",
        "np.load('a.npy', allow_pickle=False)",
        "model.eval()",
        "subprocess.run(['ls'])",
    ])
    lines = sorted(int(hit.split(":")[1]) for hit in unsafe_calls(snippet))
    assert lines == list(range(2, 15)), unsafe_calls(snippet)


def test_no_code_executing_loader_in_src_or_stages() -> None:
    assert len(CODE) > 30   # really looked at the package and the stages
    found = [hit for path in CODE for hit in unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []
    # The loaders the project does use are the safe ones.
    text = "\n".join(path.read_text() for path in CODE)
    assert "weights_only=True" in text and "yaml.safe_load" in text and "allow_pickle=False" in text


def test_the_params_loader_constructs_only_plain_data() -> None:
    import yaml

    from trainlab.config.yaml_reader import ParamsLoader, read_yaml

    assert issubclass(ParamsLoader, yaml.constructor.SafeConstructor)
    assert not issubclass(ParamsLoader, (yaml.constructor.FullConstructor, yaml.constructor.UnsafeConstructor))
    with pytest.raises(yaml.YAMLError):
        read_yaml("a: !!python/object/apply:os.system ['true']\n")


# ------------------------------------------------------------------------------ servers
DOCS = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "scripts").glob("*"))]
PYTHON = [*CODE, *sorted((ROOT / "bench").glob("*.py")),
          *sorted(p for p in (ROOT / "tests").glob("*.py") if p.name != Path(__file__).name)]
SERVER_COMMAND = re.compile(r"\b(mlflow\s+(ui|server)|http\.server|optuna-dashboard|tensorboard)\b")


def server_lists(path: Path) -> list[list[str]]:
    """Argument lists in Python code that start a server (they name a --port)."""
    lists = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.List):
            items = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if "--port" in items:
                lists.append(items)
    return lists


def test_documented_and_started_servers_bind_localhost_only() -> None:
    documented = [line for doc in DOCS if doc.is_file() for line in doc.read_text().splitlines()
                  if SERVER_COMMAND.search(line)]
    assert documented, "the README and docs/mlflow.md document how to start the MLflow UI"
    for line in documented:
        assert re.search(r"--host[ =]127\.0\.0\.1\b", line), line
    for path in PYTHON:
        for items in server_lists(path):
            assert "--host" in items and items[items.index("--host") + 1] == "127.0.0.1", (path, items)
    exposed = [f"{path}:{n}" for path in [*DOCS, *PYTHON] if path.is_file()
               for n, line in enumerate(path.read_text().splitlines(), 1) if "0.0.0.0" in line]
    assert exposed == []


# -------------------------------------------------------------------------- checkpoints
PLAIN = (torch.Tensor, str, int, float, bool, type(None))


def non_plain(obj, where: str = "") -> list[str]:
    """Paths inside a loaded checkpoint whose value is not a tensor, primitive, list, tuple or dict."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in ([f"{where}/{k!r} key"] if not isinstance(k, (str, int)) else [])
                + non_plain(v, f"{where}/{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_plain(v, f"{where}[{i}]")]
    return [] if isinstance(obj, PLAIN) else [f"{where}: {type(obj).__name__}"]


def test_every_checkpoint_kind_loads_as_plain_data_with_weights_only(prepared_project: Path, tmp_path: Path) -> None:
    model_file = prepared_project / "models/pretrained.pt"
    model, _ = load_model(model_file)
    ensemble_file = tmp_path / "ensemble.pt"
    save_ensemble(ensemble_file, Ensemble([model, model], torch.tensor([0.25, 0.75]), "weighted"),
                  [read_checkpoint(model_file)] * 2, ["a", "b"])
    resume_file = tmp_path / "resume.pt"
    fit(tiny_model(), signal_data(64, 0), signal_data(32, 1), train_spec(1), trainer_cfg(), seed=0,
        checkpointing=Checkpointing(resume_file, "fingerprint"))

    expected = {model_file: "trainlab.model/1", ensemble_file: "trainlab.ensemble/1",
                resume_file: "trainlab.resume/2"}
    for path, kind in expected.items():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert blob["format"] == kind, path
        assert non_plain(blob) == [], path
    assert torch.equal(torch.load(ensemble_file, weights_only=True)["weights"], torch.tensor([0.25, 0.75]))


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_weights_only_refuses_what_a_checkpoint_must_not_hold(tmp_path: Path, payload: str) -> None:
    # The reference for the test above: the same loader refuses a file that would run code.
    import builtins
    import os

    target = {"os.system": os.system, "builtins.exec": builtins.exec}[payload]

    class Payload:
        def __reduce__(self):
            return (target, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "trainlab.model/1", "state_dict": {}, "x": Payload()}, path)
    with pytest.raises(Exception, match="(?i)unsupported global"):
        torch.load(path, map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointError, match=r"not plain data, refused: .*(?i:unsupported global)"):
        read_checkpoint(path)
