"""nnU-Net raw layout reader: ``ROOT/dataset.json``, ``imagesTr/CASE_XXXX<ending>``, ``labelsTr/CASE<ending>``.

``dataset.json`` names the channels (``channel_names`` {"0": "CBF", ...}, or the older ``modality``)
and the file ending (``file_ending``, default ``.nii.gz``). ``imagesTs/`` (optional) holds test cases.
A case missing a channel file is still returned, without that channel, so that the datalist step
reports it (and can leave it out on request).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from pipeline.data.datalist import natural_key
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError
from pipeline.io.jsonfile import read_json

DATASET_JSON = "dataset.json"
DEFAULT_ENDING = ".nii.gz"
SPLITS = (("training", "imagesTr", "labelsTr"), ("testing", "imagesTs", "labelsTs"))
EXPECTS = "dataset.json and imagesTr/ (or imagesTs/) holding CASE_XXXX<file_ending> files"
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.")


def read_dataset_json(root: Path) -> dict[str, Any]:
    """Read ``root/dataset.json``.

    Returns:
        The parsed JSON object.

    Raises:
        LayoutError: the file is missing, unreadable, or not a JSON object.
    """
    path = Path(root) / DATASET_JSON
    cannot_read = "{what} cannot read the nnU-Net dataset.json ({reason})"
    return read_json(path, f"{path}:", missing=cannot_read, unreadable=cannot_read, invalid=cannot_read,
                     not_object="{what} the nnU-Net dataset.json is not a JSON object",
                     error=LayoutError, missing_error=LayoutError)


def channel_map(data: dict[str, Any], where: Path | str = DATASET_JSON) -> dict[int, str]:
    """Return channel index -> name from a dataset.json's ``channel_names`` (or ``modality``).

    Raises:
        LayoutError: neither key is present, or a key is not an integer.
    """
    names = data.get("channel_names") or data.get("modality")
    if not isinstance(names, dict) or not names:
        raise LayoutError(f"{where}: no 'channel_names' (or 'modality') mapping channel indices to names")
    try:
        return {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
    except ValueError as err:
        raise LayoutError(f"{where}: channel indices must be integers ({err})") from err


def channel_names(root: Path) -> list[str]:
    """Return the dataset's channel names in index order (as dataset.json spells them).

    Raises:
        LayoutError: dataset.json is missing or names no channels.
    """
    root = Path(root)
    return list(channel_map(read_dataset_json(root), root / DATASET_JSON).values())


def looks_like(root: Path) -> bool:
    """Return True when ``root`` has dataset.json and imagesTr/ or imagesTs/ with ``CASE_XXXX.*`` files."""
    root = Path(root)
    if not (root / DATASET_JSON).is_file():
        return False
    for _, images, _ in SPLITS:
        folder = root / images
        if folder.is_dir() and any(_CHANNEL_FILE.match(p.name) for p in folder.iterdir() if p.is_file()):
            return True
    return False


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every case of an nnU-Net raw dataset.

    Args:
        root: the dataset folder (``DatasetXXX_Name``).
        profile: spells the channel names.
        problems: when a list is given, a malformed case is left out and described there as
            ``{"case_id", "split", "file", "reason"}`` instead of raising.

    Returns:
        Training cases (``imagesTr``), then testing cases (``imagesTs``), each in natural order.
        ``modalities`` holds the channels whose files exist; the expected file of a missing channel
        (or label) is in ``extra["missing_files"]``.

    Raises:
        LayoutError: no dataset.json, no channel names, or neither imagesTr/ nor imagesTs/.
        CaseError: a file's channel index is not in dataset.json (only when ``problems`` is ``None``).
    """
    root = Path(root)
    data = read_dataset_json(root)
    channels = channel_map(data, root / DATASET_JSON)
    ending = str(data.get("file_ending") or DEFAULT_ENDING)
    if not any((root / images).is_dir() for _, images, _ in SPLITS):
        raise LayoutError(f"{root} is not an nnU-Net raw dataset: expected {EXPECTS}")
    records: list[CaseRecord] = []
    for split, images_name, labels_name in SPLITS:
        images_dir = root / images_name
        if not images_dir.is_dir():
            continue
        cases: dict[str, dict[int, Path]] = {}
        bad: dict[str, CaseError] = {}
        for path in sorted(images_dir.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            match = _CHANNEL_FILE.match(path.name)
            if not path.name.endswith(ending) or match is None or len(path.name) != match.end() - 1 + len(ending):
                warnings.warn(f"{path}: not named CASE_XXXX{ending}; ignored", stacklevel=2)
                continue
            case_id, index = match.group("case"), int(match.group("channel"))
            if index not in channels:
                error = CaseError(
                    case_id, path,
                    f"channel index {index} is not in dataset.json's channels ({', '.join(map(str, channels))})",
                )
                if problems is None:
                    raise error
                bad.setdefault(case_id, error)
                continue
            cases.setdefault(case_id, {})[index] = path.resolve()
        for case_id in sorted(set(cases) | set(bad), key=natural_key):
            if case_id in bad:
                problems.append({"case_id": case_id, "split": split, "file": bad[case_id].path,
                                 "reason": bad[case_id].message})
                continue
            found = cases[case_id]
            modalities: dict[str, str] = {}
            missing: dict[str, str] = {}
            for index, name in channels.items():
                canonical = profile.canonical(name)
                if index in found:
                    modalities[canonical] = str(found[index])
                else:
                    missing[canonical] = str((images_dir / f"{case_id}_{index:04d}{ending}").resolve())
            label_path = root / labels_name / f"{case_id}{ending}"
            label = str(label_path.resolve()) if label_path.is_file() else None
            if label is None and split == "training":
                missing["label"] = str(label_path.resolve())
            extra: dict[str, Any] = {"channel_indices": {profile.canonical(n): i for i, n in channels.items()}}
            if missing:
                extra["missing_files"] = missing
            records.append(
                CaseRecord(
                    case_id=case_id,
                    split=split,
                    modalities=modalities,
                    label=label,
                    folder=str(images_dir.resolve()),
                    extra=extra,
                )
            )
    return records
