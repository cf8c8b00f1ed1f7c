"""Read params.yaml once, validate it against the schema, and report mistakes in one line."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from trainlab.config.schema import Params
from trainlab.errors import ParamsError
from trainlab.hashing import digest

# A params file is a few KB; a huge one is an accident (a data array pasted in) that would
# take a minute to parse before being refused as an unknown key.
MAX_PARAMS_BYTES = 100_000   # ~12x the project's own; 1 MB of YAML takes ~15 s to parse here


def load_params(path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Params:
    """Parse and validate params.yaml (plus dotted-key overrides); raise ParamsError on any mistake."""
    raw = read_params_file(path)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return validate(raw, source=str(path))


def read_params_file(path: str | Path) -> dict[str, Any]:
    """params.yaml's sections as written (no defaults, not validated); ParamsError if unreadable.

    Split from load_params so that a stage can keep the very text it validated (what DVC
    records in dvc.lock) without reading the file twice (trainlab.params_record).
    """
    # Imported here, not at the top: the engine imports the schema through this package, and
    # a GPU node that runs only the engine (bench/gpu.py) need not have PyYAML.
    import yaml

    from trainlab.config.yaml_reader import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the project root, where params.yaml lives)")
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: {size:,} bytes; a params file is a few KB (at most {MAX_PARAMS_BYTES:,} "
                          f"bytes): data belongs in a file named by data.file.path")
    try:
        raw = read_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        # An unclosed [ or { is noticed lines later: also name the line where it opened.
        context, opened = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and opened and mark and opened.line != mark.line:
            problem += f" ({context} at line {opened.line + 1})"
        raise ParamsError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    missing = [name for name in Params.model_fields if name not in raw]
    if missing:
        # Keys inside a section may be left to their defaults, whole sections may not:
        # a lost section is far more often an editing accident than a wish for defaults.
        raise ParamsError(f"{path}: {missing[0]}: required section is missing "
                          f"(sections: {', '.join(Params.model_fields)})")
    return raw


def validate(raw: Mapping[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; the first problem becomes a one-line ParamsError."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        errors = _merge_keyword_branches(err.errors())
        message = f"{source}: {describe(errors[0])}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})"
        raise ParamsError(message) from None


def _merge_keyword_branches(errors: list[dict]) -> list[dict]:
    """`epochs: auto` or a number: one problem per key, the number's, which names auto too.

    pydantic reports a failed union once per member; a value that is not the keyword was
    meant as the number, so the keyword's "should be 'auto'" is folded into that message.
    """
    def key(error: Mapping[str, Any]) -> tuple:
        return tuple(part for part in error["loc"] if not _is_union_branch(part))

    keywords = {key(e): e["ctx"]["expected"] for e in errors if e["type"] == "literal_error"
                and sum(key(o) == key(e) for o in errors) > 1}
    merged = []
    for error in errors:
        if key(error) in keywords:
            if error["type"] == "literal_error":
                continue
            error = {**error, "msg": error["msg"], "keyword": keywords[key(error)].strip("'")}
        merged.append(error)
    return merged


def describe(error: Mapping[str, Any]) -> str:
    """Turn one pydantic error into 'dotted.key: what is wrong and what is accepted'."""
    loc = [str(part) for part in error["loc"] if not _is_union_branch(part)]
    key = ".".join(loc) or "(top level)"
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "extra_forbidden":
        accepted = ", ".join(_fields_at(loc[:-1]))
        return f"{key}: unknown key; accepted keys here: {accepted}"
    if kind == "literal_error":
        choices = re.sub(r"'([^']*)'", r"\1", ctx.get("expected", "")).replace(" or ", ", ")
        return f"{key}: {value!r} is not one of {choices}"
    if kind == "missing":
        return f"{key}: required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{key}: must be {bounds[kind]} {limit}, got {value!r}"
    if kind == "int_parsing_size":   # a float such as 1e23, past what an integer holds here
        keyword = f" or {error['keyword']}" if "keyword" in error else ""
        return f"{key}: must be {_integer_range(loc)}{keyword}, got {value!r}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        keyword = f" or {error['keyword']}" if "keyword" in error else ""
        return f"{key}: expected an integer{keyword}, got {value!r}"
    if kind in {"float_type", "float_parsing"}:
        keyword = f" or {error['keyword']}" if "keyword" in error else ""
        return f"{key}: expected a number{keyword}, got {value!r}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"{key}: expected true or false, got {value!r}"
    if kind in {"string_type"}:
        return f"{key}: expected a string, got {value!r}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"{key}: expected a mapping of keys, got {value!r}"
    if kind in {"tuple_type", "list_type"}:
        return f"{key}: expected a list, got {value!r}"
    if kind == "value_error":
        return f"{key}: {ctx.get('error', error['msg'])}"
    return f"{key}: {error['msg']} (got {value!r})"


def _is_union_branch(part: Any) -> bool:
    # pydantic inserts the union member's type name ("int", "tuple[str, ...]") into loc.
    return isinstance(part, str) and (
        "[" in part or "-" in part or part in {"int", "str", "float", "bool", "none"}
    )


def _integer_range(loc: list[str]) -> str:
    """'an integer from 0 to 4294967295': the bounds the schema gives the integer at `loc`."""
    model: type[BaseModel] | None = Params
    field = None
    for part in loc:
        field = _field(model, part)
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    constraints = list(getattr(field, "metadata", []))
    for member in typing.get_args(getattr(field, "annotation", None)):   # `int or auto`: the int's own
        constraints += [c for arg in typing.get_args(member)[1:] for c in getattr(arg, "metadata", [arg])]
    low = next((c.ge if hasattr(c, "ge") else c.gt + 1 for c in constraints if hasattr(c, "ge") or hasattr(c, "gt")),
               None)
    high = next((c.le if hasattr(c, "le") else c.lt - 1 for c in constraints if hasattr(c, "le") or hasattr(c, "lt")),
                None)
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    return f"an integer of at least {low}" if low is not None else "a smaller integer"


def _field(model: type[BaseModel] | None, key: str) -> Any:
    """The schema field params.yaml's `key` names in `model` (by its alias where it has one)."""
    if model is None:
        return None
    return next((field for name, field in model.model_fields.items() if (field.alias or name) == key), None)


def _fields_at(loc: list[str]) -> list[str]:
    """The accepted keys of the section at `loc`, for the 'unknown key' message."""
    model: type[BaseModel] | None = Params
    parts = iter(loc)
    for part in parts:
        field = _field(model, part)
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is dict:   # e.g. search.space.<key>: skip the key
            next(parts, None)
            annotation = typing.get_args(annotation)[1]
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            return ["(see params.yaml comments)"]
    return [field.alias or name for name, field in model.model_fields.items()]   # pretrain.from: an alias


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ParamsError(f"{dotted}: '{part}' is not a section")
        node = child
    node[leaf] = value


def with_overrides(params: Params, overrides: Mapping[str, Any]) -> Params:
    """A new validated Params with dotted keys replaced (used by search trials)."""
    raw = params.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return validate(raw, source="override")


def flatten(params: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The resolved config as {'a.b.c': value}, defaults included (for MLflow params)."""
    tree = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not name.endswith("space"):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return flat


def params_hash(params: BaseModel | Mapping[str, Any]) -> str:
    """A short content hash of the resolved config, stable across key order."""
    tree = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()
    return digest(blob)
