"""`dvc plots show` on the project's own dvc.yaml draws exactly its top-level plots, each once,
with the declared template: no stage-level `plots:` duplicate (a 0-based "step" chart beside
the 1-based "epoch" one) and the confusion matrix as a heatmap, not a band of lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from trainlab.testing import BIN, ROOT, run

from helpers.plots import write_reports


def marks(spec) -> set[str]:
    """Every vega-lite mark type used anywhere in a rendered spec."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "mark":
                found.add(value["type"] if isinstance(value, dict) else value)
            else:
                found |= marks(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= marks(item)
    return found


def test_plots_show_draws_each_declared_plot_once_with_its_template(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")   # dvc.yaml templates data.file.* from it
    write_reports(root)

    shown = json.loads(run([str(BIN / "dvc"), "plots", "show", "--json"], root).stdout)["data"]

    declared = [next(iter(entry)) for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    assert list(shown) == declared                       # nothing drawn twice, nothing undeclared
    assert all(len(renders) == 1 for renders in shown.values())
    for name, renders in shown.items():
        used = marks(renders[0]["content"])
        if "confusion" in name:
            assert "rect" in used and "line" not in used, (name, used)
        elif "predicted vs actual" in name:
            assert "point" in used and "rect" not in used, (name, used)
        else:
            assert "line" in used and "rect" not in used, (name, used)
        x = renders[0]["content"].get("encoding", {}).get("x", {}).get("field")
        if name.endswith(("loss", "accuracy")):
            assert x == "epoch", (name, x)             # the 1-based epoch axis, not DVC's row index
