"""``python -m pipeline synth OUT``: write the embedded synthetic dataset in the ISLES 2018 layout (or ISLES 2024's)."""

from __future__ import annotations

import argparse
import time

from pipeline.cli.arguments import add_synthetic_arguments


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``synth`` sub-command to ``sub`` (an ``add_subparsers`` object)."""
    p = sub.add_parser("synth", parents=parents, help="write the synthetic ISLES-2018-layout dataset (the embedded default)")
    p.add_argument("out", help="output folder")
    add_synthetic_arguments(p, 24, None, 0, "training cases (default 24)", "test cases (default cases // 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    p.add_argument("--layout", choices=("isles2018", "isles2024"), default="isles2018",
                   help="isles2018 (default): the ISLES 2018 release layout; isles2024: BIDS raw_data/ and derivatives/ "
                        "(NCCT, perfusion maps on its grid, follow-up lesion masks), one subject per patient")
    from pipeline.data.synthetic.acquisition import DEFAULT_PHANTOM, MECHANISMS, PHANTOMS

    p.add_argument(
        "--phantom", choices=PHANTOMS, default=DEFAULT_PHANTOM,
        help="realistic (default): the label is a later DWI's (infarct growth or shrinkage, misregistration, "
             "rater border noise, a wide hypoperfusion, per-site units/noise/smoothing); classic: the label "
             "is the CTP phantom's own tissue fate",
    )
    p.add_argument(
        "--phantom-without", action="append", choices=MECHANISMS, default=None, metavar="MECHANISM",
        help=f"switch one mechanism of the realistic phantom off (repeatable; one of {', '.join(MECHANISMS)})",
    )
    p.set_defaults(func=command_synth)


def command_synth(args: argparse.Namespace) -> int:
    """``synth OUT --cases N [--test-cases M] [--seed S] [--overwrite] [--layout L] [--phantom P] [--phantom-without M]``;
    returns 0.

    ``args`` without ``phantom`` / ``phantom_without`` (as the demo builds it) gets the default phantom.
    """
    from pipeline.data.synthetic import write_synthetic_dataset
    from pipeline.data.synthetic.acquisition import DEFAULT_PHANTOM, AcquisitionSettings

    start = time.perf_counter()
    phantom = getattr(args, "phantom", None) or DEFAULT_PHANTOM
    summary = write_synthetic_dataset(
        args.out, cases=args.cases, test_cases=args.test_cases, seed=args.seed, overwrite=args.overwrite,
        phantom=phantom, acquisition=AcquisitionSettings.without(getattr(args, "phantom_without", None)),
        layout=getattr(args, "layout", None) or "isles2018",
    )
    elapsed = time.perf_counter() - start
    layout_name = "ISLES 2024" if getattr(args, "layout", None) == "isles2024" else "ISLES 2018"
    cases = summary.cases
    training = [c for c in cases if c["split"] == "training"]
    testing = [c for c in cases if c["split"] == "testing"]
    dice = [c["threshold_dice"] for c in cases if c.get("threshold_dice") is not None]
    print(
        f"synth: wrote {len(training)} training and {len(testing)} test cases ({layout_name} layout) to {args.out} "
        f"in {elapsed:.1f} s (seed {args.seed}, {phantom} phantom)"
    )
    if dice:
        print(f"  clinical threshold rule (rCBF < 30% and Tmax > 6 s): mean Dice {sum(dice) / len(dice):.3f} over {len(dice)} cases")
    return 0
