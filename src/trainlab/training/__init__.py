"""The training layer: what pretrain, finetune and search run on top of the engine.

    task             train_source / train_target: a model fitted on one task of the prepared data
    fit              TrainRequest (one training's settings, passed down whole), fit_model, TrainedModel
    cross_validation k-fold selection and refit when the validation split is too small
    folds            the folds, their per-epoch predictions, the chosen epoch
    jobs             a pool that shares the CPU threads out as processes (the folds)
    transfer         fine-tuning a pretrained backbone, and its baselines
    pretext          masked-reconstruction pretraining without labels
    curves           learning curves: recorded, written for DVC, diagnosed
    outputs          the one writer of a training stage's files
    tracking_hook    the engine hook that streams a fit into its MLflow run
    fault_injection  the faults reliability tests ask for at an exact step

Ensemble and evaluate import none of this: what they need of a trained model (held-out
predictions, the served spec, data hashes) is in `trainlab.heldout`, `trainlab.serving`
and `trainlab.data`.
"""

from trainlab.training.fit import ModelFactory, TrainedModel, TrainRequest, finish, fit_model
from trainlab.training.task import TaskData, load_task, source_is_labelled, train_source, train_target

__all__ = ["ModelFactory", "TaskData", "TrainRequest", "TrainedModel", "finish", "fit_model", "load_task",
           "source_is_labelled", "train_source", "train_target"]
