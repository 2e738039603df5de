"""``python -m pipeline postprocess``: fit a model's post-processing on its validation folds (see
:mod:`pipeline.postprocessing`)."""

from __future__ import annotations

import argparse


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``postprocess`` sub-command to ``sub``."""
    p = sub.add_parser("postprocess", parents=parents,
                       help="fit the post-processing (threshold, smallest lesion component) on the validation folds")
    p.add_argument("--datalist", required=True, help="the datalist the model was trained on")
    p.add_argument("--model", required=True, metavar="RUN",
                   help="a train --output folder (with --fold) or the --output of train --fold cv (every fold)")
    p.add_argument("--fold", type=int, default=None, help="the validation fold of a single training run")
    p.add_argument("--tta", action="store_true", help="predict the validation cases with test-time augmentation, "
                                                      "as predict --tta will")
    p.add_argument("--bundle", required=True, help="the bundle the model was trained with")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="bundle config override of the validation predictions, e.g. --set inferer#sw_batch_size=4")
    p.set_defaults(func=command_postprocess)


def command_postprocess(args: argparse.Namespace) -> int:
    """``postprocess --bundle DIR --datalist datalist.json --model RUN [--fold K] [--tta]``.

    Returns the exit status of :func:`pipeline.postprocessing.command.run_postprocess`.
    """
    from pipeline.postprocessing.command import run_postprocess

    return run_postprocess(args)
