"""``python -m pipeline export``: a bundle and its trained weights as a standalone MONAI model-zoo bundle
(see :mod:`pipeline.export`)."""

from __future__ import annotations

import argparse

from pipeline.cli.arguments import add_bundle_arguments


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``export`` sub-command to ``sub``."""
    p = sub.add_parser("export", parents=parents,
                       help="write a standalone model-zoo bundle: configs, weights, TorchScript, vendored scripts/")
    p.add_argument("--checkpoint", required=True,
                   help="the trained weights: RUN/models/model.pt, or a train --output folder RUN")
    p.add_argument("--out", required=True, help="the bundle folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out once the new bundle is complete")
    p.add_argument("--channels", default=None,
                   help="comma-separated channels the network was trained with (default: from --datalist, else the "
                        "trained plans, else the dataset profile)")
    p.add_argument("--datalist", default=None,
                   help="the datalist the network was trained with (its channels and profile)")
    p.add_argument("--profile", default=None,
                   help="dataset profile baked into the configs: a name under configs/datasets or a YAML file "
                        "(default: the datalist's or the plans', else isles2018)")
    p.add_argument("--version", default=None, help="version of the exported bundle (default: the bundle's, patch + 1)")
    p.add_argument("--changelog", default=None,
                   help="changelog entry of that version (default: says what was exported)")
    p.add_argument("--eval-metrics", default=None, metavar="JSON",
                   help="scores for metadata.json, a JSON object or file, e.g. '{\"mean_dice\": 0.51}' (default: the "
                        "best validation mean Dice the training run recorded in its checkpoint)")
    add_bundle_arguments(
        p, "plans.json the network was trained with (default: trained_plans.json beside the checkpoint, if any)",
        "inferer#sw_batch_size=4")
    p.set_defaults(func=command_export)


def command_export(args: argparse.Namespace) -> int:
    """``export --bundle DIR --checkpoint RUN/models/model.pt --out DIR [--overwrite]``.

    Prints what was written. Returns 0.

    Raises:
        FileNotFoundError, ValueError, pipeline.errors.CaseError: bad input, see
            :func:`pipeline.export.export_bundle` (the CLI turns them into exit status 2).
        RuntimeError: the TorchScript export failed (exit status 1).
    """
    from pipeline.export import export_bundle

    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    result = export_bundle(args.bundle, args.checkpoint, args.out, overwrite=args.overwrite, plans=args.plans,
                           channels=channels, datalist=args.datalist, profile=args.profile, overrides=args.set,
                           version=args.version, changelog=args.changelog, eval_metrics=args.eval_metrics)
    scores = ", ".join(f"{k} {v}" for k, v in result.eval_metrics.items())
    print(f"export: {result.out} (version {result.version}; channels {', '.join(result.channels)}; {scores}); "
          f"{len(result.modules)} modules vendored under scripts/")
    print(f"export: requirements {' '.join(result.requirements)}")
    print("export: run it from that folder: python -m monai.bundle run --config_file configs/inference.json "
          "--dataset_dir DIR (DIR holds datalist.json; see docs/README.md there)")
    return 0
