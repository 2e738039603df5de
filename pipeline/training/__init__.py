"""Training: ``python -m pipeline train`` and the training parts that the bundles' ``train.json`` references.

Modules:

- :mod:`~pipeline.training.command`: the ``train`` command (``run_train``: the ``monai.bundle run`` line, its
  checkpoint and log folders, the undo of a failed start);
- :mod:`~pipeline.training.inputs`: the checks before a run (``check_training_inputs``);
- :mod:`~pipeline.training.lock`: one trainer per checkpoint folder (``TrainingLock``);
- :mod:`~pipeline.training.trainer`: the trainer and its fast-path switches, batch preparation, the network's
  placement, the training step that a signal stops cleanly (``run_training``);
- :mod:`~pipeline.training.checkpoints`: atomic checkpoints with the best score, finding and resuming them;
- :mod:`~pipeline.training.handlers`: resume, time budget, early stopping and progress bar as trainer handlers.
- :mod:`~pipeline.training.tracking`: ``--tracking mlflow``, MONAI's bundle tracking with the settings in
  ``configs/tracking/mlflow.json`` (``tracking_overrides``).

The translation of plans into bundle settings (``plan_overrides``, ``trained_plans.json``) is in
:mod:`pipeline.planning.bundle_settings`; its names are re-exported here so that older imports work.
"""

from __future__ import annotations

from pipeline.planning.bundle_settings import (
    ARCHITECTURE_KEYS,
    NETWORK_DEF_PREFIX,
    NETWORK_OVERRIDES,
    PLAN_SOURCES,
    PLANNED_KEYS,
    TRAINED_PLANS,
    plan_overrides,
    trained_network_overrides,
    trained_plans,
)
from pipeline.training.checkpoints import (
    AtomicCheckpointSaver,
    CheckpointWriteError,
    attach_resume,
    latest_checkpoint,
    remove_stale_checkpoint_temporaries,
    training_checkpoints,
)
from pipeline.training.command import checkpoint_dir, log_dir, run_train, train_command
from pipeline.training.handlers import (
    EarlyStoppingHandler,
    ProgressBarHandler,
    ResumeHandler,
    TimeBudgetHandler,
    attach_early_stopping,
    attach_progress_bar,
    attach_time_budget,
)
from pipeline.training.inputs import check_training_inputs
from pipeline.training.lock import LOCK_NAME, TrainingLock, TrainingLockedError
from pipeline.networks.placement import channels_last_format, prepare_network
from pipeline.training.trainer import STOP_SIGNALS, PrepareTrainingBatch, Trainer, run_training

__all__ = [
    "ARCHITECTURE_KEYS",
    "LOCK_NAME",
    "NETWORK_DEF_PREFIX",
    "NETWORK_OVERRIDES",
    "PLANNED_KEYS",
    "PLAN_SOURCES",
    "STOP_SIGNALS",
    "TRAINED_PLANS",
    "AtomicCheckpointSaver",
    "CheckpointWriteError",
    "EarlyStoppingHandler",
    "PrepareTrainingBatch",
    "ProgressBarHandler",
    "ResumeHandler",
    "TimeBudgetHandler",
    "Trainer",
    "TrainingLock",
    "TrainingLockedError",
    "attach_early_stopping",
    "attach_progress_bar",
    "attach_resume",
    "attach_time_budget",
    "channels_last_format",
    "check_training_inputs",
    "checkpoint_dir",
    "latest_checkpoint",
    "log_dir",
    "plan_overrides",
    "prepare_network",
    "remove_stale_checkpoint_temporaries",
    "run_train",
    "run_training",
    "train_command",
    "trained_network_overrides",
    "trained_plans",
    "training_checkpoints",
]
