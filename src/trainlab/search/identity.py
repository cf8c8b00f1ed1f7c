"""A study's identity: everything a trial's result depends on, hashed into the study's name.

Two searches share a study (and its trial files) only if every input of their trials
is equal: the prepared data, the pretrained model file, trainlab's code and the params a
trial reads. Change any of them and the search starts a new study instead of
reporting (and republishing) the results of another experiment.
"""

from __future__ import annotations

from pathlib import Path

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes
from trainlab.errors import CheckpointError
from trainlab.hashing import fingerprint, sha256_file, source_tree_hash

# Search settings that change how the study runs or what is published, not what a trial computes.
SEARCH_NOT_IDENTITY = {"workers", "timeout_s", "storage", "top_k"}


def study_name(params: Params) -> str:
    """search.study_name plus a hash of the prepared data, the pretrained model, the code and params."""
    search = params.search.model_dump(mode="json", exclude=SEARCH_NOT_IDENTITY)
    digest = fingerprint(search, params.seed, params.model, params.trainer.maths(), params.finetune,
                         data_hashes(paths.PREPARED), pretrained_hash(), code_hash())
    return f"{params.search.study_name}-{digest}"


def pretrained_hash() -> str:
    """SHA-256 of models/pretrained.pt, the backbone every trial starts from."""
    from trainlab.models import check_recorded

    if not paths.PRETRAINED.is_file():
        raise CheckpointError(f"{paths.PRETRAINED}: not found; run the stage that writes it first "
                              "(dvc repro pretrain)")
    check_recorded(paths.PRETRAINED)   # before any trial: the file pretrain wrote, not one copied over it
    return sha256_file(paths.PRETRAINED)


def code_hash(root: Path | None = None) -> str:
    """SHA-256 over the trainlab package's source files (path and content, __pycache__ left out).

    The whole package rather than the modules a trial happens to import: a change to any
    of them (data loading, models, engine, transfer) can change a trial's result.
    """
    import trainlab

    return source_tree_hash(root or Path(trainlab.__file__).resolve().parent)
