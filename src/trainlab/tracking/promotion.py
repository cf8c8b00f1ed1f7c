"""Which registered version is the champion: the rule evaluate applies to every candidate.

Each pipeline run registers its best model as a new version of the registered model,
tagged with its lineage (commit, DVC experiment, params hash, prepared-data hashes) and
its held-out and test scores. The alias `champion` (MLflow's documented convention,
with `challenger`) moves to the new version only when

- there is no champion yet, or
- it has a lower calibrated held-out loss than the champion *on the same held-out data*:
  the same content hashes of the target task's prepared files and the same held-out
  predictions (the validation split, or k-fold CV over the same samples), or
- `evaluate.promote: always` says so.

Otherwise it gets `challenger`, and evaluate prints one line saying why and the command
that promotes it (`trainlab promote <version>`). A held-out loss measured on other data
(a smoke test on shrunk data, another split) says nothing about the champion's, so such a
candidate never displaces it by default. On the same data, the lower held-out loss is
the better model by the criterion that chose each run's candidate in the first place;
the test split never decides.

The comparison and the alias move happen under one lock, so two evaluates that finish
together (`dvc queue start -j 2`) cannot both take the alias from the same champion.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from trainlab.hashing import digest
from trainlab.processes import host_lock

CHALLENGER = "challenger"
PROMOTE_MODES = ("auto", "always", "never")
HELDOUT_DATA_TAG = "trainlab.heldout_data"   # digest of the target task's prepared files
PROMOTION_TAG = "trainlab.promotion"         # why the version got (or did not get) the alias
TARGET_INPUTS = "input.target/"              # the run tags of the target task's prepared files


@dataclass(frozen=True)
class Standing:
    """What decides between two versions: held-out loss, on which data, with which held-out predictions."""

    loss: float
    data: str       # HELDOUT_DATA_TAG
    heldout: str    # "validation" or "5-fold CV over N labelled samples"

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> "Standing":
        """From a version's tags (an older version without HELDOUT_DATA_TAG: from its input.* tags)."""
        try:
            loss = float(tags.get("heldout_loss", "nan"))
        except ValueError:
            loss = float("nan")
        return cls(loss, tags.get(HELDOUT_DATA_TAG) or heldout_data_digest(tags), tags.get("selected_on", ""))


@dataclass(frozen=True)
class Decision:
    promote: bool
    why: str        # one line


def heldout_data_digest(tags: Mapping[str, str]) -> str:
    """A short digest of the target task's prepared files (train, val, test): '' when none are tagged."""
    files = {key: value for key, value in tags.items() if key.startswith(TARGET_INPUTS)}
    if not files:
        return ""
    return digest(json.dumps(files, sort_keys=True).encode())


def decide(mode: str, candidate: Standing, champion: Standing | None, champion_version: str | None,
           alias: str) -> Decision:
    """Whether the candidate takes `alias`, and why, in one line (see the module docstring)."""
    if mode == "always":
        return Decision(True, "evaluate.promote is always")
    if mode == "never":
        return Decision(False, "evaluate.promote is never")
    if champion is None:
        return Decision(True, f"no {alias} yet")
    theirs = f"v{champion_version}'s"
    if not candidate.data or candidate.data != champion.data:
        return Decision(False, f"held out on different data than {alias} v{champion_version} (prepared data "
                               f"{candidate.data or '?'} vs {champion.data or '?'}): the losses do not compare")
    if candidate.heldout != champion.heldout:
        return Decision(False, f"held-out predictions differ from {alias} v{champion_version}'s "
                               f"({candidate.heldout} vs {champion.heldout}): the losses do not compare")
    if candidate.loss < champion.loss:
        return Decision(True, f"held-out loss {candidate.loss:.6g} < {theirs} {champion.loss:.6g} on the same data")
    return Decision(False, f"held-out loss {candidate.loss:.6g} is not below {theirs} {champion.loss:.6g} "
                           f"on the same data")


@contextmanager
def registry_lock(uri: str, root: Path) -> Iterator[None]:
    """One process at a time compares with the champion and moves the alias.

    A local sqlite store: flock on the database file (as opening it is serialised);
    any other store: a lock file in the project's `.trainlab/`, which serialises the
    experiments of one machine (queued experiments included: `root` is the workspace).
    """
    from trainlab.tracking.store import sqlite_store_lock

    if uri.startswith("sqlite:///"):
        with sqlite_store_lock(uri):
            yield
        return
    with host_lock(root / ".trainlab" / "registry.lock"):
        yield


def current_holder(client, name: str, alias: str):
    """The version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def settle(client, uri: str, root: Path, name: str, version: str, alias: str, mode: str,
           describe: Callable[[Decision], bool] = lambda decision: True) -> Decision | None:
    """Decide whether `version` takes `alias` (else CHALLENGER), tag the version with why, let
    `describe` finish its description, then move the alias: the last step, so a version never
    holds an alias half-described. None, alias untouched, when `describe` says to stop."""
    candidate = Standing.of(client.get_model_version(name, version).tags)
    with registry_lock(uri, root):
        holder = current_holder(client, name, alias)
        decision = decide(mode, candidate, Standing.of(holder.tags) if holder else None,
                          str(holder.version) if holder else None, alias)
        client.set_model_version_tag(name, version, PROMOTION_TAG, decision.why)
        if not describe(decision):
            return None
        client.set_registered_model_alias(name, alias if decision.promote else CHALLENGER, version)
    return decision


def promote(client, uri: str, root: Path, name: str, version: str, alias: str) -> str | None:
    """Point `alias` at `version` by hand (`trainlab promote`); returns the version that held it."""
    from mlflow.exceptions import MlflowException

    from trainlab.errors import UserError

    with registry_lock(uri, root):
        holder = current_holder(client, name, alias)
        try:
            client.get_model_version(name, version)
        except MlflowException:
            raise UserError(f"{name} v{version}: no such registered version in {uri}") from None
        if (other := current_holder(client, name, CHALLENGER)) is not None and str(other.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, PROMOTION_TAG, "promoted by hand (trainlab promote)")
    return str(holder.version) if holder else None
