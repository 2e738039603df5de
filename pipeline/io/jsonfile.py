"""The one reader of JSON files that every phase reads (datalists, plans, fingerprints, nnU-Net's dataset.json).

Each fault (no such file, unreadable, not JSON, not a JSON object) is one error whose message names the file;
callers word the messages and choose the error types their own callers expect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(
    path: str | Path,
    what: str | None = None,
    *,
    missing: str = "{what} does not exist",
    unreadable: str = "{what} cannot be read: {reason}",
    invalid: str = "{what} is not valid JSON: {reason}",
    not_object: str | None = "{what} must hold a JSON object, got {kind}",
    error: type[Exception] = ValueError,
    missing_error: type[Exception] = FileNotFoundError,
) -> Any:
    """Read a UTF-8 JSON file, with one error message per fault.

    Args:
        path: the file.
        what: the file as messages name it, e.g. ``"plans file /x/plans.json"``; defaults to
            ``JSON file '<path>'``.
        missing, unreadable, invalid, not_object: the message of each fault, formatted with ``what``,
            ``reason`` (the system's or the parser's words; ``no such file`` for a missing file) and ``kind``
            (the JSON type found, for ``not_object``). ``not_object=None`` accepts any JSON value.
        error: the type raised for an unreadable file, invalid JSON or a value that is not an object.
        missing_error: the type raised when ``path`` is not a file.

    Returns:
        The parsed value (a ``dict`` unless ``not_object`` is ``None``).

    Raises:
        missing_error: ``path`` does not exist or is not a file (``FileNotFoundError`` by default).
        error: the file cannot be read (permissions, an I/O error), is not UTF-8 JSON, or does not hold a
            JSON object (``ValueError`` by default). The message is the caller's; the cause is not chained.
    """
    path = Path(path)
    what = f"JSON file {str(path)!r}" if what is None else what
    if not path.is_file():
        raise missing_error(missing.format(what=what, reason="no such file"))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise error(invalid.format(what=what, reason=err)) from None
    except OSError as err:
        raise error(unreadable.format(what=what, reason=err.strerror or err)) from None
    if not_object is not None and not isinstance(data, dict):
        raise error(not_object.format(what=what, kind=type(data).__name__))
    return data
