"""Which files of a prediction folder are scored: its image files, after the run's ``manifest.csv``.

Image files (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``) under ``--pred`` are predictions; ``manifest.csv``,
``failures.csv``, ``*_probabilities.npz`` and hidden files (``.``-names, the partial files of atomic writes)
never are. When the folder holds ``predict``'s ``manifest.csv``, only the files it lists as ``written`` are
scored: any other prediction file (a stale result of an older run, a file copied in) is refused by name, a
case the manifest lists as ``failed`` is a failed case, and a listed file that is missing is an error.
Without a manifest every prediction file is scored, with a warning that nothing tells which run wrote them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.evaluation.cases import _image_files
from pipeline.evaluation.pairing import prediction_names
from pipeline.manifest import FAILED, MANIFEST_NAME, WRITTEN, ManifestEntry, read_manifest


def find_predictions(pred_dir: str | Path) -> list[Path]:
    """List the prediction files under ``pred_dir`` (recursively; ``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``).

    Hidden files and folders, ``manifest.csv``, ``failures.csv`` and ``*_probabilities.npz`` are skipped;
    the manifest is not consulted (see :func:`select_predictions`).

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {str(pred_dir)!r} not found")
    return _image_files(pred_dir, recursive=True)


@dataclass
class Selection:
    """Which files of a prediction folder are scored, after its manifest (see :func:`select_predictions`).

    Attributes:
        files: every prediction file found (see :func:`find_predictions`).
        predictions: the files to score.
        refused: ``(file, why)`` for files the manifest does not list as written.
        missing: manifest entries listed as written whose file is not a prediction file of the folder.
        failed: manifest entries of cases the run failed on.
        manifest: the manifest's path, ``None`` when the folder has none.
        run_ids: the manifest's run id(s).
        case_ids: prediction file -> the case the manifest lists it for.
    """

    files: list[Path]
    predictions: list[Path]
    refused: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[ManifestEntry] = field(default_factory=list)
    failed: list[ManifestEntry] = field(default_factory=list)
    manifest: Path | None = None
    run_ids: list[str] = field(default_factory=list)
    case_ids: dict[Path, str] = field(default_factory=dict)


def select_predictions(pred_dir: str | Path) -> Selection:
    """The prediction files of ``pred_dir`` that its ``manifest.csv`` lists as written by its run.

    Without a manifest every prediction file is selected, and a warning says that nothing tells which
    run wrote them. With one, a prediction file it does not list as ``written`` (not listed, in a
    subfolder, or listed as failed) is refused: a stale result or a file copied in.

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
        ValueError: the manifest is malformed.
    """
    pred_dir = Path(pred_dir)
    files = find_predictions(pred_dir)
    entries = read_manifest(pred_dir)
    if entries is None:
        if files:
            warnings.warn(
                f"prediction folder {str(pred_dir)!r} has no {MANIFEST_NAME}: cannot tell which run wrote its "
                f"{len(files)} prediction file(s) (stale results of an older run would be scored too); every one "
                "is scored. predict writes the manifest; masks from another tool come without one",
                UserWarning, stacklevel=3,
            )
        return Selection(files, list(files))
    manifest = pred_dir / MANIFEST_NAME
    run_ids = list(dict.fromkeys(e.run_id for e in entries))
    runs = f"run {', '.join(run_ids)}" if run_ids else "an empty run"
    written = {e.file: e for e in entries if e.status == WRITTEN and e.file}
    failed = [e for e in entries if e.status == FAILED]
    failed_files = {e.file: e for e in failed if e.file}
    failed_ids = {e.case_id: e for e in failed}
    by_name = {p.relative_to(pred_dir).as_posix(): p for p in files}
    predictions, refused = [], []
    for name, path in by_name.items():
        if name in written:
            predictions.append(path)
            continue
        entry = failed_files.get(name) or next(
            (failed_ids[v] for k, v in prediction_names(path) if k == "case_id" and v in failed_ids), None)
        if entry is not None:
            why = (f"{manifest} lists case {entry.case_id!r} as failed in {runs}"
                   f"{f' ({entry.error})' if entry.error else ''}, so this file is not that run's result")
        else:
            why = f"not listed in {manifest}, so it was not written by the run the manifest describes ({runs})"
        refused.append((path, why + "; a stale result or a file copied in: not scored (remove it, or predict "
                        "again with --overwrite into this folder)"))
    missing = [e for e in entries if e.status == WRITTEN and e.file not in by_name]
    case_ids = {path: written[name].case_id for name, path in by_name.items() if name in written}
    return Selection(files, predictions, refused, missing, failed, manifest, run_ids, case_ids)
