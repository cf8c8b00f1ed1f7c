"""Transfer learning: pretrained backbone, new head, frozen blocks, gradual unfreezing.

`finetune()` is the one function the finetune stage and every search trial call.
Its baselines: `train_scratch()`, the same model from random weights (does pretraining
pay off?); `linear_probe()`, only a new head on frozen features (what does fine-tuning
the backbone add?); `train_linear()`, a linear model on the raw inputs (does a deep model
pay off at all?).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from trainlab.config import Params, with_overrides
from trainlab.config.schema import FinetuneConfig
from trainlab.engine import Hook, LoopState, ParamGroup, Runtime, seed_everything
from trainlab.errors import CheckpointError
from trainlab.models import (Classifier, check_recorded, model_from_blob, read_checkpoint, resolve_frozen,
                             set_frozen)
from trainlab.training.fit import TrainedModel, TrainRequest
from trainlab.training.task import TaskData, load_task, train_target


def load_pretrained(params: Params, path: Path, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The configured model with the pretrained backbone and a fresh head for `num_classes`."""
    blob = read_checkpoint(path)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise CheckpointError(f"{path}: not a trainlab model file")
    if tuple(blob.get("input_shape", ())) != tuple(input_shape):
        raise CheckpointError(f"{path}: pretrained on inputs of shape {blob.get('input_shape')}, "
                              f"but the target data has shape {list(input_shape)}")
    check_recorded(path)   # the file pretrain wrote, not another model copied over it
    seed_everything(params.seed)   # the new head's initial weights are seeded
    return model_from_blob(blob, str(path), params.model, num_classes)


class GradualUnfreeze(Hook):
    """Every `every` epochs one more frozen block unfreezes, starting next to the head."""

    def __init__(self, model: Classifier, frozen: list[str], every: int):
        self.model, self.frozen, self.every = model, frozen, every

    def still_frozen(self, epoch: int) -> list[str]:
        thawed = epoch // self.every
        return self.frozen[: max(0, len(self.frozen) - thawed)]

    def on_epoch_start(self, state: LoopState) -> None:
        # The module being trained: under trainer.strategy fsdp a sharded copy of self.model.
        set_frozen(state.model, self.still_frozen(state.epoch))


def param_groups(model: Classifier, backbone_lr_scale: float) -> list[ParamGroup]:
    """Backbone at a fraction of the head's learning rate (discriminative fine-tuning)."""
    return [ParamGroup("backbone", list(model.backbone.parameters()), backbone_lr_scale),
            ParamGroup("head", list(model.head.parameters()), 1.0)]


def finetune(request: TrainRequest, pretrained: Path, data: TaskData | None = None) -> TrainedModel:
    """Fine-tune the pretrained backbone on the target task with params.finetune (the request's spec)."""
    params = request.params
    cfg: FinetuneConfig = params.finetune
    data = data or load_task("target", params)
    info = data[2]

    def build():
        model = load_pretrained(params, pretrained, info.input_shape, info.num_classes)
        frozen = resolve_frozen(model, cfg.freeze)
        set_frozen(model, frozen)
        extra: list[Hook] = []
        if cfg.unfreeze_every and frozen:
            extra.append(GradualUnfreeze(model, frozen, cfg.unfreeze_every))
        return model, param_groups(model, cfg.backbone_lr_scale), extra

    return train_target(request.derive(identity=("finetune", _file_id(pretrained))), build, data)


def finetune_request(params: Params, *, runtime: Runtime | None = None, hooks: Sequence[Hook] = (),
                     resume_name: str = "finetune", label: str = "finetune",
                     pruning: Hook | None = None) -> TrainRequest:
    """The request of a fine-tuning with params.finetune's budget (its baselines derive theirs from it)."""
    return TrainRequest(params, params.finetune, resume_name, label, runtime, tuple(hooks), pruning=pruning)


def train_scratch(request: TrainRequest, data: TaskData | None = None) -> TrainedModel:
    """The same architecture and budget from random weights, every layer at the head's lr."""
    return train_target(request.derive(resume_name=f"{request.resume_name}-scratch", label="scratch",
                                       identity="scratch"), data=data)


def linear_params(params: Params) -> Params:
    """The config of the linear baseline: model.arch logreg, everything else as given."""
    return with_overrides(params, {"model.arch": "logreg"})


def train_linear(request: TrainRequest, data: TaskData | None = None) -> TrainedModel:
    """A linear model on the raw inputs with finetune's budget and selection: the classic
    baseline. On a small tabular or short-series set it can beat every deep model."""
    return train_target(request.derive(params=linear_params(request.params), label="linear",
                                       resume_name=f"{request.resume_name}-linear", identity="linear"), data=data)


def linear_probe(request: TrainRequest, pretrained: Path, data: TaskData | None = None) -> TrainedModel:
    """Only a new head on the frozen pretrained features."""
    params = request.params
    data = data or load_task("target", params)
    info = data[2]

    def build():
        model = load_pretrained(params, pretrained, info.input_shape, info.num_classes)
        set_frozen(model, model.block_names)
        return model, [ParamGroup("head", list(model.head.parameters()), 1.0)], []

    return train_target(request.derive(resume_name=f"{request.resume_name}-probe", label="probe",
                                       identity=("probe", _file_id(pretrained))), build, data)


def _file_id(path: Path) -> str:
    from trainlab.hashing import sha256_file

    return sha256_file(path) if Path(path).is_file() else "missing"

def transfer_metrics(tuned, baselines) -> dict:
    """What pretraining bought: gain over scratch, and over a linear probe, on the validation
    score: accuracy, or for a regression target the reduction of the validation loss (MSE)."""
    from trainlab.training.curves import summary_metrics

    best = summary_metrics(tuned.result)
    key = "val/acc" if "val/acc" in best else "val/loss"
    sign = 1.0 if key == "val/acc" else -1.0   # a gain is a higher accuracy or a lower loss
    metrics = {}
    for name, trained in baselines.items():
        value = summary_metrics(trained.result)[key]
        metrics[f"{name}/{key.replace('/', '_')}"] = value
        metrics[f"transfer/gain_over_{name}" if name != "scratch" else "transfer/gain"] = sign * (best[key] - value)
    return metrics


def no_gain_note(comparison: dict) -> str | None:
    """The line saying pretraining did not help (transfer/gain <= 0), else None."""
    if comparison.get("transfer/gain", 1.0) > 0:
        return None
    gain = comparison["transfer/gain"]
    if "scratch/val_acc" in comparison:
        scratch = comparison["scratch/val_acc"]
        scores = f"fine-tuned val/acc {scratch + gain:.3f}, from scratch {scratch:.3f}"
    else:
        scratch = comparison["scratch/val_loss"]
        scores = f"fine-tuned val/loss {scratch - gain:.4f}, from scratch {scratch:.4f}"
    return (f"transfer: pretraining did not help: {scores} (transfer/gain {gain:+.3f}); evaluate picks "
            f"whichever model scores best on held-out data")
