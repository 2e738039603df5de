"""The prediction folder: its result files, the hidden staging folder a run writes into, and publishing.

A run writes into ``--output/.staging-<pid>-<run id>``; when it has finished, :func:`publish_results` replaces
every result of an earlier run with the staged ones, the manifest last, so the folder always holds one run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.bundles import process_alive
from pipeline.io import IMAGE_SUFFIXES, fsync_directory, remove_stale_partials
from pipeline.manifest import MANIFEST_NAME, PROBABILITIES_SUFFIX, RUN_FILES

STAGING_PREFIX = ".staging-"


def is_result_file(path: Path) -> bool:
    """True for a file a predict run writes: a prediction image, a probability map, the manifest or the failures
    table (hidden files, partial writes among them, are not results)."""
    name = path.name
    if name.startswith("."):
        return False
    return name in RUN_FILES or name.lower().endswith(IMAGE_SUFFIXES) or name.endswith(PROBABILITIES_SUFFIX)


def existing_outputs(output_dir: Path) -> list[Path]:
    """Prediction files already in ``output_dir`` (images and probability maps; not hidden or partial files)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir()
                  if p.is_file() and is_result_file(p) and p.name not in RUN_FILES)



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
    fresh = {p.name for p in staging.iterdir() if p.is_file() and is_result_file(p)}
    for old in output_dir.iterdir():
        if old.is_file() and is_result_file(old):
            old.unlink()
    fsync_directory(output_dir)
    published = []
    for name in sorted(fresh, key=lambda n: n == MANIFEST_NAME):
        os.replace(staging / name, output_dir / name)
        published.append(output_dir / name)
    fsync_directory(output_dir)
    return published
