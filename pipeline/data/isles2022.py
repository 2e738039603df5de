"""ISLES 2022 layout reader (BIDS): ``ROOT/rawdata/sub-*/ses-*/...`` and ``ROOT/derivatives/...``.

Images are ``sub-<id>_ses-<id>_{dwi,adc,flair}.nii.gz`` anywhere below the session folder (some copies
have ``anat/`` and ``dwi/`` subfolders; the suffix is matched case-insensitively). Labels are
``sub-<id>_ses-<id>_msk.nii.gz`` below ``derivatives/<sub>/<ses>/`` (or below a derivatives pipeline
folder, ``derivatives/<pipeline>/<sub>/<ses>/``). A case with a label is a training case.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.datalist import natural_key
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError

RAWDATA = "rawdata"
DERIVATIVES = "derivatives"
LABEL_SUFFIX = "msk"
# BIDS suffix -> canonical modality name.
KNOWN_SUFFIXES = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR"}
EXPECTS = "rawdata/sub-*/[ses-*/]...*_{dwi,adc,flair}.nii.gz (labels under derivatives/)"
_EXTENSIONS = (".nii.gz", ".nii")


def bids_suffix(name: str) -> str | None:
    """Return the lower-cased BIDS suffix of an image file name (``..._FLAIR.nii.gz`` -> ``flair``)."""
    lower = name.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            stem = lower[: -len(ext)]
            return stem.rsplit("_", 1)[1] if "_" in stem else None
    return None


def _subjects(root: Path) -> list[Path]:
    raw = root / RAWDATA
    if not raw.is_dir():
        return []
    subjects = [p for p in raw.iterdir() if p.is_dir() and p.name.startswith("sub-")]
    return sorted(subjects, key=lambda p: natural_key(p.name))


def looks_like(root: Path) -> bool:
    """Return True when ``root/rawdata`` holds ``sub-*`` folders."""
    root = Path(root)
    return root.is_dir() and bool(_subjects(root))


def _files_with_suffixes(folder: Path, suffixes: dict[str, str], case_id: str) -> dict[str, Path]:
    """Find, recursively, the one image per wanted suffix; ``suffixes`` maps BIDS suffix -> name."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*"), key=lambda p: natural_key(str(p))):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = bids_suffix(path.name)
        if suffix not in suffixes:
            continue
        name = suffixes[suffix]
        if name in found:
            raise CaseError(case_id, path, f"two {suffix} files for one session: {found[name]} and {path}; keep one")
        found[name] = path.resolve()
    return found


def _label_folders(root: Path, subject: str, session: str | None) -> list[Path]:
    derivatives = root / DERIVATIVES
    if not derivatives.is_dir():
        return []
    tail = Path(subject) / session if session else Path(subject)
    direct = derivatives / tail
    if direct.is_dir():
        return [direct]
    return [p / tail for p in sorted(derivatives.iterdir()) if p.is_dir() and (p / tail).is_dir()]


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every session of an ISLES 2022 BIDS dataset.

    Args:
        root: the folder holding ``rawdata/`` (and ``derivatives/`` for the labels).
        profile: spells the modality names; modalities it lists are also looked for (a ``t1w``
            suffix is read when the profile knows ``T1w``).
        problems: when a list is given, a malformed session is left out and described there as
            ``{"case_id", "split", "file", "reason"}`` instead of raising.

    Returns:
        One record per session, in natural order. ``case_id`` is the subject
        (``sub-strokecase0001``) when it has one session, else ``<subject>_<session>``;
        ``patient_id`` is the subject; the split is ``training`` when a mask exists, else ``testing``.

    Raises:
        LayoutError: ``root/rawdata`` has no ``sub-*`` folders.
        CaseError: two files of one modality, or two masks, in one session, or a session folder that cannot
            be listed; only when ``problems`` is ``None``.
    """
    root = Path(root)
    subjects = _subjects(root)
    if not subjects:
        raise LayoutError(f"{root} is not an ISLES 2022 BIDS dataset: expected {EXPECTS}")
    suffixes = {s: profile.canonical(name) for s, name in KNOWN_SUFFIXES.items()}
    for name in list(profile.modalities) + list(profile.channels):
        suffixes.setdefault(name.lower(), name)
    suffixes.pop(LABEL_SUFFIX, None)
    records: list[CaseRecord] = []
    for subject_dir in subjects:
        subject = subject_dir.name
        try:
            sessions = sorted(
                (p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith("ses-")),
                key=lambda p: natural_key(p.name),
            )
        except OSError as err:
            error = CaseError(subject, subject_dir, f"cannot read the subject's folder ({err.strerror or err})")
            if problems is None:
                raise error from err
            problems.append({"case_id": subject, "split": "training", "file": error.path, "reason": error.message})
            continue
        # BIDS allows subjects without session folders: the subject folder is then the session.
        session_dirs: list[tuple[str | None, Path]] = [(s.name, s) for s in sessions] or [(None, subject_dir)]
        for session, session_dir in session_dirs:
            case_id = subject if len(session_dirs) == 1 else f"{subject}_{session}"
            try:
                records.append(_read_session(root, subject, session, session_dir, case_id, suffixes))
            except CaseError as err:
                if problems is None:
                    raise
                # without its mask the split is unknown: a session with a derivatives folder is a training case
                try:
                    split = "training" if _label_folders(root, subject, session) else "testing"
                except OSError:
                    split = "training"
                problems.append({"case_id": case_id, "split": split, "file": err.path, "reason": err.message})
    return records


def _read_session(
    root: Path, subject: str, session: str | None, session_dir: Path, case_id: str, suffixes: dict[str, str]
) -> CaseRecord:
    """Read one session's images and mask (see :func:`discover`).

    Raises:
        CaseError: two files of one modality or two masks, or a folder that cannot be listed.
    """
    try:
        images = _files_with_suffixes(session_dir, suffixes, case_id)
        label = None
        for folder in _label_folders(root, subject, session):
            masks = _files_with_suffixes(folder, {LABEL_SUFFIX: LABEL_SUFFIX}, case_id)
            if LABEL_SUFFIX in masks:
                if label is not None:
                    raise CaseError(
                        case_id, masks[LABEL_SUFFIX], f"two masks for one session: {label} and {masks[LABEL_SUFFIX]}"
                    )
                label = str(masks[LABEL_SUFFIX])
    except OSError as err:  # an unreadable folder is this session's problem, not the dataset's
        raise CaseError(case_id, getattr(err, "filename", None) or session_dir,
                        f"cannot read the session's folder ({err.strerror or err})") from err
    extra = {"subject": subject}
    if session is not None:
        extra["session"] = session
    return CaseRecord(
        case_id=case_id,
        split="training" if label is not None else "testing",
        modalities={name: str(path) for name, path in images.items()},
        label=label,
        folder=str(session_dir.resolve()),
        patient_id=subject,
        extra=extra,
    )
