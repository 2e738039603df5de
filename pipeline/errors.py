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


class MissingExtraError(ValueError):
    """An option needs a package of one of the project's optional extras (``pyproject.toml``) that is not
    installed, e.g. ``train --tracking mlflow`` without the ``tracking`` extra; the message says what to install."""


def root_cause(err: BaseException) -> BaseException:
    """Return the outermost :class:`CaseError` in ``err``'s chain of causes, else the innermost cause
    (MONAI wraps transform and reader errors in RuntimeErrors)."""
    while not isinstance(err, CaseError) and err.__cause__ is not None:
        err = err.__cause__
    return err


# Exit statuses of the CLI: 2 for bad input (the contract), 1 for anything else that stopped a command.
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def cli_message(err: BaseException) -> tuple[int, str]:
    """The exit status and the one-paragraph message of the CLI for an exception (no traceback).

    Bad input (:class:`CaseError`, :class:`LayoutError`, ``ValueError`` such as a malformed JSON file,
    ``FileNotFoundError``) gives exit status 2 and its own message, which names the case and the file. A file-system error (full disk, permissions) gives 1 with the file and the system's reason.
    Anything else gives 1 with its type and message and a pointer to ``--debug``.

    Args:
        err: the exception that ended the command.

    Returns:
        ``(exit status, message)``; the message starts with ``error:``.
    """
    cause = root_cause(err)
    if isinstance(cause, (CaseError, LayoutError, FileNotFoundError)):
        return EXIT_BAD_INPUT, f"error: {cause}"
    if isinstance(err, (CaseError, LayoutError, FileNotFoundError, ValueError)):
        return EXIT_BAD_INPUT, f"error: {err}"
    if isinstance(cause, OSError):
        where = f"{cause.filename}: " if getattr(cause, "filename", None) else ""
        reason = cause.strerror or str(cause)
        return EXIT_FAILED, f"error: {where}{reason}; nothing partial was left under the final file names"
    if isinstance(cause, ValueError):
        return EXIT_BAD_INPUT, f"error: {cause}"
    return EXIT_FAILED, (f"error: {type(cause).__name__}: {str(cause).strip() or 'no message'} "
                         "(an unexpected failure; rerun with --debug for the traceback)")
