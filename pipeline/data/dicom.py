"""DICOM layout reader: one folder per patient holding the patient's DICOM series, told apart by SeriesDescription.

::

    ROOT/<patient>/.../<file>      DICOM files at any depth, with a .dcm suffix or none; one folder per series,
                                   or the series mixed in one folder

What the hospital's archive or perfusion software (RAPID and the like) exports: the non-contrast CT and one series
per perfusion map. Each modality of the profile with ``dicom: {series_description: [...], exclude: [...]}`` patterns
(``configs/datasets/dicom_ctp.yaml``) is the one image series whose SeriesDescription matches one of its patterns and
none of its exclusions (a thresholded ``Tmax>6s`` mask is not the Tmax map). A channel is recorded as the path of one
file of its series, which the project's readers read as the whole series (:mod:`pipeline.io.geometry`), so series
mixed in one folder stay apart. The cases have no labels: they are ``testing`` cases, for ``predict``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.datalist import IMAGE_SUFFIXES, natural_key
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError, MissingExtraError
from pipeline.io.geometry import is_dicom_file
from pipeline.paths import plain_component

if TYPE_CHECKING:
    from pipeline.dicom.series import DicomSeries

EXPECTS = ("one folder per patient holding DICOM series (files at any depth, .dcm or no suffix), "
           "told apart by SeriesDescription")
DICOM_EXTRA = 'pip install -e ".[dicom]"'
# Files that are certainly not DICOM, not opened when looking for the layout.
_NOT_DICOM_SUFFIXES = tuple(IMAGE_SUFFIXES) + (".json", ".csv", ".tsv", ".txt", ".md", ".png", ".jpg", ".pdf")


def _patient_folders(root: Path) -> list[Path]:
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    folders = [p for p in children if p.is_dir() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: natural_key(p.name))


def _holds_dicom(folder: Path) -> bool:
    for parent, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.lower().endswith(_NOT_DICOM_SUFFIXES):
                continue
            if is_dicom_file(Path(parent, name)):
                return True
    return False


def looks_like(root: Path) -> bool:
    """Return True when the first patient folder of ``root`` (in natural order) holds a DICOM Part 10 file at some
    depth. The other layouts hold NIfTI, MHA or JSON files only, so they never look like this one."""
    root = Path(root)
    if not root.is_dir():
        return False
    folders = _patient_folders(root)
    return bool(folders) and _holds_dicom(folders[0])


def _matches(description: str, patterns: list[str]) -> str | None:
    """The first pattern that ``description`` matches (``re.search``), else ``None``."""
    return next((p for p in patterns if re.search(p, description)), None)


def _listing(series: list[DicomSeries], excluded: dict[str, str]) -> str:
    lines = []
    for s in series:
        rule_out = excluded.get(s.series_instance_uid)
        lines.append(s.describe() + (f" [not taken: matches the exclusion {rule_out!r}]" if rule_out else ""))
    return "; ".join(lines) or "none"


def _choose(case_id: str, folder: Path, modality: str, series: list[DicomSeries], profile: DatasetProfile,
            required: bool) -> DicomSeries | None:
    """The one series of ``modality`` (see the module's docstring).

    Raises:
        CaseError: only when ``required``: no series matches, two or more do, or the one that does is no 3D volume.
    """
    include, exclude = profile.dicom_series_patterns(modality)
    excluded: dict[str, str] = {}
    matching = []
    for s in series:
        if _matches(s.description, include) is None:
            continue
        rule_out = _matches(s.description, exclude)
        if rule_out is not None:
            excluded[s.series_instance_uid] = rule_out
        else:
            matching.append(s)
    if len(matching) == 1 and matching[0].problem is None:
        return matching[0]
    if not required:
        return None
    patterns = ", ".join(repr(p) for p in include)
    if exclude:
        patterns += f" and none of {', '.join(repr(p) for p in exclude)}"
    where = f"the profile's modalities.{modality}.dicom patterns ({profile.path or profile.name})"
    if not matching:
        raise CaseError(
            case_id, folder,
            f"no DICOM series of patient {case_id!r} is the {modality} channel: none has a SeriesDescription matching "
            f"{patterns}. The patient's image series: {_listing(series, excluded)}. Add the series, or adjust {where}",
        )
    if len(matching) > 1:
        raise CaseError(
            case_id, matching[0].folder,
            f"{len(matching)} DICOM series of patient {case_id!r} match the {modality} channel ({patterns}): "
            f"{_listing(matching, {})}. Keep one in the patient's folder, or narrow {where}",
        )
    chosen = matching[0]
    raise CaseError(case_id, chosen.folder,
                    f"the {modality} series of patient {case_id!r}, {chosen.describe()}, cannot be read as one 3D "
                    f"volume: {chosen.problem}")


def _check_same_patient(case_id: str, chosen: dict[str, DicomSeries]) -> str | None:
    """The PatientID the chosen series share (``None`` when none has one).

    Raises:
        CaseError: two series name different patients.
    """
    ids = {s.patient_id for s in chosen.values() if s.patient_id is not None}
    if len(ids) > 1:
        listing = "; ".join(f"{m}: {s.describe()} of PatientID {s.patient_id!r}" for m, s in chosen.items())
        raise CaseError(case_id, next(iter(chosen.values())).folder,
                        f"the series of patient folder {case_id!r} belong to {len(ids)} patients ({listing}); keep one "
                        "patient's series per folder")
    return ids.pop() if ids else None


def _check_frames_of_reference(case_id: str, chosen: dict[str, DicomSeries], reference: str,
                               resampled: list[str]) -> None:
    """Maps resampled onto the reference grid must share its patient coordinates (FrameOfReferenceUID).

    Raises:
        CaseError: a resampled series and the reference name different frames of reference.
    """
    ref = chosen[reference]
    for name, s in chosen.items():
        known = None not in (s.frame_of_reference_uid, ref.frame_of_reference_uid)
        if name in resampled and known and s.frame_of_reference_uid != ref.frame_of_reference_uid:
            raise CaseError(
                case_id, s.folder,
                f"the {name} series {s.describe()} lies in another frame of reference ({s.frame_of_reference_uid}) "
                f"than the {reference} series {ref.describe()} ({ref.frame_of_reference_uid}): its positions cannot "
                f"be placed on the {reference} grid. Register it to the {reference} first",
            )


def _read_patient(folder: Path, profile: DatasetProfile) -> CaseRecord:
    """One patient's record (see :func:`discover`).

    Raises:
        CaseError: see :func:`discover`.
    """
    from pipeline.dicom.series import read_folder_series

    case_id = folder.name
    try:
        plain_component(case_id, case_id, "case_id")
    except CaseError as err:
        raise CaseError(case_id, folder, err.message) from None
    series = read_folder_series(folder, case_id)
    reference = profile.reference_modality if profile.reference_modality in profile.modalities else profile.channels[0]
    wanted = list(dict.fromkeys([*profile.channels, reference]))
    wanted += [m for m in profile.modalities if m not in wanted and profile.dicom_series_patterns(m)[0]]
    chosen: dict[str, DicomSeries] = {}
    for modality in wanted:
        required = modality in profile.channels or modality == reference
        found = _choose(case_id, folder, modality, series, profile, required)
        if found is not None:
            chosen[modality] = found
    for a, b in ((a, b) for i, a in enumerate(chosen) for b in list(chosen)[i + 1:]):
        if chosen[a] is chosen[b]:
            raise CaseError(case_id, chosen[a].folder,
                            f"the series {chosen[a].describe()} of patient {case_id!r} matches both {a} and {b}; "
                            "narrow the profile's patterns")
    patient_id = _check_same_patient(case_id, chosen)
    _check_frames_of_reference(case_id, chosen, reference, profile.resample_to_reference)
    return CaseRecord(
        case_id=case_id,
        split="testing",
        modalities={name: str(s.files[0].resolve()) for name, s in chosen.items()},
        folder=str(folder.resolve()),
        patient_id=patient_id or case_id,
        extra={"dicom": {
            "reference": reference,
            "series": {name: {
                "series_instance_uid": s.series_instance_uid,
                "series_description": s.description,
                "folder": Path(os.path.relpath(s.folder, folder)).as_posix(),
                "instances": len(s.files),
                "study_instance_uid": s.study_instance_uid,
                "frame_of_reference_uid": s.frame_of_reference_uid,
            } for name, s in chosen.items()},
        }},
    )


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every patient folder of a DICOM dataset.

    Args:
        root: the folder holding one folder per patient.
        profile: the modalities, their ``dicom`` SeriesDescription patterns, the channels (each must be found) and
            the reference modality (``configs/datasets/dicom_ctp.yaml``).
        problems: when a list is given, a patient that cannot be read is left out and described there as
            ``{"case_id", "split", "file", "reason"}`` instead of raising.

    Returns:
        One ``testing`` record per patient folder, in natural order: ``case_id`` is the folder's name, ``patient_id``
        the series' PatientID (else the folder's name); ``modalities`` maps each channel and the reference, and each
        other modality of the profile with patterns whose series is found unambiguously, to one file of its series
        (the first along the slice normal); ``extra["dicom"]`` holds ``reference`` (the reference modality) and, per
        modality, ``series_instance_uid``, ``series_description``, ``folder`` (relative to the patient's folder),
        ``instances``, ``study_instance_uid`` and ``frame_of_reference_uid``.

    Raises:
        LayoutError: ``root`` has no patient folder, or a channel has no ``dicom`` patterns in the profile.
        MissingExtraError: pydicom is not installed (the project's ``dicom`` extra).
        CaseError: only when ``problems`` is ``None``: a patient folder's name is not a plain file name, a folder or
            DICOM header cannot be read, no series or several match a channel or the reference (the message lists the
            patient's series: description, SeriesInstanceUID, folder), the chosen series is no 3D volume (colour or
            multi-frame images, mixed orientations, two slices at one position), one series matches two modalities,
            the series name different PatientIDs, or a resampled map lies in another frame of reference than the
            reference.
    """
    root = Path(root)
    folders = _patient_folders(root)
    if not folders:
        raise LayoutError(f"{root} is not a DICOM dataset: expected {EXPECTS}")
    unpatterned = [m for m in profile.channels if not profile.dicom_series_patterns(m)[0]]
    if unpatterned:
        raise LayoutError(
            f"profile {profile.name!r} gives no DICOM SeriesDescription patterns for the channel(s) "
            f"{', '.join(unpatterned)}: add modalities.<name>.dicom.series_description to it "
            "(see configs/datasets/dicom_ctp.yaml), or read the folder with --profile dicom_ctp"
        )
    try:
        import pydicom  # noqa: F401 - only to say which extra is missing before any patient is read
    except ImportError:
        raise MissingExtraError(f"reading DICOM series needs pydicom, which is not installed: install the project's "
                                f"dicom extra with `{DICOM_EXTRA}` (in the project folder)") from None
    records: list[CaseRecord] = []
    for folder in folders:
        try:
            records.append(_read_patient(folder, profile))
        except CaseError as err:
            if problems is None:
                raise
            problems.append({"case_id": folder.name, "split": "testing", "file": err.path, "reason": err.message})
    return records
