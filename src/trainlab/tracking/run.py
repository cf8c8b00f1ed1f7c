"""One MLflow run per stage: params, lineage tags, buffered metrics, artifacts, honest status.

This package is the only code in trainlab that imports mlflow.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from trainlab.config import Params, params_hash
from trainlab.config.sections import stage_params
from trainlab import paths
from trainlab.errors import TrackingUnavailable, UserError
from trainlab.processes import interrupted, signals_held
from trainlab.tracking.epoch_axis import EPOCH_AXIS, EPOCH_AXIS_TAG
from trainlab.tracking.mlflow_fields import (RUN_LABEL_TAG, SystemMetrics, display_name, source_tags, split_datasets,
                                             summary_key)
from trainlab.tracking.lineage import environment_freeze, git_state, pipeline_run_id, versions
from trainlab.tracking.store import (SpaceReserve, Uninterrupted, as_fault, mark_dead_runs_killed, reason,
                                     server_lost, sqlite_store_lock, store_faults)

if TYPE_CHECKING:
    from trainlab.tracking.logged_model import ModelSpec, Registered
    from trainlab.tracking.model_card import Champion

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"   # MLflow 3 UI: classic model-training view
FLUSH_AT = 1000                                  # MLflow's log_batch limit per call
RERUN_ENV = "TRAINLAB_RERUN_OF"                  # run id a `trainlab rerun` reproduces

def resolve_uri(params: Params, root: Path | None = None) -> str:
    """params.tracking.uri, else MLFLOW_TRACKING_URI, else the project's sqlite store (store_location)."""
    if params.tracking.uri:
        return params.tracking.uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    from trainlab.tracking.store_location import default_store_uri

    return default_store_uri(root)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
            if reply.status == 200:
                return
            problem = f"HTTP {reply.status}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    raise TrackingUnavailable(f"tracking server {uri} is not reachable ({problem}); "
                              f"start it or unset MLFLOW_TRACKING_URI to use the local sqlite store")


class StageRun:
    """Context manager around one MLflow run; FINISHED, FAILED or KILLED on exit, never RUNNING."""

    def __init__(self, stage: str, params: Params, inputs: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None, run_name: str | None = None,
                 extra_tags: Mapping[str, str] | None = None, params_file: str | Path = paths.PARAMS):
        self.stage, self.params = stage, params
        self.params_file = Path(params_file)
        self.inputs = dict(inputs or {})
        self.parent_run_id = parent_run_id
        self.run_name = run_name or stage
        self.extra_tags = dict(extra_tags or {})
        self.run_id: str | None = None
        self.reserve: SpaceReserve | None = None     # the top-level run's, shared with its children
        self._owns_reserve = False
        self._buffer: list = []
        self._logged: set[tuple[str, int]] = set()   # (key, step) already sent, for backfill
        self._system: SystemMetrics | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "StageRun":
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = resolve_uri(self.params)
        check_reachable(uri)
        # MLflow and alembic announce store creation at INFO on stderr; the stage's own
        # messages (and a one-line error) should be all a user sees there.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # It also logs every database error with a traceback before raising it; the
        # stage reports the error itself, in one line (tracking/store_faults.py).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        # A dead server mid-run should fail the stage in seconds, not retry for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        mlflow.set_tracking_uri(uri)
        self.uri = uri
        if self.reserve is None and self.parent_run_id is None:   # nested runs use the top-level one's
            self.reserve, self._owns_reserve = SpaceReserve(uri), True
            self.reserve.hold()
        try:
            with store_faults(uri):
                with sqlite_store_lock(uri):   # the client creates a fresh store's tables on construction
                    if self.parent_run_id is None:
                        self._follow_moved_project(uri)
                    self.client = Uninterrupted(MlflowClient(uri))
                    self.experiment_id = experiment_id = self._experiment_id()
                mark_dead_runs_killed(self.client, experiment_id)
                tags = self._tags()
                if self.parent_run_id:
                    tags["mlflow.parentRunId"] = self.parent_run_id
                # A Ctrl-C waits until the run exists and is ours to close: delivered at the end
                # of create_run, it left the new run RUNNING with nobody holding its id.
                with signals_held():
                    run = self.client.create_run(experiment_id, tags=tags, run_name=display_name(
                        self.run_name, tags, self.parent_run_id is not None))
                    self.run_id = run.info.run_id
        except BaseException as err:
            if self.run_id is not None:   # the run exists: close it KILLED, not left RUNNING
                self.__exit__(type(err), err, err.__traceback__)
            elif self.reserve is not None:
                self.reserve.release()
            raise
        try:
            self._log_params()
            if self.parent_run_id is None:
                self.log_standard_artifacts(self.params_file)   # every stage run: config and environment
                if self.inputs:   # the stage reads the prepared data: its splits as MLflow datasets
                    self.client.log_inputs(self.run_id, datasets=split_datasets(self.stage))
                if self.params.tracking.system_metrics:   # one monitor per process: the top-level run's
                    self._system = SystemMetrics(self.run_id, uri)
        except BaseException as err:   # the run exists: close it FAILED/KILLED, not left RUNNING
            self.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.reserve is not None and (exc_type is not None or self._owns_reserve):
            self.reserve.release()   # on a full disk, the space it held lets the status below be written
        if self.run_id is None:
            return
        if server_lost(exc):
            # Every further call would only retry against a dead server. The run stays
            # RUNNING there until the next stage start finds this process gone (KILLED).
            raise self._lost(exc) from None
        # A full disk or a damaged store mid-run: still close the run (FAILED) if the store
        # lets us, then report the fault in one line instead of SQLAlchemy's traceback.
        fault = None if isinstance(exc, UserError) else as_fault(exc, self.uri)
        status = "KILLED" if exc_type is None and interrupted() else "FINISHED"   # a Ctrl-C Python lost
        try:
            if exc_type is not None:
                status = "KILLED" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "FAILED"
                if exc is not None:
                    self.set_tags({"trainlab.error": f"{exc_type.__name__}: {exc}"[:4000]})
            try:
                if self._system is not None:
                    self._system, system = None, self._system
                    system.stop()
                self.flush()
            finally:
                self.client.set_terminated(self.run_id, status=status)
        except Exception as err:
            if server_lost(err):
                if exc_type is None:
                    raise self._lost(err) from None
            elif exc_type is None:
                raise as_fault(err, self.uri) or err
            elif fault is None and as_fault(err, self.uri) is None:
                raise
            # else the stage's own error (propagating after this) is the one to report
        if fault is not None:
            raise fault from None

    def _lost(self, err: BaseException) -> TrackingUnavailable:
        return TrackingUnavailable(f"tracking server {self.client.tracking_uri} stopped answering during the "
                                   f"{self.run_name} run ({reason(err)}); rerun the stage once it is back "
                                   f"(training resumes from its last checkpoint)")

    def _follow_moved_project(self, uri: str) -> None:
        """A project folder moved or copied with its mlflow.db: point the store at this folder's mlruns/."""
        from trainlab.tracking.store_location import default_store_uri, relocate_moved_store

        if uri == default_store_uri():
            line = relocate_moved_store(Path(uri[len("sqlite:///"):]))
            if line:
                print(f"[{self.stage}] {line}", flush=True)

    def _experiment_id(self) -> str:
        name = self.params.tracking.experiment
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
        except MlflowException:   # created meanwhile by a concurrent stage or worker
            return self.client.get_experiment_by_name(name).experiment_id

    def _tags(self) -> dict[str, str]:
        tags = {
            "trainlab.stage": self.stage,
            "dvc.stage": self.stage,
            "trainlab.pipeline_run": pipeline_run_id(),
            RUN_LABEL_TAG: self.run_name,
            "trainlab.params_hash": params_hash(self.params),
            "trainlab.pid": str(os.getpid()),
            "trainlab.host": socket.gethostname(),
            "trainlab.cwd": str(Path.cwd()),
            EPOCH_AXIS_TAG: EPOCH_AXIS,
            **git_state(),
            **versions(),
            **{f"input.{name}.sha256": digest for name, digest in self.inputs.items()},
            **self.extra_tags,
        }
        tags.update(source_tags(self.stage, tags.get("git.commit", "")))
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        if os.environ.get(RERUN_ENV):   # set by `trainlab rerun` for the runs it starts
            tags["trainlab.rerun_of"] = os.environ[RERUN_ENV]
        return tags

    def _log_params(self) -> None:
        from mlflow.entities import Param

        flat = stage_params(self.params, self.stage)   # only what the stage reads (config/sections.py)
        items = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    # ------------------------------------------------------------------- logging
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metrics with an explicit step; written in batches (see flush)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        self._logged.update((k, int(step)) for k in metrics)
        if len(self._buffer) >= FLUSH_AT:
            self.flush()

    def log_metric_rows(self, rows: list[tuple[str, float, int]]) -> None:
        """Buffer many (key, value, step) rows at once (the engine's per-step metrics)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(s)) for k, v, s in rows)
        self._logged.update((k, int(s)) for k, _, s in rows)
        if len(self._buffer) >= FLUSH_AT:
            self.flush()

    def backfill(self, curves: Mapping[str, list[tuple[int, float]]]) -> int:
        """Log the points of `curves` this run has not seen: the part before a resume."""
        from trainlab.tracking.epoch_axis import curve_rows

        missing = [(k, v, s) for k, v, s in curve_rows(curves) if (k, s) not in self._logged]
        self.log_metric_rows(missing)
        return len(missing)

    def flush(self) -> None:
        """Write buffered metrics with log_batch: ~0.1 ms per value instead of ~4 ms per call."""
        while self._buffer:
            chunk, self._buffer = self._buffer[:FLUSH_AT], self._buffer[FLUSH_AT:]
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """All tags in one log_batch (a set_tag call each costs a round trip and a commit)."""
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), 100):   # MLflow's log_batch limit on tags
            self.client.log_batch(self.run_id, tags=items[start:start + 100])

    def record_training(self, metrics: Mapping[str, Any], step: int, tags: Mapping[str, Any],
                        artifacts: list[tuple[Path, str | None]],
                        backfill: Mapping[str, list[tuple[int, float]]] | None = None,
                        params: Mapping[str, Any] | None = None) -> None:
        """What a finished training wrote (see trainlab.training.outputs): its scores as final.*, its
        tags, its files as artifacts, the curves from before a resume, and the params it chose
        itself (`lr/chosen` for `optimizer.lr: auto`)."""
        if params:
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        if backfill is not None:
            # The run of a resumed stage starts mid-way: give it the curves from before the kill.
            self.backfill(backfill)
        # Every MLflow metric gets a chart: the diagnosis/* flags of details.json would be
        # one-point charts saying what the tag trainlab.diagnosis (in `tags`) says.
        self.log_scores({k: v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not k.startswith("diagnosis/")}, step=step)
        self.set_tags(tags)
        for path, folder in artifacts:
            self.log_artifact(path, folder)

    def log_scores(self, scores: Mapping[str, float], step: int) -> None:
        """A finished training's scores (its details.json) as `final.<key>`, slashes made dots.

        They stay metrics: the run table's columns, MLflow's run comparison and `trainlab rerun`
        read them, and the run's Overview lists them with their values. But MLflow's chart tab
        files a metric under the part of its key before the last `/` and orders those sections
        alphabetically, so `final/val/acc` & co. opened it on ~20 one-point charts before the
        train/ and val/ curves. Without a `/` they fall into MLflow's own section, listed after
        every named one."""
        self.log_metrics({summary_key(k): v for k, v in scores.items()}, step=step)

    def mark_pruned(self, why: str) -> None:
        """End as a pruned trial: MLflow has no PRUNED status. FINISHED (the pruner stopped it on
        purpose: KILLED and FAILED share the red icon of a crash), a name that says so, and the
        tags optuna.state / optuna.pruned."""
        self.run_name = f"{self.run_name} [pruned]"
        self.client.update_run(self.run_id, name=self.run_name)
        self.set_tags({"optuna.state": "PRUNED", "optuna.pruned": why})

    def link(self) -> str:
        """Where to see this run: its UI URL, or for a local store the `mlflow ui` command too."""
        from trainlab.tracking.links import run_link

        return run_link(self.uri, self.experiment_id, self.run_id)

    def record_diagnosis(self, markdown: str, findings: list[str]) -> None:
        """A learning-curve diagnosis made without output files (a diverged training)."""
        self.log_text(markdown, "diagnosis.md")
        self.set_tags({"trainlab.diagnosis": ",".join(findings)})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, sort_keys=True, default=str), name)

    def child(self, run_name: str, params: Params | None = None) -> "StageRun":
        """A nested run under this one (search trials, finetune's baselines), logging `params` or this run's."""
        run = StageRun(self.stage, params or self.params, self.inputs, parent_run_id=self.run_id,
                       run_name=run_name, extra_tags={"trainlab.parent_stage": self.stage})
        run.reserve = self.reserve
        return run

    def log_model(self, spec: "ModelSpec", name: str = "model") -> str:
        """Log a trained model as an MLflow pyfunc (signature, input example, its file); returns its URI."""
        from trainlab.tracking.logged_model import log_model

        return log_model(self.run_id, spec, name).model_uri

    def register_model(self, spec: "ModelSpec", name: str, alias: str, champion: "Champion",
                       promote: str = "auto") -> "Registered":
        """Log `spec` and register it as a new version of `name`, described by the model card
        (its description and `model_card.md`) and tags with classes, metrics and lineage; it
        takes `alias` only by the promotion rule (tracking/promotion.py), else `challenger`."""
        from trainlab.tracking.logged_model import register
        from trainlab.tracking.store_location import project_root

        registered = register(self.client, self.run_id, spec, name, alias, champion, promote, self.uri,
                              project_root())
        self.log_text(registered.card, "model_card.md")
        self.set_tags({"registry.model": name, "registry.version": registered.version,
                       "registry.alias": registered.alias})
        return registered

    def log_standard_artifacts(self, params_file: Path = paths.PARAMS) -> None:
        """params.yaml as given, the resolved config, and the Python environment."""
        if params_file.is_file():
            self.log_artifact(params_file, "config")
        # Key order kept (not log_dict's sorted keys): search.space's order decides which
        # random draw each hyperparameter gets, so a rerun must see the same order.
        self.log_text(json.dumps(self.params.model_dump(mode="json"), indent=2), "config/resolved_params.json")
        self.log_text(environment_freeze(), "environment/requirements.txt")


class NullRun:
    """Stands in for StageRun on DDP ranks other than 0: only rank 0 writes."""

    run_id = None
    stage = run_name = "replica"

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def child(self, *args, **kwargs) -> "NullRun":
        return self

    # Every logging method of StageRun, as a no-op; anything else (a typo) is an AttributeError.
    def _ignore(self, *args, **kwargs) -> None:
        return None

    log_metrics = log_metric_rows = flush = set_tags = log_artifact = log_text = log_dict = _ignore
    record_training = record_diagnosis = log_standard_artifacts = mark_pruned = link = log_model = _ignore
    log_scores = _ignore

    def backfill(self, curves) -> int:
        return 0


def open_stage_run(stage: str, params: Params, is_main: bool = True, **kwargs) -> "StageRun | NullRun":
    """The stage's MLflow run on the main process, a no-op stand-in elsewhere."""
    return StageRun(stage, params, **kwargs) if is_main else NullRun()
