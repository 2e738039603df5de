"""Ignite engines and datasets that keep a batch run going when one case is bad.

A bundle's inference ``evaluator`` is a :class:`ResilientEvaluator` over a :class:`ResilientDataset`:
a case whose files cannot be loaded, or whose prediction cannot be written, is recorded in a
failures table and the run goes on with the other cases; ``raise_if_failed`` (the bundle's
``finalize`` step) then ends the run with a non-zero exit status that names every failed case.
Under ``torchrun`` (``multi_gpu_inference.json``) each rank predicts its share of the cases and
:meth:`ResilientEvaluator.gather_failures` merges the ranks' failures: rank 0 alone writes the table.

It also holds the handlers the bundles' training runs attach: atomic checkpoints, resume, the time budget,
early stopping and the progress bar.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver, ProgressBar
from monai.data import Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, CheckpointSaver, EarlyStopHandler, from_engine, stopping_fn_from_metric
from monai.transforms import apply_transform

from pipeline.distributed import is_distributed, rank_and_world_size, same_on_every_rank
from pipeline.errors import CaseError, root_cause
from pipeline.io import atomic_write_text

ERROR_KEY = "error"


def describe_failure(err: BaseException, case_id: Any = None) -> str:
    """One line for a failures table: the root cause's message, naming the case when it does not already."""
    cause = root_cause(err)
    message = str(cause) or type(cause).__name__
    if isinstance(cause, CaseError) or case_id is None or str(case_id) in message:
        return message
    return f"case {case_id!r}: {type(cause).__name__}: {message}"


def _without_none(value: Any) -> Any:
    # torch's default collate cannot batch None; datalist records use None for "unknown".
    if isinstance(value, Mapping):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


class ResilientDataset(Dataset):
    """A MONAI ``Dataset`` whose items never raise: a case that fails its transforms becomes
    ``{"case_id": ..., "error": "<what went wrong, naming the case and the file>"}``.

    Fields holding ``None`` are dropped from the records so that they can be collated.

    Args:
        data: the records (e.g. from :func:`pipeline.data.datalist.load_datalist`).
        transform: the preprocessing chain.
        case_key: the record key naming the case.
    """

    def __init__(self, data: Sequence[Mapping], transform=None, case_key: str = "case_id") -> None:
        super().__init__([_without_none(dict(d)) for d in data], transform)
        self.case_key = case_key

    def _transform(self, index: int):
        item = self.data[index]
        if self.transform is None:
            return item
        try:
            return apply_transform(self.transform, item)
        except Exception as err:  # noqa: BLE001 - any failure of one case is reported, not fatal
            case_id = item.get(self.case_key)
            return {self.case_key: case_id, ERROR_KEY: describe_failure(err, case_id)}


class CaseFailuresError(RuntimeError):
    """Raised at the end of a batch run in which some cases failed; lists them."""


class ResilientEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` that records a failing case and carries on with the others.

    A batch that arrives as a :class:`ResilientDataset` error item, or whose inference or
    post-processing (inversion, writing) raises, is added to :attr:`failures`; at the end of the run
    the failures are written to ``failures_path`` (CSV: case_id, error). Use batch size 1 so that a
    failure concerns one case only. With several ranks (``torch.distributed`` initialized), each rank
    records its own cases and :meth:`gather_failures` (called by :meth:`raise_if_failed`, or by the
    ``finalize`` step of ``multi_gpu_inference.json``) merges them; rank 0 alone writes the table,
    sorted by case id. Takes every ``SupervisedEvaluator`` argument, plus:

    Args:
        failures_path: where the failures table is written when there are failures (``None``: not written).
        case_key: the batch key naming the case.
    """

    def __init__(self, *args, failures_path: str | Path | None = None, case_key: str = "case_id", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[dict[str, str]] = []
        self.succeeded: list[str] = []
        self.failures_path = Path(failures_path) if failures_path else None
        self.case_key = case_key
        self._gathered = False
        self.add_event_handler(Events.STARTED, self._reset)
        self.add_event_handler(Events.COMPLETED, self._write_failures)

    def _reset(self, engine) -> None:
        self.failures, self.succeeded = [], []
        self._gathered = False

    def _case_ids(self, batchdata: Mapping) -> list[str]:
        ids = batchdata.get(self.case_key, []) if isinstance(batchdata, Mapping) else []
        return [str(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]

    def _iteration(self, engine, batchdata):
        case_ids = self._case_ids(batchdata)
        if isinstance(batchdata, Mapping) and ERROR_KEY in batchdata:
            errors = batchdata[ERROR_KEY]
            for case_id, error in zip(case_ids, errors if isinstance(errors, (list, tuple)) else [errors]):
                self.failures.append({"case_id": case_id, "error": str(error)})
            engine.state.output = {}
            return {}
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the batch
            message = describe_failure(err, case_ids[0] if len(case_ids) == 1 else None)
            self.failures.extend({"case_id": c, "error": message} for c in case_ids or ["?"])
            engine.state.output = {}
            return {}
        self.succeeded.extend(case_ids)
        return output

    def failures_csv(self) -> str:
        """The failures table as CSV text (header ``case_id,error``)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["case_id", "error"])
        writer.writeheader()
        writer.writerows(self.failures)
        return buffer.getvalue()

    def _write_failures(self, engine) -> None:
        # with several ranks the table is written once, by rank 0, in gather_failures
        if self.failures and self.failures_path is not None and not is_distributed():
            atomic_write_text(self.failures_path, self.failures_csv())

    def gather_failures(self) -> list[dict[str, str]]:
        """Merge the failures and successes of every rank (``torch.distributed.all_gather_object``);
        rank 0 writes the merged table (sorted by case id) to ``failures_path`` when a case failed,
        and every rank waits for that (barrier). Every rank must call it, also a rank that had no case
        to run. In a single process, or when already gathered, it changes nothing.

        Returns:
            The failures of every rank (of this process in a single process).
        """
        if self._gathered or not is_distributed():
            return self.failures
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (self.failures, self.succeeded))
        self.failures = sorted((f for failures, _ in gathered for f in failures), key=lambda f: f["case_id"])
        self.succeeded = [case for _, succeeded in gathered for case in succeeded]
        if self.failures and self.failures_path is not None and torch.distributed.get_rank() == 0:
            atomic_write_text(self.failures_path, self.failures_csv())
        torch.distributed.barrier()
        self._gathered = True
        return self.failures

    def raise_if_failed(self) -> None:
        """Raise :class:`CaseFailuresError` listing the failed cases, if any (a bundle's ``finalize`` step).

        With several ranks it first merges the ranks' failures (:meth:`gather_failures`), so that
        every rank raises when any case of any rank failed.
        """
        self.gather_failures()
        if self.failures:
            listing = "; ".join(f"{f['error']}" for f in self.failures)
            where = f" (table: {self.failures_path})" if self.failures_path else ""
            raise CaseFailuresError(
                f"{len(self.failures)} case(s) failed, {len(self.succeeded)} succeeded{where}: {listing}"
            )


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` in its atomic mode (temporary file, then rename), with MONAI's fixed file
    names, that never leaves the folder without a complete checkpoint.

    Ignite removes the checkpoint being superseded *before* writing the new one; here the removal waits
    until the new file is in place (and a fixed name is simply replaced by the rename).
    """

    def __init__(self, dirname: str | Path, filename: str | None = None):
        super().__init__(dirname=str(dirname), require_empty=False, atomic=True)
        self.filename = filename
        self._superseded: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint=checkpoint, filename=filename, metadata=metadata)
        while self._superseded:
            old = self._superseded.pop()
            if old != filename and (Path(self.dirname) / old).exists():
                super().remove(old)

    def remove(self, filename: str) -> None:
        self._superseded.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically.

    MONAI writes checkpoints in place (``atomic=False``, to keep them group-readable): a run killed
    while saving leaves a truncated ``last.pt`` that resume then fails on. Here every checkpoint goes
    to a temporary file that is renamed over the old one (ignite's atomic mode, which also makes the
    file group- and world-readable), so the newest complete checkpoint always survives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, checkpoint.save_handler.filename)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written training checkpoint in ``checkpoint_dir`` (``last.pt`` or
    ``checkpoint_epoch=N.pt``, both written atomically by
    :class:`AtomicCheckpointSaver`), or ``None``."""
    folder = Path(checkpoint_dir)
    candidates = [p for p in [folder / "last.pt", *folder.glob("checkpoint_epoch=*.pt")] if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def attach_resume(
    trainer: Engine, checkpoint_dir: str | Path, state: Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> Path | None:
    """Resume ``trainer`` from the latest checkpoint in ``checkpoint_dir``, when there is one:
    model, optimizer, scheduler and the trainer's epoch and iteration (MONAI ``CheckpointLoader``,
    which loads with ``weights_only=True``; a ``DistributedDataParallel`` model loads into its module).

    With several ranks every rank must call it, and all must find the same checkpoint (on several
    nodes, ``checkpoint_dir`` must be on a filesystem that they share).

    Args:
        trainer: the training engine.
        checkpoint_dir: where ``CheckpointSaver`` writes (see :func:`latest_checkpoint`).
        state: name -> object with ``load_state_dict`` (``model``, ``optimizer``, ``lr_scheduler``, ``trainer``).
        map_location: where tensors are loaded.

    Returns:
        The checkpoint resumed from, or ``None`` for a fresh start.

    Raises:
        RuntimeError: with several ranks, the ranks found different checkpoints (or some none).
    """
    checkpoint = latest_checkpoint(checkpoint_dir)
    same_on_every_rank(None if checkpoint is None else str(checkpoint), f"the checkpoint to resume from in {checkpoint_dir}")
    if checkpoint is not None:
        CheckpointLoader(load_path=str(checkpoint), load_dict=dict(state), map_location=map_location).attach(trainer)
    return checkpoint


def attach_time_budget(trainer: Engine, budget_s: float | None) -> bool:
    """Stop ``trainer`` at the end of the last epoch that fits in ``budget_s`` seconds of training.

    After each epoch the mean epoch time so far is taken as the next epoch's; when it would end past
    the budget, the run is terminated (Ignite then completes normally, so final checkpoints are
    written). ``None`` or 0 means no budget.

    Returns:
        True when a budget was attached.
    """
    if not budget_s:
        return False
    clock: dict[str, float] = {}

    def start(engine: Engine) -> None:
        clock["start"], clock["first_epoch"] = time.monotonic(), engine.state.epoch

    def check(engine: Engine) -> None:
        elapsed = time.monotonic() - clock["start"]
        per_epoch = elapsed / max(1, engine.state.epoch - clock["first_epoch"])
        if elapsed + per_epoch > budget_s and engine.state.epoch < engine.state.max_epochs:
            engine.logger.info(f"time budget of {budget_s:.0f} s reached after epoch {engine.state.epoch}: stopping")
            engine.terminate()

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
