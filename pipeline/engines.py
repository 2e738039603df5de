"""Ignite engines and datasets that keep a batch run going when one case is bad.

A bundle's inference ``evaluator`` is a :class:`ResilientEvaluator` over a :class:`ResilientDataset`:
a case whose files cannot be loaded, or whose prediction cannot be written, is recorded in a
failures table and the run goes on with the other cases; ``raise_if_failed`` (the bundle's
``finalize`` step) then ends the run with a non-zero exit status that names every failed case.
Under ``torchrun`` (``multi_gpu_inference.json``) each rank predicts its share of the cases and
:meth:`ResilientEvaluator.gather_failures` merges the ranks' failures: rank 0 alone writes the table.

It also holds the handlers the bundles' training runs attach: durable atomic checkpoints (that also carry the
best validation score), resume (from the newest readable checkpoint), the clearing of stale checkpoint
temporaries, the time budget, early stopping and the progress bar.
"""

from __future__ import annotations

import csv
import errno
import io
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver, ProgressBar
from monai.data import Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, CheckpointSaver, EarlyStopHandler, from_engine, stopping_fn_from_metric
from monai.transforms import apply_transform

from pipeline.distributed import is_distributed, rank_and_world_size, same_on_every_rank
from pipeline.errors import CaseError, root_cause
from pipeline.io import atomic_path, atomic_write_text, remove_stale_partials
from pipeline.manifest import FAILED, WRITTEN, ManifestEntry, file_sha256, new_run_id, utc_now, write_manifest

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
        manifest_path: where the run's manifest (:mod:`pipeline.manifest`: one row per case, written or failed,
            with the weights and the time) is written at the end (``None``: not written).
        checkpoint: the weights' path, recorded in the manifest with its SHA-256.
        run_id: the run's id in the manifest (default: a fresh one).
        path_key: the output key under which the writer (:class:`pipeline.predict.SavePredictiond`) leaves the
            written file's path.
    """

    def __init__(
        self,
        *args,
        failures_path: str | Path | None = None,
        case_key: str = "case_id",
        manifest_path: str | Path | None = None,
        checkpoint: str | Path | None = None,
        run_id: str | None = None,
        path_key: str = "pred_path",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[dict[str, str]] = []
        self.succeeded: list[str] = []
        self.written: list[dict[str, str]] = []
        self.failures_path = Path(failures_path) if failures_path else None
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.checkpoint = str(checkpoint) if checkpoint else ""
        self.run_id = run_id or new_run_id()
        self.path_key = path_key
        self.case_key = case_key
        self._gathered = False
        self.add_event_handler(Events.STARTED, self._reset)
        self.add_event_handler(Events.COMPLETED, self._write_failures)

    def _reset(self, engine) -> None:
        self.failures, self.succeeded, self.written = [], [], []
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
        items = output if isinstance(output, (list, tuple)) else [output]
        paths = [item.get(self.path_key) for item in items if isinstance(item, Mapping)]
        for case_id, path in zip(case_ids, paths):
            if path:
                self.written.append({"case_id": case_id, "file": Path(str(path)).name, "written_at": utc_now()})
        return output

    def failures_csv(self) -> str:
        """The failures table as CSV text (header ``case_id,error``)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["case_id", "error"])
        writer.writeheader()
        writer.writerows(self.failures)
        return buffer.getvalue()

    def manifest_entries(self) -> list[ManifestEntry]:
        """The manifest rows of the run so far: every written case and every failed case."""
        sha = file_sha256(self.checkpoint) if self.checkpoint else ""
        rows = [ManifestEntry(self.run_id, w["case_id"], w["file"], WRITTEN, self.checkpoint, sha, w["written_at"])
                for w in self.written]
        rows += [ManifestEntry(self.run_id, f["case_id"], "", FAILED, self.checkpoint, sha, utc_now(), f["error"])
                 for f in self.failures]
        return rows

    def _write_failures(self, engine) -> None:
        # with several ranks the tables are written once, by rank 0, in gather_failures
        if is_distributed():
            return
        if self.failures and self.failures_path is not None:
            atomic_write_text(self.failures_path, self.failures_csv())
        if self.manifest_path is not None:
            write_manifest(self.manifest_path, self.manifest_entries())

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
        torch.distributed.all_gather_object(gathered, (self.failures, self.succeeded, self.written))
        self.failures = sorted((f for failures, _, _ in gathered for f in failures), key=lambda f: f["case_id"])
        self.succeeded = [case for _, succeeded, _ in gathered for case in succeeded]
        self.written = [w for _, _, written in gathered for w in written]
        if torch.distributed.get_rank() == 0:
            if self.failures and self.failures_path is not None:
                atomic_write_text(self.failures_path, self.failures_csv())
            if self.manifest_path is not None:
                write_manifest(self.manifest_path, self.manifest_entries())
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


# ---------------------------------------------------------------------------------------------
# Checkpoints: durable atomic files, the best validation score, resume
# ---------------------------------------------------------------------------------------------
# The temporary files of ignite's own atomic ``DiskSaver`` (``tempfile.NamedTemporaryFile`` in the checkpoint
# folder): a run killed while saving, or stopped by a full disk, leaves one behind.
IGNITE_TEMPORARY = re.compile(r"tmp[a-z0-9_]{8}")
# disk space below which a failed write is reported as a full disk
_NEARLY_FULL_BYTES = 64 * 2**20


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, permissions). Nothing partial was left under the final
    name or beside it, and the checkpoints written before are intact."""


def _is_write_failure(err: BaseException) -> bool:
    # torch.save reports a failed write of its zip container as a RuntimeError ("PytorchStreamWriter failed
    # writing file", "basic_ios::clear: iostream error", "unexpected pos ..."); an object that cannot be pickled
    # raises other errors (PicklingError, AttributeError, TypeError), which are not about the disk
    return isinstance(err, (OSError, RuntimeError))


def _checkpoint_write_error(path: Path, err: BaseException) -> CheckpointWriteError:
    reason = (err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[-1]) or type(err).__name__
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and (free < _NEARLY_FULL_BYTES or getattr(err, "errno", None) == errno.ENOSPC):
        left = f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free // 1024} KiB"
        reason = f"the disk is full ({left} left on the file system of {path.parent})"
    return CheckpointWriteError(
        f"could not write the checkpoint {path}: {reason}. No partial file was left, and the checkpoints already "
        f"in {path.parent} are intact; free some space (or train into another --output) and run the same command "
        "again to resume"
    )


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` with MONAI's fixed file names, writing each checkpoint through
    :func:`pipeline.io.atomic_path` (a hidden ``.<name>.partial-XXXX.pt`` file, fsynced, renamed, folder fsynced),
    so that the folder never holds a half-written checkpoint, nor a temporary file after a failed save.

    Ignite removes the checkpoint being superseded *before* writing the new one; here the removal waits
    until the new file is in place (and a fixed name is simply replaced by the rename).

    Raises (on call):
        CheckpointWriteError: the file could not be written (full disk...); the old checkpoints are kept.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None):
        super().__init__(dirname=str(dirname), require_empty=False, atomic=True)
        self.filename = filename
        self._superseded: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        if idist.get_rank() == self.save_on_rank:
            path = Path(self.dirname) / filename
            try:
                with atomic_path(path) as tmp:
                    torch.save(checkpoint, tmp, **self.kwargs)
            except Exception as err:
                if _is_write_failure(err):
                    raise _checkpoint_write_error(path, err) from err
                raise
        while self._superseded:
            old = self._superseded.pop()
            if old != filename and (Path(self.dirname) / old).exists():
                super().remove(old)

    def remove(self, filename: str) -> None:
        self._superseded.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically and durably, and whose
    best-score record can be checkpointed.

    MONAI writes checkpoints in place (``atomic=False``): a run killed while saving leaves a truncated
    ``last.pt`` that resume then fails on, and ignite's atomic mode leaves its ``tmpXXXXXXXX`` file behind on a
    full disk. Here every checkpoint goes through :func:`pipeline.io.atomic_path` (see :class:`_AtomicDiskSaver`;
    the file is group- and world-readable under the usual umask), so the newest complete checkpoint always
    survives and no temporary file outlives a failed save.

    With ``save_key_metric`` (the best model, e.g. ``model.pt``), :meth:`state_dict` is the best score so far: the
    key-metric tracking list (ignite ``Checkpoint`` state, key ``checkpointer``, as MONAI's ``key_metric_save_state``
    stores it) and the ``best_metric`` / ``best_metric_epoch`` of the engine it is attached to (the validation
    evaluator). Put the saver in the *training* checkpoint (``train#checkpoint_state``) and :meth:`load_state_dict`
    on resume restores both, so that after a restart a validation replaces the best model only when it beats
    the best score before the restart. (The best model file itself stays a bare state dict of the network.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine: Engine | None = None
        self._pending_best: tuple[float, int] | None = None
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, checkpoint.save_handler.filename)

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` (MONAI's events), and remember it: its best metric is part of :meth:`state_dict`."""
        super().attach(engine)
        self._engine = engine
        if self._pending_best is not None:
            self._restore_best(*self._pending_best)

    def _best_files(self, saved: Sequence[Sequence[Any]]) -> list[Path]:
        fixed = None if self._key_metric_checkpoint is None else self._key_metric_checkpoint.save_handler.filename
        return [Path(self.save_dir) / (fixed or str(name)) for _, name in saved]

    def state_dict(self) -> dict[str, Any]:
        """The best score so far: ``{"checkpointer": {"_saved": [(score, file name), ...]}, "best_metric": float,
        "best_metric_epoch": int}`` (the last two once the attached engine has a best metric). Plain numbers and
        strings only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        state: dict[str, Any] = {}
        if self._key_metric_checkpoint is not None:
            saved = self._key_metric_checkpoint.state_dict().get("_saved", [])
            state["checkpointer"] = {"_saved": [(float(score), str(name)) for score, name in saved]}
        engine_state = getattr(self._engine, "state", None)
        best, epoch = getattr(engine_state, "best_metric", None), getattr(engine_state, "best_metric_epoch", None)
        if best is not None and epoch is not None and int(epoch) != -1:
            state["best_metric"], state["best_metric_epoch"] = float(best), int(epoch)
        elif self._pending_best is not None:
            state["best_metric"], state["best_metric_epoch"] = self._pending_best
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the best score of :meth:`state_dict` (MONAI's form, the bare ignite ``{"_saved": ...}``, works too).

        When the best model file it names is gone, nothing is restored (with a warning): the next validation then
        writes a best model again.
        """
        saved = state_dict.get("checkpointer", state_dict if "_saved" in state_dict else None)
        if saved is not None and self._key_metric_checkpoint is not None:
            missing = [p for p in self._best_files(saved.get("_saved", [])) if not p.is_file()]
            if missing:
                self.logger.warning(f"the best model {missing[0]} of the checkpoint is missing: its score is not "
                                    "restored, the next validation writes a best model again")
                return
            super().load_state_dict(saved)
        if "best_metric" in state_dict and "best_metric_epoch" in state_dict:
            self._restore_best(float(state_dict["best_metric"]), int(state_dict["best_metric_epoch"]))

    def _restore_best(self, best: float, epoch: int) -> None:
        if self._engine is None:  # not attached yet (or on a rank that does not save)
            self._pending_best = (best, epoch)
            return
        self._engine.state.best_metric, self._engine.state.best_metric_epoch = best, epoch
        self._pending_best = None
        name = getattr(self._engine.state, "key_metric_name", None) or "key metric"
        self.logger.info(f"restored the best {name} {best:.4f} (epoch {epoch}): a validation replaces the best "
                         "model only when it does better")


def remove_stale_checkpoint_temporaries(checkpoint_dir: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted checkpoint writes left in ``checkpoint_dir``: the partial files
    of :func:`pipeline.io.atomic_path` (``.<name>.partial-XXXX<suffix>``) and ignite's ``tmpXXXXXXXX`` files
    (which a full disk or a kill leaves, and which can keep the disk full). Not recursive.

    Only call it while no other run writes there (``python -m pipeline train`` holds the folder's lock).

    Returns:
        The files removed.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    removed = remove_stale_partials(folder)
    for path in folder.iterdir():
        if IGNITE_TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def training_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The training checkpoints in ``checkpoint_dir`` (``last.pt`` and ``checkpoint_epoch=N.pt``, written atomically
    by :class:`AtomicCheckpointSaver`), newest first."""
    folder = Path(checkpoint_dir)
    candidates = [p for p in [folder / "last.pt", *folder.glob("checkpoint_epoch=*.pt")] if p.is_file()]
    return sorted(candidates, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written training checkpoint in ``checkpoint_dir`` (see :func:`training_checkpoints`), or ``None``."""
    candidates = training_checkpoints(checkpoint_dir)
    return candidates[0] if candidates else None


def _loadable_checkpoint(checkpoint_dir: str | Path) -> tuple[Path | None, set[str], list[str]]:
    """The newest training checkpoint that ``torch.load(weights_only=True)`` reads as a dict, its keys, and a line
    for each newer one that could not be read."""
    unreadable = []
    for candidate in training_checkpoints(checkpoint_dir):
        try:
            content = torch.load(candidate, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped and reported
            lines = str(err).strip().splitlines()
            unreadable.append(f"{candidate.name} ({type(err).__name__}: {lines[0] if lines else 'no message'})")
            continue
        if isinstance(content, Mapping):
            return candidate, {str(k) for k in content}, unreadable
        unreadable.append(f"{candidate.name} (not a training checkpoint: a {type(content).__name__})")
    return None, set(), unreadable


def attach_resume(
    trainer: Engine,
    checkpoint_dir: str | Path,
    state: Mapping[str, Any],
    map_location: str | torch.device = "cpu",
    optional: Sequence[str] = ("best_metric",),
) -> Path | None:
    """Resume ``trainer`` from the newest loadable checkpoint in ``checkpoint_dir``, when there is one:
    model, optimizer, scheduler, the trainer's epoch and iteration, and the best validation score (the
    validation's :class:`AtomicCheckpointSaver`, key ``best_metric``) (MONAI ``CheckpointLoader``, which loads
    with ``weights_only=True``; a ``DistributedDataParallel`` model loads into its module).

    A newer checkpoint that cannot be read is skipped, with a warning naming it, for the next older one. With
    several ranks every rank must call it, and all must find the same checkpoint (on several nodes,
    ``checkpoint_dir`` must be on a filesystem that they share).

    Args:
        trainer: the training engine.
        checkpoint_dir: where ``CheckpointSaver`` writes (see :func:`training_checkpoints`).
        state: name -> object with ``load_state_dict`` (``model``, ``optimizer``, ``lr_scheduler``, ``trainer``,
            ``best_metric``).
        map_location: where tensors are loaded.
        optional: keys of ``state`` that a checkpoint may lack (one written before they were saved): those are
            not restored, with a warning.

    Returns:
        The checkpoint resumed from, or ``None`` for a fresh start.

    Raises:
        ValueError: there are checkpoints, but none can be read (each is named, with what to do).
        RuntimeError: with several ranks, the ranks found different checkpoints (or some none).
    """
    checkpoint, keys, unreadable = _loadable_checkpoint(checkpoint_dir)
    if checkpoint is None and unreadable:
        raise ValueError(
            f"no checkpoint in {checkpoint_dir} can be read to resume from: {'; '.join(unreadable)}. Remove them "
            "(or train into another --output), or start afresh with --set resume=False"
        )
    for line in unreadable:
        trainer.logger.warning(f"skipping the unreadable checkpoint {line}; resuming from {checkpoint.name}")
    same_on_every_rank(None if checkpoint is None else str(checkpoint), f"the checkpoint to resume from in {checkpoint_dir}")
    if checkpoint is not None:
        lacking = [k for k in state if k in optional and k not in keys]
        if lacking:
            trainer.logger.warning(f"{checkpoint.name} holds no {', '.join(lacking)} (an older checkpoint): "
                                   "not restored")
        load_dict = {k: v for k, v in state.items() if k not in lacking}
        CheckpointLoader(load_path=str(checkpoint), load_dict=load_dict, map_location=map_location).attach(trainer)
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
