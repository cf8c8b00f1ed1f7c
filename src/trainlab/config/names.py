"""Names and URIs that MLflow takes from params.yaml, checked where the file is loaded.

MLflow refuses a bad registered-model name only when evaluate registers (its last step),
and a bad experiment name or tracking URI with a traceback. The rules here are MLflow's
own (mlflow/utils/validation.py: `_validate_model_name`, `_validate_model_alias_name`,
`_validate_experiment_name`; the file-store registry also refuses '%' and path
separators; the SQL stores keep names in VARCHAR(256) columns).
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator

NAME_MAX = 256                          # experiments.name and registered_models.name: String(256)
ALIAS_MAX = 255                         # MAX_REGISTERED_MODEL_ALIAS_LENGTH
MODEL_NAME_FORBIDDEN = "/:%\\"          # ':' and '/' everywhere, '%' and '\\' in the file-store registry
DB_ENGINES = ("sqlite", "postgresql", "mysql", "mssql")   # mlflow.store.db.db_types
# No file store: MLflow 3 refuses `./mlruns`-style stores unless MLFLOW_ALLOW_FILE_STORE is set.
URI_SCHEMES = ("http", "https", "databricks", *DB_ENGINES)


def check_model_name(name: str) -> str:
    """A registered-model name MLflow accepts in every store."""
    _check_length(name, NAME_MAX)
    bad = sorted({c for c in name if c in MODEL_NAME_FORBIDDEN or not c.isprintable()})
    if bad:
        raise ValueError(f"{name!r} contains {', '.join(repr(c) for c in bad)}; a registered model "
                         f"name may not contain / : % \\ or control characters")
    if posixpath.normpath(name) != name or name.startswith("."):
        raise ValueError(f"{name!r} is not a plain name (MLflow refuses names that look like paths)")
    return name


def check_alias(alias: str) -> str:
    """A model-version alias: letters, digits, _ and -, not 'latest' nor a version like 'v3'."""
    _check_length(alias, ALIAS_MAX)
    if not re.fullmatch(r"[\w\-]+", alias, flags=re.ASCII):
        raise ValueError(f"{alias!r}: an alias may only contain letters, digits, _ and -")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"{alias!r} is reserved by MLflow (latest, v<number>); choose another alias")
    return alias


def check_experiment_name(name: str) -> str:
    """An experiment name: non-blank, at most 256 characters."""
    _check_length(name, NAME_MAX)
    if not name.isprintable():
        raise ValueError(f"{name!r} contains control characters")
    return name


def check_tracking_uri(uri: str) -> str:
    """A URI MLflow can open as a tracking store: http(s), databricks or a SQL database URL."""
    scheme, sep, rest = uri.partition("://")
    engine = scheme.split("+", 1)[0].lower()
    if not sep or engine not in URI_SCHEMES:
        raise ValueError(f"{uri!r} is not a tracking URI MLflow can open; accepted: http(s)://HOST, "
                         f"sqlite:///PATH, postgresql://..., mysql://..., mssql://..., databricks")
    if engine == "sqlite" and not rest.startswith("/"):
        raise ValueError(f"{uri!r}: a sqlite URI needs three slashes and a path, e.g. sqlite:///mlflow.db")
    if engine in ("http", "https") and not rest.split("/", 1)[0]:
        raise ValueError(f"{uri!r}: no host after {scheme}://")
    return uri


def _check_length(name: str, most: int) -> None:
    if not name.strip():
        raise ValueError("must not be empty")
    if len(name) > most:
        raise ValueError(f"{len(name)} characters; MLflow stores at most {most}")


ModelName = Annotated[str, AfterValidator(check_model_name)]
AliasName = Annotated[str, AfterValidator(check_alias)]
ExperimentName = Annotated[str, AfterValidator(check_experiment_name)]
TrackingUri = Annotated[str, AfterValidator(check_tracking_uri)]
