"""MSD-style datalist reader: a JSON file with ``training``/``testing`` lists of per-channel files.

The JSON is ``ROOT`` itself, or ``ROOT/dataset.json`` / ``ROOT/datalist.json``. Channel names come from
this project's ``channels`` list or the MSD ``modality`` dict ({"0": "FLAIR", ...}). A record's
``image`` is a list of per-channel files in that order (or one 3D file when there is one channel);
relative paths are relative to the JSON file's folder. ``validation`` records are read as training
cases (they are re-folded) and ``test`` is accepted for ``testing``. Datalists written by this project
are read back with their case ids, patient/slab ids, extra fields and every modality.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.data.datalist import strip_image_suffix
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError, LayoutError

JSON_NAMES = ("dataset.json", "datalist.json")
# JSON list -> split of its records.
LISTS = (("training", "training"), ("validation", "training"), ("testing", "testing"), ("test", "testing"))
EXPECTS = "a datalist JSON (ROOT itself, ROOT/dataset.json or ROOT/datalist.json) with 'training'/'testing' lists"


def find_json(root: Path) -> Path | None:
    """Return the datalist JSON of ``root`` (``root`` itself when it is a file), or ``None``."""
    root = Path(root)
    if root.is_file():
        return root if root.suffix.lower() == ".json" else None
    for name in JSON_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not any(isinstance(data.get(key), list) for key, _ in LISTS):
        return None
    return data


def _image_paths(item: Any) -> list[str]:
    image = item.get("image") if isinstance(item, dict) else item
    if isinstance(image, str):
        return [image]
    if isinstance(image, list):
        return [p for p in image if isinstance(p, str)]
    return []


def looks_like(root: Path) -> bool:
    """Return True when ``root`` gives a datalist JSON whose first records' images exist on disk.

    The existence check tells an MSD datalist from an nnU-Net v1 dataset.json, whose ``training``
    list names files (``imagesTr/la_003.nii.gz``) that the channel-suffixed files replace.
    """
    path = find_json(root)
    data = _load(path) if path is not None else None
    if data is None:
        return False
    base = path.resolve().parent
    for key, _ in LISTS:
        for item in (data.get(key) or [])[:3]:
            paths = _image_paths(item)
            if paths and all((base / p).is_file() for p in paths):
                return True
    return False


def read_json(root: Path) -> tuple[Path, dict[str, Any]]:
    """Find and parse the datalist JSON of ``root``.

    Returns:
        ``(path of the JSON file, parsed object)``.

    Raises:
        LayoutError: no JSON file, unreadable JSON, or no ``training``/``testing`` list in it.
    """
    path = find_json(root)
    if path is None:
        raise LayoutError(f"{root} is not an MSD datalist: expected {EXPECTS}")
    data = _load(path)
    if data is None:
        raise LayoutError(f"{path}: not a readable datalist JSON with 'training'/'testing' lists")
    return path, data


def json_channel_names(data: dict[str, Any], where: Path | str) -> list[str]:
    """Return the channel names of a parsed datalist: its ``channels`` list, else its ``modality`` dict.

    Raises:
        LayoutError: neither is present (or they are malformed).
    """
    channels = data.get("channels")
    if isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels):
        return list(channels)
    modality = data.get("modality")
    if isinstance(modality, dict) and modality:
        try:
            return [str(v) for _, v in sorted(modality.items(), key=lambda kv: int(kv[0]))]
        except ValueError as err:
            raise LayoutError(f"{where}: 'modality' keys must be channel indices ({err})") from err
    raise LayoutError(f"{where}: no 'modality' ({{\"0\": \"FLAIR\", ...}}) or 'channels' list names the image channels")


def channel_names(root: Path) -> list[str]:
    """Return the channel names of the datalist found at ``root``, in channel order.

    Raises:
        LayoutError: no datalist JSON, or it names no channels.
    """
    path, data = read_json(root)
    return json_channel_names(data, path)


def _absolute(path: str, base: Path) -> str:
    return os.path.normpath(os.path.join(base, path))


def _derived_case_id(paths: list[str]) -> str:
    stems = [strip_image_suffix(Path(p).name) or Path(p).name for p in paths]
    if len(stems) == 1:
        return stems[0]
    prefix = os.path.commonprefix(stems).rstrip("_-. ")
    return prefix or stems[0]


def _record(item: Any, split: str, channels: list[str], base: Path, profile: DatasetProfile, index: int) -> CaseRecord:
    if isinstance(item, (str, list)):
        item = {"image": item}
    if not isinstance(item, dict):
        raise CaseError(None, None, f"{split} record {index} is neither a dict, a path, nor a list of paths: {item!r}")
    entry: dict[str, Any] = dict(item)
    paths = _image_paths(entry)
    case_id = str(entry.get("case_id") or (_derived_case_id(paths) if paths else f"{split}_{index}"))
    names = [profile.canonical(c) for c in channels]
    own = {profile.canonical(k): v for k, v in (entry.get("modalities") or {}).items() if isinstance(v, str)}
    if len(paths) != len(names) and not all(n in own for n in names):
        raise CaseError(
            case_id, paths[0] if paths else None,
            f"'image' lists {len(paths)} file(s) but the datalist names {len(names)} channel(s) ({', '.join(names)}); "
            "give one 3D file per channel",
        )
    listed = dict(own)
    if len(paths) == len(names):
        listed.update(zip(names, paths))
    modalities: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name, rel in listed.items():
        path = _absolute(rel, base)
        (modalities if os.path.isfile(path) else missing)[name] = path
    label = None
    if isinstance(entry.get("label"), str):
        label = _absolute(entry["label"], base)
        if not os.path.isfile(label):
            missing["label"] = label
            label = None
    extra = dict(entry["extra"]) if isinstance(entry.get("extra"), dict) else {}
    if missing:
        extra["missing_files"] = missing
    return CaseRecord(
        case_id=case_id,
        split=split,
        modalities=modalities,
        label=label,
        folder=str(Path(_absolute(paths[0], base)).parent) if paths else str(base),
        patient_id=entry.get("patient_id"),
        slab_id=entry.get("slab_id"),
        smir_id=entry.get("smir_id"),
        extra=extra,
    )


def discover(root: Path, profile: DatasetProfile, problems: list[dict] | None = None) -> list[CaseRecord]:
    """Read every record of an MSD-style datalist (this project's datalists included).

    Args:
        root: the JSON file, or a folder holding ``dataset.json`` or ``datalist.json``.
        profile: spells the channel names.
        problems: when a list is given, a malformed record is left out and described there as
            ``{"case_id", "split", "file", "reason"}`` instead of raising (a repeated case id still raises:
            it is the datalist's problem, not one case's).

    Returns:
        Training records (``training`` then ``validation`` lists), then testing records, in file
        order. Listed files that do not exist are left out of ``modalities`` (or ``label``) and named in
        ``extra["missing_files"]``, so the datalist step reports them.

    Raises:
        LayoutError: no datalist JSON, or it names no channels.
        CaseError: a record's image count does not match the channels or it is not a record (only when
            ``problems`` is ``None``), or a case id repeats in a split.
    """
    path, data = read_json(root)
    channels = json_channel_names(data, path)
    base = path.resolve().parent
    records: list[CaseRecord] = []
    seen: dict[tuple[str, str], str] = {}
    for key, split in LISTS:
        for index, item in enumerate(data.get(key) or []):
            try:
                record = _record(item, split, channels, base, profile, index)
            except CaseError as err:
                if problems is None:
                    raise
                problems.append({"case_id": err.case_id or f"{key}[{index}]", "split": split,
                                 "file": err.path or str(path), "reason": err.message})
                continue
            if (split, record.case_id) in seen:
                raise CaseError(
                    record.case_id, path,
                    f"two {split} records have case id {record.case_id!r} (in '{seen[(split, record.case_id)]}' and "
                    f"'{key}'); give each record a unique 'case_id'",
                )
            seen[(split, record.case_id)] = key
            records.append(record)
    return records


def datalist_profile_name(root: Path) -> str | None:
    """Return the profile name recorded in a datalist written by this project (``profile`` key), if any."""
    path = find_json(root)
    data = _load(path) if path is not None else None
    value = data.get("profile") if data else None
    return value if isinstance(value, str) else None
