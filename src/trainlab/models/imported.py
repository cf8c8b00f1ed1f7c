"""Importing a pretrained network from a file (`pretrain.from`), with strict key matching.

Two layouts are read:

- **torchvision / timm ResNet-18/34** (`conv1`, `bn1`, `layer1` ... `layer4`, `fc`): the
  published ImageNet weights, as a `.safetensors` file (read without pickle) or a `.pt`/`.pth`
  state dict. Each key `X` becomes `backbone.X` and `fc` becomes the head (`head.linear`),
  the layout trainlab.models.resnet builds. A first conv made for 3 channels is adapted to
  the data's as timm's `adapt_input_conv` does: for 1 channel its RGB filters are summed (a
  grey pixel fed to all three inputs gives the same response); for C channels the filters
  are repeated and scaled by 3 / C.
- **a trainlab model file** (another project's `models/pretrained.pt`, or the `model/<file>.pt`
  artifact of an MLflow run: the same bytes), loaded with `weights_only=True`, never
  unpickled as a pyfunc model. Its architecture must be the one params.yaml's `model`
  section builds, since finetune, the scratch twin and search build from those params.

Keys are compared here, before `load_state_dict(strict=True)`, so a mismatch is one line
listing the missing and unexpected keys (in the file's own names). Batch-norm
`num_batches_tracked` counters may be absent (older files); a file without a head (`fc`)
gets a fresh one for the target's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.config.schema import BACKBONE_SHAPE, ModelConfig
from trainlab.errors import CheckpointError, ParamsError, UserError, first_line
from trainlab.models.classifier import Classifier
from trainlab.models.networks import build_model, resolve_arch
from trainlab.models.resnet import PUBLISHED
from trainlab.models.store import FORMAT, read_checkpoint

SUFFIXES = (".safetensors", ".pt", ".pth")
SHOWN_KEYS = 6                       # keys listed in a mismatch line; the rest are counted


@dataclass(frozen=True)
class ImportedNetwork:
    model: Classifier                # in training mode, its weights the file's
    class_names: list[str]           # the head's classes: the file's, or the target's for a fresh head
    layout: str                      # "torchvision" or "trainlab"
    notes: tuple[str, ...]           # what the import adapted (a summed first conv, a fresh head)


def import_network(path: Path, model_cfg: ModelConfig, input_shape: tuple[int, ...], kind: str,
                   target_classes: list[str]) -> ImportedNetwork:
    """The network `path` holds, built for the target's `input_shape` as params.yaml's model section says."""
    state, saved = read_weights(path)
    if saved is not None or any(key.startswith(("backbone.", "head.")) for key in state):
        layout = "trainlab"
        cfg = _trainlab_config(path, model_cfg, saved, kind)
    elif "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        layout = "torchvision"
        if model_cfg.arch not in PUBLISHED:
            raise ParamsError(f"model.arch: '{model_cfg.arch}', but pretrain.from {path} holds a ResNet in "
                              f"torchvision's layout; set model.arch to {' or '.join(PUBLISHED)} (the file's depth)")
        cfg = model_cfg
        state = {("head.linear." + key[3:] if key.startswith("fc.") else "backbone." + key): value
                 for key, value in state.items()}
    else:
        raise CheckpointError(f"{path}: neither a trainlab model nor a ResNet in torchvision/timm layout "
                              f"(conv1, layer1..layer4, fc); its first keys: {', '.join(sorted(state)[:4])}")
    has_head = "head.linear.weight" in state
    if not has_head:
        classes = list(target_classes)
    elif saved:
        classes = list(saved["class_names"])
    else:   # a published head (e.g. ImageNet's 1,000 classes): its outputs by number
        classes = [str(i) for i in range(len(state["head.linear.weight"]))]
    model = build_model(cfg, input_shape, len(classes), kind)
    notes = [] if has_head else [f"the file has no head: a new one for the target's {len(classes)} outputs"]
    if layout == "torchvision":
        notes += _adapt_first_conv(state, model)
    _load_strictly(model, state, path, layout, has_head)
    return ImportedNetwork(model.train(), classes, layout, tuple(notes))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, the trainlab model file's contents or None) of a .safetensors, .pt or .pth file."""
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"pretrain.from: {path} is not a weights file; accepted: "
                              f"{', '.join(SUFFIXES)} (a trainlab model file or a torchvision/timm state dict)")
    if not path.is_file():
        raise CheckpointError(f"pretrain.from: {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), None
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:160]})") from None
    blob = read_checkpoint(path)   # weights_only=True: tensors and primitives, nothing executed
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return blob["state_dict"], blob
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):   # a Lightning-style checkpoint
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors) or a trainlab model file")
    # A model saved while wrapped in DDP prefixes every key with `module.`.
    return {key.removeprefix("module."): value for key, value in blob.items()}, None


def _trainlab_config(path: Path, model_cfg: ModelConfig, saved: dict[str, Any] | None, kind: str) -> ModelConfig:
    """params.yaml's model section, checked against the architecture a trainlab file records."""
    cfg = resolve_arch(model_cfg, kind)
    if saved is None:   # a bare state dict: the params must describe it (a mismatch names the keys)
        return cfg
    recorded = resolve_arch(ModelConfig.model_validate(saved["model"]), kind)
    differ = [key for key in BACKBONE_SHAPE if getattr(recorded, key) != getattr(cfg, key)]
    if differ:
        wanted = ", ".join(f"model.{key}: {getattr(recorded, key)}" for key in differ)
        raise ParamsError(f"pretrain.from: {path} holds another network than params.yaml's model section builds; "
                          f"set {wanted} (what the file was trained with)")
    return cfg


def _adapt_first_conv(state: dict[str, torch.Tensor], model: Classifier) -> list[str]:
    """A 3-channel first conv made to fit the data's channels (timm's adapt_input_conv)."""
    key = "backbone.conv1.weight"
    given, wanted = state.get(key), model.state_dict().get(key)
    if given is None or wanted is None or given.shape[1] == wanted.shape[1] or given.shape[1] != 3:
        return []
    channels = wanted.shape[1]
    if channels == 1:
        state[key] = given.sum(dim=1, keepdim=True)
        return ["conv1: its 3 RGB filters summed for 1-channel input"]
    repeats = -(-channels // 3)
    state[key] = given.repeat(1, repeats, 1, 1)[:, :channels] * (3.0 / channels)
    return [f"conv1: its 3 RGB filters repeated over {channels} channels and scaled by 3/{channels}"]


def _load_strictly(model: Classifier, state: dict[str, torch.Tensor], path: Path, layout: str,
                   has_head: bool) -> None:
    own = model.state_dict()
    optional = {key for key in own if key.endswith("num_batches_tracked") or (not has_head and key.startswith("head."))}
    missing = sorted(own.keys() - state.keys() - optional)
    unexpected = sorted(state.keys() - own.keys())
    arch = model.config.arch if model.config else "the configured model"
    if missing or unexpected:
        parts = [f"{what} {len(keys)} key(s): {_listed(keys, layout)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{path}: does not match model.arch {arch}: {'; '.join(parts)}")
    wrong = [key for key in state if state[key].shape != own[key].shape]
    if wrong:
        shapes = ", ".join(f"{_file_key(key, layout)} {list(state[key].shape)} (needs {list(own[key].shape)})"
                           for key in wrong[:SHOWN_KEYS])
        more = f" and {len(wrong) - SHOWN_KEYS} more" if len(wrong) > SHOWN_KEYS else ""
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) do not fit model.arch {arch}: {shapes}{more}")
    full = {key: state[key].to(own[key].dtype) if key in state else own[key] for key in own}
    model.load_state_dict(full, strict=True)


def _file_key(key: str, layout: str) -> str:
    """A key as the file names it."""
    if layout != "torchvision":
        return key
    return "fc." + key.removeprefix("head.linear.") if key.startswith("head.") else key.removeprefix("backbone.")


def _listed(keys: list[str], layout: str) -> str:
    shown = ", ".join(_file_key(key, layout) for key in keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


# `trainlab fetch-weights timm:<name>` writes here unless told otherwise: data/, since the file
# is an input of the pipeline (a DVC dependency of pretrain), not one of its outputs.
WEIGHTS_FOLDER = Path("data/weights")


def export_timm_weights(spec: str, out: Path | None = None) -> tuple[Path, int]:
    """Create `timm:<name>` with its pretrained weights (timm's cache or download) and write its
    state dict as a .safetensors file that `pretrain.from` imports. Returns (file, tensors)."""
    from trainlab.io import atomic_path

    name = spec.removeprefix("timm:")
    if not spec.startswith("timm:") or not name:
        raise UserError(f"{spec}: give a timm model name as timm:<name>, e.g. timm:resnet18.a1_in1k")
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed: `make setup-timm` installs it with the torchvision that matches "
                        "this torch; without it, a .safetensors file of torchvision/timm ResNet-18/34 weights "
                        "works in pretrain.from as it is") from None
    try:
        state = timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:   # an unknown name, no network, a hub error: all user-facing
        raise UserError(f"timm:{name}: timm could not create it with pretrained weights "
                        f"({first_line(err, limit=200)})") from None
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise UserError(f"timm:{name}: not a ResNet in torchvision's layout (conv1, layer1..layer4, fc); "
                        f"trainlab imports {' and '.join(PUBLISHED)}")
    from safetensors.torch import save_file

    out = out or WEIGHTS_FOLDER / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file({key: value.detach().cpu().contiguous() for key, value in state.items()}, str(tmp))
    return out, len(state)
