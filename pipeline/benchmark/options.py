"""What ``python -m pipeline benchmark`` measures and where it writes: :class:`BenchmarkOptions`, their reading
from the parsed arguments, and the command line that repeats a run."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = PROJECT_ROOT / "bundles" / "isles_unetplusplus"
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results.md"
# enough test cases that the Dice rows tell methods apart by more than the draw of the cases does
DEFAULT_TEST_CASES = 32


@dataclass
class BenchmarkOptions:
    """What ``python -m pipeline benchmark`` measures and where it writes.

    Attributes:
        out: the Markdown file written (default ``benchmarks/results.md`` of the project).
        quick: tiny sizes and one repeat (a smoke run; the figures mean nothing).
        repeats: repeats of every timed row (medians are reported); default 3, 1 with ``quick``.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: trained weights (a bundle checkpoint with a ``model`` entry, or a bare state dict);
            None trains a small UNet++ through the bundle first.
        plans: the plans the checkpoint was trained with; default ``trained_plans.json`` beside it.
        workdir: where the synthetic data and the training run go; None uses a temporary folder.
        cases: synthetic training cases (default 24 when training, 8 with a checkpoint; 3 with ``quick``).
        test_cases: synthetic test cases with ground truth for the Dice rows (default 32; 2 with ``quick``):
            on fewer, Dice differences of a few hundredths between methods are within the noise of the draw.
        seed: seed of the synthetic data (default 1: other patients than the demo's seed 0).
        train_budget: seconds of training (default 300 when training the model, 60 when a checkpoint is given
            and training is only timed; one epoch with ``quick``).
        bundle: the UNet++ bundle folder.
    """

    out: Path = DEFAULT_OUT
    quick: bool = False
    repeats: int | None = None
    device: str = "auto"
    checkpoint: Path | None = None
    plans: Path | None = None
    workdir: Path | None = None
    cases: int | None = None
    test_cases: int | None = None
    seed: int = 1
    train_budget: float | None = None
    bundle: Path = DEFAULT_BUNDLE

    def resolved_repeats(self) -> int:
        """Repeats of every timed row: ``repeats``, else 1 with ``quick`` and 3 otherwise."""
        return int(self.repeats) if self.repeats is not None else (1 if self.quick else 3)

    def resolved_cases(self) -> tuple[int, int]:
        """(training cases, test cases) of the synthetic dataset."""
        cases = self.cases if self.cases is not None else (3 if self.quick else (8 if self.checkpoint else 24))
        tests = self.test_cases if self.test_cases is not None else (2 if self.quick else DEFAULT_TEST_CASES)
        return int(cases), int(tests)

    def resolved_train_budget(self) -> float | None:
        """Seconds of training: None (one epoch) with ``quick``, else ``train_budget`` or its default."""
        if self.quick and self.train_budget is None:
            return None
        if self.train_budget is not None:
            return float(self.train_budget)
        return 60.0 if self.checkpoint else 300.0


def options_from_args(args: argparse.Namespace) -> BenchmarkOptions:
    """The :class:`BenchmarkOptions` of the arguments of ``python -m pipeline benchmark`` (its sub-command parser).

    Args:
        args: the parsed arguments (``out``, ``quick``, ``repeats``, ``device``, ``checkpoint``, ``plans``,
            ``workdir``, ``cases``, ``test_cases``, ``seed``, ``train_budget``, ``bundle``; None for defaults).

    Returns:
        The options.

    Raises:
        ValueError: ``--repeats`` below 1.
        FileNotFoundError: a ``--checkpoint`` that is not a file.
    """
    options = BenchmarkOptions(
        out=Path(args.out) if args.out else DEFAULT_OUT, quick=bool(args.quick), repeats=args.repeats, device=args.device,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None, plans=Path(args.plans) if args.plans else None,
        workdir=Path(args.workdir) if args.workdir else None, cases=args.cases, test_cases=args.test_cases,
        seed=int(args.seed), train_budget=args.train_budget, bundle=Path(args.bundle) if args.bundle else DEFAULT_BUNDLE,
    )
    if options.resolved_repeats() < 1:
        raise ValueError(f"--repeats must be at least 1, got {options.repeats}")
    if options.checkpoint is not None and not options.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(options.checkpoint)!r} not found")
    return options


def command_line(options: BenchmarkOptions) -> str:
    """The ``python -m pipeline benchmark ...`` line that repeats this run (options that differ from the defaults).

    Args:
        options: the run's options.

    Returns:
        One shell-quoted line.
    """
    words = ["python", "-m", "pipeline", "benchmark"]
    default = BenchmarkOptions()
    if options.quick:
        words.append("--quick")
    for name in ("repeats", "cases", "test_cases", "seed", "train_budget"):
        value = getattr(options, name)
        if value is not None and value != getattr(default, name):
            words += [f"--{name.replace('_', '-')}", str(value)]
    if options.device != default.device:
        words += ["--device", options.device]
    for name in ("checkpoint", "plans", "workdir"):
        value = getattr(options, name)
        if value is not None:
            words += [f"--{name}", _display_path(value)]
    if Path(options.bundle).resolve() != DEFAULT_BUNDLE:
        words += ["--bundle", _display_path(options.bundle)]
    if Path(options.out).resolve() != DEFAULT_OUT:
        words += ["--out", _display_path(options.out)]
    return shlex.join(words)


def _display_path(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
