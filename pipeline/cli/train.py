"""``python -m pipeline train``: a bundle's train config on one fold (see :mod:`pipeline.training`)."""

from __future__ import annotations

import argparse

from pipeline.cli.arguments import add_bundle_arguments, fold_argument

# pipeline.training.tracking.TRACKING_BACKENDS, not imported here: pipeline.training loads MONAI and torch
TRACKING_BACKENDS = ("mlflow",)


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``train`` sub-command to ``sub``."""
    p = sub.add_parser("train", parents=parents, help="train a bundle on one fold (wraps `python -m monai.bundle run`)")
    p.add_argument("--datalist", required=True, help="datalist written by prepare")
    p.add_argument("--fold", type=fold_argument, default=0,
                   help="validation fold; the others train (default 0); 'all' trains on every training case")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the bundle's)")
    p.add_argument("--output", default=None, help="folder for models/ and eval/ (default: the bundle's own)")
    add_bundle_arguments(p, "plans.json whose patch size, strides, kernels, widths, batch size are used",
                         "learning_rate=0.003")
    tracking = p.add_argument_group("experiment tracking", "MLflow, through MONAI's bundle tracking "
                                    '(needs the tracking extra: pip install -e ".[tracking]")')
    tracking.add_argument("--tracking", choices=TRACKING_BACKENDS, default=None,
                          help="log the parameters, the training loss, the validation mean Dice and the best "
                               "checkpoint to MLflow (rank 0 only)")
    tracking.add_argument("--tracking-uri", metavar="URI", default=None,
                          help="the MLflow store or server, e.g. sqlite:///runs/mlruns.db or http://127.0.0.1:5000 "
                               "(default: MLFLOW_TRACKING_URI, else sqlite:///OUTPUT/eval/mlruns.db, artifacts in "
                               "OUTPUT/eval/mlruns)")
    tracking.add_argument("--experiment", metavar="NAME", default=None,
                          help="the MLflow experiment (default: the bundle's folder name, e.g. isles_unetplusplus)")
    p.set_defaults(func=command_train)


def command_train(args: argparse.Namespace) -> int:
    """``train --bundle DIR --datalist datalist.json [--fold K] [--epochs N] [--output DIR] [--plans plans.json]
    [--tracking mlflow [--tracking-uri URI] [--experiment NAME]]``.

    Returns the exit status of :func:`pipeline.training.run_train`.
    """
    from pipeline.training import run_train

    return run_train(args)
