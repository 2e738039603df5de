"""Training checkpoints: durable atomic files that also carry the best validation score
(:class:`AtomicCheckpointSaver`), the clearing of the temporaries an interrupted write left
(:func:`remove_stale_checkpoint_temporaries`), finding the newest one (:func:`latest_checkpoint`) and resuming
from the newest readable one (:func:`attach_resume`)."""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from pipeline.distributed import same_on_every_rank
from pipeline.io import atomic_path, remove_stale_partials

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


def recorded_best_metric(checkpoint: str | Path) -> tuple[float, int] | None:
    """The best validation score a training checkpoint records (what :class:`AtomicCheckpointSaver` keeps in the
    final checkpoint, ``last.pt``, under ``"best_metric"``), as ``(score, epoch)``; epoch -1 when not recorded.

    Returns:
        The score, or ``None`` when the file is missing, unreadable, or holds no score (no validation yet, or a
        bare state dict such as ``model.pt``).
    """
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable or missing file simply records no score
        return None
    return best_metric_of(state)


def best_metric_of(state: Any) -> tuple[float, int] | None:
    """``(score, epoch)`` from the content of a loaded training checkpoint (see :func:`recorded_best_metric`),
    or ``None`` when it records no score."""
    record = state.get("best_metric") if isinstance(state, dict) else None
    if isinstance(record, dict) and record.get("best_metric") is not None:
        return float(record["best_metric"]), int(record.get("best_metric_epoch", -1))
    return None
