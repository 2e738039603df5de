"""The handlers that the bundles' trainers take beside MONAI's (``train#handlers``): resume, the time budget, early
stopping and the progress bar, each an Ignite-style handler (``attach(engine)``) that the config switches with
``_disabled_``, over the ``attach_*`` function that does the work.

- :class:`ResumeHandler`: resume from the newest readable checkpoint
  (:func:`pipeline.training.checkpoints.attach_resume`);
- :class:`TimeBudgetHandler`: stop after the last epoch that fits in a time budget (:func:`attach_time_budget`);
- :class:`EarlyStoppingHandler`: stop when validation stops improving (:func:`attach_early_stopping`);
- :class:`ProgressBarHandler`: a progress bar with the running loss (:func:`attach_progress_bar`).

They take part in no collective operation of their own (resume checks that every rank resumes from the same
checkpoint; the progress bar shows on rank 0 only), so ``pipeline.distributed.handlers_for_rank`` keeps them on
every rank.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import EarlyStopHandler, from_engine, stopping_fn_from_metric

from pipeline.distributed import rank_and_world_size
from pipeline.training.checkpoints import attach_resume


class ResumeHandler:
    """Resume the trainer it is attached to from the newest loadable checkpoint in ``checkpoint_dir``, when there
    is one (:func:`pipeline.training.checkpoints.attach_resume`: model, optimizer, scheduler, the trainer's epoch
    and iteration, the best validation score; an unreadable newer checkpoint is skipped with a warning).

    The trainer's own state is checkpointed under ``trainer_key``; it is the engine this handler is attached to, so
    that the handler can be declared among the trainer's handlers (``train#handlers``) without referring to it.

    Args:
        checkpoint_dir: where the training checkpoints are written.
        state: name -> object with ``load_state_dict``, the trainer left out (``model``, ``optimizer``,
            ``lr_scheduler``, ``best_metric``).
        map_location: where tensors are loaded.
        optional: keys of ``state`` that a checkpoint may lack (not restored, with a warning).
        trainer_key: the key of the trainer's state in the checkpoint.

    Raises (on attach):
        ValueError: there are checkpoints, but none can be read.
        RuntimeError: with several ranks, the ranks found different checkpoints.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        state: Mapping[str, Any],
        map_location: str | torch.device = "cpu",
        optional: Sequence[str] = ("best_metric",),
        trainer_key: str = "trainer",
    ) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.state = dict(state)
        self.map_location = map_location
        self.optional = tuple(optional)
        self.trainer_key = trainer_key
        self.checkpoint: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Attach MONAI's ``CheckpointLoader`` of the newest loadable checkpoint to ``engine`` (none for a fresh
        start); :attr:`checkpoint` is then the checkpoint resumed from, or ``None``."""
        state = {**self.state, self.trainer_key: engine}
        self.checkpoint = attach_resume(engine, self.checkpoint_dir, state, self.map_location, self.optional)


class TimeBudgetHandler:
    """Stop the trainer it is attached to at the end of the last epoch that fits in ``budget_s`` seconds of
    training (:func:`attach_time_budget`; ``None`` or 0: no budget), optionally fitting a polynomial learning-rate
    schedule to the epochs the budget allows.

    Args:
        budget_s: the budget in seconds.
        lr_scheduler: a ``torch.optim.lr_scheduler.PolynomialLR`` stepped once per epoch, whose decay then ends with
            the budget instead of at its ``total_iters`` (:func:`fit_schedule_to_epochs`); ``None`` leaves it alone.
        fit_schedule: whether to fit ``lr_scheduler`` to the budget (False: as if it were ``None``).

    Raises (on attach):
        TypeError: ``lr_scheduler`` is not a ``PolynomialLR``.
    """

    def __init__(self, budget_s: float | None, lr_scheduler: Any = None, fit_schedule: bool = True) -> None:
        self.budget_s = budget_s
        self.lr_scheduler = lr_scheduler if fit_schedule else None
        self.attached = False

    def attach(self, engine: Engine) -> None:
        """Attach the budget's handlers to ``engine``; :attr:`attached` says whether there was a budget."""
        self.attached = attach_time_budget(engine, self.budget_s, self.lr_scheduler)


class EarlyStoppingHandler:
    """Stop the trainer it is attached to when ``evaluator``'s key metric has not improved for ``patience``
    validations (:func:`attach_early_stopping`; ``None`` or 0: no early stopping).

    Args:
        evaluator: the validation engine (MONAI ``SupervisedEvaluator`` with a key metric).
        patience: validations without improvement before stopping.
        min_delta: the smallest increase of the metric that counts as an improvement.

    Raises (on attach):
        ValueError: a negative ``patience`` or ``min_delta``, or an evaluator without a key metric.
    """

    def __init__(self, evaluator: Engine, patience: int | None, min_delta: float = 0.0) -> None:
        self.evaluator = evaluator
        self.patience = patience
        self.min_delta = min_delta
        self.attached = False

    def attach(self, engine: Engine) -> None:
        """Attach MONAI's ``EarlyStopHandler`` to the evaluator, stopping ``engine``; :attr:`attached` says whether
        it was attached."""
        self.attached = attach_early_stopping(self.evaluator, engine, self.patience, self.min_delta)


class ProgressBarHandler:
    """A tqdm progress bar over each epoch's iterations of the trainer it is attached to, with the running loss
    (:func:`attach_progress_bar`; rank 0 only).

    Args:
        enabled: whether to show it.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.attached = False

    def attach(self, engine: Engine) -> None:
        """Attach Ignite's ``ProgressBar`` to ``engine``; :attr:`attached` says whether one was attached."""
        self.attached = attach_progress_bar(engine, self.enabled)


def fit_schedule_to_epochs(lr_scheduler: torch.optim.lr_scheduler.PolynomialLR, epochs: int) -> None:
    """Make a per-epoch polynomial schedule decay to zero at ``epochs`` from here on, and set each parameter
    group's learning rate to the schedule's value at its current epoch (so the chained updates that follow stay
    on the new curve, ``base_lr * (1 - epoch / epochs) ** power``).

    Args:
        lr_scheduler: the schedule; its ``total_iters`` becomes ``epochs`` (kept in its state dict, so a resumed
            run goes on with it).
        epochs: the epoch at which the learning rate reaches zero (at least the current epoch + 1).
    """
    epochs = max(int(epochs), lr_scheduler.last_epoch + 1)
    if epochs == lr_scheduler.total_iters:
        return
    lr_scheduler.total_iters = epochs
    factor = (1.0 - min(lr_scheduler.last_epoch, epochs) / epochs) ** lr_scheduler.power
    for group, base_lr in zip(lr_scheduler.optimizer.param_groups, lr_scheduler.base_lrs):
        group["lr"] = base_lr * factor
    # what get_last_lr() reports (torch sets it in step(); the change here happens between steps)
    lr_scheduler._last_lr = [group["lr"] for group in lr_scheduler.optimizer.param_groups]


def attach_time_budget(trainer: Engine, budget_s: float | None, lr_scheduler: Any = None) -> bool:
    """Stop ``trainer`` at the end of the last epoch that fits in ``budget_s`` seconds of training.

    After each epoch the mean epoch time so far is taken as the next epoch's; when it would end past
    the budget, the run is terminated (Ignite then completes normally, so final checkpoints are
    written). ``None`` or 0 means no budget. With ``lr_scheduler`` (a per-epoch ``PolynomialLR``), the epochs
    the budget is projected to allow (at most the run's ``max_epochs``) become the schedule's length after each
    epoch (:func:`fit_schedule_to_epochs`), so the learning rate anneals by the end of the budget rather than
    stopping half-way down its curve.

    Returns:
        True when a budget was attached.

    Raises:
        TypeError: ``lr_scheduler`` is given and is not a ``PolynomialLR``.
    """
    if not budget_s:
        return False
    if lr_scheduler is not None and not isinstance(lr_scheduler, torch.optim.lr_scheduler.PolynomialLR):
        raise TypeError(f"the time budget fits only a PolynomialLR schedule, got {type(lr_scheduler).__name__}")
    clock: dict[str, float] = {}

    def start(engine: Engine) -> None:
        clock["start"], clock["first_epoch"] = time.monotonic(), engine.state.epoch

    def check(engine: Engine) -> None:
        elapsed = time.monotonic() - clock["start"]
        per_epoch = elapsed / max(1, engine.state.epoch - clock["first_epoch"])
        if elapsed + per_epoch > budget_s and engine.state.epoch < engine.state.max_epochs:
            engine.logger.info(f"time budget of {budget_s:.0f} s reached after epoch {engine.state.epoch}: stopping")
            engine.terminate()
        elif lr_scheduler is not None and engine.state.epoch < engine.state.max_epochs:
            projected = engine.state.epoch + int((budget_s - elapsed) // per_epoch)
            fit_schedule_to_epochs(lr_scheduler, min(engine.state.max_epochs, projected))

    trainer.add_event_handler(Events.STARTED, start)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, check)
    return True


def attach_early_stopping(
    evaluator: Engine, trainer: Engine, patience: int | None, min_delta: float = 0.0
) -> bool:
    """Stop ``trainer`` when the validation key metric has not improved for ``patience`` validations.

    MONAI's ``EarlyStopHandler`` (Ignite's ``EarlyStopping``) on ``evaluator``'s key metric (higher is better):
    a validation counts as an improvement when it beats the best so far by more than ``min_delta``. Ignite then
    completes the run normally, so the final checkpoint is written. Its counter is not checkpointed: a resumed
    run counts afresh. Every process of a distributed run sees the same gathered metric and stops together.

    Args:
        evaluator: the validation engine (MONAI ``SupervisedEvaluator`` with a key metric).
        trainer: the engine to stop.
        patience: validations without improvement before stopping; None or 0 means no early stopping.
        min_delta: the smallest increase of the metric that counts as an improvement.

    Returns:
        True when early stopping was attached.

    Raises:
        ValueError: a negative ``patience`` or ``min_delta``, or an evaluator without a key metric.
    """
    if not patience:
        return False
    if int(patience) < 0 or float(min_delta) < 0:
        raise ValueError(f"early stopping needs patience >= 0 and min_delta >= 0, got {patience} and {min_delta}")
    metric = getattr(evaluator.state, "key_metric_name", None)
    if not metric:
        raise ValueError("early stopping needs an evaluator with a key metric (key_val_metric)")
    EarlyStopHandler(patience=int(patience), score_function=stopping_fn_from_metric(metric), trainer=trainer,
                     min_delta=float(min_delta), epoch_level=True).attach(evaluator)
    return True


def attach_progress_bar(trainer: Engine, enabled: bool) -> bool:
    """Show a tqdm progress bar over each epoch's iterations with the running loss (Ignite's ``ProgressBar``),
    beside MONAI's ``StatsHandler`` log lines. Only rank 0 of a distributed run shows one.

    Args:
        trainer: the MONAI trainer (its output holds ``loss``).
        enabled: whether to attach it (the bundles default to it when stderr is a terminal).

    Returns:
        True when a progress bar was attached.
    """
    if not enabled or rank_and_world_size()[0] != 0:
        return False
    loss = from_engine(["loss"], first=True)
    ProgressBar(persist=True).attach(trainer, output_transform=lambda output: {"loss": float(loss(output))})
    return True
