"""The one place where names taken from case data (case id, SMIR id, DWI file name, team name) become paths.

A name from a case is used as a file name only when it is one plain path component, and a path built from
it must lie directly in the folder it is meant for; anything else is refused before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import CaseError

# Long enough for any real case id; short enough that ``<name>_probabilities.npz`` stays within NAME_MAX.
MAX_COMPONENT_LENGTH = 200


def plain_component(value: object, case_id: object, field: str) -> str:
    """Check that ``value`` can be used as one file-name component and return it as a string.

    A plain component is non-empty, at most :data:`MAX_COMPONENT_LENGTH` characters, holds no path
    separator (``/`` or ``\\``), no NUL or other control character, is not ``.`` or ``..``, and does not
    start with ``.`` (hidden files are never taken for results) or end in whitespace.

    Args:
        value: the name (a case id, a SMIR id, a team name, a file name derived from case data).
        case_id: the case it belongs to, named in the error (``None`` when unknown).
        field: what the name is (``case_id``, ``smir_id``, ``--name``...), named in the error.

    Returns:
        ``value`` as a string.

    Raises:
        CaseError: ``value`` is missing or not a plain component; the message names the case and the field.
    """
    who = None if case_id is None else str(case_id)
    if value is None or str(value) == "":
        raise CaseError(who, None, f"the {field} is missing; every output file is named from it")
    text = str(value)
    reason = None
    if text in (".", ".."):
        reason = "it names a folder, not a file"
    elif "/" in text or "\\" in text:
        reason = "it holds a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        reason = "it holds a control character"
    elif text.startswith("."):
        reason = "it starts with '.' (a hidden file)"
    elif text != text.rstrip():
        reason = "it ends in whitespace"
    elif len(text) > MAX_COMPONENT_LENGTH:
        reason = f"it is longer than {MAX_COMPONENT_LENGTH} characters"
    if reason is not None:
        raise CaseError(
            who, None,
            f"the {field} {text!r} cannot be used as a file name ({reason}); outputs are written only as plain "
            "file names inside the output folder. Fix the name in the datalist or the dataset",
        )
    return text


def path_in(folder: str | Path, name: str, case_id: object, field: str) -> Path:
    """``folder / name``, checked to be a file directly inside ``folder``.

    Args:
        folder: the output folder.
        name: a file name built from case data.
        case_id, field: named in the error.

    Returns:
        The path (not resolved: symbolic links inside ``folder`` are not followed, since writes replace them).

    Raises:
        CaseError: ``name`` is not a plain component, or the path would lie outside ``folder``.
    """
    plain_component(name, case_id, field)
    folder = Path(folder)
    path = folder / name
    if Path(os.path.normpath(os.path.abspath(path))).parent != Path(os.path.normpath(os.path.abspath(folder))):
        raise CaseError(None if case_id is None else str(case_id), str(path),
                        f"the {field} would write outside the output folder {str(folder)!r}")
    return path


def path_under(folder: str | Path, relative: str, case_id: object, field: str) -> Path:
    """``folder / relative`` for a relative name of one or more components (POSIX ``/`` between them), each checked
    as :func:`plain_component`, the path checked to lie inside ``folder``.

    Args:
        folder: the output folder.
        relative: e.g. ``case_1.nii.gz`` or ``sub-stroke0001/images/stroke-lesion-segmentation/output.mha``.
        case_id, field: named in the error.

    Returns:
        The path (not resolved, as :func:`path_in`).

    Raises:
        CaseError: a component is not plain, or the path would lie outside ``folder``.
    """
    parts = str(relative).split("/")
    for part in parts:
        plain_component(part, case_id, field)
    *subfolders, name = parts
    return path_in(Path(folder).joinpath(*subfolders), name, case_id, field)
