"""What a registered model version says about itself: description, tags, model card.

The card is the version's description (the registry page renders it as Markdown) and
the registering run's `model_card.md`: which model, the data it was trained and tested
on (content hashes of the prepared files), its test metrics, the commit, and the two
ways to reproduce it. The tags carry the same facts for searching
(`client.search_model_versions("tags.git_commit = '...'")`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

# Test metrics shown on the card and tagged, in this order, when the scores have them.
KEY_METRICS = ("acc", "loss", "ece", "ece_uncalibrated", "f1_macro", "rmse", "mae", "r2", "coverage",
               "interval_width")
# The registering run's tags copied to the version (with every input.<file>.sha256).
# dvc.exp_name: the DVC experiment that made it (under `dvc exp run`), shown in the registry's version list.
LINEAGE_TAGS = ("git.commit", "git.dirty", "trainlab.params_hash", "trainlab.pipeline_run", "dvc.exp_name")


@dataclass(frozen=True)
class Champion:
    """The facts evaluate knows about the model it registers."""

    model: str                        # finetuned, ensemble, scratch, linear, best_trial
    class_names: list[str]
    test: Mapping[str, float]         # test metrics (acc, loss, ece, ...), temperature included
    heldout_loss: float               # calibrated held-out loss: what chose it
    heldout: str                      # "validation" or "5-fold CV ..."
    test_samples: int


def version_tags(champion: Champion, run_tags: Mapping[str, str]) -> dict[str, str]:
    """Registry tags: model, classes, held-out and key test metrics, commit, experiment, params hash,
    data hashes (and their digest, which tells whether two versions were held out on the same data)."""
    from trainlab.tracking.promotion import HELDOUT_DATA_TAG, heldout_data_digest

    # Which experiment made it first: the registry's version list shows the tags in this order.
    tags = {key: run_tags[key] for key in ("dvc.exp_name",) if key in run_tags}
    tags |= {"trainlab.model": champion.model, "class_names": json.dumps(champion.class_names),
            "num_classes": str(len(champion.class_names)),
            "temperature": f"{champion.test.get('temperature', 1.0):.6g}",
            "heldout_loss": f"{champion.heldout_loss:.6g}", "selected_on": champion.heldout}
    tags.update({f"test.{k}": f"{champion.test[k]:.6g}" for k in KEY_METRICS if k in champion.test})
    tags.update({key: value for key, value in run_tags.items()
                 if key in LINEAGE_TAGS or key.startswith("input.")})
    tags[HELDOUT_DATA_TAG] = heldout_data_digest(run_tags)
    return tags


def model_card(champion: Champion, run_id: str, run_tags: Mapping[str, str], name: str, alias: str,
               version: str | None = None, why: str = "") -> str:
    """A short Markdown card: model, data, metrics, lineage, how to reproduce and use it.
    `alias` is the one the version got when registered (`why`: the promotion rule's line)."""
    commit = run_tags.get("git.commit", "unknown")
    dirty = " (with uncommitted changes: reproduce from a clean commit)" if run_tags.get("git.dirty") == "true" else ""
    data = [f"- `{key[len('input.'):-len('.sha256')]}`: sha256 `{value}`"
            for key, value in sorted(run_tags.items()) if key.startswith("input.") and key.endswith(".sha256")]
    metrics = " | ".join(f"{champion.test[k]:.4f}" for k in KEY_METRICS if k in champion.test)
    header = " | ".join(k for k in KEY_METRICS if k in champion.test)
    regression = "r2" in champion.test
    if regression:
        what = (f"Regression of `{champion.class_names[0]}`, with a "
                f"{champion.test.get('interval_level', 0.9):.0%} conformal prediction interval")
    else:
        what = (f"Classifier of {len(champion.class_names)} classes ({', '.join(champion.class_names)}), "
                f"temperature-scaled (T = {champion.test.get('temperature', 1.0):.4g})")
    returns = ("a DataFrame of `prediction`, `lower` and `upper` (the interval) in the target's unit"
               if regression else "a DataFrame of class probabilities, one column per class name")
    return "\n".join([
        # The version, not the alias: an alias moves on, the description stays.
        f"# {name} v{version}: {champion.model}" if version else f"# {name}@{alias}: {champion.model}",
        "",
        f"{what}. Chosen by evaluate as the lowest calibrated held-out loss ({champion.heldout_loss:.4f}, "
        f"{champion.heldout}); the test split was read only to score it.",
        *([f"Registered as version {version} with alias `{alias}`: {why}."] if version else []),
        "",
        "## Data (prepared files, content hashes)",
        *(data or ["- (no data hashes recorded)"]),
        "",
        f"## Test metrics ({champion.test_samples} samples)",
        f"| {header} |",
        "|" + "---|" * len([k for k in KEY_METRICS if k in champion.test]),
        f"| {metrics} |",
        "",
        "## Lineage",
        f"- git commit `{commit}`{dirty}",
        *([f"- DVC experiment `{run_tags['dvc.exp_name']}`"] if run_tags.get("dvc.exp_name") else []),
        f"- MLflow run `{run_id}` (stage evaluate), params hash `{run_tags.get('trainlab.params_hash', '?')}`",
        "",
        "## Reproduce",
        f"- `trainlab rerun {run_id}`: reruns the pipeline at that commit with its params and "
        "compares every metric",
        f"- or `git checkout {commit} && dvc pull && dvc repro`",
        "",
        "## Use",
        f"`mlflow.pyfunc.load_model(\"models:/{name}@{alias}\").predict(rows)` returns {returns}; "
        "`rows` is a DataFrame of the raw columns (a table: strings for categories, missing cells "
        "allowed), or a DataFrame, NumPy array or list of input rows (series, images).",
        "",
    ])
