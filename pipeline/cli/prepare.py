"""``python -m pipeline prepare``: a dataset layout to an MSD-style datalist with folds, fingerprint and plans."""

from __future__ import annotations

import argparse

LAYOUTS = ("isles2018", "isles2022", "isles2024", "nnunet", "msd")


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``prepare`` sub-command to ``sub``."""
    p = sub.add_parser("prepare", parents=parents, help="read a dataset layout and write an MSD-style datalist with folds and a fingerprint")
    p.add_argument("--root", required=True, help="dataset root folder (or an MSD datalist JSON)")
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS])
    p.add_argument("--out", required=True, help="datalist JSON to write")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--profile", default=None, help="dataset profile name or YAML path (default: the layout's)")
    p.add_argument("--channels", default=None, help="comma-separated channel order overriding the profile's, e.g. CBF,CBV,MTT,Tmax,CT")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out (and list) cases with a missing modality or unusable files instead of failing")
    p.add_argument("--fingerprint-dir", default=None, help="where fingerprint.csv/json go (default: beside --out)")
    p.add_argument("--strict", action="store_true",
                   help="fail (or, with --skip-incomplete, leave out) a case with an empty or constant channel")
    p.set_defaults(func=command_prepare)


def command_prepare(args: argparse.Namespace) -> int:
    """``prepare --root DIR --out datalist.json ...``: :func:`pipeline.data.prepare.prepare_dataset`; returns 0.

    Raises:
        CaseError, LayoutError: see :func:`pipeline.data.prepare.prepare_dataset`.
    """
    from pipeline.planning.fingerprint import format_summary
    from pipeline.data.prepare import prepare_dataset

    prepared = prepare_dataset(
        args.root, args.out, layout=args.layout, profile=args.profile, channels=args.channels, folds=args.folds,
        seed=args.seed, skip_incomplete=bool(args.skip_incomplete), fingerprint_dir=args.fingerprint_dir,
        strict=bool(getattr(args, "strict", False)),
    )
    print(format_summary(prepared.summary))
    return 0
