"""The params.yaml schema and its loader: validated once, at the boundary."""

from trainlab.config.load import flatten, load_params, params_hash, validate, with_overrides
from trainlab.config.schema import (
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    Params,
    SearchConfig,
    TrainerConfig,
    TrainSpec,
)

__all__ = [
    "DataConfig", "FinetuneConfig", "ModelConfig", "Params", "SearchConfig", "TrainerConfig",
    "TrainSpec", "flatten", "load_params", "params_hash", "validate", "with_overrides",
]
