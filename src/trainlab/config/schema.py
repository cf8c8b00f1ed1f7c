"""The typed, frozen schema of params.yaml.

Every section is a pydantic model that forbids unknown keys, so a typo is an error
rather than a silently ignored setting. The defaults here fill keys a params file leaves
out; the project's params.yaml sets every key, some to tuned values. A stage always
works from the fully resolved `Params`.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from trainlab.config.names import AliasName, ExperimentName, ModelName, TrackingUri
from trainlab.paths import OWN_DATA

PositiveInt = Annotated[int, Field(gt=0)]
# Upper bounds catch typos such as an extra zero block that would exhaust memory or time.
SampleCount = Annotated[int, Field(gt=0, le=10_000_000)]
Epochs = Annotated[int, Field(gt=0, le=100_000)]
Width = Annotated[int, Field(gt=0, le=4096)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# numpy's legacy seeding (mnist1d's generator, Optuna's samplers) takes 0..2**32-1 only.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for an int or float: `n_trials: true` would mean one trial.
        annotation = cls.model_fields[info.field_name].annotation
        if _holds_bool(value) and not _accepts(annotation, bool):
            kind = "an integer" if _accepts(annotation, int) else "a number"
            keyword = " or auto" if "Literal['auto']" in str(annotation) else ""
            raise ValueError(f"expected {kind}{keyword}, got {_yaml_text(value)}")
        return value


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


def _accepts(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_accepts(arg, kind) for arg in typing.get_args(annotation))


def _yaml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


# ----------------------------------------------------------------------------- data
class Mnist1dTarget(Section):
    """The target task: MNIST-1D generated offline with the paper's arguments."""

    num_samples: SampleCount = 5000
    seed: Seed = 42
    train_split: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8


class Mnist1dGeneration(Section):
    """Overrides of mnist1d's generation arguments for the source corpus (null = paper's value)."""

    # Defaults: the overrides params.yaml ships (paper: 0.4, 48, 0.25, 0.02, 0.75).
    scale_coeff: Annotated[float, Field(ge=0)] | None = 0.5
    max_translation: NonNegInt | None = 48
    corr_noise_scale: Annotated[float, Field(ge=0)] | None = 0.35
    iid_noise_scale: Annotated[float, Field(ge=0)] | None = 0.03
    shear_scale: Annotated[float, Field(ge=0)] | None = 1.0


class SourceConfig(Section):
    """The pretraining corpus: larger, generated differently, with another label space."""

    num_samples: SampleCount = 40000
    seed: Seed = 1
    labels: Literal["same", "permuted", "merged"] = "permuted"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    generation: Mnist1dGeneration = Mnist1dGeneration()


class DigitsConfig(Section):
    """sklearn's bundled 8x8 digits: one class subset is the source, the other the target."""

    source_classes: tuple[Annotated[int, Field(ge=0, le=9)], ...] = (0, 1, 2, 3, 4)
    target_classes: tuple[Annotated[int, Field(ge=0, le=9)], ...] = (5, 6, 7, 8, 9)
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


ImageSide = Annotated[int, Field(gt=0, le=8192)]


class ImageConfig(Section):
    """How an image folder's files become arrays (data/image_folder.py): decoded once by prepare."""

    channels: Literal["auto", "gray", "rgb"] = "auto"   # auto: gray when every image is grayscale, else rgb
    size: tuple[ImageSide, ImageSide] | None = None    # [H, W] (one number: a square); null = the first image's
    resize: Literal["center_crop", "letterbox"] = "center_crop"   # how an image of another shape is fitted
    skip_unreadable: bool = False   # true: leave out (and count) files Pillow cannot decode, instead of stopping
    # A CSV inside the folder listing the images instead of class subfolders: a column of paths
    # relative to the folder, the label column (data.file.label) and optionally data.file.split_column.
    list: str | None = None
    path_column: str = "path"

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


class FileConfig(Section):
    """The user's own data: a table (CSV, Parquet), arrays (NPZ) of series or images, or a folder of images."""

    # The file is a DVC dependency of prepare (dvc.yaml templates these two keys), so each
    # must name a path that exists even when no file is used: the placeholder folder
    # data/own (committed, holds only its README) stands for "no file".
    path: str | None = str(OWN_DATA)
    kind: Literal["auto", "table", "series", "image"] = "auto"     # auto: see data/user_file.py (a folder: image)
    task: Literal["auto", "classification", "regression"] = "auto"  # auto: from the label values
    label: str = "label"
    features: tuple[str, ...] | None = None       # null = every column but label/split/drop
    drop: tuple[str, ...] = ()                    # columns left out (tables)
    split_column: str | None = None               # values "train"/"test" (or "val")
    shape: tuple[PositiveInt, ...] | None = None  # e.g. [1, 28, 28] for images
    # auto: tables per column, series and images per channel (bench/RESULTS.md); imagenet: the
    # mean/std published ImageNet weights expect (images; for a pretrain.from network)
    normalize: Literal["auto", "per_sample", "per_feature", "global", "none", "imagenet"] = "auto"
    # Tables: each number also as a piecewise-linear encoding over this many quantile bins of
    # the training rows; 0 = off; auto = 8 where a linear probe on the training rows clearly
    # gains from them, else 0 (data/encoding_choice.py; bench/RESULTS.md section 12)
    numeric_bins: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = "auto"
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    source_path: str | None = str(OWN_DATA)       # a second, labelled file to pretrain on
    image: ImageConfig = ImageConfig()            # a folder of images (path names a directory)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, values: Any) -> Any:
        if isinstance(values, dict) and "standardize" in values:
            raise ValueError("standardize was replaced by normalize: write normalize: per_feature for "
                             "standardize: true (one mean/std per column), none for false, or auto "
                             "(tables per column, series and images per channel)")
        return values

    def uses(self, key: str) -> Path | None:
        """The file `path` or `source_path` names, or None where it holds the placeholder."""
        value = getattr(self, key)
        return None if value is None or Path(value) == OWN_DATA else Path(value)


class DataConfig(Section):
    """What `prepare` builds: target train/val/test and the source corpus."""

    name: Literal["mnist1d", "digits", "file"] = "mnist1d"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    split_seed: Seed = 1
    train_samples: SampleCount | None = 400             # label budget in total; null = all
    train_samples_per_class: SampleCount | None = None  # or a budget per class
    mnist1d: Mnist1dTarget = Mnist1dTarget()
    source: SourceConfig = SourceConfig()
    digits: DigitsConfig = DigitsConfig()
    file: FileConfig = FileConfig()

    @model_validator(mode="after")
    def _one_budget(self) -> "DataConfig":
        if self.train_samples is not None and self.train_samples_per_class is not None:
            raise ValueError("set train_samples or train_samples_per_class, not both")
        if self.name == "file" and self.file.uses("path") is None:
            raise ValueError(f"data.name is 'file' but data.file.path is not set (it names {OWN_DATA}, "
                             f"the placeholder); set it to your .csv, .parquet or .npz file or image folder")
        return self


# ---------------------------------------------------------------------------- model
class ModelConfig(Section):
    """Architecture: every model is a backbone of named blocks plus a linear head."""

    # auto: mlp for tables, resnet1d for series, resnet2d for images (the data's kind, from prepare);
    # resnet18/resnet34: the published image networks, in torchvision's layout (models/resnet.py)
    arch: Literal["auto", "logreg", "mlp", "cnn1d", "resnet1d", "cnn2d", "resnet2d", "resnet18", "resnet34"] = "auto"
    width: Width = 32
    depth: Annotated[int, Field(gt=0, le=256)] = 3
    # auto: 5 for series (1-D nets), 3x3 for images (2-D nets)
    kernel_size: Annotated[int, Field(gt=0, le=64)] | Literal["auto"] = "auto"
    # CNN layers that halve the resolution, from the input side (the stem, then blocks);
    # auto: until <= 256 time steps (1-D) or <= 64 pixels (2-D) remain
    downsample: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = "auto"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    batchnorm: bool = True
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"


# -------------------------------------------------------------------------- trainer
class AugmentationConfig(Section):
    """What `trainer.augment` changes in each training batch (validation, test and predictions never)."""

    # images: shift by up to this share of each side (at least one pixel when > 0), edges
    # repeated: the same as padding and cropping back at a random offset
    crop: Annotated[float, Field(ge=0.0, le=0.5)] = 0.125
    # images: mirror left-right half the time. Off by default: a mirrored digit or letter can
    # be another class (or none); turn it on for photos of things
    flip: bool = False
    scale: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1    # series: times a factor in [1 - scale, 1 + scale]
    jitter: Annotated[float, Field(ge=0.0, le=10.0)] = 0.03  # series: Gaussian noise, in the normalised data's units
    shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1    # series: shift by up to this share of the length, edges repeated


class TrainerConfig(Section):
    """How training runs, shared by pretrain, finetune and every search trial."""

    batch_size: Annotated[int, Field(gt=0, le=1_048_576)] = 128            # global: samples per optimizer step
    grad_accum: Annotated[int, Field(gt=0, le=4096)] = 1              # micro-batches per optimizer step
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    fp16_loss_scaling: bool = True           # dynamic loss scaling for fp16; off only to see why it exists
    devices: Annotated[int, Field(gt=0, le=1024)] = 1                 # > 1: DDP (gloo on CPU, NCCL on CUDA)
    # How devices > 1 share the work: ddp replicates the model, fsdp shards parameters, gradients
    # and optimizer state (FSDP2), pipeline puts consecutive blocks on consecutive ranks.
    strategy: Literal["ddp", "fsdp", "pipeline"] = "ddp"
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(gt=0, le=1024)] | None = 2          # torch intra-op threads; null = torch's default
    clip_grad_norm: PositiveFloat | None = 1.0
    clip_grad_value: PositiveFloat | None = None
    loader: Literal["memory", "dataloader"] = "memory"
    num_workers: Annotated[int, Field(ge=0, le=256)] = 0               # DataLoader workers (loader: dataloader)
    checkpoint_every_steps: PositiveInt | None = None  # besides every epoch
    checkpoint_min_interval_s: Annotated[float, Field(ge=0.0, le=86_400)] = 10.0  # epoch-end saves at most this often
    log_every_steps: PositiveInt = 50        # how often step metrics leave the device
    layer_grad_norm_every: PositiveInt = 25  # per-layer gradient norms for diagnosis
    sync_batchnorm: bool = True              # under DDP
    compile: bool = False                    # torch.compile; no gain for small CPU models
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    # Random changes to training batches, a pure function of (seed, epoch, step): auto picks by
    # the data's kind (engine/augment.py AUTO_AUGMENT); true for series and images only. (A
    # boolean, not on/off: YAML 1.1, so PyYAML and DVC, reads on and off as true and false.)
    augment: Literal["auto"] | bool = "auto"
    augmentation: AugmentationConfig = AugmentationConfig()
    # Weight averaging (engine/averaging.py), and the weights a fit hands back: ema keeps an
    # exponential moving average of the weights, updated every optimizer step; swa averages
    # the epoch-end weights from swa_start on, at a constant learning rate, then recomputes
    # batch-norm statistics for the average.
    averaging: Literal["none", "ema", "swa"] = "none"
    # ema: decay per optimizer step; after n updates min(ema_decay, (1 + n) / (10 + n)), so
    # the average of a short run is not dominated by its first weights
    ema_decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    swa_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75   # swa: share of the epochs after which averaging starts
    swa_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1       # swa: constant lr, a share of each param group's base lr
    swa_anneal_epochs: Annotated[int, Field(ge=0, le=100_000)] = 1  # swa: cosine from the schedule's lr to swa_lr

    # The settings that decide how a run is fed, shown, logged or checkpointed, never its
    # numbers: a resume checkpoint and a search study stay valid when only these change.
    # `threads` is not one of them: another thread count sums in another order, and runs
    # are bit-identical only at equal thread counts.
    NOT_MATHS: ClassVar[frozenset[str]] = frozenset({
        "progress", "log_every_steps", "layer_grad_norm_every", "loader", "num_workers",
        "checkpoint_every_steps", "checkpoint_min_interval_s"})

    def maths(self) -> dict[str, Any]:
        """The settings that decide a training's numbers: all but NOT_MATHS."""
        return self.model_dump(mode="json", exclude=set(self.NOT_MATHS))

    @field_validator("augment", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        # strictly: pydantic would read 1 or the string "no" as a boolean
        if value != "auto" and not isinstance(value, bool):
            raise ValueError(f"expected auto, true or false, got {_yaml_text(value)}")
        return value

    @model_validator(mode="after")
    def _divisible(self) -> "TrainerConfig":
        per_step = self.grad_accum * self.devices
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.batch_size} must be divisible by "
                f"grad_accum x devices = {per_step}"
            )
        if self.devices > 1 and self.strategy != "ddp":
            # GradScaler skips a step on one rank's overflow only: ranks holding different
            # shards or stages would then disagree about whether the step happened.
            if self.precision == "fp16":
                raise ValueError(f"precision fp16 needs strategy ddp (loss scaling is per rank); "
                                 f"use bf16 or fp32 with strategy {self.strategy}")
            if self.strategy == "pipeline" and self.compile:
                raise ValueError("compile is not supported with strategy pipeline (each rank runs a "
                                 "stage, not the model); set compile: false")
        return self

    @model_validator(mode="after")
    def _averaging_whole_model(self) -> "TrainerConfig":
        # The average is a full copy of the model on every rank: fsdp and pipeline exist so
        # that no rank holds the whole model.
        if self.averaging != "none" and self.devices > 1 and self.strategy != "ddp":
            raise ValueError(f"averaging {self.averaging} is not offered with strategy {self.strategy} "
                             f"(every rank would hold a full copy of the model); use ddp or averaging: none")
        return self


class LossConfig(Section):
    # auto: cross_entropy for classes, mse for a number to predict (regression)
    name: Literal["auto", "cross_entropy", "bce", "mse", "huber"] = "auto"
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0   # cross_entropy only
    huber_delta: PositiveFloat = 1.0   # huber: quadratic within this many standard deviations of the target


class OptimizerConfig(Section):
    """A torch.optim optimizer; keys an optimizer does not use are ignored by it."""

    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"] = "adamw"
    # a number, or auto: measured by a learning-rate range test before the stage trains
    # (engine/lr_range.py); the rate it chooses is the main group's after the scaling rule
    lr: PositiveFloat | Literal["auto"] = 3.0e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 1.0e-4
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9   # sgd, rmsprop
    nesterov: bool = False                                  # sgd
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)         # adam, adamw
    eps: PositiveFloat = 1.0e-8
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.99   # rmsprop smoothing
    history_size: PositiveInt = 10                          # lbfgs
    max_iter: PositiveInt = 5                               # lbfgs inner iterations
    # Linear scaling rule: lr is given for this batch size and scaled by
    # batch_size / reference_batch_size (null = lr used as is).
    reference_batch_size: PositiveInt | None = None


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped per optimizer step (plateau: per epoch)."""

    name: Literal["constant", "step", "cosine", "linear", "inverse_sqrt", "plateau"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 1.0
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # cosine/linear floor
    step_epochs: PositiveInt = 10                               # step: decay interval
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1        # step/plateau factor
    plateau_patience: NonNegInt = 3


class EarlyStoppingConfig(Section):
    enabled: bool = True
    monitor: Literal["val/loss", "val/acc"] = "val/loss"
    patience: PositiveInt = 5
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0


class AutoBudget(Section):
    """How `epochs: auto` and `batch_size: auto` scale with the size of the training set.

    A fixed number of epochs is a budget in the wrong unit: 12 epochs of 60 samples at
    batch 128 are 12 optimizer steps. `auto` counts optimizer steps instead.
    """

    batch_size: Annotated[int, Field(gt=0, le=1_048_576)] = 128   # the batch for large training sets ...
    # ... at most this share of the set; auto: by the data's kind (trainlab.engine.budget.AUTO_BY_KIND)
    max_batch_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] = 0.25
    min_epochs: Epochs = 12       # never fewer epochs than this
    min_steps: Annotated[int, Field(ge=0, le=10_000_000)] = 1000  # and at least this many optimizer steps
    # and enough epochs to see this many training samples (repeats counted): a small set, whose
    # batch is capped by max_batch_fraction, gets more epochs instead of fewer samples seen; auto: by kind
    min_samples: Annotated[int, Field(ge=0, le=1_000_000_000)] | Literal["auto"] = 0
    max_epochs: Epochs = 1000     # a ceiling for tiny sets
    # A ceiling for large sets, winning over min_epochs (never below one epoch). Set above
    # MNIST-1D's pretraining corpus (12 epochs of 297 steps) so its source run is unchanged.
    max_steps: Annotated[int, Field(gt=0, le=10_000_000)] = 4000

    @model_validator(mode="after")
    def _steps_in_order(self) -> "AutoBudget":
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) is above max_steps ({self.max_steps})")
        return self


class FinetuneAutoBudget(AutoBudget):
    """Fine-tuning on a small label budget: small batches, more epochs (400 labels: batch 32, 40 epochs).

    `auto` batch fraction and samples seen: series below 320 samples train like the published
    recipes for small series sets (batch a tenth of the set, many epochs); tables and images as
    before (trainlab.engine.budget.AUTO_BY_KIND; bench/budget.py, RESULTS section 21).
    """

    batch_size: Annotated[int, Field(gt=0, le=1_048_576)] = 32
    max_batch_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] = "auto"
    min_epochs: Epochs = 40
    min_steps: Annotated[int, Field(ge=0, le=10_000_000)] = 500
    min_samples: Annotated[int, Field(ge=0, le=1_000_000_000)] | Literal["auto"] = "auto"
    max_steps: Annotated[int, Field(gt=0, le=10_000_000)] = 2000   # 2,881 images: 21 epochs of 91 steps


class TrainSpec(Section):
    """What one training run does: epochs, loss, optimizer, schedule, early stopping.

    The defaults are pretrain's (params.yaml); FinetuneConfig overrides those it tunes.
    """

    epochs: Epochs | Literal["auto"] = "auto"              # a number, or auto (see `auto`)
    # a number, auto (see `auto`), or null = trainer.batch_size
    batch_size: Annotated[int, Field(gt=0, le=1_048_576)] | Literal["auto"] | None = "auto"
    auto: AutoBudget = AutoBudget()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()


class PretrainConfig(TrainSpec):
    """Pretraining: train on the source task, or import a pretrained network from a file."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=False)

    # A weights file (.safetensors, .pt, .pth) to import instead of training: a ResNet-18/34 in
    # torchvision/timm layout, or another trainlab project's model file. A DVC dependency of
    # pretrain (dvc.yaml templates it), so it names a path that exists even when unused: the
    # placeholder folder data/own stands for "no file: train on the source task".
    from_file: str = Field(str(OWN_DATA), alias="from")

    @field_validator("from_file")
    @classmethod
    def _a_file(cls, value: str) -> str:
        if value.startswith("timm:"):
            raise ValueError(f"'{value}' is a timm name, not a file: DVC can only depend on a file; run "
                             f"`trainlab fetch-weights {value}` (needs timm: make setup-timm) and set "
                             f"pretrain.from to the .safetensors file it writes")
        return value

    def imported(self) -> Path | None:
        """The weights file `from` names, or None where it holds the placeholder."""
        return None if Path(self.from_file) == OWN_DATA else Path(self.from_file)


class FinetuneLoss(LossConfig):
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1   # softer targets for a small label budget


class FinetuneEarlyStopping(EarlyStoppingConfig):
    patience: PositiveInt = 10


class FinetuneConfig(TrainSpec):
    """Transfer: new head, frozen blocks, optional gradual unfreezing, backbone lr scale."""

    # Where fine-tuning on a small label budget departs from TrainSpec's (pretrain's) defaults.
    auto: FinetuneAutoBudget = FinetuneAutoBudget()
    loss: FinetuneLoss = FinetuneLoss()
    early_stopping: FinetuneEarlyStopping = FinetuneEarlyStopping()
    # Backbone blocks kept frozen: a list of block names, or how many blocks from the input.
    freeze: Union[NonNegInt, tuple[str, ...]] = ("stem",)
    unfreeze_every: PositiveInt | None = None
    backbone_lr_scale: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    compare_scratch: bool = True
    linear_probe: bool = True
    # A linear model (model.arch logreg) on the raw inputs, same data, budget and selection:
    # the classic baseline a deep model must beat, and a candidate for the ensemble and champion.
    linear_baseline: bool = True

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, bool) or not isinstance(value, (int, list, tuple)) or (
            isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"expected a number of blocks or a list of block names, got {value!r}")
        return value


# --------------------------------------------------------------------------- search
class SpaceParam(Section):
    """One searched key: a float or int range, or categorical choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: PositiveFloat | None = None
    choices: tuple[Union[bool, int, float, str, None, tuple], ...] | None = None

    @model_validator(mode="after")
    def _complete(self) -> "SpaceParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} parameter needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        return self


# The space params.yaml ships: the fine-tuning lr, the backbone's lr scale, dropout.
DEFAULT_SPACE = {
    "finetune.optimizer.lr": SpaceParam(type="float", low=1.0e-3, high=1.0e-2, log=True),
    "finetune.backbone_lr_scale": SpaceParam(type="float", low=0.05, high=1.0, log=True),
    "model.dropout": SpaceParam(type="float", low=0.0, high=0.3),
}


# search.space keys a trial reads. Model keys that reshape the backbone are refused: the
# pretrained weights would not load into a trial's model. Trainer keys only where they
# change the maths; finetune's baselines are not run by trials.
SEARCHABLE_MODEL = ("dropout", "activation")
BACKBONE_SHAPE = ("arch", "width", "depth", "kernel_size", "downsample", "batchnorm")
SEARCHABLE_TRAINER = ("batch_size", "grad_accum", "precision", "fp16_loss_scaling", "clip_grad_norm",
                      "clip_grad_value", "augment", "averaging")
NOT_SEARCHABLE_FINETUNE = ("compare_scratch", "linear_probe", "linear_baseline")


def unsearchable_reason(key: str, per_trial_epochs: bool) -> str | None:
    """Why no trial could search `key` (None if it can): it is not read, or cannot change."""
    section, _, rest = key.partition(".")
    field = rest.split(".")[0]
    if section == "model" and field in BACKBONE_SHAPE:
        return "it changes the backbone's layers, so models/pretrained.pt would not load into a trial's model"
    if section == "finetune" and field == "epochs" and per_trial_epochs:
        return "search.epochs sets every trial's epochs"
    readable = ((section == "finetune" and field not in NOT_SEARCHABLE_FINETUNE)
                or (section == "model" and rest in SEARCHABLE_MODEL)
                or (section == "trainer" and rest in SEARCHABLE_TRAINER))
    return None if readable else "no trial reads it"


class SearchConfig(Section):
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    n_trials: Annotated[int, Field(gt=0, le=100_000)] = 8
    timeout_s: PositiveFloat | None = None
    workers: Annotated[int, Field(gt=0, le=1024)] = 1     # local processes
    pruner: Literal["none", "median", "halving"] = "median"
    metric: Literal["val/loss", "val/acc"] = "val/loss"   # what trials are ranked and pruned by
    storage: str | None = None       # null = local file kept across runs; or an RDB URL
    study_name: str = "trainlab-search"
    # The samplers seed numpy with seed * 10_007 + slot, which must stay below 2**32.
    seed: Annotated[int, Field(ge=0, le=400_000)] = 0
    epochs: Epochs | None = None  # per-trial epochs; null = finetune.epochs
    grid_points: Annotated[int, Field(gt=0, le=1000)] = 3   # grid: points per float/int range
    top_k: PositiveInt = 5
    space: dict[str, SpaceParam] = Field(default_factory=lambda: dict(DEFAULT_SPACE))

    @field_validator("study_name")
    @classmethod
    def _file_safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
            raise ValueError(f"{value!r}: use 1-100 letters, digits, '.', '_' or '-' (it names a directory)")
        return value

    @field_validator("space")
    @classmethod
    def _trials_read_every_key(cls, space: dict[str, SpaceParam], info: ValidationInfo) -> dict[str, SpaceParam]:
        for key in space:
            reason = unsearchable_reason(key, info.data.get("epochs") is not None)
            if reason:
                raise ValueError(
                    f"{key} cannot be searched: {reason}; searchable: finetune.* (not "
                    f"{', '.join(NOT_SEARCHABLE_FINETUNE)}; not epochs while search.epochs is set), "
                    f"model.{{{','.join(SEARCHABLE_MODEL)}}}, trainer.{{{','.join(SEARCHABLE_TRAINER)}}}")
        return space


# ------------------------------------------------------------------ ensemble, evaluate
class EnsembleConfig(Section):
    # greedy: forward selection with replacement on held-out predictions (Caruana et al., 2004)
    method: Literal["greedy", "soft_vote", "hard_vote", "weighted"] = "greedy"
    greedy_rounds: Annotated[int, Field(gt=0, le=1000)] = 25
    top_k: PositiveInt = 5
    include_finetuned: bool = True
    # finetune's from-scratch and linear baselines, where finetune.compare_scratch and
    # finetune.linear_baseline trained them: the candidates not started from the pretrained backbone
    include_baselines: bool = True


class EvaluateConfig(Section):
    calibration_bins: Annotated[int, Field(gt=0, le=1000)] = 15
    register_model: bool = True
    model_name: ModelName = "trainlab"   # checked here: MLflow refuses a bad one only at the very end
    alias: AliasName = "champion"
    # Whether the new version takes `alias` (tracking/promotion.py): auto = only if none holds
    # it yet or the new one has a lower held-out loss on the same held-out data; always; never.
    # A version that does not take it gets `challenger`.
    promote: Literal["auto", "always", "never"] = "auto"

    @field_validator("alias")
    @classmethod
    def _not_challenger(cls, value: str) -> str:
        if value == "challenger":
            raise ValueError("'challenger' is the alias of the versions evaluate does not promote; choose another")
        return value


class SelectionConfig(Section):
    """How models are selected and calibrated on the labelled data that is not trained on."""

    # A validation split this small cannot rank epochs or models: below it, every target
    # training selects by stratified k-fold cross-validation over train + val instead.
    cv_below: Annotated[int, Field(ge=0, le=10_000_000)] = 100
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    calibrate: bool = True      # temperature scaling fitted on held-out predictions
    # Regression: the level of the conformal prediction interval around every prediction,
    # fitted on the held-out residuals (split-conformal; see trainlab/calibration.py).
    interval: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9


class TrackingConfig(Section):
    uri: TrackingUri | None = None   # null = MLFLOW_TRACKING_URI, else the project root's sqlite:///mlflow.db
    experiment: ExperimentName = "trainlab"
    log_models: bool = True          # every model a stage trains, as an MLflow model
    log_trial_models: bool = False   # trials' models as MLflow models too; off: their files only
    system_metrics: bool = True      # MLflow's CPU/memory/disk/network/GPU samples, every 10 s


# ------------------------------------------------------------------------------ root
class Params(Section):
    """The whole of params.yaml."""

    seed: Seed = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    trainer: TrainerConfig = TrainerConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    search: SearchConfig = SearchConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    selection: SelectionConfig = SelectionConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _stage_batches_divisible(self) -> "Params":
        per_step = self.trainer.grad_accum * self.trainer.devices
        for name in ("pretrain", "finetune"):
            batch = getattr(self, name).batch_size
            if isinstance(batch, int) and batch % per_step:
                raise ValueError(f"{name}.batch_size {batch} must be divisible by "
                                 f"trainer.grad_accum x trainer.devices = {per_step}")
        return self
