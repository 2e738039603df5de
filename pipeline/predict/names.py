"""Output file names per format (``nifti``, ``isles2018``, ``isles2022``, ``isles2024``, ``dicom-seg``), checked for
every record before a run.

The names themselves are written (and parsed back by ``evaluate``) in :mod:`pipeline.formats`.
"""

from __future__ import annotations

from pipeline.errors import CaseError
from pipeline.formats import (
    ISLES2018_SUBMISSION_SUFFIX, ISLES2018_TEAM_NAME, ISLES2024_OUTPUT_FILE, case_file_name, isles2018_submission_name,
    dicom_output_names, isles2022_mask_name, isles2024_output_name,
)
from pipeline.manifest import PROBABILITIES_SUFFIX

# the formats the bundles' writer knows; dicom-seg is the bundle's nifti output, to which predict adds the DICOM files
BUNDLE_FORMATS = ("nifti", "isles2018", "isles2022", "isles2024")
OUTPUT_FORMATS = (*BUNDLE_FORMATS, "dicom-seg")
TEAM_NAME = ISLES2018_TEAM_NAME


def prediction_filename(
    output_format: str,
    case_id: str,
    reference_path: str | None = None,
    smir_id: str | None = None,
    team_name: str = "team",
    extension: str = ".nii.gz",
    case_folders: bool = False,
) -> str:
    """The file name of one case's prediction, relative to the output folder.

    Args:
        output_format: ``nifti`` (``<case_id>.nii.gz``), ``isles2018`` (``SMIR.<team>.<smir_id>.nii``,
            smir_id = the SMIR id of the case's CT_MTT folder) or ``isles2022`` (the DWI file's name with
            ``_dwi`` replaced by ``_msk``, the ISLES 2022 derivative naming, so truths pair by name) or ``isles2024``
            (the challenge container's ``images/stroke-lesion-segmentation/output.mha``) or ``dicom-seg``
            (``<case_id>.nii.gz``, beside which the DICOM outputs go: :func:`side_filenames`).
        case_id: the case.
        reference_path: the reference (DWI for ISLES 2022) file.
        smir_id: ISLES 2018 submission id.
        team_name: ISLES 2018 team name (letters, digits, ``_`` and ``-``).
        extension: ``.nii.gz``, ``.nii`` or ``.mha`` (ISLES 2022 and nifti formats).
        case_folders: ``isles2024`` only: put the output under a folder named by the case id (a run of several
            cases; the container's own run has one).

    Returns:
        The file name: no folder, except for ``isles2024`` (POSIX separators).

    Raises:
        ValueError: unknown format or bad team name.
        CaseError: no SMIR id for an ISLES 2018 name, or a name from the case (case id, SMIR id, DWI name) that is
            not one plain file-name component (:func:`pipeline.paths.plain_component`).
    """
    if output_format == "nifti":
        return case_file_name(case_id, extension)
    if output_format == "dicom-seg":
        return dicom_output_names(case_id)["mask"]
    if output_format == "isles2018":
        return isles2018_submission_name(team_name, smir_id, case_id, reference_path)
    if output_format == "isles2022":
        return isles2022_mask_name(case_id, reference_path, extension)
    if output_format == "isles2024":
        return isles2024_output_name(case_id if case_folders else None)
    raise ValueError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


def format_extension(output_format: str, extension: str) -> str:
    """The extension a format writes: ``.nii`` for ``isles2018``, ``.mha`` for ``isles2024``, ``.nii.gz`` for
    ``dicom-seg``, else ``extension``."""
    fixed = {"isles2018": ISLES2018_SUBMISSION_SUFFIX, "isles2024": ISLES2024_OUTPUT_FILE[-4:], "dicom-seg": ".nii.gz"}
    return fixed.get(output_format, extension)


def side_filenames(output_format: str, case_id: str) -> list[str]:
    """The files a format writes beside each case's mask: for ``dicom-seg`` the Segmentation, the summary JSON and
    its PNG; none for the others."""
    if output_format != "dicom-seg":
        return []
    names = dicom_output_names(case_id)
    return [names["segmentation"], names["summary"], names["figure"]]


def probabilities_filename(name: str, extension: str) -> str:
    """The probabilities file written beside the prediction ``name``: its stem (``name`` without ``extension``)
    and ``_probabilities.npz``."""
    stem = name[: -len(extension)] if name.endswith(extension) else name
    return f"{stem}{PROBABILITIES_SUFFIX}"


def planned_output_names(
    records: list[dict],
    output_format: str,
    team_name: str = "team",
    extension: str = ".nii.gz",
    probabilities: bool = False,
    case_folders: bool = False,
) -> dict[str, list[str]]:
    """The files each record will write, checked before any inference.

    Args:
        records: the records to predict (each with ``case_id`` and, per format, ``reference``/``smir_id``).
        output_format, team_name, extension, case_folders: see :func:`prediction_filename`.
        probabilities: the run also writes ``<name>_probabilities.npz``.

    Returns:
        ``case_id -> [file names]``.

    Raises:
        CaseError: a name is not a plain file-name component, or two records would write the same file
            (naming both records and the file).
    """
    extension = format_extension(output_format, extension)
    owners: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for record in records:
        case_id = str(record.get("case_id"))
        name = prediction_filename(output_format, case_id, record.get("reference"), record.get("smir_id"),
                                   team_name, extension, case_folders)
        files = [name, *side_filenames(output_format, case_id)]
        if probabilities:
            files.append(probabilities_filename(name, extension))
        for file in files:
            if file.lower() in owners:
                raise CaseError(case_id, None,
                                f"cases {owners[file.lower()]!r} and {case_id!r} would both write {file!r} "
                                f"(format {output_format}); one would overwrite the other. Give them distinct ids"
                                + (" (the isles2024 format writes one case per run unless it is told to write one "
                                   "folder per case)" if output_format == "isles2024" else ""))
            owners[file.lower()] = case_id
        names[case_id] = files
    return names
