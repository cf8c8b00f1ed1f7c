"""Every path the pipeline reads or writes, defined once; `dvc.yaml` uses the same names.

All paths are relative to the project root (the directory holding `params.yaml`),
which is the working directory DVC runs stages in.
"""

from pathlib import Path

PARAMS = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")   # what DVC recorded of each stage's last run (trainlab.params_record)

# The placeholder data.file.path and data.file.source_path name when no file of the user's
# is used: a committed folder holding only its README. Those keys are DVC dependencies of
# prepare (dvc.yaml templates them), so they must always name a path that exists.
OWN_DATA = Path("data/own")

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.json"

MODELS = Path("models")
PRETRAINED = MODELS / "pretrained.pt"
FINETUNED = MODELS / "finetuned.pt"
BASELINES = MODELS / "baselines"          # finetune's scratch, linear and linear-probe baselines
SCRATCH = BASELINES / "scratch.pt"
LINEAR = BASELINES / "linear.pt"
BASELINE_MODELS = {"scratch": SCRATCH, "linear": LINEAR}   # the baselines that are final models too
SEARCH_MODELS = MODELS / "search"          # top-k trial checkpoints
SEARCH_MEMBERS = SEARCH_MODELS / "members.json"   # their index: rank, file, trial, SHA-256
ENSEMBLE = MODELS / "ensemble.pt"
# The SHA-256 of each model file pretrain, finetune and ensemble wrote, which every stage
# reading one checks (the search's are in SEARCH_MEMBERS): models/manifests/<stage>.json.
MANIFESTS = MODELS / "manifests"
MODEL_STAGE = {PRETRAINED: "pretrain", FINETUNED: "finetune", SCRATCH: "finetune", LINEAR: "finetune",
               ENSEMBLE: "ensemble"}

REPORTS = Path("reports")

# State that must survive `dvc repro` deleting a stage's outputs: resume checkpoints
# and the Optuna study. Never a DVC output, git-ignored.
STATE = Path(".trainlab")
RESUME = STATE / "resume"
SEARCH_STATE = STATE / "search"
SEARCH_STORAGE = SEARCH_STATE / "study.journal"   # Optuna's JournalStorage log (unless search.storage)
SEARCH_PUBLISH_LOCK = SEARCH_STATE / "publish.lock"  # one search at a time writes models/ and reports/search
SEARCH_RECOVER_LOCK = SEARCH_STATE / "recover.lock"  # one search at a time re-queues killed trials

MLFLOW_DB = Path("mlflow.db")


def stage_reports(stage: str) -> Path:
    """Directory of a stage's metrics and plots files (tracked by DVC)."""
    return REPORTS / stage


def stage_artifacts(stage: str) -> Path:
    """Files a stage leaves for people (PNGs, diagnosis.md): a DVC output committed to git."""
    return stage_reports(stage) / "artifacts"


def search_trial_model(study: str, slot: int) -> Path:
    """A search trial's model file, kept per study so two studies never share one."""
    return SEARCH_STATE / "studies" / study / f"slot-{slot:03d}.pt"


def resume_checkpoint(run_name: str) -> Path:
    """Where a training run keeps its last checkpoint for resuming after a kill."""
    return RESUME / f"{run_name}.pt"


def model_manifest(stage: str) -> Path:
    """The SHA-256 manifest of the model files `stage` wrote (a DVC output of that stage)."""
    return MANIFESTS / f"{stage}.json"
