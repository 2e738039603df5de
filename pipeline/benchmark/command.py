"""``python -m pipeline benchmark`` as a command: the parsed arguments to :func:`run_benchmark`."""

from __future__ import annotations

import argparse

from pipeline.benchmark.options import options_from_args
from pipeline.benchmark.run import run_benchmark


def command_benchmark(args: argparse.Namespace) -> int:
    """``python -m pipeline benchmark``: run :func:`run_benchmark` with the parsed options; returns 0.

    Raises:
        FileNotFoundError, ValueError: see :func:`options_from_args` and :func:`run_benchmark`.
    """
    run_benchmark(options_from_args(args))
    return 0
