"""The one check of a datalist's records before any run: what can be known wrong without reading an image.

``train`` and ``predict`` call :func:`check_records` on the records they are about to use, so a record
without a case id, two records with one id, or a channel list that contradicts the record's own modality map
is refused with one message before a bundle starts, instead of failing (or silently mixing cases) mid-run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import CaseError
from pipeline.paths import plain_component


def check_channel_files(
    case_id: str | None, channels: Sequence[str], paths: Sequence[str], modalities: Mapping[str, Any] | None
) -> None:
    """Check that each channel's file is the one the record's modality map gives for that channel.

    Args:
        case_id: named in the error.
        channels: the modality name of each channel, in order.
        paths: the channel files, in the same order.
        modalities: the record's ``modality -> file`` map (``None`` or empty: nothing to compare).

    Raises:
        CaseError: a channel's file is another modality's file (channels swapped or mislabelled), naming
            the channel, both files and what to do.
    """
    if not modalities:
        return
    for name, path in zip(channels, paths):
        expected = modalities.get(name)
        if expected is None:
            continue
        if os.path.normpath(str(expected)) != os.path.normpath(str(path)):
            raise CaseError(
                case_id, str(path),
                f"channel {name} is given the file {str(path)!r} but the record's modality map gives {name} as "
                f"{str(expected)!r}: the channel list contradicts the modality map (channels swapped?); "
                "write the datalist again with `python -m pipeline prepare`",
            )


def _where(datalist: str | Path | None, split: str, index: int) -> str:
    return f"record {index} of the {split!r} list" + (f" of {str(datalist)!r}" if datalist else "")


def check_records(
    records: Sequence[Any],
    datalist: str | Path | None,
    split: str,
    channels: Sequence[str] | None = None,
    require_files: bool = False,
    require_label: bool = False,
) -> None:
    """Check the records of one split before a run uses them.

    Args:
        records: the records (dicts, as :func:`pipeline.data.datalist.load_datalist` returns them, paths absolute).
        datalist: the datalist file, named in messages.
        split: the split's name, named in messages.
        channels: the channel order; each record's ``image`` list must have one file per channel and, where the
            record has a ``modalities`` map, channel ``k``'s file must be the map's file for ``channels[k]``.
        require_files: every image (and label) file must exist (training reads them all up front).
        require_label: every record must have a label (training).

    Raises:
        CaseError: a record is not an object, has no usable ``case_id`` (missing, or not a plain file-name
            component), shares its ``case_id`` with another record, lacks its ``image`` list or label, has
            the wrong number of channel files, contradicts its modality map (naming both files), or names a
            missing file. The message names the record (its position and case) and the file.
    """
    source = str(datalist) if datalist else None  # the file named in errors about a record
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        where = _where(datalist, split, index)
        if not isinstance(record, Mapping):
            raise CaseError(None, source, f"{where} is not an object with case_id and image")
        case_id = record.get("case_id")
        if case_id is None or str(case_id) == "":
            raise CaseError(None, source,
                            f"{where} has no 'case_id'; outputs and results are named by it. Give every record "
                            "a unique case_id (prepare writes them)")
        try:
            case_id = plain_component(case_id, case_id, "case_id")
        except CaseError as err:
            raise CaseError(str(case_id), source, f"{where}: {err.message}") from None
        if case_id in seen:
            raise CaseError(case_id, source,
                            f"records {seen[case_id]} and {index} of the {split!r} list share the case_id {case_id!r}; "
                            "their outputs would overwrite each other. Give every record a unique case_id")
        seen[case_id] = index
        image = record.get("image")
        paths = [image] if isinstance(image, (str, Path)) else image
        if not paths or not isinstance(paths, (list, tuple)):
            raise CaseError(case_id, source, f"{where} has no 'image' list of channel files")
        if channels is not None and len(paths) != len(channels):
            raise CaseError(case_id, source,
                            f"{where} has {len(paths)} channel file(s) for the {len(channels)} channels "
                            f"{', '.join(channels)}")
        if channels is not None:
            check_channel_files(case_id, list(channels), [str(p) for p in paths], record.get("modalities"))
        label = record.get("label")
        if require_label and not label:
            raise CaseError(case_id, source, f"{where} has no 'label'; training needs one")
        if require_files:
            for path in [*paths, *([label] if label else [])]:
                if not os.path.exists(str(path)):
                    raise CaseError(case_id, str(path), "the file does not exist; fix the datalist or run prepare again")
