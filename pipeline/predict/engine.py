"""The inference engine of the bundles: an Ignite evaluator and dataset that keep a batch run going when one case
is bad.

A bundle's inference ``evaluator`` is a :class:`ResilientEvaluator` over a :class:`ResilientDataset`:
a case whose files cannot be loaded, or whose prediction cannot be written, is recorded in a
failures table and the run goes on with the other cases; ``raise_if_failed`` (the bundle's
``finalize`` step) then ends the run with a non-zero exit status that names every failed case.
Under ``torchrun`` (``multi_gpu_inference.json``) each rank predicts its share of the cases and
:meth:`ResilientEvaluator.gather_failures` merges the ranks' failures: rank 0 alone writes the table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.data import Dataset
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.transforms import apply_transform

from pipeline.distributed import is_distributed
from pipeline.errors import CaseError, root_cause
from pipeline.io import atomic_write_text
from pipeline.manifest import (
    FAILED, STAGE_COLUMNS, WRITTEN, ManifestEntry, failures_csv, file_sha256, new_run_id, utc_now, write_manifest,
)

__all__ = ["ERROR_KEY", "CaseFailuresError", "ResilientDataset", "ResilientEvaluator", "describe_failure"]

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
        checkpoint: the weights' path, recorded in the manifest with its SHA-256; a list of paths (an ensemble) is
            recorded joined by ``;``, with their hashes in the same order.
        run_id: the run's id in the manifest (default: a fresh one).
        path_key: the output key under which the writer (:class:`pipeline.predict.SavePredictiond`) leaves the
            written file's path.

    Each written case's seconds per stage (loading and preprocessing, the inferer, post-processing and writing) are
    kept with it in :attr:`written` and go to the manifest (:data:`pipeline.manifest.STAGE_COLUMNS`).
    """

    def __init__(
        self,
        *args,
        failures_path: str | Path | None = None,
        case_key: str = "case_id",
        manifest_path: str | Path | None = None,
        checkpoint: str | Path | Sequence[str | Path] | None = None,
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
        paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint or [])
        self.checkpoints = [str(p) for p in paths if p]
        self.checkpoint = ";".join(self.checkpoints)
        self.run_id = run_id or new_run_id()
        self.path_key = path_key
        self.case_key = case_key
        self._gathered = False
        self._clock: dict[str, float] = {}
        self.add_event_handler(Events.STARTED, self._reset)
        self.add_event_handler(Events.COMPLETED, self._write_failures)
        self.add_event_handler(Events.GET_BATCH_STARTED, self._mark, "load_started")
        self.add_event_handler(Events.GET_BATCH_COMPLETED, self._mark, "loaded")
        self.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._mark, "inferred")

    def _reset(self, engine) -> None:
        self.failures, self.succeeded, self.written = [], [], []
        self._gathered = False

    def _mark(self, engine, name: str) -> None:
        self._clock[name] = time.perf_counter()

    def _stage_seconds(self, done: float) -> dict[str, str]:
        """The stage times of the iteration that just ended, as manifest text (empty when a mark is missing)."""
        marks = [self._clock.get(k) for k in ("load_started", "loaded", "inferred")] + [done]
        if any(m is None for m in marks) or not marks[0] <= marks[1] <= marks[2] <= marks[3]:
            return {}
        return {column: f"{end - start:.3f}" for column, start, end in zip(STAGE_COLUMNS, marks[:-1], marks[1:])}

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
        self._clock.pop("inferred", None)
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the batch
            message = describe_failure(err, case_ids[0] if len(case_ids) == 1 else None)
            self.failures.extend({"case_id": c, "error": message} for c in case_ids or ["?"])
            engine.state.output = {}
            return {}
        stages = self._stage_seconds(time.perf_counter()) if len(case_ids) == 1 else {}
        self.succeeded.extend(case_ids)
        items = output if isinstance(output, (list, tuple)) else [output]
        paths = [item.get(self.path_key) for item in items if isinstance(item, Mapping)]
        for case_id, path in zip(case_ids, paths):
            if path:
                self.written.append({"case_id": case_id, "file": self._file_name(path), "written_at": utc_now(),
                                     **stages})
        return output

    def _file_name(self, path: str | Path) -> str:
        """A written file's name in the manifest: its path relative to the manifest's folder (POSIX separators;
        formats such as ``isles2024`` write into subfolders), else its name."""
        path = Path(str(path))
        if self.manifest_path is not None:
            try:
                return path.resolve().relative_to(self.manifest_path.parent.resolve()).as_posix()
            except ValueError:
                pass
        return path.name

    def failures_csv(self) -> str:
        """The failures table as CSV text (header ``case_id,error``)."""
        return failures_csv(self.failures)

    def manifest_entries(self) -> list[ManifestEntry]:
        """The manifest rows of the run so far: every written case and every failed case."""
        sha = ";".join(file_sha256(p) for p in self.checkpoints)
        rows = [ManifestEntry(self.run_id, w["case_id"], w["file"], WRITTEN, self.checkpoint, sha, w["written_at"],
                              **{column: w.get(column, "") for column in STAGE_COLUMNS})
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
