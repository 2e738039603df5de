"""``python -m pipeline benchmark``: speed and memory against MONAI's defaults (see :mod:`pipeline.benchmark`)."""

from __future__ import annotations

import argparse

from pipeline.cli.arguments import add_bundle_arguments, add_synthetic_arguments


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``benchmark`` sub-command to ``sub``."""
    p = sub.add_parser("benchmark", parents=parents, help="the performance table (benchmarks/results.md): inference, tiling, pruning, training, memory")
    p.add_argument("--out", default=None, help="Markdown file to write (default benchmarks/results.md of the project)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not figures")
    p.add_argument("--repeats", type=int, default=None, help="repeats of every timed row (default 3; 1 with --quick)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", default=None,
                   help="trained weights, e.g. demo_output/unetplusplus/models/last.pt (default: train a small UNet++ first)")
    p.add_argument("--workdir", default=None, help="folder for the synthetic data and training run (default: a temporary one)")
    add_synthetic_arguments(p, None, None, 1, "synthetic training cases (default 24; 8 with --checkpoint)",
                            "synthetic test cases for the Dice rows (default 32)",
                            "seed of the synthetic data (default 1; the demo uses 0)")
    p.add_argument("--train-budget", type=float, default=None,
                   help="seconds of training (default 300; 60 with --checkpoint, where training is only timed)")
    add_bundle_arguments(p, "plans of the checkpoint (default: trained_plans.json beside it)", "", bundle_required=False)
    serve = p.add_argument_group("the hospital service (--serve: benchmarks/serve.md)")
    serve.add_argument("--serve", action="store_true",
                       help="measure serve against predict per study through a local Orthanc instead: cold and warm "
                            "latency, the case's own stages, studies per minute (--test-cases studies, default 8)")
    serve.add_argument("--model", default=None, metavar="RUN",
                       help="with --serve: a train --output folder of a model on the DICOM channels (NCCT, CBF, CBV, "
                            "MTT, Tmax); default: the plans' default network trained here for one epoch")
    serve.add_argument("--stable-seconds", type=float, default=1.0, help="with --serve: the service's stable time")
    serve.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                       help="with --serve: what runs the network, as for predict")
    p.set_defaults(func=command_benchmark)


def command_benchmark(args: argparse.Namespace) -> int:
    """``benchmark [--quick] [--repeats N] [--device D] [--checkpoint PATH] [--out results.md] ...``: the
    performance table; returns the exit status of :func:`pipeline.benchmark.command_benchmark`."""
    if getattr(args, "serve", False):
        return _serve_benchmark(args)
    from pipeline.benchmark import command_benchmark as benchmark_command

    return benchmark_command(args)


def _serve_benchmark(args: argparse.Namespace) -> int:
    """``benchmark --serve``: :func:`pipeline.benchmark.serve.run_serve_benchmark` with the command's flags."""
    from pathlib import Path

    from pipeline.benchmark.serve import DEFAULT_OUT, ServeBenchmarkOptions, run_serve_benchmark

    options = ServeBenchmarkOptions(
        studies=args.test_cases or 8, training_cases=args.cases or 8, model=Path(args.model) if args.model else None,
        workdir=Path(args.workdir) if args.workdir else None, out=Path(args.out) if args.out else DEFAULT_OUT,
        stable_seconds=args.stable_seconds, runtime=args.runtime, seed=args.seed)
    if args.bundle:
        options.bundle = Path(args.bundle).resolve()
    run_serve_benchmark(options)
    print(f"benchmark: {options.out}")
    return 0
