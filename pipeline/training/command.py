"""``python -m pipeline train``: a thin wrapper over a bundle's train config.

It reads the datalist (for the dataset profile and the channel order) and, when given, the plans,
turns them into config overrides, prints the exact ``python -m monai.bundle run ...`` line and runs
it. Everything the run needs is declared in the bundle's ``configs/train.json``.

What makes a run safe to interrupt and repeat (:func:`run_train`): bad input is refused before the bundle starts
(:func:`pipeline.training.inputs.check_training_inputs`); one run at a time holds a checkpoint folder
(:class:`pipeline.training.lock.TrainingLock`, stale locks of dead runs are taken over) and clears the temporaries
an interrupted run left there; SIGTERM and Ctrl-C are passed on to the bundle run, whose training step
(:func:`pipeline.training.trainer.run_training`) stops after the current iteration with its final checkpoint, so
that the same command resumes; a run that fails before any checkpoint leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command
from pipeline.data.datalist import ALL_FOLDS
from pipeline.planning.bundle_settings import TRAINED_PLANS, plan_overrides, trained_plans, training_plans_path
from pipeline.training.inputs import _check_resumable_with, _read_datalist, check_training_inputs
from pipeline.training.lock import TrainingLock
from pipeline.training.tracking import describe_tracking, tracking_overrides


def train_command(args, datalist: Mapping[str, Any] | None = None) -> list[str]:
    """The ``monai.bundle run`` command line of ``python -m pipeline train`` (see :func:`run_train`).

    Args:
        args: the parsed ``train`` arguments.
        datalist: the datalist's content when already read (e.g. by :func:`check_training_inputs`).

    Raises:
        FileNotFoundError: no such bundle, datalist or plans file.
        ValueError: a malformed datalist (named) or override; tracking flags without ``--tracking``, or a bad
            ``--tracking-uri`` (see :func:`pipeline.training.tracking.tracking_overrides`).
        pipeline.errors.MissingExtraError: ``--tracking mlflow`` without the mlflow package.
    """
    bundle = check_bundle(args.bundle, "train.json")
    datalist_path = Path(args.datalist).resolve()
    if datalist is None:
        datalist = _read_datalist(datalist_path)
    settings: list[tuple[str, object]] = [
        ("datalist", str(datalist_path)),
        ("fold", args.fold if args.fold == ALL_FOLDS else int(args.fold)),
        ("channels", list(datalist.get("channels") or [])),
    ]
    if args.epochs is not None:
        settings.append(("epochs", int(args.epochs)))
    if args.output:
        output = Path(args.output).resolve()
        settings += [("ckpt_dir", str(output / "models")), ("output_dir", str(output / "eval"))]
    settings += plan_overrides(training_plans_path(args.plans, datalist_path),
                               configuration=getattr(args, "configuration", None))
    settings += parse_overrides(args.set)
    settings += tracking_overrides(args, bundle, log_dir(args))
    return bundle_command(bundle, "train.json", profile_path(datalist), settings)


def checkpoint_dir(args) -> Path:
    """Where the training run of ``args`` writes its checkpoints: ``--set ckpt_dir=...``, else ``OUTPUT/models``,
    else the bundle's own ``models/``."""
    overridden = [value for key, value in parse_overrides(getattr(args, "set", None)) if key == "ckpt_dir"]
    if overridden:
        return Path(overridden[-1]).resolve()
    if args.output:
        return Path(args.output).resolve() / "models"
    return Path(args.bundle).resolve() / "models"


def log_dir(args) -> Path:
    """Where the training run of ``args`` writes its logs (``eval/``, the bundle's ``output_dir``)."""
    overridden = [value for key, value in parse_overrides(getattr(args, "set", None)) if key == "output_dir"]
    if overridden:
        return Path(overridden[-1]).resolve()
    return (Path(args.output).resolve() if args.output else Path(args.bundle).resolve()) / "eval"


def _checkpoint_stamps(models: Path) -> dict[str, int]:
    """``name -> mtime`` of the checkpoint files in ``models`` (temporary files left out)."""
    if not models.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in models.glob("*.pt") if p.is_file() and not p.name.startswith(".")}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def _signal_name(status: int) -> str | None:
    """The signal that ended a bundle run: exit status 128+N (a clean stop) or -N (killed by it)."""
    number = -status if status < 0 else status - 128 if 128 < status < 160 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _undo_failed_run(plans_file: Path, previous_plans: bytes | None, created: Sequence[Path]) -> list[str]:
    """Undo a failed run that wrote no checkpoint: its trained plans (the previous ones are put back) and the
    folders it created (removed whole; folders that must be empty by now, such as the checkpoint folder, are left
    to :func:`_remove_if_empty`)."""
    from pipeline.io import atomic_path

    undone = []
    if previous_plans is None:
        if plans_file.is_file():
            plans_file.unlink()
            undone.append(str(plans_file))
    elif plans_file.is_file() and plans_file.read_bytes() != previous_plans:
        with atomic_path(plans_file) as tmp:
            tmp.write_bytes(previous_plans)
        undone.append(f"{plans_file} (the previous one put back)")
    for folder in created:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            undone.append(f"{folder}{os.sep}")
    return undone


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def run_train(args) -> int:
    """Train a bundle on one fold of a datalist; returns the exit status of the bundle run.

    Before anything is written, the inputs are checked (:func:`check_training_inputs`, the plans, that the
    checkpoints to resume are of the same network) and the checkpoint folder is locked (:class:`TrainingLock`:
    a second run in the same folder refuses, with exit status 2). Holding the lock, the run clears the temporary
    files an interrupted run left in its checkpoint folder, and, with ``--plans``, writes the plans beside the
    checkpoints (``models/trained_plans.json``) so that ``predict`` rebuilds the same network. The plans are
    ``--plans``, else the ``plans.json`` that ``prepare`` wrote beside the datalist
    (:func:`pipeline.planning.bundle_settings.training_plans_path`); ``--plans none`` trains with the bundle's own.

    A run that fails before writing any checkpoint leaves nothing behind: its trained plans (the previous ones
    are restored) and the folders it created are removed. SIGTERM or Ctrl-C stop the bundle run after the current
    iteration with its final checkpoint (``last.pt``); the same command then resumes. Exit status: the bundle
    run's; 128+N after signal N (143 for SIGTERM, 130 for Ctrl-C).

    Raises:
        FileNotFoundError, ValueError, pipeline.errors.CaseError: bad input (see :func:`check_training_inputs`),
            or another run holds the folder (:class:`TrainingLockedError`).
    """
    from pipeline.training.checkpoints import latest_checkpoint, remove_stale_checkpoint_temporaries

    check_bundle(args.bundle, "train.json")
    datalist = check_training_inputs(args.datalist, args.fold)
    plans = trained_plans(args)
    command = train_command(args, datalist)
    models, logs = checkpoint_dir(args), log_dir(args)
    output = Path(args.output).resolve() if args.output else None
    print(f"train: {Path(args.bundle).name}, fold {args.fold} of {args.datalist}")
    used = training_plans_path(args.plans, args.datalist)
    configuration = f", configuration {plans['configuration']}" if plans and plans.get("configuration") else ""
    if used is not None and args.plans is None:
        print(f"train: with the plans beside the datalist, {used}{configuration} (--plans none trains with the "
              "bundle's settings)")
    elif used is not None:
        print(f"train: with the plans {used}{configuration}")
    else:
        print("train: with the bundle's own network and patch settings (no plans)")
    tracked = describe_tracking(command)
    if tracked:
        print(tracked)
    # the folders this run creates: removed again if it fails before writing any checkpoint
    created = [folder for folder in dict.fromkeys([output, models, logs]) if folder is not None and not folder.exists()]
    with TrainingLock(models) as lock:
        if lock.taken_over:
            print(f"train: took over the stale lock of {lock.describe(lock.taken_over)}, which no longer runs")
        removed = remove_stale_checkpoint_temporaries(models)
        if removed:
            print(f"train: removed {len(removed)} temporary file(s) that an interrupted run left in {models}: "
                  + ", ".join(p.name for p in removed))
        _check_resumable_with(plans, models, args)
        before = _checkpoint_stamps(models)
        plans_file = models / TRAINED_PLANS
        previous_plans = plans_file.read_bytes() if plans_file.is_file() else None
        if plans is not None:
            from pipeline.planning.plans import write_plans

            write_plans(plans, plans_file)
        status = run_command(command, pass_fds=[lock.fd], on_start=lambda child: lock.record_child(child.pid),
                             condense_tracebacks=not getattr(args, "debug", False))
        nothing_written = status != 0 and _checkpoint_stamps(models) == before
        undone = []
        if nothing_written:
            undone = _undo_failed_run(plans_file, previous_plans, [f for f in created if f not in (output, models)])
    if nothing_written:  # now that the lock file is gone, the folders this run created are empty
        undone += [f"{folder}{os.sep}" for folder in (models, output) if folder in created and _remove_if_empty(folder)]
    if status == 0:
        return 0
    latest = latest_checkpoint(models) if models.is_dir() else None
    if latest is not None:
        resume = f"the last complete checkpoint is {latest}: run the same command again to resume from it"
    else:
        resume = "no checkpoint was written, so the same command starts afresh"
    cleaned = f"; removed what it had written ({', '.join(undone)})" if undone else ""
    name = _signal_name(status)
    if name in ("SIGTERM", "SIGINT", "SIGHUP"):
        print(f"train: stopped by {name}{cleaned}; {resume}", file=sys.stderr)
        return 128 + int(signal.Signals[name])
    if name is not None:
        print(f"error: the training run was killed by {name}{cleaned}; {resume}", file=sys.stderr)
        return 128 + int(signal.Signals[name])
    print(f"error: training failed (the bundle run exited with status {status}; its log above says why){cleaned}; "
          f"{resume}", file=sys.stderr)
    return status
