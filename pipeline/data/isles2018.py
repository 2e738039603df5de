"""ISLES 2018 layout reader: ``ROOT/{TRAINING,TESTING}/case_N/SMIR.Brain.XX.O.<MOD>.<id>/<image>``.

Each case folder holds one folder per modality, named ``SMIR.Brain.XX.O.<MOD>.<id>``, with one image
file inside. MOD is ``CT``, ``CT_CBF``, ``CT_CBV``, ``CT_MTT``, ``CT_Tmax``, ``CT_4DPWI`` or ``OT`` (the
label); some releases spell the maps ``MR_<map>``. The OT folder may hold a JSON whose description
carries the patient and slab (``Train_40_A``); slabs of one patient must share a fold.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from pipeline.data.datalist import natural_key, strip_image_suffix
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError
from pipeline.formats import parse_isles2018_folder_name as parse_smir_folder

SPLIT_FOLDERS = {"training": "training", "testing": "testing"}
LABEL_MODALITY = "OT"
EXPECTS = "TRAINING/ and/or TESTING/ folders of case folders holding SMIR.<...>.<MOD>.<id>/ folders"
_MAP_PREFIXES = ("CT_", "MR_")
_CASE_RE = re.compile(r"^case_\d+$", re.IGNORECASE)
# Patient and optional slab in an OT description: "Train_40_A" -> ("Train_40", "A").
_PATIENT_RE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]+_\d+)(?:_([A-Za-z]))?(?![A-Za-z0-9])")


def canonical_modality(raw: str, profile: DatasetProfile | None = None) -> str:
    """Return the canonical name of a raw ISLES 2018 modality.

    The ``CT_``/``MR_`` prefix of the maps is dropped (``CT_Tmax`` and ``MR_Tmax`` -> ``Tmax``,
    ``CT_4DPWI`` -> ``4DPWI``); ``CT`` and ``OT`` stay as they are. With a profile, the name is
    spelled as the profile spells it (``TMAX`` -> ``Tmax``).
    """
    name = raw
    for prefix in _MAP_PREFIXES:
        if raw.upper().startswith(prefix) and len(raw) > len(prefix):
            name = raw[len(prefix):]
            break
    if name.upper() == LABEL_MODALITY:
        return LABEL_MODALITY
    return profile.canonical(name) if profile is not None else name


def _split_folders(root: Path) -> list[tuple[str, Path]]:
    found = []
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        split = SPLIT_FOLDERS.get(child.name.lower())
        if split and child.is_dir():
            found.append((split, child))
    return found


def _is_smir_folder(path: Path) -> bool:
    return path.is_dir() and path.name.upper().startswith("SMIR.") and parse_smir_folder(path.name) is not None


def _children(folder: Path) -> list[Path]:
    """The entries of ``folder``; an unreadable folder (permissions, a vanished mount) has none."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def looks_like(root: Path) -> bool:
    """Return True when ``root`` has a TRAINING or TESTING folder with a case holding SMIR folders."""
    for _, split_dir in _split_folders(Path(root)):
        for case_dir in _children(split_dir):
            if case_dir.is_dir() and any(_is_smir_folder(p) for p in _children(case_dir)):
                return True
    return False


def _image_in(folder: Path, case_id: str) -> Path:
    images = [
        p for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and strip_image_suffix(p.name) is not None
    ]
    if not images:
        others = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        raise CaseError(
            case_id, folder,
            "the modality folder holds no image file (.nii, .nii.gz, .mha, .nrrd)"
            + (f"; found only {', '.join(others)}" if others else ": it is empty")
            + "; put the case's one image in it, or leave the case out with --skip-incomplete",
        )
    if len(images) != 1:
        listing = ", ".join(p.name for p in images) or "none"
        raise CaseError(
            case_id, folder,
            f"expected exactly one image file (.nii, .nii.gz, .mha, .nrrd) in the folder, "
            f"found {len(images)}: {listing}",
        )
    return images[0].resolve()


def _find_description(value: Any) -> str | None:
    """Return the first string in ``value`` (depth first) that names a patient, e.g. ``Train_40_A``."""
    if isinstance(value, str):
        return value if _PATIENT_RE.search(value) else None
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        found = _find_description(item)
        if found is not None:
            return found
    return None


def read_ot_description(ot_folder: Path) -> tuple[str | None, str | None, str | None]:
    """Read the patient and slab ids from the JSON files of an OT folder.

    The JSON's ``description`` is used when it names a patient, else any string value that does.
    Files are read with ``json.load`` only. An unreadable or malformed file is reported with
    ``warnings.warn`` (naming the file) and skipped.

    Args:
        ot_folder: the case's ``SMIR.<...>.OT.<id>`` folder.

    Returns:
        ``(description, patient_id, slab_id)``; each is ``None`` when unknown.
    """
    for path in sorted(ot_folder.glob("*.json"), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            warnings.warn(f"{path}: unreadable JSON ({err}); the case is folded without a patient id", stacklevel=2)
            continue
        description = None
        if isinstance(data, dict) and isinstance(data.get("description"), str):
            description = data["description"]
        match = _PATIENT_RE.search(description) if description else None
        if match is None:
            found = _find_description(data)
            if found is not None:
                description, match = found, _PATIENT_RE.search(found)
        if match is not None:
            return description, match.group(1), match.group(2)
        if description is not None:
            return description, None, None
    return None, None, None


def read_case(case_dir: Path, split: str, profile: DatasetProfile) -> CaseRecord:
    """Read one ISLES 2018 case folder.

    Args:
        case_dir: the ``case_N`` folder.
        split: ``training`` or ``testing``.
        profile: spells the modality names.

    Returns:
        The case record: every modality found (absolute paths), the OT label if any, the SMIR id of
        the MTT folder, and the patient/slab from the OT JSON when it has them.

    Raises:
        CaseError: a SMIR folder holds zero or several image files (an empty modality folder included), two
            folders give one modality, or the case folder cannot be listed.
    """
    try:
        return _read_case(case_dir, split, profile)
    except OSError as err:  # an unreadable folder is this case's problem, not the dataset's
        raise CaseError(case_dir.name, getattr(err, "filename", None) or case_dir,
                        f"cannot read the case folder ({err.strerror or err})") from err


def _read_case(case_dir: Path, split: str, profile: DatasetProfile) -> CaseRecord:
    case_id = case_dir.name
    modalities: dict[str, str] = {}
    folders: dict[str, Path] = {}
    ids: dict[str, str] = {}
    label: str | None = None
    ot_folder: Path | None = None
    for folder in sorted(case_dir.iterdir(), key=lambda p: natural_key(p.name)):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if not folder.name.upper().startswith("SMIR."):
            continue
        parsed = parse_smir_folder(folder.name)
        if parsed is None:
            warnings.warn(f"{folder}: not a SMIR.<...>.<MOD>.<id> folder name; ignored", stacklevel=2)
            continue
        raw, smir_id = parsed
        name = canonical_modality(raw, profile)
        if name in folders:
            raise CaseError(
                case_id, folder,
                f"two folders give modality {name!r}: {folders[name].name} and {folder.name}; keep one",
            )
        folders[name] = folder
        ids[name] = smir_id
        image = str(_image_in(folder, case_id))
        if name == LABEL_MODALITY:
            label, ot_folder = image, folder
        else:
            modalities[name] = image
    description = patient_id = slab_id = None
    if ot_folder is not None:
        description, patient_id, slab_id = read_ot_description(ot_folder)
    mtt = profile.canonical("MTT")
    extra: dict[str, Any] = {"smir_ids": ids}
    if description is not None:
        extra["description"] = description
    return CaseRecord(
        case_id=case_id,
        split=split,
        modalities=modalities,
        label=label,
        folder=str(case_dir.resolve()),
        patient_id=patient_id,
        slab_id=slab_id,
        smir_id=ids.get(mtt),
        extra=extra,
    )


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every case of an ISLES 2018 dataset.

    Args:
        root: the folder holding ``TRAINING/`` and/or ``TESTING/`` (either may be absent).
        profile: spells the modality names (``profile.canonical``).
        problems: when a list is given, a malformed case (see :func:`read_case`) is left out and described
            there as ``{"case_id", "split", "file", "reason"}`` instead of raising, so one bad case does not
            stop the others from being read.

    Returns:
        Training cases, then testing cases, each in natural order (``case_2`` before ``case_10``).
        Folders and files that are not case or SMIR folders are ignored.

    Raises:
        LayoutError: ``root`` has neither ``TRAINING/`` nor ``TESTING/``.
        CaseError: a case folder is malformed (see :func:`read_case`) and ``problems`` is ``None``.
    """
    root = Path(root)
    splits = _split_folders(root)
    if not splits:
        raise LayoutError(f"{root} is not an ISLES 2018 dataset: expected {EXPECTS}")
    records: list[CaseRecord] = []
    for split in ("training", "testing"):
        for _, split_dir in (s for s in splits if s[0] == split):
            # An empty ``case_N`` folder is kept so that its missing modalities are reported.
            case_dirs = [
                p for p in _children(split_dir)
                if p.is_dir() and not p.name.startswith(".")
                and (_CASE_RE.match(p.name) or any(_is_smir_folder(c) for c in _children(p)))
            ]
            for case_dir in sorted(case_dirs, key=lambda p: natural_key(p.name)):
                try:
                    records.append(read_case(case_dir, split, profile))
                except CaseError as err:
                    if problems is None:
                        raise
                    problems.append({"case_id": case_dir.name, "split": split, "file": err.path, "reason": err.message})
    return records
