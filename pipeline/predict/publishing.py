"""The prediction folder: its result files, the hidden staging folder a run writes into, and publishing.

A run writes into ``--output/.staging-<pid>-<run id>``; when it has finished, :func:`publish_results` replaces
every result of an earlier run with the staged ones, the manifest last, so the folder always holds one run.
Results lie at the top of the folder, except the ISLES 2024 container's output, which lies in its own subfolders
(``images/stroke-lesion-segmentation/``, or ``<case>/images/stroke-lesion-segmentation/`` per case): only those
known subfolders are searched, so nothing else a user keeps under ``--output`` is ever taken for a result.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.bundles import process_alive
from pipeline.formats import DICOM_SIDE_SUFFIXES, ISLES2024_OUTPUT_FOLDER
from pipeline.io import IMAGE_SUFFIXES, fsync_directory, remove_stale_partials
from pipeline.manifest import MANIFEST_NAME, PROBABILITIES_SUFFIX, RUN_FILES

STAGING_PREFIX = ".staging-"


def is_result_file(path: Path) -> bool:
    """True for a file a predict run writes: a prediction image, a probability map, a DICOM case's summary, the
    manifest or the failures table (hidden files, partial writes among them, are not results)."""
    name = path.name
    if name.startswith("."):
        return False
    return (name in RUN_FILES or name.lower().endswith(IMAGE_SUFFIXES) or name.endswith(PROBABILITIES_SUFFIX)
            or name.endswith(tuple(DICOM_SIDE_SUFFIXES.values())))


def result_files(folder: Path) -> list[str]:
    """The result files of a prediction folder (or of a staging folder), as names relative to it (POSIX
    separators): the files at its top that :func:`is_result_file` accepts, and those in the ISLES 2024 container's
    output folders (``images/stroke-lesion-segmentation/`` and ``<case>/images/stroke-lesion-segmentation/``)."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if p.is_file() and is_result_file(p)]
    output_folders = [folder.joinpath(*ISLES2024_OUTPUT_FOLDER)]
    output_folders += [case.joinpath(*ISLES2024_OUTPUT_FOLDER) for case in folder.iterdir()
                       if case.is_dir() and not case.is_symlink() and not case.name.startswith(".")]
    for output in output_folders:
        if output.is_dir() and not output.is_symlink():
            names += [p.relative_to(folder).as_posix() for p in output.iterdir() if p.is_file() and is_result_file(p)]
    return sorted(names)


def existing_outputs(output_dir: Path) -> list[Path]:
    """Prediction files already in ``output_dir`` (images and probability maps, see :func:`result_files`; not the
    manifest, hidden or partial files)."""
    return [output_dir / name for name in result_files(output_dir) if name not in RUN_FILES]


def clear_stale_staging(output_dir: Path) -> list[Path]:
    """Remove the staging folders that killed runs left in ``output_dir`` (those whose process is gone) and
    the partial files of interrupted writes. Returns what was removed."""
    removed = list(remove_stale_partials(output_dir))
    for folder in output_dir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def publish_results(staging: Path, output_dir: Path) -> list[Path]:
    """Make the staged results of a run the output folder's only results.

    The previous run's manifest goes first (so the folder never claims a set it does not hold), then its other
    result files, then the staged files move in (renames on one file system), the manifest last.

    Returns:
        The published files.
    """
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    fresh = result_files(staging)
    emptied = set()
    for old in result_files(output_dir):
        (output_dir / old).unlink()
        emptied.update(_subfolders(output_dir, old))
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        _remove_if_empty(folder)
    fsync_directory(output_dir)
    published = []
    for name in sorted(fresh, key=lambda n: n == MANIFEST_NAME):
        target = output_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
        published.append(target)
        for folder in sorted(set(_subfolders(output_dir, name)), key=lambda p: len(p.parts), reverse=True):
            fsync_directory(folder)
    fsync_directory(output_dir)
    return published


def _subfolders(output_dir: Path, name: str) -> list[Path]:
    """The folders between ``output_dir`` and the file ``name`` (relative), innermost first."""
    parts = name.split("/")[:-1]
    return [output_dir.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: it holds something of the user's, which stays
        pass
