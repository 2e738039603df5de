"""Studies in from a watched folder: each folder dropped into the inbox is one study (a patient folder of the
``dicom`` layout: DICOM files at any depth), taken when nothing in it has changed for the stable time.

A taken folder is moved (renamed, on one file system; else copied, then removed) into its job's input folder, so
the inbox holds only what has not been taken. Hidden entries (``.name``) are left alone: copy a study in under a
hidden name and rename it when complete, or rely on the stable time. Links are not followed: a link placed in the
inbox is refused, not taken, so the service never moves or reads a folder it was pointed at from elsewhere.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from pipeline.serve.jobs import JobQueue
from pipeline.serve.studies import JobFolders

LOG = logging.getLogger("pipeline.serve")


def newest_change(folder: Path) -> float:
    """The latest modification time of ``folder`` and of everything under it (links not followed)."""
    newest = folder.lstat().st_mtime
    for parent, folders, names in os.walk(folder):
        for name in folders + names:
            try:
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
            except OSError:
                continue
    return newest


def study_uid_of(folder: Path) -> str | None:
    """The StudyInstanceUID of the first DICOM file under ``folder`` (``None`` when there is none)."""
    import pydicom

    for parent, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            try:
                dataset = pydicom.dcmread(os.path.join(parent, name), stop_before_pixels=True,
                                          specific_tags=["StudyInstanceUID"])
            except Exception:  # noqa: BLE001 - not DICOM, or damaged: the job's run reports the study's files
                continue
            if "StudyInstanceUID" in dataset:
                return str(dataset.StudyInstanceUID)
    return None


class Inbox:
    """The watched folder (see the module docstring).

    Args:
        folder: the inbox (created when missing).
        queue: the job queue.
        state_dir: the service's state folder.
        stable_seconds: how long a study folder must be unchanged before it is taken.
    """

    def __init__(self, folder: str | Path, queue: JobQueue, state_dir: str | Path, stable_seconds: float) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.queue = queue
        self.state_dir = Path(state_dir)
        self.stable_seconds = float(stable_seconds)
        self._refused: set[str] = set()

    def scan(self) -> list[int]:
        """Take every study folder that has been quiet for the stable time. Returns the new jobs' numbers."""
        taken = []
        now = time.time()
        for entry in sorted(self.folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() or not entry.is_dir():
                if entry.name not in self._refused:
                    self._refused.add(entry.name)
                    LOG.warning("inbox: %s is not a study folder (a link or a file): left alone", entry)
                continue
            try:
                if now - newest_change(entry) < self.stable_seconds:
                    continue
            except OSError:
                continue
            taken.append(self.take(entry))
        return taken

    def take(self, folder: Path) -> int:
        """Make a job of one study folder and move the folder into the job's input. Returns the job's number."""
        files = sum(len(names) for _, _, names in os.walk(folder))
        study_uid = study_uid_of(folder) or folder.name
        job = self.queue.add_received(study_uid, f"inbox:{folder.name}", files)
        target = JobFolders(self.state_dir, job.id)
        target.input_root.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, target.case_dir)
        except OSError:  # another file system
            shutil.copytree(folder, target.case_dir, symlinks=True)
            shutil.rmtree(folder)
        self.queue.mark_queued(job.id)
        LOG.info("job %d: study %s from the inbox folder %s (%d file(s)): queued", job.id, study_uid, folder.name,
                 files)
        return job.id
