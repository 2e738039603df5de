"""``python -m pipeline demo``: the main job end to end on the embedded synthetic data.

synth -> prepare (fingerprint, plans) -> train the UNet++ bundle within a CPU time budget -> fit the post-processing
on the validation fold (what ``train`` does at its end) -> predict the test split -> evaluate against the clinical
threshold rule -> report. Every step is a command of this CLI, run as a
user would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from pipeline.cli import evaluate, postprocess, predict, prepare, synth, train
from pipeline.cli.arguments import add_synthetic_arguments
from pipeline.formats import GROUND_TRUTH_FOLDER

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "isles_unetplusplus"


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command to ``sub``."""
    p = sub.add_parser("demo", parents=parents, help="the main job end to end on the embedded synthetic data")
    p.add_argument("--workdir", default="demo_output")
    add_synthetic_arguments(p, 24, 16, 0, "training cases (default 24)", "held-out test cases (default 16)")
    p.add_argument("--epochs", type=int, default=40, help="most epochs to train (default 40)")
    p.add_argument("--channels", default=None,
                   help="channel order (default: what prepare chooses, the profile's CBF,CBV,MTT,Tmax and the CT)")
    p.add_argument("--train-budget", type=float, default=360.0,
                   help="seconds of training time at most (default 360: 6 minutes)")
    p.set_defaults(func=command_demo)


def command_demo(args: argparse.Namespace) -> int:
    """``demo [--workdir DIR] [--cases N] [--test-cases M] [--seed S] [--epochs E] [--train-budget SECONDS] [--channels C]``.

    Returns 0.

    Raises:
        RuntimeError: a step ended with a non-zero exit status.
    """
    from pipeline.planning.plans import load_plans, write_plans
    from pipeline.planning.cpu_budget import cpu_budget_plans

    workdir = Path(args.workdir).resolve()
    data_dir, datalist = workdir / "data", workdir / "datalist.json"
    run_dir, predictions = workdir / "unetplusplus", workdir / "predictions"
    steps: list[tuple[str, float]] = []

    def step(name: str, status: int, started: float) -> None:
        steps.append((name, time.perf_counter() - started))
        if status != 0:
            raise RuntimeError(f"demo: step {name!r} failed with exit status {status}")

    started = time.perf_counter()
    step("synth", synth.command_synth(argparse.Namespace(
        out=str(data_dir), cases=args.cases, test_cases=args.test_cases, seed=args.seed, overwrite=True)), started)

    started = time.perf_counter()
    step("prepare (fingerprint, plans)", prepare.command_prepare(argparse.Namespace(
        root=str(data_dir), layout="auto", out=str(datalist), folds=5, seed=args.seed, profile=None,
        channels=args.channels, skip_incomplete=False, fingerprint_dir=None)), started)

    demo_plans = write_plans(cpu_budget_plans(load_plans(workdir / "plans.json")), workdir / "demo_plans.json")
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own previous run: start afresh, do not resume
    started = time.perf_counter()
    step("train UNet++", train.command_train(argparse.Namespace(
        bundle=str(DEMO_BUNDLE), datalist=str(datalist), fold=0, epochs=args.epochs, output=str(run_dir),
        plans=str(demo_plans), postprocessing="none",
        set=["learning_rate=0.003", f"val_interval={args.epochs}", f"time_budget_s={args.train_budget}"])), started)

    started = time.perf_counter()
    step("fit post-processing", postprocess.command_postprocess(argparse.Namespace(
        bundle=str(DEMO_BUNDLE), datalist=str(datalist), model=str(run_dir), fold=0, tta=False, set=None)), started)

    started = time.perf_counter()
    step("predict test split", predict.command_predict(argparse.Namespace(
        bundle=str(DEMO_BUNDLE), input=str(datalist), output=str(predictions), format="nifti", name="demo",
        split="testing", checkpoint=str(run_dir / "models" / "last.pt"), probabilities=False, overwrite=True,
        set=None, plans=None, postprocessing=None)), started)

    started = time.perf_counter()
    step("evaluate + report", evaluate.command_evaluate(argparse.Namespace(
        pred=str(predictions), truth=str(data_dir / GROUND_TRUTH_FOLDER), out=str(workdir / "eval" / "metrics.csv"),
        baseline="threshold", images=str(datalist), report=str(workdir / "report"),
        logs=[str(run_dir / "eval")], tolerance_mm=0.01)), started)

    summary = json.loads((workdir / "eval" / "metrics_summary.json").read_text())
    print("\ndemo: what ran")
    for name, seconds in steps:
        print(f"  {name:<30} {seconds:7.1f} s")
    print(f"  total                          {sum(s for _, s in steps):7.1f} s")
    model = summary["dice_difference"]["model_mean_dice"]
    rule = summary["dice_difference"]["threshold_mean_dice"]
    print(f"\ndemo: mean Dice on the {args.test_cases} held-out test cases: UNet++ {model:.3f}, "
          f"clinical threshold rule {rule:.3f} (difference {model - rule:+.3f})")
    print(f"  outputs under {workdir}/: data/, datalist.json, plans.json, unetplusplus/ (models, logs, "
          "postprocessing.json, validation/), "
          "predictions/, eval/, report/report.md")
    return 0
