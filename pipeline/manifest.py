"""The prediction manifest: which run wrote which file of an output folder, for which case, from which weights.

``predict`` writes ``manifest.csv`` into its output folder beside the predictions, one row per case of the
run, whether it was written or failed. ``evaluate`` reads it to score only the files that the run wrote,
and refuses files the manifest does not list (stale results of an older run, files copied in by hand).

Columns: ``run_id`` (one id per ``predict`` run), ``case_id``, ``file`` (a name inside the folder, empty
for a failed case), ``status`` (``written`` or ``failed``), ``checkpoint`` (the weights' path),
``checkpoint_sha256``, ``written_at`` (UTC, ISO 8601), ``error`` (why a case failed), and the seconds the case
spent in each stage of the run: ``load_s`` (reading and preprocessing its files), ``network_s`` (the inferer: every
window through the network, and their blending) and ``postprocess_s`` (softmax, inversion onto the case's own
grid, the mask rule, writing; with ``--format dicom-seg`` also the DICOM Segmentation and the clinical summary),
empty for a failed case.
"""

from __future__ import annotations

import csv
import hashlib
import io
import statistics
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from pipeline.io import atomic_write_text

MANIFEST_NAME = "manifest.csv"
# The other files a prediction folder holds beside the masks, written by predict and never taken for predictions.
FAILURES_NAME = "failures.csv"
RUN_FILES = (MANIFEST_NAME, FAILURES_NAME)
PROBABILITIES_SUFFIX = "_probabilities.npz"
WRITTEN = "written"
FAILED = "failed"
STATUSES = (WRITTEN, FAILED)


@dataclass(frozen=True)
class ManifestEntry:
    """One case of a prediction run.

    Attributes:
        run_id: the run (see :func:`new_run_id`).
        case_id: the case.
        file: the prediction's file name inside the output folder, or its path relative to it (POSIX separators)
            for formats that write subfolders ("" when the case failed).
        status: ``written`` or ``failed``.
        checkpoint: the weights the run used.
        checkpoint_sha256: their SHA-256 ("" when unknown).
        written_at: UTC time, ISO 8601.
        error: why the case failed ("" when written).
        load_s, network_s, postprocess_s: seconds in each stage, as text with millisecond precision ("" when
            unknown or failed).
    """

    run_id: str
    case_id: str
    file: str
    status: str
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    written_at: str = ""
    error: str = ""
    load_s: str = ""
    network_s: str = ""
    postprocess_s: str = ""


COLUMNS = tuple(f.name for f in fields(ManifestEntry))
# the per-case stage times, in stage order, and what each covers
STAGE_COLUMNS = {"load_s": "loading and preprocessing", "network_s": "network",
                 "postprocess_s": "post-processing and writing"}


def stage_summary(entries: list[ManifestEntry]) -> str | None:
    """One line with the median seconds per case of each stage over the written entries that carry them, e.g.
    ``loading and preprocessing 0.41 s, network 2.10 s, post-processing and writing 0.30 s (median of 16 cases)``;
    ``None`` when no entry carries stage times."""
    timed = [e for e in entries if e.status == WRITTEN and all(getattr(e, c) for c in STAGE_COLUMNS)]
    if not timed:
        return None
    medians = [(label, statistics.median(float(getattr(e, c)) for e in timed)) for c, label in STAGE_COLUMNS.items()]
    return ", ".join(f"{label} {value:.2f} s" for label, value in medians) + f" (median of {len(timed)} cases)"


def new_run_id() -> str:
    """A fresh run id: the UTC time and a random suffix (``20261201T101500Z-1a2b3c4d``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's contents (hex); "" when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def failures_csv(rows: list[dict[str, str]]) -> str:
    """The failures table (``failures.csv``) as CSV text: header ``case_id,error``, one row per failed case."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "error"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def manifest_csv(entries: list[ManifestEntry]) -> str:
    """The manifest as CSV text, sorted by case id."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS))
    writer.writeheader()
    for entry in sorted(entries, key=lambda e: e.case_id):
        writer.writerow(asdict(entry))
    return buffer.getvalue()


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> Path:
    """Write the manifest to ``path`` (normally ``<output folder>/manifest.csv``) atomically. Returns ``path``."""
    return atomic_write_text(path, manifest_csv(entries))


def read_manifest(folder: str | Path) -> list[ManifestEntry] | None:
    """Read ``folder/manifest.csv``.

    Returns:
        The entries, or ``None`` when the folder has no manifest.

    Raises:
        ValueError: the manifest is unreadable, lacks a column, has an unknown status, or names a file
            that is not a plain name inside the folder (the message names the manifest and the row).
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"manifest {str(path)!r} is not readable CSV: {err}") from err
    entries = []
    for number, row in enumerate(rows, start=2):
        missing = [c for c in ("run_id", "case_id", "file", "status") if c not in row or row[c] is None]
        if missing:
            raise ValueError(f"manifest {str(path)!r}, line {number}: missing column(s) {', '.join(missing)}")
        if row["status"] not in STATUSES:
            raise ValueError(
                f"manifest {str(path)!r}, line {number}: status {row['status']!r} is not one of {', '.join(STATUSES)}"
            )
        name = row["file"] or ""
        # a file name, or a relative path of plain names below the folder (the isles2024 format's subfolders)
        parts = name.split("/")
        if name and any(not p or p in (".", "..") or "\\" in p or Path(p).name != p for p in parts):
            raise ValueError(f"manifest {str(path)!r}, line {number}: file {name!r} is not a plain file name or a "
                             "relative path of plain names")
        entries.append(ManifestEntry(**{c: (row.get(c) or "") for c in COLUMNS}))
    return entries
