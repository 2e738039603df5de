"""``python -m pipeline report``: the report of an earlier evaluation and/or the training curves."""

from __future__ import annotations

import argparse
import warnings

from pipeline.cli.arguments import add_logs_argument


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command to ``sub``."""
    p = sub.add_parser("report", parents=parents, help="write the report of an earlier evaluation and/or the training curves")
    p.add_argument("--out", required=True, help="report folder (report.md, cases/*.png, training_curves.png)")
    p.add_argument("--metrics", default=None, help="the per-case CSV written by evaluate --out (its summary JSON beside it)")
    add_logs_argument(p, "TensorBoard event folder or CSV with an epoch column (repeatable)")
    p.set_defaults(func=command_report)


def command_report(args: argparse.Namespace) -> int:
    """``report --out DIR [--metrics metrics.csv] [--logs PATH ...]``; returns 0.

    Raises:
        ValueError: neither ``--metrics`` nor ``--logs`` is given.
    """
    from pipeline.evaluation import load_result
    from pipeline.report import write_report

    if not args.metrics and not args.logs:
        raise ValueError("report: give --metrics (an evaluate --out CSV) and/or --logs (training logs)")
    result = load_result(args.metrics) if args.metrics else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = write_report(args.out, result, logs=args.logs or ())
    print(f"report: wrote {report}")
    return 0
