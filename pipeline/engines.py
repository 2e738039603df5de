"""Older import path of the engines, kept so that bundle configs and code written against it resolve.

The inference engine lives in :mod:`pipeline.predict.engine`; the training checkpoints and handlers in
:mod:`pipeline.training.checkpoints` and :mod:`pipeline.training.handlers`.
"""

from pipeline.predict.engine import ERROR_KEY, CaseFailuresError, ResilientDataset, ResilientEvaluator, describe_failure
from pipeline.training.checkpoints import (
    IGNITE_TEMPORARY,
    AtomicCheckpointSaver,
    CheckpointWriteError,
    attach_resume,
    latest_checkpoint,
    remove_stale_checkpoint_temporaries,
    training_checkpoints,
)
from pipeline.training.handlers import attach_early_stopping, attach_progress_bar, attach_time_budget

__all__ = [
    "ERROR_KEY",
    "IGNITE_TEMPORARY",
    "AtomicCheckpointSaver",
    "CaseFailuresError",
    "CheckpointWriteError",
    "ResilientDataset",
    "ResilientEvaluator",
    "attach_early_stopping",
    "attach_progress_bar",
    "attach_resume",
    "attach_time_budget",
    "describe_failure",
    "latest_checkpoint",
    "remove_stale_checkpoint_temporaries",
    "training_checkpoints",
]
