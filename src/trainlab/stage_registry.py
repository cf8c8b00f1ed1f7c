"""Every `trainlab` command in one table: what the CLI, params logging, MLflow datasets, output
checks and the params record each read about a stage.

A pipeline stage (one of dvc.yaml's) has `params` (the sections it reads: what its MLflow
run logs and what dvc.yaml's `params:` lists), the prepared splits it `reads` (its MLflow
datasets), the model files it writes besides its reports folder, and the stages upstream
of it. The other commands (diagnose, rerun, ...) have only a name, a help line and a
module. Adding a stage is this table, its `stages/<name>.py` and its dvc.yaml entry
(docs/extending.md).

Light on purpose: `trainlab --help` reads it, so it imports nothing but `paths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainlab import paths

_TRAINING = ("seed", "model", "trainer")


@dataclass(frozen=True)
class Stage:
    name: str
    help: str                                      # the one line `trainlab --help` shows
    module: str                                    # stages/<module>.py defines `command`
    params: tuple[str, ...] | None = None          # params sections it reads; None: not a DVC stage
    reads: tuple[tuple[str, str], ...] = ()        # prepared (task, split) it reads: its MLflow datasets
    models: tuple[Path, ...] = ()                  # what it writes besides reports/<name>/ (dvc.yaml outs)
    writes_into: tuple[Path, ...] = ()             # folders checked writable before any work
    upstream: tuple[str, ...] = ()                 # pipeline stages whose outputs it reads
    resumable: bool = False                        # keeps resume checkpoints (Ctrl-C says so)
    atomic: bool = True                            # leaves no half-written file when interrupted
    record: Path | None = None                     # where it records the params it ran with
    # What `dvc metrics show` shows of it: {key in its details.json: name in its metrics.json}
    # (evaluate's headline is built by trainlab.dvc_metrics.evaluate_headline).
    headline: tuple[tuple[str, str], ...] = ()

    @property
    def in_pipeline(self) -> bool:
        return self.params is not None

    @property
    def reports(self) -> Path:
        """Its metrics, details and plots files (a DVC output)."""
        return paths.stage_reports(self.name)

    @property
    def outputs(self) -> list[Path]:
        """What it writes, as dvc.yaml's `outs` and `metrics` name them (its reports folder whole)."""
        return [*self.models, self.reports] if self.in_pipeline else []

    @property
    def params_record(self) -> Path:
        """The file inside one of its DVC outputs that records the params it ran with."""
        return self.record or paths.model_manifest(self.name)


_READS_TARGET = (("target", "train"), ("target", "val"))

PIPELINE = (
    Stage("prepare", "Build the target/source splits and manifest in data/prepared.", "prepare",
          params=("seed", "data"), models=(paths.PREPARED,), record=paths.MANIFEST,
          headline=(("target/train/samples", "prepare/train_samples"), ("target/val/samples", "prepare/val_samples"),
                    ("target/test/samples", "prepare/test_samples"))),
    Stage("pretrain", "Train on the source task, or import pretrain.from.", "pretrain",
          params=(*_TRAINING, "pretrain"), reads=(("source", "train"), ("source", "val")),
          models=(paths.PRETRAINED, paths.model_manifest("pretrain")),
          writes_into=(paths.MODELS, paths.MANIFESTS, paths.RESUME), upstream=("prepare",), resumable=True,
          headline=(("val/loss", "pretrain/val_loss"), ("val/acc", "pretrain/val_acc"))),
    Stage("finetune", "Transfer the pretrained backbone to the target task.", "finetune",
          params=(*_TRAINING, "finetune", "selection", "data.split_seed"), reads=_READS_TARGET,
          models=(paths.FINETUNED, paths.BASELINES, paths.model_manifest("finetune")),
          writes_into=(paths.MODELS, paths.BASELINES, paths.MANIFESTS, paths.RESUME),
          upstream=("prepare", "pretrain"), resumable=True,
          headline=(("heldout/loss", "finetune/heldout_loss"), ("heldout/acc", "finetune/heldout_acc"))),
    Stage("search", "Hyperparameter search over the finetune config (Optuna).", "search",
          params=(*_TRAINING, "finetune", "search", "selection", "data.split_seed"), reads=_READS_TARGET,
          models=(paths.SEARCH_MODELS,), upstream=("prepare", "pretrain"), resumable=True,
          record=paths.SEARCH_MODELS / "params.json",
          headline=(("best/val/loss", "search/best_loss"), ("trials/complete", "search/trials"))),
    Stage("ensemble", "Combine the top-k search models into one ensemble.", "ensemble",
          params=("ensemble", "selection", "finetune.compare_scratch", "finetune.linear_baseline"),
          reads=_READS_TARGET, models=(paths.ENSEMBLE, paths.model_manifest("ensemble")),
          writes_into=(paths.MODELS, paths.MANIFESTS), upstream=("prepare", "pretrain", "finetune", "search"),
          headline=(("heldout/loss/ensemble", "ensemble/heldout_loss"), ("members", "ensemble/members"))),
    Stage("evaluate", "Score every final model on the held-out test split.", "evaluate",
          params=("evaluate",), reads=(("target", "test"),),
          upstream=("prepare", "pretrain", "finetune", "search", "ensemble"),
          record=paths.stage_artifacts("evaluate") / "params.json"),
)
TOOLS = (
    Stage("diagnose", "Diagnose the learning curves of any MLflow run.", "diagnose", atomic=False),
    Stage("rerun", "Rerun a recorded MLflow run and compare its metrics.", "rerun", atomic=False),
    Stage("promote", "Point evaluate.alias at a registered model version.", "promote", atomic=False),
    Stage("check-results", "Compare this run's final test scores with a commit's.", "check_results"),
    Stage("verify", "Check that dvc.lock records the params each stage ran with.", "verify"),
    Stage("fetch-weights", "Save a timm network's weights for pretrain.from (needs timm).",
          "fetch_weights"),
    Stage("lr-find", "Measure a learning rate (range test) without training.", "lr_find", atomic=False),
)
STAGES: dict[str, Stage] = {stage.name: stage for stage in (*PIPELINE, *TOOLS)}
PIPELINE_STAGES: dict[str, Stage] = {stage.name: stage for stage in PIPELINE}


def stage(name: str) -> Stage:
    return STAGES[name]


def output_folders(name: str) -> list[Path]:
    """Folders a stage writes into, checked to be writable before it does any work."""
    return [*STAGES[name].writes_into, paths.stage_reports(name)]
