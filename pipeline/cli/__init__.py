"""The command line: ``python -m pipeline <command>``.

Commands: ``synth`` (the embedded synthetic ISLES 2018 dataset), ``prepare`` (layout -> datalist,
folds and fingerprint), ``train`` (a bundle's train config), ``postprocess`` (the post-processing fitted on the validation folds),
``predict`` (a bundle's inference config,
outputs on the native grid), ``evaluate`` (ISLES metrics, threshold baseline, clinical volumes),
``serve`` (a warm service: studies from a PACS or a folder, DICOM Segmentations back),
``report`` (overlays, tables, training curves), ``demo`` (the main job end to end on the embedded
default data), ``benchmark`` (speed and memory against MONAI's defaults: benchmarks/results.md).
Exit status 0 on success; on bad input, 2 with one paragraph naming the case and the file.

Each command module has ``register(sub, parents)``, which adds its sub-parser, and ``command_<name>(args)``,
which does the work (one module per command); :mod:`pipeline.cli.arguments` holds the argument groups they share.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli import benchmark, demo, evaluate, export, postprocess, predict, prepare, report, serve, synth, train
from pipeline.cli.arguments import debug_parent
from pipeline.errors import EXIT_INTERRUPTED, cli_message

# In the order of ``--help``.
COMMANDS = (synth, prepare, train, postprocess, predict, evaluate, export, serve, report, benchmark, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure instead of the message")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = [debug_parent()]
    for command in COMMANDS:
        command.register(sub, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    Bad input ends a command with one paragraph on stderr naming the case and the file, and exit status 2
    (:func:`pipeline.errors.cli_message`); Ctrl-C with 130. ``--debug`` (before or after the command) shows the
    traceback instead.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"error: {args.command} interrupted; files already written are complete, partial ones were removed; "
              "run the same command again to resume or redo it", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every failure becomes the contract's message unless --debug
        if getattr(args, "debug", False):
            raise
        status, message = cli_message(err)
        print(message, file=sys.stderr)
        return status
