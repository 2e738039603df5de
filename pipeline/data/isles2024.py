"""ISLES 2024 layout reader (BIDS, acute CT to the final infarct).

One subject per case, as the released archives hold it::

    raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_{ncct,cta,ctp}.nii.gz
    raw_data/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_{cbf,cbv,mtt,tmax}.nii.gz   (CTP grid)
    derivatives/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz
    derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_{cta,ctp}.nii.gz
    derivatives/sub-stroke0001/ses-02/sub-stroke0001_ses-02[_space-ncct]_lesion-msk.nii.gz

The raw folder is ``raw_data/`` in the archives and ``rawdata/`` in the challenge's description; both are read.
The channels are the NCCT (the reference grid) and the derivatives co-registered to it (``space-ncct``): the raw
perfusion maps and CTA lie on their own grids and are not used. The label is the follow-up (``ses-02``) lesion mask,
whose name carries ``space-ncct`` in the public release and not in the challenge's; a subject with one is a
training case.

The challenge's container gets one case at a time, as grand-challenge hands it over: ``images/<slug>/<uuid>.mha``
under its input folder (``/input``), one folder per interface (:data:`pipeline.formats.ISLES2024_CONTAINER_SLUGS`:
``non-contrast-ct``, ``preprocessed-{cbf,cbv,mtt,tmax}-map``, ``preprocessed-CT-angiography``...), beside
``acute-stroke-clinical-information.json``. Such a folder is read as one test case of this layout; as in the BIDS
release, only the NCCT and the images on its grid (the "preprocessed" ones) are used.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.datalist import IMAGE_SUFFIXES, natural_key, strip_image_suffix
from pipeline.data.isles2022 import bids_suffix
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError
from pipeline.formats import (
    ISLES2024_CLINICAL_JSON, ISLES2024_CONTAINER_IMAGES, ISLES2024_CONTAINER_SLUGS, ISLES2024_CONTAINER_UNUSED_SLUGS,
    ISLES2024_ACUTE as ACUTE, ISLES2024_DERIVATIVES as DERIVATIVES, ISLES2024_FOLLOW_UP as FOLLOW_UP,
    ISLES2024_LABEL_SUFFIX as LABEL_SUFFIX, ISLES2024_MAPS_FOLDER as MAPS_FOLDER, ISLES2024_RAW_FOLDERS as RAW_FOLDERS,
)

SPACE_NCCT = "_space-ncct_"
# BIDS suffix -> canonical modality name: the raw NCCT, and the derivatives on its grid
RAW_SUFFIXES = {"ncct": "NCCT"}
REGISTERED_SUFFIXES = {"cbf": "CBF", "cbv": "CBV", "mtt": "MTT", "tmax": "Tmax", "cta": "CTA", "ctp": "CTP"}
EXPECTS = ("raw_data/sub-*/ses-01/sub-*_ses-01_ncct.nii.gz, derivatives/sub-*/ses-01/perfusion-maps/"
           "*_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz (labels: derivatives/sub-*/ses-02/*_lesion-msk.nii.gz), or the "
           "challenge container's input images/{non-contrast-ct,preprocessed-tmax-map,...}/*.mha")


def is_container_input(root: Path) -> bool:
    """Return True when ``root`` is the challenge container's input folder: an ``images/`` folder holding at least
    one of the challenge's interface folders (``non-contrast-ct``, ``preprocessed-tmax-map``...)."""
    images = Path(root) / ISLES2024_CONTAINER_IMAGES
    if not images.is_dir():
        return False
    known = set(ISLES2024_CONTAINER_SLUGS) | set(ISLES2024_CONTAINER_UNUSED_SLUGS)
    return any(p.is_dir() and p.name.lower() in known for p in images.iterdir())


def _read_container(root: Path, profile: DatasetProfile) -> CaseRecord:
    """The one case of a container input folder (see the module's docstring).

    Its case id is the NCCT file's name without its suffix (grand-challenge names inputs by UUID), or the input
    folder's name when there is no NCCT.

    Raises:
        CaseError: an interface folder holds several images, or cannot be listed.
    """
    images: dict[str, Path] = {}
    images_folder = root / ISLES2024_CONTAINER_IMAGES
    try:
        for folder in sorted(images_folder.iterdir(), key=lambda p: natural_key(p.name)):
            modality = ISLES2024_CONTAINER_SLUGS.get(folder.name.lower())
            if modality is None or not folder.is_dir():
                continue
            files = [p for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
                     if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)]
            if len(files) > 1:
                raise CaseError(root.name, folder, f"{len(files)} images in one input folder "
                                f"({', '.join(p.name for p in files)}); the container gets one per interface")
            if files:
                images[profile.canonical(modality)] = files[0].resolve()
    except OSError as err:
        raise CaseError(root.name, getattr(err, "filename", None) or images_folder,
                        f"cannot read the container's input folders ({err.strerror or err})") from err
    ncct = images.get(profile.canonical("NCCT"))
    case_id = strip_image_suffix(ncct.name) if ncct is not None else root.resolve().name
    clinical = root / ISLES2024_CLINICAL_JSON
    extra = {"interface": "container"}
    if clinical.is_file():
        extra["clinical_information"] = str(clinical.resolve())
    return CaseRecord(
        case_id=case_id or root.resolve().name,
        split="testing",
        modalities={name: str(path) for name, path in images.items()},
        label=None,
        folder=str(images_folder.resolve()),
        patient_id=case_id,
        extra=extra,
    )


def _raw_folder(root: Path) -> Path | None:
    for name in RAW_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return None


def _subjects(root: Path) -> list[Path]:
    raw = _raw_folder(root)
    if raw is None:
        return []
    subjects = [p for p in raw.iterdir() if p.is_dir() and p.name.startswith("sub-")]
    return sorted(subjects, key=lambda p: natural_key(p.name))


def looks_like(root: Path) -> bool:
    """Return True when ``root`` holds a raw folder of ``sub-*`` subjects whose first acute session has an NCCT,
    or perfusion maps in ``derivatives/sub-*/ses-01/perfusion-maps/`` (what sets ISLES 2024 apart from the ISLES
    2022 MRI layout), or when it is the challenge container's input folder (:func:`is_container_input`)."""
    root = Path(root)
    if not root.is_dir():
        return False
    if is_container_input(root):
        return True
    subjects = _subjects(root)
    if not subjects:
        return False
    first = subjects[0].name
    acute = subjects[0] / ACUTE
    has_ncct = acute.is_dir() and any(bids_suffix(p.name) == "ncct" for p in acute.iterdir())
    return has_ncct or (root / DERIVATIVES / first / ACUTE / MAPS_FOLDER).is_dir()


def _images(folder: Path, suffixes: dict[str, str], case_id: str, registered: bool) -> dict[str, Path]:
    """The images of ``folder`` (not its subfolders) whose BIDS suffix is wanted; with ``registered``, only those
    with the ``space-ncct`` entity.

    Raises:
        CaseError: two files of one modality.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = suffixes.get(bids_suffix(path.name) or "")
        if name is None or (registered and SPACE_NCCT not in path.name.lower()):
            continue
        if name in found:
            raise CaseError(case_id, path, f"two {name} files in one session: {found[name]} and {path}; keep one")
        found[name] = path.resolve()
    return found


def _read_subject(root: Path, subject_dir: Path, profile: DatasetProfile) -> CaseRecord:
    """One subject's record (see :func:`discover`).

    Raises:
        CaseError: two files of one modality or two lesion masks, or a folder that cannot be listed.
    """
    subject = subject_dir.name
    derived = root / DERIVATIVES / subject
    try:
        images = _images(subject_dir / ACUTE, {s: profile.canonical(n) for s, n in RAW_SUFFIXES.items()}, subject,
                         registered=False)
        registered = {s: profile.canonical(n) for s, n in REGISTERED_SUFFIXES.items()}
        for folder in (derived / ACUTE, derived / ACUTE / MAPS_FOLDER):
            for name, path in _images(folder, registered, subject, registered=True).items():
                if name in images:
                    raise CaseError(subject, path, f"two {name} files: {images[name]} and {path}; keep one")
                images[name] = path
        masks = _images(derived / FOLLOW_UP, {LABEL_SUFFIX: LABEL_SUFFIX}, subject, registered=False)
    except OSError as err:  # an unreadable folder is this subject's problem, not the dataset's
        raise CaseError(subject, getattr(err, "filename", None) or subject_dir,
                        f"cannot read the subject's folders ({err.strerror or err})") from err
    label = masks.get(LABEL_SUFFIX)
    return CaseRecord(
        case_id=subject,
        split="training" if label is not None else "testing",
        modalities={name: str(path) for name, path in images.items()},
        label=str(label) if label is not None else None,
        folder=str(subject_dir.resolve()),
        patient_id=subject,
        extra={"subject": subject, "session": ACUTE},
    )


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every subject of an ISLES 2024 dataset.

    Args:
        root: the folder holding ``raw_data/`` (or ``rawdata/``) and ``derivatives/``, or the challenge container's
            input folder (one test case, see the module's docstring).
        profile: spells the modality names (NCCT, CTA, CBF, CBV, MTT, Tmax, CTP).
        problems: when a list is given, a malformed subject is left out and described there as
            ``{"case_id", "split", "file", "reason"}`` instead of raising.

    Returns:
        One record per subject, in natural order: ``case_id`` and ``patient_id`` are the subject
        (``sub-stroke0001``); the NCCT from the raw acute session, every other image from the derivatives on the
        NCCT grid; the split is ``training`` when a follow-up lesion mask exists, else ``testing``.

    Raises:
        LayoutError: the raw folder has no ``sub-*`` folders.
        CaseError: two files of one modality or two lesion masks for a subject, or an unreadable folder; only when
            ``problems`` is ``None``.
    """
    root = Path(root)
    if is_container_input(root) and not _subjects(root):
        try:
            return [_read_container(root, profile)]
        except CaseError as err:
            if problems is None:
                raise
            problems.append({"case_id": root.name, "split": "testing", "file": err.path, "reason": err.message})
            return []
    subjects = _subjects(root)
    if not subjects:
        raise LayoutError(f"{root} is not an ISLES 2024 dataset: expected {EXPECTS}")
    records: list[CaseRecord] = []
    for subject_dir in subjects:
        try:
            records.append(_read_subject(root, subject_dir, profile))
        except CaseError as err:
            if problems is None:
                raise
            split = "training" if (root / DERIVATIVES / subject_dir.name / FOLLOW_UP).is_dir() else "testing"
            problems.append({"case_id": subject_dir.name, "split": split, "file": err.path, "reason": err.message})
    return records
