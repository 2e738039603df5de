"""``python -m pipeline train``: a bundle's train config on one fold (see :mod:`pipeline.training`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.arguments import add_bundle_arguments, fold_argument

# pipeline.training.tracking.TRACKING_BACKENDS, not imported here: pipeline.training loads MONAI and torch
TRACKING_BACKENDS = ("mlflow",)


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``train`` sub-command to ``sub``."""
    p = sub.add_parser("train", parents=parents, help="train a bundle on one fold or a cross-validation (wraps `python -m monai.bundle run`)")
    p.add_argument("--datalist", required=True, help="datalist written by prepare")
    p.add_argument("--fold", type=fold_argument, default=0,
                   help="validation fold; the others train (default 0); 'all' trains on every training case; 'cv' "
                        "trains every fold of the datalist one after another (or a list, e.g. 0,1,2) into "
                        "OUTPUT/fold_<k>/ and writes OUTPUT/cross_validation.json (predict --model OUTPUT "
                        "ensembles them)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the bundle's)")
    p.add_argument("--output", default=None, help="folder for models/ and eval/ (default: the bundle's own)")
    add_bundle_arguments(p, "plans.json whose patch size, strides, kernels, widths, batch size are used (default: "
                            "the plans.json beside the datalist, when prepare wrote one; 'none': the bundle's own)",
                         "learning_rate=0.003")
    p.add_argument("--configuration", default=None, metavar="NAME",
                   help="which of the plans' configurations to train: 3d_anisotropic (or 3d_fullres) or 2d, one slice "
                        "per patch (default: the plans' own, named in plans.json)")
    p.add_argument("--postprocessing", choices=("fit", "none"), default="fit",
                   help="fit: after training, predict the validation fold(s) and fit the post-processing (threshold, "
                        "smallest lesion component) into OUTPUT/postprocessing.json, which predict uses (default); "
                        "none: skip it (no validation fold with --fold all)")
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
    """``train --bundle DIR --datalist datalist.json [--fold K|all|cv|K,L,...] [--epochs N] [--output DIR]
    [--plans plans.json|none] [--configuration NAME] [--postprocessing fit|none] [--tracking mlflow [--tracking-uri URI] [--experiment NAME]]``.

    Returns the exit status of :func:`pipeline.training.run_train` (of
    :func:`pipeline.training.cross_validation.run_cross_validation` for several folds).
    """
    from pipeline.training import run_train
    from pipeline.training.cross_validation import run_cross_validation, training_folds

    folds = training_folds(args.fold, args.datalist)
    if folds is None:
        status = run_train(args)
        if status == 0 and getattr(args, "postprocessing", "fit") == "fit" and isinstance(args.fold, int):
            status = fit_postprocessing_of(args, run_folder(args), args.fold)
        return status
    status = run_cross_validation(args, folds)
    if status == 0 and getattr(args, "postprocessing", "fit") == "fit":
        status = fit_postprocessing_of(args, Path(args.output).resolve(), None)
    return status


def run_folder(args: argparse.Namespace) -> Path:
    """The folder of a single training run: the parent of its checkpoint folder (``--output`` by default)."""
    from pipeline.training.command import checkpoint_dir

    return checkpoint_dir(args).parent


def inference_overrides(bundle: str, overrides: list[str] | None) -> list[str]:
    """The ``--set`` overrides of a training run that the bundle's inference config declares too (the network's
    settings, e.g. ``features``): the validation predictions need them to rebuild the trained network."""
    import json

    declared = json.loads((Path(bundle) / "configs" / "inference.json").read_text(encoding="utf-8"))
    return [item for item in overrides or [] if item.split("=", 1)[0].strip().split("#")[0] in declared]


def fit_postprocessing_of(args: argparse.Namespace, model: Path, fold: int | None) -> int:
    """Fit the post-processing of the run (``fold``) or cross-validation (``fold`` None) just trained.

    Returns:
        The exit status of :func:`pipeline.postprocessing.command.run_postprocess`.
    """
    from pipeline.postprocessing.command import run_postprocess

    print(f"train: fitting the post-processing on the validation fold(s) of {model} (--postprocessing none skips it)")
    overrides = inference_overrides(args.bundle, args.set)
    return run_postprocess(argparse.Namespace(
        bundle=args.bundle, datalist=args.datalist, model=str(model), fold=fold, tta=False, set=overrides or None,
        debug=getattr(args, "debug", False)))
