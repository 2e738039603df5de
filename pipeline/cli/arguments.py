"""Argument groups that several commands share, so that a flag means the same everywhere."""

from __future__ import annotations

import argparse

from pipeline.data.datalist import ALL_FOLDS, CROSS_VALIDATION


def debug_parent() -> argparse.ArgumentParser:
    """A parent parser with ``--debug``, given to every command so the flag works after the command name too."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure instead of the message")
    return common


def fold_argument(text: str) -> int | str | tuple[int, ...]:
    """``--fold``: a fold number; ``all`` (train on every training case, nnU-Net's "fold all"); ``cv`` (every fold
    of the datalist, one run after another: a cross-validation); or a comma-separated list of folds, e.g. ``0,2``.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    text = text.strip()
    if text in (ALL_FOLDS, CROSS_VALIDATION):
        return text
    try:
        folds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold is a whole number, a comma-separated list of them, {ALL_FOLDS!r} or "
                                         f"{CROSS_VALIDATION!r}; got {text!r}") from None
    if len(set(folds)) != len(folds):
        raise argparse.ArgumentTypeError(f"--fold {text}: a fold is listed twice")
    return folds[0] if len(folds) == 1 else folds


def add_bundle_arguments(parser: argparse.ArgumentParser, plans_help: str, set_example: str,
                         bundle_required: bool = True) -> None:
    """``--bundle``, ``--plans`` and the repeatable ``--set KEY=VALUE`` of the commands that run a bundle."""
    if bundle_required:
        parser.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/isles_unetplusplus")
    else:
        parser.add_argument("--bundle", default=None, help="the UNet++ bundle (default bundles/isles_unetplusplus)")
    parser.add_argument("--plans", default=None, help=plans_help)
    if set_example:
        parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                            help=f"bundle config override, e.g. --set {set_example} (repeatable)")


def add_synthetic_arguments(parser: argparse.ArgumentParser, cases: int | None, test_cases: int | None, seed: int,
                            cases_help: str, test_cases_help: str, seed_help: str | None = None) -> None:
    """``--cases``, ``--test-cases`` and ``--seed`` of the commands that write the synthetic dataset."""
    parser.add_argument("--cases", type=int, default=cases, help=cases_help)
    parser.add_argument("--test-cases", type=int, default=test_cases, help=test_cases_help)
    parser.add_argument("--seed", type=int, default=seed, help=seed_help)


def add_logs_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--logs PATH`` of the commands that draw training curves."""
    parser.add_argument("--logs", action="append", metavar="PATH", help=help_text)
