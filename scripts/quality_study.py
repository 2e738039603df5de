"""The default recipe and its variants over synthetic seeds: ``python scripts/quality_study.py --out study``.

The logic is :mod:`pipeline.studies.quality`; this script only parses the command line. ``--quick`` runs a tiny
network on a few cases (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.studies.quality import DEFAULT_VARIANTS, VARIANTS, run_quality_study  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the study, print where its tables are; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="quality_study", help="study folder (default quality_study/)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated synthetic seeds (default 0,1,2)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--cases", type=int, default=24, help="training slabs per seed (default 24)")
    parser.add_argument("--test-cases", type=int, default=16, help="held-out test slabs per seed (default 16)")
    parser.add_argument("--epochs", type=int, default=40, help="most epochs per model (default 40)")
    parser.add_argument("--train-budget", type=float, default=360.0, help="training seconds per model (default 360)")
    parser.add_argument("--quick", action="store_true", help="tiny network, 6+2 cases, 1 epoch: a smoke test")
    args = parser.parse_args(argv)
    cases, test_cases, epochs = (6, 2, 1) if args.quick else (args.cases, args.test_cases, args.epochs)
    run_quality_study(args.out, [int(s) for s in args.seeds.split(",")], args.variants.split(","), cases, test_cases,
                      epochs, args.train_budget, args.quick)
    print(f"quality study: {Path(args.out).resolve() / 'quality_study.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
