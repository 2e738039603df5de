"""Each on-disk naming convention, its writer and its reader side by side.

- The plain prediction name ``<case_id><extension>`` (``predict --format nifti``): :func:`case_file_name`,
  read back by :func:`parse_case_file_name` (the name without its image suffix).
- The ISLES 2018 submission name ``SMIR.<team>.<smir_id>.nii`` (``predict --format isles2018``; the id is
  the SMIR id of the case's CT_MTT folder): :func:`isles2018_submission_name`, read back by
  :func:`parse_isles2018_submission_name`.
- The ISLES 2022 mask name, the DWI file's name with ``_dwi`` replaced by ``_msk`` (``predict --format
  isles2022``, the ISLES 2022 derivative naming): :func:`isles2022_mask_name`, read back (subject and
  session) by :func:`parse_isles2022_name`.
- The hospital DICOM outputs of a case (``predict --format dicom-seg``): ``<case_id>.nii.gz`` (the mask, for
  research), ``<case_id>_seg.dcm`` (the DICOM Segmentation), ``<case_id>_summary.json`` and ``<case_id>_summary.png``
  (the clinical summary): :func:`dicom_output_names`, whose suffixes :data:`DICOM_SIDE_SUFFIXES` tell them apart.
- The ISLES 2018 layout ``<SPLIT>/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>/<folder>.nii`` (the synthetic
  dataset's): the split folders :data:`ISLES2018_SPLIT_FOLDERS`, read back by
  :func:`parse_isles2018_split_folder`; :func:`isles2018_case_folder`, read back by
  :func:`parse_isles2018_case_folder`; :func:`isles2018_folder_name` and :func:`isles2018_image_name`, read
  back by :func:`parse_isles2018_folder_name` (any ``SMIR.<...>.<MOD>.<id>``); :func:`isles2018_folder_pattern`
  globs for the modality folders.
- The ISLES 2024 layout (BIDS): ``raw_data/<sub>/ses-01/<sub>_ses-01_ncct.nii.gz``, the perfusion maps on the NCCT
  grid ``derivatives/<sub>/ses-01/perfusion-maps/<sub>_ses-01_space-ncct_<map>.nii.gz`` and the follow-up lesion
  mask ``derivatives/<sub>/ses-02/<sub>_ses-02_lesion-msk.nii.gz``: :func:`isles2024_subject` and
  :func:`isles2024_file`, read back by :mod:`pipeline.data.isles2024` (by BIDS suffix, which also takes the public
  release's ``space-ncct_lesion-msk`` and the ``rawdata/`` spelling).
- The ISLES 2024 challenge container (grand-challenge's interface): one case's inputs as
  ``images/<slug>/<any name>.mha`` (:data:`ISLES2024_CONTAINER_SLUGS`; :func:`isles2024_container_input`), read
  back by :mod:`pipeline.data.isles2024`; its output ``images/stroke-lesion-segmentation/output.mha``, or
  ``<case_id>/images/stroke-lesion-segmentation/output.mha`` per case for a run of several cases
  (``predict --format isles2024``): :func:`isles2024_output_name`, read back by :func:`parse_isles2024_output_name`.
- The synthetic test labels: ``TESTING_GROUND_TRUTH/<case_id>/SMIR.<...>.OT.<ot_id>/`` listed in
  ``TESTING_GROUND_TRUTH/cases.csv`` (:data:`GROUND_TRUTH_COLUMNS`): :func:`ground_truth_row`, read back by
  :func:`read_ground_truth_rows` and :func:`parse_ground_truth_row`; the per-case table
  :data:`SYNTHETIC_TABLE_CSV`.

Writers raise on a name that would not be one plain file-name component; readers return ``None`` for a
name of another convention. The module imports only :mod:`pipeline.errors` and :mod:`pipeline.paths` when
loaded (:func:`pipeline.data.datalist.strip_image_suffix` when first used), so that any module, those of
``pipeline.data`` included, can import it without a cycle.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from pipeline.errors import CaseError, LayoutError
from pipeline.paths import plain_component

# ISLES 2018 submissions: SMIR.<team>.<smir_id>.nii
ISLES2018_TEAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
ISLES2018_SUBMISSION_SUFFIX = ".nii"
_ISLES2018_SUBMISSION_RE = re.compile(r"^SMIR\..*\.(\d+)$", re.IGNORECASE)
# ISLES 2018 layout: <SPLIT>/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii
ISLES2018_SPLIT_FOLDERS = {"training": "TRAINING", "testing": "TESTING"}
_ISLES2018_CASE_RE = re.compile(r"^case_(\d+)$", re.IGNORECASE)
ISLES2018_FOLDER_PREFIX = "SMIR.Brain.XX.O"
ISLES2018_IMAGE_SUFFIX = ".nii"
# ISLES 2022 (BIDS) names: sub-<id>[_ses-<id>][_<entity>...]
_ISLES2022_RE = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?(?:_[A-Za-z0-9-]+)*$")
# ISLES 2024 (BIDS): raw_data/<sub>/ses-01/..., derivatives/<sub>/ses-0{1,2}/...
ISLES2024_RAW_FOLDERS = ("raw_data", "rawdata")  # the archives' spelling first, then the challenge description's
ISLES2024_DERIVATIVES = "derivatives"
ISLES2024_ACUTE, ISLES2024_FOLLOW_UP = "ses-01", "ses-02"
ISLES2024_MAPS_FOLDER = "perfusion-maps"
ISLES2024_MAPS = ("cbf", "cbv", "mtt", "tmax")
ISLES2024_LABEL_SUFFIX = "lesion-msk"
# The challenge container's input folders (grand-challenge interface slugs) -> the modality each holds. The
# "preprocessed" images are the derivatives on the NCCT grid; the plain parameter maps, the raw CTA and the 4D CTP
# lie on their own grids and are not read (as in the BIDS layout).
ISLES2024_CONTAINER_SLUGS = {
    "non-contrast-ct": "NCCT",
    "preprocessed-ct-angiography": "CTA",
    "preprocessed-perfusion-ct": "CTP",
    "preprocessed-cbf-map": "CBF",
    "preprocessed-cbv-map": "CBV",
    "preprocessed-mtt-map": "MTT",
    "preprocessed-tmax-map": "Tmax",
}
ISLES2024_CONTAINER_UNUSED_SLUGS = ("ct-angiography", "perfusion-ct", "cbf-parameter-map", "cbv-parameter-map",
                                    "mtt-parameter-map", "tmax-parameter-map")
ISLES2024_CONTAINER_IMAGES = "images"
ISLES2024_CLINICAL_JSON = "acute-stroke-clinical-information.json"
ISLES2024_OUTPUT_FOLDER = ("images", "stroke-lesion-segmentation")
ISLES2024_OUTPUT_FILE = "output.mha"
# predict --format dicom-seg: the files beside each case's <case_id>.nii.gz
DICOM_SIDE_SUFFIXES = {"segmentation": "_seg.dcm", "summary": "_summary.json", "figure": "_summary.png",
                       "capture": "_summary.dcm"}
# the synthetic dataset's test subjects as the container receives them: <folder>/<sub>/images/<slug>/<sub>.mha
ISLES2024_CONTAINER_TEST_FOLDER = "TESTING_CONTAINER_INPUT"
# The synthetic dataset's test labels and per-case table.
GROUND_TRUTH_FOLDER = "TESTING_GROUND_TRUTH"
GROUND_TRUTH_CSV = "cases.csv"
GROUND_TRUTH_COLUMNS = ("case_id", "ot_id", "mtt_id", "patient_id")
SYNTHETIC_TABLE_CSV = "synth_cases.csv"


# ---------------------------------------------------------------------------------------------
# <case_id>.nii.gz
# ---------------------------------------------------------------------------------------------
def case_file_name(case_id: str, extension: str = ".nii.gz") -> str:
    """The plain name of a case's file: ``<case_id><extension>``.

    Args:
        case_id: the case.
        extension: the image suffix (``.nii.gz``, ``.nii``, ``.mha``).

    Returns:
        The file name (no folder).

    Raises:
        CaseError: ``case_id`` is not one plain file-name component (:func:`pipeline.paths.plain_component`).
    """
    return plain_component(case_id, case_id, "case_id") + extension


def parse_case_file_name(name: str | Path) -> str:
    """The case a plainly named file names: its name without the image suffix (``.nii.gz``, ``.nii``,
    ``.mha``, ``.nrrd``, any case), or the whole name when it has none.

    Args:
        name: a file name or path (only its last component is read).

    Returns:
        The stem, e.g. ``case_1`` for ``case_1.nii.gz``.
    """
    from pipeline.data.datalist import strip_image_suffix

    name = Path(name).name
    return strip_image_suffix(name) or name


# ---------------------------------------------------------------------------------------------
# SMIR.<team>.<smir_id>.nii
# ---------------------------------------------------------------------------------------------
def isles2018_submission_name(team: str, smir_id: str | None, case_id: str | None = None,
                              reference_path: str | None = None) -> str:
    """The ISLES 2018 submission name of a case: ``SMIR.<team>.<smir_id>.nii``.

    Args:
        team: the team name (letters, digits, ``_`` and ``-``: it sits between dots).
        smir_id: the SMIR id of the case's CT_MTT folder.
        case_id: the case, named in errors.
        reference_path: the case's reference file, named in errors.

    Returns:
        The file name (no folder).

    Raises:
        ValueError: a bad team name.
        CaseError: no SMIR id, or one that is not a plain file-name component or holds a ``.``.
    """
    if not ISLES2018_TEAM_NAME.match(team or ""):
        raise ValueError(f"team name {team!r} must be letters, digits, '_' or '-' (it sits between dots)")
    if not smir_id:
        raise CaseError(case_id, reference_path, "no SMIR id of a CT_MTT folder: cannot name an ISLES 2018 submission")
    smir = plain_component(smir_id, case_id, "smir_id")
    if "." in smir:
        raise CaseError(case_id, reference_path,
                        f"the smir_id {smir!r} holds a '.'; an ISLES 2018 name is SMIR.<team>.<id>.nii")
    return f"SMIR.{team}.{smir}{ISLES2018_SUBMISSION_SUFFIX}"


def parse_isles2018_submission_name(name: str | Path) -> str | None:
    """The SMIR id an ISLES 2018 submission name carries.

    Args:
        name: a file name or path; its stem must read ``SMIR.<anything>.<digits>`` (any case).

    Returns:
        The id (``"345563"`` for ``SMIR.team.345563.nii``), or ``None`` for a name of another kind.
    """
    match = _ISLES2018_SUBMISSION_RE.match(parse_case_file_name(name))
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------
# ISLES 2022: <sub>_<ses>_msk.nii.gz
# ---------------------------------------------------------------------------------------------
def isles2022_mask_name(case_id: str, reference_path: str | None = None, extension: str = ".nii.gz") -> str:
    """The ISLES 2022 mask name of a case: the DWI file's name with ``_dwi`` replaced by ``_msk`` (``_msk``
    appended when it has no ``_dwi``), so that predictions pair with the derivative masks by name.

    Args:
        case_id: the case (named from it when there is no reference file).
        reference_path: the case's DWI file.
        extension: the image suffix (``.nii.gz``, ``.nii``, ``.mha``).

    Returns:
        The file name (no folder).

    Raises:
        CaseError: the case id or the name built is not one plain file-name component.
    """
    from pipeline.data.datalist import strip_image_suffix

    name = Path(reference_path or plain_component(case_id, case_id, "case_id")).name
    stem = strip_image_suffix(name) or name
    stem = re.sub(r"_dwi$", "_msk", stem, flags=re.IGNORECASE) if re.search(r"_dwi$", stem, re.I) else f"{stem}_msk"
    return plain_component(stem, case_id, "DWI file name") + extension


def parse_isles2022_name(name: str | Path) -> tuple[str, str | None] | None:
    """The subject and session a BIDS-style ISLES 2022 file name carries.

    Args:
        name: a file name or path; its stem must read ``sub-<id>[_ses-<id>][_<entity>...]``.

    Returns:
        ``(subject, session)`` such as ``("sub-strokecase0001", "ses-0001")``, session ``None`` when the
        name has none; ``None`` for a name of another kind.
    """
    match = _ISLES2022_RE.match(parse_case_file_name(name))
    return (match.group(1), match.group(2)) if match else None


# ---------------------------------------------------------------------------------------------
# ISLES 2024: raw_data/<sub>/ses-01/<sub>_ses-01_ncct.nii.gz, derivatives/<sub>/...
# ---------------------------------------------------------------------------------------------
def isles2024_subject(number: int) -> str:
    """The ISLES 2024 subject folder of subject ``number`` (``sub-stroke0001``)."""
    return f"sub-stroke{int(number):04d}"


def isles2024_file(subject: str, suffix: str) -> Path:
    """Where an ISLES 2024 release keeps a subject's image, relative to the dataset root.

    Args:
        subject: the subject (``sub-stroke0001``), one plain path component.
        suffix: ``ncct`` (the raw NCCT), one of :data:`ISLES2024_MAPS` (the perfusion map co-registered to the
            NCCT), ``cta`` (the CTA co-registered to the NCCT) or :data:`ISLES2024_LABEL_SUFFIX` (the follow-up
            lesion mask).

    Returns:
        The relative path, e.g. ``derivatives/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_space-ncct_cbf.nii.gz``.

    Raises:
        CaseError: ``subject`` is not one plain path component.
        ValueError: an unknown suffix.
    """
    subject = plain_component(subject, subject, "subject")
    if suffix == "ncct":
        return Path(ISLES2024_RAW_FOLDERS[0], subject, ISLES2024_ACUTE, f"{subject}_{ISLES2024_ACUTE}_ncct.nii.gz")
    derived = Path(ISLES2024_DERIVATIVES, subject)
    if suffix in ISLES2024_MAPS:
        return derived / ISLES2024_ACUTE / ISLES2024_MAPS_FOLDER / f"{subject}_{ISLES2024_ACUTE}_space-ncct_{suffix}.nii.gz"
    if suffix == "cta":
        return derived / ISLES2024_ACUTE / f"{subject}_{ISLES2024_ACUTE}_space-ncct_cta.nii.gz"
    if suffix == ISLES2024_LABEL_SUFFIX:
        return derived / ISLES2024_FOLLOW_UP / f"{subject}_{ISLES2024_FOLLOW_UP}_{ISLES2024_LABEL_SUFFIX}.nii.gz"
    raise ValueError(f"unknown ISLES 2024 image {suffix!r}")


# ---------------------------------------------------------------------------------------------
# The ISLES 2018 layout: <SPLIT>/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>/
# ---------------------------------------------------------------------------------------------
def parse_isles2018_split_folder(name: str) -> str | None:
    """The split (``training``/``testing``) an ISLES 2018 split folder holds (``TRAINING``, ``TESTING``, any
    case), or ``None`` for another name."""
    return {folder.lower(): split for split, folder in ISLES2018_SPLIT_FOLDERS.items()}.get(name.lower())


def dicom_output_names(case_id: str) -> dict[str, str]:
    """The files ``predict --format dicom-seg`` writes for a case, each one plain name.

    Returns:
        ``{"mask": "<case_id>.nii.gz", "segmentation": "<case_id>_seg.dcm", "summary": "<case_id>_summary.json",
        "figure": "<case_id>_summary.png", "capture": "<case_id>_summary.dcm"}`` (the last: the figure as a DICOM
        Secondary Capture).

    Raises:
        CaseError: ``case_id`` is not one plain file-name component.
    """
    case_id = plain_component(case_id, case_id, "case_id")
    return {"mask": case_file_name(case_id), **{k: case_id + v for k, v in DICOM_SIDE_SUFFIXES.items()}}


def isles2024_container_input(modality: str, name: str) -> Path:
    """Where the challenge container finds one input image, relative to its input folder (``/input``).

    Args:
        modality: a modality of :data:`ISLES2024_CONTAINER_SLUGS` (``NCCT``, ``CBF``...).
        name: the file's name (grand-challenge gives each a UUID), ending in ``.mha``.

    Returns:
        E.g. ``images/preprocessed-tmax-map/<name>``.

    Raises:
        ValueError: an unknown modality.
        CaseError: ``name`` is not one plain path component.
    """
    slugs = {m: slug for slug, m in ISLES2024_CONTAINER_SLUGS.items()}
    if modality not in slugs:
        raise ValueError(f"no ISLES 2024 container input for {modality!r}; known: {', '.join(slugs)}")
    return Path(ISLES2024_CONTAINER_IMAGES, slugs[modality], plain_component(name, None, "input file name"))


def isles2024_output_name(case_id: str | None = None) -> str:
    """The challenge container's output, relative to the output folder (POSIX separators).

    Args:
        case_id: ``None`` for the container's own single-case output; a case id for a run of several cases, whose
            outputs go one folder per case.

    Returns:
        ``images/stroke-lesion-segmentation/output.mha``, or ``<case_id>/images/stroke-lesion-segmentation/output.mha``.

    Raises:
        CaseError: ``case_id`` is not one plain path component.
    """
    parts = [*ISLES2024_OUTPUT_FOLDER, ISLES2024_OUTPUT_FILE]
    if case_id is not None:
        parts.insert(0, plain_component(case_id, case_id, "case_id"))
    return "/".join(parts)


def parse_isles2024_output_name(path: str | Path) -> tuple[bool, str | None]:
    """Whether ``path`` is an ISLES 2024 container output, and the case its folders name.

    Args:
        path: a prediction file.

    Returns:
        ``(True, case_id)`` for ``.../<case_id>/images/stroke-lesion-segmentation/output.mha`` (``case_id`` is the
        folder above ``images``, ``None`` when there is none), else ``(False, None)``.
    """
    parts = Path(path).parts
    tail = (*ISLES2024_OUTPUT_FOLDER, ISLES2024_OUTPUT_FILE)
    if len(parts) < len(tail) or tuple(p.lower() for p in parts[-len(tail):]) != tail:
        return False, None
    return True, (parts[-len(tail) - 1] if len(parts) > len(tail) else None)


def isles2018_case_folder(number: int) -> str:
    """The ISLES 2018 case folder of the ``number``-th case of a split (numbered from 1): ``case_<number>``."""
    return f"case_{number}"


def parse_isles2018_case_folder(name: str) -> int | None:
    """The number of an ISLES 2018 case folder (``case_<N>``, any case), or ``None`` for another name."""
    match = _ISLES2018_CASE_RE.match(name)
    return int(match.group(1)) if match else None


def isles2018_folder_name(modality: str, smir_id: int | str) -> str:
    """The ISLES 2018 folder of one modality of a case: ``SMIR.Brain.XX.O.<MOD>.<id>``.

    Args:
        modality: the raw modality (``CT``, ``CT_CBF``, ``CT_Tmax``, ``OT``...).
        smir_id: the folder's SMIR id.

    Returns:
        The folder name.
    """
    return f"{ISLES2018_FOLDER_PREFIX}.{modality}.{smir_id}"


def isles2018_image_name(modality: str, smir_id: int | str) -> str:
    """The image file inside an ISLES 2018 modality folder: ``<folder name>.nii``."""
    return isles2018_folder_name(modality, smir_id) + ISLES2018_IMAGE_SUFFIX


def parse_isles2018_folder_name(name: str) -> tuple[str, str] | None:
    """Split a SMIR folder name into its raw modality and id.

    Args:
        name: a folder name such as ``SMIR.Brain.XX.O.CT_Tmax.345563``.

    Returns:
        ``(modality, id)`` such as ``("CT_Tmax", "345563")``, or ``None`` when the name does not have
        at least three dot-separated parts ending in a numeric id.
    """
    parts = name.split(".")
    if len(parts) < 3 or not parts[-1].isdigit() or not parts[-2]:
        return None
    return parts[-2], parts[-1]


def isles2018_folder_pattern(modality: str, smir_id: str | None = None) -> str:
    """The glob pattern of a case's ``SMIR.<...>.<MOD>.<id>`` folders of ``modality`` (of that id when given)."""
    return f"SMIR.*.{modality}.{smir_id}" if smir_id else f"SMIR.*.{modality}.*"


# ---------------------------------------------------------------------------------------------
# The synthetic test labels: TESTING_GROUND_TRUTH/cases.csv
# ---------------------------------------------------------------------------------------------
def ground_truth_row(case_id: str, ot_id: int | str, mtt_id: int | str, patient_id: str) -> dict[str, Any]:
    """One row of ``TESTING_GROUND_TRUTH/cases.csv``, keyed by :data:`GROUND_TRUTH_COLUMNS` in order.

    Args:
        case_id: the test case (``case_N``, its folder under ``TESTING_GROUND_TRUTH``).
        ot_id: the SMIR id of its label (OT) folder.
        mtt_id: the SMIR id of its CT_MTT folder (the id its ISLES 2018 submission is named by).
        patient_id: the patient the slab was cut from.

    Returns:
        The row as a dict.
    """
    return {"case_id": case_id, "ot_id": ot_id, "mtt_id": mtt_id, "patient_id": patient_id}


def read_ground_truth_rows(table: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``cases.csv`` of the synthetic test labels, as ``csv.DictReader`` reads them.

    Args:
        table: the ``TESTING_GROUND_TRUTH/cases.csv`` file.

    Returns:
        One dict per row (see :func:`parse_ground_truth_row`).

    Raises:
        OSError: the file cannot be read.
        LayoutError: the table has no ``case_id`` column.
    """
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "case_id" not in rows[0]:
        raise LayoutError(f"{table}: expected a case_id column (with ot_id and mtt_id), found {', '.join(rows[0])}")
    return rows


def parse_ground_truth_row(row: dict[str, Any]) -> tuple[str, str, str]:
    """The ``(case_id, ot_id, mtt_id)`` of a ``cases.csv`` row, stripped; an id absent or empty is ``""``."""
    case_id = row["case_id"].strip()
    ot_id = (row.get("ot_id") or "").strip()
    mtt_id = (row.get("mtt_id") or "").strip()
    return case_id, ot_id, mtt_id
