"""``python -m pipeline <command>``: dispatches to :mod:`pipeline.cli` (one module per command)."""

from __future__ import annotations

import sys

from pipeline.cli import build_parser, main
from pipeline.cli.arguments import fold_argument
from pipeline.cli.benchmark import command_benchmark
from pipeline.cli.demo import DEMO_BUNDLE, command_demo
from pipeline.cli.evaluate import command_evaluate
from pipeline.cli.predict import command_predict
from pipeline.cli.prepare import command_prepare
from pipeline.cli.report import command_report
from pipeline.cli.synth import command_synth
from pipeline.cli.train import command_train
from pipeline.planning.cpu_budget import DEMO_CHANNELS

__all__ = [
    "DEMO_BUNDLE", "DEMO_CHANNELS", "build_parser", "command_benchmark", "command_demo", "command_evaluate",
    "command_predict", "command_prepare", "command_report", "command_synth", "command_train", "fold_argument", "main",
]

if __name__ == "__main__":
    from pipeline.allocator import keep_freed_memory

    # A process-wide setting, so it is made where the process starts, not by in-process calls of main(); the
    # benchmark measures glibc's defaults against it itself.
    if sys.argv[1:2] != ["benchmark"]:
        keep_freed_memory()
    from pipeline.interpreter_exit import skip_exit_collection

    skip_exit_collection()
    sys.exit(main())
