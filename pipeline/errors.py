"""Errors raised on bad input. Each names the case and the file it is about."""

from __future__ import annotations


class CaseError(ValueError):
    """A problem with one case's input: names the case and the offending file.

    Args:
        case_id: the case the problem belongs to (``None`` when unknown).
        path: the file (or folder) at fault (``None`` when no single file is).
        message: what is wrong and, where it helps, what to do about it.
    """

    def __init__(self, case_id: str | None, path: str | None, message: str):
        self.case_id = case_id
        self.path = None if path is None else str(path)
        self.message = message
        where = f"case {case_id!r}" if case_id is not None else "input"
        if self.path is not None:
            where += f", file {self.path!r}"
        super().__init__(f"{where}: {message}")


class MissingModalityError(CaseError):
    """A case lacks a modality that the dataset profile needs as a channel."""

    def __init__(self, case_id: str, modality: str, folder: str | None, found: list[str]):
        self.modality = modality
        super().__init__(
            case_id,
            folder,
            f"missing modality {modality!r} (found: {', '.join(sorted(found)) or 'none'}); "
            "add it, choose other channels with --channels, or leave such cases out with --skip-incomplete",
        )


class GeometryError(CaseError):
    """Two files of one case do not share a grid (shape, spacing, orientation or origin)."""


class LayoutError(ValueError):
    """A dataset root does not match the layout it was read as (or no layout could be detected)."""


def root_cause(err: BaseException) -> BaseException:
    """Return the outermost :class:`CaseError` in ``err``'s chain of causes, else the innermost cause
    (MONAI wraps transform and reader errors in RuntimeErrors)."""
    while not isinstance(err, CaseError) and err.__cause__ is not None:
        err = err.__cause__
    return err
