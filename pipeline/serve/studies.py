"""The state folder's files of one job: the study's instances as received, the published results, the log.

::

    <state>/jobs.sqlite                              the queue (:mod:`pipeline.serve.jobs`)
    <state>/jobs/<id>/input/job-<id>/<series>/<instance>.dcm
                                                     the study as received: one patient folder of the ``dicom``
                                                     layout, one folder per series (what ``predict --input`` reads)
    <state>/jobs/<id>/output/                        ``predict --format dicom-seg``'s published results
    <state>/jobs/<id>/job.log                        what the job's run printed

Names come from UIDs only when they are UIDs (digits and dots); anything else a sender puts in a UID becomes a hash,
so nothing taken from a received file becomes a path unchecked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.io.atomic import atomic_path, fsync_directory
from pipeline.manifest import read_manifest

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
JOBS_FOLDER = "jobs"


def uid_component(uid: str) -> str:
    """A file-name component for a DICOM UID: the UID itself when it is one (digits and dots, at most 64
    characters), else ``x`` and the first 32 hex digits of its SHA-256."""
    text = str(uid)
    if _UID.match(text) and len(text) <= 64:
        return text
    return "x" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def case_id(job_id: int) -> str:
    """The case name of a job's study in ``predict``'s outputs (``job-<id>``): no patient data in file names."""
    return f"job-{int(job_id)}"


@dataclass(frozen=True)
class JobFolders:
    """The folders of one job in the state folder (see the module docstring).

    Args:
        state_dir: the service's state folder.
        job_id: the job's number.
    """

    state_dir: Path
    job_id: int

    @property
    def root(self) -> Path:
        """``<state>/jobs/<id>``."""
        return Path(self.state_dir) / JOBS_FOLDER / str(int(self.job_id))

    @property
    def input_root(self) -> Path:
        """The folder ``predict --input`` is given: it holds the one patient folder :attr:`case_dir`."""
        return self.root / "input"

    @property
    def case_dir(self) -> Path:
        """The study's patient folder, ``input/job-<id>``."""
        return self.input_root / case_id(self.job_id)

    @property
    def output(self) -> Path:
        """Where ``predict`` publishes the results."""
        return self.root / "output"

    @property
    def log(self) -> Path:
        """The job's log: what its runs printed."""
        return self.root / "job.log"

    def instance_path(self, series_uid: str, sop_uid: str) -> Path:
        """Where an instance of the study is kept: one folder per series, one file per instance."""
        return self.case_dir / uid_component(series_uid) / f"{uid_component(sop_uid)}.dcm"

    def published(self) -> bool:
        """True when a finished run's results are in :attr:`output` (its manifest is written last)."""
        return read_manifest(self.output) is not None


def write_instance(folders: JobFolders, series_uid: str, sop_uid: str, encoded: bytes) -> Path:
    """Write one received instance (its Part 10 bytes) durably into the job's input folder, replacing an earlier
    copy of the same instance. Returns its path."""
    path = folders.instance_path(series_uid, sop_uid)
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded)
    return path


def link_instances(source: JobFolders, target: JobFolders, relative_paths: list[str]) -> None:
    """Give ``target`` the instances ``source`` received (hard links where the file system allows, else copies):
    a new job of a study starts with what the study's earlier job had."""
    for relative in relative_paths:
        origin, destination = source.case_dir / relative, target.case_dir / relative
        if not origin.is_file() or destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(origin, destination)
        except OSError:
            shutil.copy2(origin, destination)
    if target.case_dir.is_dir():
        fsync_directory(target.case_dir)


def relative_instance_path(folders: JobFolders, path: Path) -> str:
    """An instance's path relative to the job's case folder (what the queue records)."""
    return Path(path).relative_to(folders.case_dir).as_posix()
