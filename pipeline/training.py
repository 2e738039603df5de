"""``python -m pipeline train``: a thin wrapper over a bundle's train config.

It reads the datalist (for the dataset profile and the channel order) and, when given, the plans,
turns them into config overrides, prints the exact ``python -m monai.bundle run ...`` line and runs
it. Everything the run needs is declared in the bundle's ``configs/train.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command

# plans.json keys that are bundle config ids of the same name
PLANNED_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "batch_size")
# the ones that define the network, which inference must use too
ARCHITECTURE_KEYS = ("strides", "kernel_sizes", "features")
# the plans a run was trained with, kept beside its checkpoints
TRAINED_PLANS = "trained_plans.json"


def plan_overrides(plans_path: str | Path | None, keys: tuple[str, ...] = PLANNED_KEYS) -> list[tuple[str, object]]:
    """Config overrides taken from a plans file (by default ``patch_size``, ``strides``,
    ``kernel_sizes``, ``features``, ``batch_size``); none when ``plans_path`` is ``None``.

    Raises:
        FileNotFoundError: no such plans file.
    """
    if plans_path is None:
        return []
    from pipeline.data.plans import load_plans

    plans = load_plans(plans_path)
    return [(key, plans[key]) for key in keys if key in plans]


def train_command(args) -> list[str]:
    """The ``monai.bundle run`` command line of ``python -m pipeline train`` (see :func:`run_train`).

    Raises:
        FileNotFoundError: no such bundle, datalist or plans file.
        ValueError: a malformed override.
    """
    bundle = check_bundle(args.bundle, "train.json")
    datalist_path = Path(args.datalist).resolve()
    if not datalist_path.is_file():
        raise FileNotFoundError(f"datalist {str(datalist_path)!r} not found: run `python -m pipeline prepare` first")
    datalist = json.loads(datalist_path.read_text())
    settings: list[tuple[str, object]] = [
        ("datalist", str(datalist_path)),
        ("fold", int(args.fold)),
        ("channels", list(datalist.get("channels") or [])),
    ]
    if args.epochs is not None:
        settings.append(("epochs", int(args.epochs)))
    if args.output:
        output = Path(args.output).resolve()
        settings += [("ckpt_dir", str(output / "models")), ("output_dir", str(output / "eval"))]
    settings += plan_overrides(args.plans)
    settings += parse_overrides(args.set)
    return bundle_command(bundle, "train.json", profile_path(datalist), settings)


def checkpoint_dir(args) -> Path:
    """Where the training run of ``args`` writes its checkpoints."""
    if args.output:
        return Path(args.output).resolve() / "models"
    return Path(args.bundle).resolve() / "models"


def run_train(args) -> int:
    """Train a bundle on one fold of a datalist; returns the exit status of the bundle run.

    With ``--plans``, the plans are copied beside the checkpoints (``models/trained_plans.json``), so that
    ``predict`` rebuilds the same network from them.
    """
    command = train_command(args)
    print(f"train: {Path(args.bundle).name}, fold {args.fold} of {args.datalist}")
    if args.plans:
        from pipeline.data.plans import load_plans, write_plans

        plans = load_plans(args.plans)
        for key, value in parse_overrides(args.set):
            if key in PLANNED_KEYS:  # the run's --set wins over the plans: keep what was really trained
                plans[key] = json.loads(value)
        write_plans(plans, checkpoint_dir(args) / TRAINED_PLANS)
    return run_command(command)
