"""FCN-8s, U-Nets of depth L1-L4 and UNet++ pruned to L1-L4 on the synthetic data: ``python scripts/depth_study.py
--out depth_study``.

The logic is :mod:`pipeline.studies.depth`; this script only parses the command line. ``--quick`` runs tiny networks
on a few cases (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.studies.depth import DEFAULT_MODELS, MODELS, run_depth_study  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the study, print where its summary is; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="depth_study", help="study folder (default depth_study/)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated synthetic seeds (default 0,1)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)} (default: FCN-8s, U-Net L1-L4, UNet++ L1-L4)")
    parser.add_argument("--cases", type=int, default=24, help="training slabs per seed (default 24)")
    parser.add_argument("--test-cases", type=int, default=16, help="held-out test slabs per seed (default 16)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per network (default 40, as the demo)")
    parser.add_argument("--train-budget", type=float, default=180.0,
                        help="most training seconds per network, a cap (default 180)")
    parser.add_argument("--timing-repeats", type=int, default=1,
                        help="timed inference runs per model and case on the first seed, after one untimed (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, 6+2 cases, 1 epoch, seed 0: a smoke test")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cases, test_cases, epochs = (args.cases, args.test_cases, args.epochs)
    if args.quick:
        cases, test_cases, epochs, seeds = 6, 2, 1, seeds[:1]
    run_depth_study(args.out, seeds, args.models.split(","), cases, test_cases, epochs, args.train_budget, args.quick,
                    args.timing_repeats)
    print(f"depth study: {Path(args.out).resolve() / 'depth_study.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
