"""The one translation of plans into bundle settings, and the plans a run was trained with (``trained_plans.json``).

``train`` uses the ``plans.json`` beside the datalist, or ``--plans`` (:func:`training_plans_path`), and turns it
into bundle config overrides (:func:`plan_overrides`, the config ids of
:data:`PLANNED_KEYS`) and writes the plans it trains with, its ``--set`` overrides applied
(:func:`trained_plans`), beside the checkpoints as :data:`TRAINED_PLANS`. ``predict`` reads them back from
there (:data:`ARCHITECTURE_KEYS`, :func:`trained_network_overrides`) so that it rebuilds the trained network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.bundles import parse_overrides

# bundle config ids that ``--plans`` sets, each from the plans key of the same name except where PLAN_SOURCES says
PLANNED_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "batch_size", "pixdim")
# the ones inference must use too (``predict`` passes them from the checkpoint's trained_plans.json): the
# network's architecture, the voxel spacing (``pixdim``) it was trained at, and its training patch, which sets the
# inference window (an instance-normalised network depends on the window it sees).
ARCHITECTURE_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "pixdim")
# config id -> plans key where they differ: ``pixdim`` (MONAI ``Spacingd``; 0 keeps an axis) is the plans'
# ``resample_pixdim``
PLAN_SOURCES = {"pixdim": "resample_pixdim"}
# the plans a run was trained with, kept beside its checkpoints
TRAINED_PLANS = "trained_plans.json"
# the plans ``prepare`` writes beside the datalist, which ``train`` uses unless ``--plans`` says otherwise
PLANS_FILE = "plans.json"
# ``train --plans none``: the bundle's own settings, even when there are plans beside the datalist
NO_PLANS = "none"
# ``--set network_def#...`` overrides of a training run, kept in its trained plans under this key for ``predict``
NETWORK_DEF_PREFIX = "network_def#"
NETWORK_OVERRIDES = "network_overrides"


def plan_overrides(plans_path: str | Path | None, keys: tuple[str, ...] = PLANNED_KEYS,
                   configuration: str | None = None) -> list[tuple[str, object]]:
    """Config overrides taken from a plans file.

    Args:
        plans_path: a ``plans.json``; ``None`` gives no overrides.
        keys: config ids to set (by default :data:`PLANNED_KEYS`: ``patch_size``, ``strides``,
            ``kernel_sizes``, ``features``, ``batch_size``, ``pixdim``), each from the plans key of the same
            name or the one :data:`PLAN_SOURCES` names (``pixdim`` from ``resample_pixdim``).
        configuration: one of the configurations the plans hold (e.g. ``2d``); None for their default.

    Returns:
        ``(config id, value)`` pairs for the keys the plans hold.

    Raises:
        FileNotFoundError: no such plans file.
        ValueError: an unreadable plans file, or one without ``configuration``.
    """
    if plans_path is None:
        return []
    from pipeline.planning.plans import load_plans

    plans = load_plans(plans_path, configuration)
    return [(key, plans[PLAN_SOURCES.get(key, key)]) for key in keys if PLAN_SOURCES.get(key, key) in plans]


def trained_network_overrides(plans_path: str | Path) -> list[tuple[str, str]]:
    """The ``network_def#...`` overrides a run was trained with (e.g. ``network_def#norm=batch``), from its
    trained plans, as ``(config id, value)`` pairs in the form they were given on the command line.

    Raises:
        FileNotFoundError: no such plans file.
        ValueError: the plans file is not valid plans JSON.
    """
    from pipeline.planning.plans import load_plans

    return [(str(k), str(v)) for k, v in (load_plans(plans_path).get(NETWORK_OVERRIDES) or {}).items()]


def training_plans_path(plans: str | Path | None, datalist: str | Path) -> Path | None:
    """The plans a ``train`` run uses: ``--plans`` when given, else the ``plans.json`` that ``prepare`` wrote beside
    the datalist (:data:`PLANS_FILE`), when there is one; ``--plans none`` (:data:`NO_PLANS`): the bundle's defaults.

    Args:
        plans: the ``--plans`` value (a path, ``"none"`` or ``None``).
        datalist: the run's datalist.

    Returns:
        The plans file, or ``None`` for the bundle's own settings.
    """
    if plans is None:
        beside = Path(datalist).resolve().parent / PLANS_FILE
        return beside if beside.is_file() else None
    if str(plans).strip().lower() == NO_PLANS:
        return None
    return Path(plans)


def trained_plans(args) -> dict[str, Any] | None:
    """The plans a run of ``args`` trains with (:func:`training_plans_path`, with the run's ``--set`` overrides
    applied), as written to ``models/trained_plans.json``; ``None`` when it trains with the bundle's settings.

    Args:
        args: the parsed ``train`` arguments (``plans``, ``datalist``, ``set``, ``configuration``).

    Returns:
        The plans, or ``None``.

    Raises:
        FileNotFoundError, ValueError: no such plans file, or an unreadable one; a ``--configuration`` the plans do
            not hold, or one without plans; a ``--set`` of a planned key whose value is not JSON.
    """
    path = training_plans_path(args.plans, args.datalist)
    configuration = getattr(args, "configuration", None)
    if path is None:
        if configuration is not None:
            raise ValueError(f"--configuration {configuration} needs plans: run prepare (it writes plans.json beside "
                             "the datalist) or give --plans")
        return None
    from pipeline.planning.plans import load_plans

    plans = load_plans(path, configuration)
    for key, value in parse_overrides(args.set):
        if key in PLANNED_KEYS:  # the run's --set wins over the plans: keep what was really trained
            try:
                plans[PLAN_SOURCES.get(key, key)] = json.loads(value)
            except ValueError:
                raise ValueError(f"--set {key}={value}: the value must be JSON, e.g. {key}=[64,64,2]") from None
        elif key.startswith(NETWORK_DEF_PREFIX):  # e.g. network_def#norm=batch: predict must build the same
            plans.setdefault(NETWORK_OVERRIDES, {})[key] = value
    return plans
