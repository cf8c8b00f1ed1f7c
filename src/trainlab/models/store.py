"""Saving and loading models: plain tensors and primitives, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainlab.config.schema import ModelConfig
from trainlab.errors import CheckpointError
from trainlab.io import check_archive, load_error_line, torch_save
from trainlab.models.networks import Classifier, build_model

FORMAT = "trainlab.model/1"


def save_model(path: str | Path, model: Classifier, model_cfg: ModelConfig, input_shape: tuple[int, ...],
               class_names: list[str], meta: dict[str, Any] | None = None) -> None:
    """Write a self-describing model file atomically."""
    torch_save({
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": (model.config or model_cfg).model_dump(mode="json"),   # arch: auto resolved
        "input_shape": list(input_shape),
        "class_names": list(class_names),
        "meta": meta or {},
    }, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; any corruption becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; run the stage that writes it first (dvc repro)")
    try:
        check_archive(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # damaged zip/pickle data raises many types (AttributeError included)
        raise CheckpointError(f"{path}: corrupt or not a trainlab checkpoint ({load_error_line(err)[:200]})") from None


def load_model(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a saved model; returns (model in eval mode, the file's contents without weights)."""
    blob = read_checkpoint(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a trainlab model file (expected format {FORMAT})")
    model = model_from_blob(blob, str(path)).eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}


def model_from_blob(blob: dict[str, Any], source: str, cfg: ModelConfig | None = None,
                    num_classes: int | None = None) -> Classifier:
    """The model a model file's contents describe, with its weights (in training mode).

    With `cfg` and `num_classes`: that model instead, the file's backbone weights and a
    fresh head for `num_classes` classes (transfer); seed first for a reproducible head.
    """
    new_head = num_classes is not None
    saved = ModelConfig.model_validate(blob["model"])
    # `arch: auto` fine-tunes the network the file holds (resolved when it was built).
    cfg = saved if cfg is None else cfg.model_copy(update={"arch": saved.arch}) if cfg.arch == "auto" else cfg
    model = build_model(cfg, tuple(blob["input_shape"]), num_classes if new_head else len(blob["class_names"]))
    load_state(model, blob["state_dict"], source, skip_prefixes=("head.",) if new_head else ())
    return model


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
               skip_prefixes: tuple[str, ...] = ()) -> None:
    """load_state_dict, but a mismatch names the first offending layer instead of a traceback."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    expected = {k for k in own if not k.startswith(skip_prefixes)}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        layer = (missing or unexpected)[0]
        what = "is missing from" if missing else "is not in the configured model but is in"
        raise CheckpointError(f"{source}: layer '{layer}' {what} the checkpoint; "
                              f"check the model section of params.yaml matches the one it was trained with")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise CheckpointError(f"{source}: layer '{key}' has shape {list(value.shape)} in the checkpoint "
                                  f"but {list(own[key].shape)} in the configured model (model section of params.yaml)")
    model.load_state_dict(state, strict=not skip_prefixes)
