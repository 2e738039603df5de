"""Experiment tracking of ``python -m pipeline train --tracking mlflow``: MONAI's own bundle tracking.

``train`` passes ``--tracking configs/tracking/mlflow.json`` to ``python -m monai.bundle run``, which adds an
``MLFlowHandler`` to the trainer (``train#trainer``, its ``train#handlers``) and one to the validator
(``validate#evaluator``, its ``validate#handlers``). The settings file is MONAI's ``DEFAULT_MLFLOW_SETTINGS``
(``monai/bundle/utils.py``) plus what MONAI's defaults leave out: the run's parameters (learning rate, epochs,
patch size, channels, network...), and the best checkpoint (``models/model.pt``) and the trained plans as
artifacts. The trainer's handler logs the training loss and learning rate per iteration, the validator's the
validation mean Dice (``val_mean_dice``) per validation, at the trainer's epoch; only rank 0 logs
(``is_not_rank0`` disables both handlers on the other ranks, and :func:`pipeline.distributed.handlers_for_rank`
drops any ``MLFlowHandler`` there too).

The store defaults to a local SQLite database in the run's log folder (``<output>/eval/mlruns.db``, artifacts in
``<output>/eval/mlruns/``; MLflow 3 no longer takes a plain folder as its store). Every value is written on
the printed command line (store, experiment, run name, the file the executed config is saved to), so that the
line reruns as it ran.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.bundles import PROJECT_ROOT
from pipeline.errors import MissingExtraError

# The MLflow settings that ``--tracking mlflow`` gives ``monai.bundle run``.
MLFLOW_SETTINGS = PROJECT_ROOT / "configs" / "tracking" / "mlflow.json"
TRACKING_BACKENDS = ("mlflow",)
TRACKING_EXTRA = 'pip install -e ".[tracking]"'
STORE_NAME = "mlruns.db"


def mlflow_installed() -> bool:
    """True when ``mlflow`` can be imported by this interpreter (the one that runs the bundle)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["mlflow"] is None (import blocked)
        return False


def check_tracking_available(backend: str) -> None:
    """Raise :class:`MissingExtraError` when the package of ``--tracking BACKEND`` is missing."""
    if backend == "mlflow" and not mlflow_installed():
        raise MissingExtraError(f"--tracking mlflow needs the mlflow package, which is not installed: install the "
                                f"project's tracking extra with `{TRACKING_EXTRA}` (in the project folder)")


def sqlite_uri(path: str | Path) -> str:
    """The SQLite URI of a database file (made absolute), as MLflow takes it."""
    from monai.utils import path_to_sqlite_uri

    return path_to_sqlite_uri(Path(path).expanduser().resolve())


def store_uri(uri: str, what: str = "--tracking-uri") -> str:
    """A tracking URI as the bundle run needs it: a relative ``sqlite:///PATH`` is made absolute (the bundle
    runs from the project root, not from where ``train`` was called).

    Raises:
        ValueError: a plain path or a ``file:`` URI (MLflow 3 refuses the file store).
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return sqlite_uri(uri[len("sqlite:///"):])
    if "://" not in uri or uri.startswith("file:"):
        raise ValueError(f"{what} {uri!r}: not a tracking store URI; MLflow 3 no longer takes a folder "
                         "(file store): give a database such as sqlite:///runs/mlruns.db or a server such as "
                         "http://127.0.0.1:5000")
    return uri


def _fire_string(value: str) -> str:
    """``value`` written so that ``monai.bundle``'s command line (python-fire) reads it back as this string
    (``2024`` would be read as a number, ``None`` as None)."""
    from fire.parser import DefaultParseValue

    return value if DefaultParseValue(value) == value else json.dumps(value)


def tracking_overrides(args, bundle: Path, logs: Path) -> list[tuple[str, Any]]:
    """The ``monai.bundle run`` arguments of ``--tracking``, ``--tracking-uri`` and ``--experiment`` (none without
    ``--tracking``).

    Args:
        args: the parsed ``train`` arguments (``tracking``, ``tracking_uri``, ``experiment`` may be absent).
        bundle: the bundle folder (its name is the default experiment).
        logs: the run's log folder (``eval/``), where the default store and the executed config go.

    Raises:
        ValueError: ``--tracking-uri`` or ``--experiment`` without ``--tracking``; a ``--tracking-uri`` that is
            not a store URI, or that ``MLFLOW_TRACKING_URI`` (which MLflow prefers) contradicts; a
            ``MLFLOW_TRACKING_URI`` that is not a store URI or is a relative ``sqlite:///`` path.
        MissingExtraError: mlflow is not installed.
    """
    backend = getattr(args, "tracking", None)
    uri, experiment = getattr(args, "tracking_uri", None), getattr(args, "experiment", None)
    if backend is None:
        given = [flag for flag, value in (("--tracking-uri", uri), ("--experiment", experiment)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)} without --tracking: tracking is off; add --tracking mlflow")
        return []
    if backend not in TRACKING_BACKENDS:
        raise ValueError(f"--tracking {backend!r}: the one tracking backend is {', '.join(TRACKING_BACKENDS)}")
    check_tracking_available(backend)
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env and store_uri(from_env, "MLFLOW_TRACKING_URI") != from_env:
        # MLflow in the bundle run reads the variable itself, from the project root
        raise ValueError(f"MLFLOW_TRACKING_URI={from_env} is relative to the current folder, but the bundle runs "
                         f"from the project root: make it absolute ({store_uri(from_env)})")
    if uri:
        uri = store_uri(uri)
        if from_env and from_env != uri:
            raise ValueError(f"--tracking-uri {uri} and MLFLOW_TRACKING_URI={from_env} disagree, and MLflow would "
                             "log to the variable's: unset MLFLOW_TRACKING_URI or leave out --tracking-uri")
    else:
        uri = from_env or sqlite_uri(logs / STORE_NAME)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    name = Path(args.output).resolve().name if getattr(args, "output", None) else bundle.name
    return [
        ("tracking", str(MLFLOW_SETTINGS)),
        ("tracking_uri", uri),
        ("experiment_name", _fire_string(experiment or bundle.name)),
        ("run_name", _fire_string(f"{name}_fold{args.fold}_{stamp}")),
        # MONAI would write the executed config but log it only when output_dir is an expression: name the file
        ("save_execute_config", str(logs / f"config_{stamp}.json")),
    ]


def describe_tracking(command: list[str]) -> str | None:
    """One line on where a ``monai.bundle run`` command line tracks its run and how to look at it (``None``
    when it does not track)."""
    if "--tracking" not in command:
        return None
    values = {key[2:]: value for key, value in zip(command, command[1:]) if key.startswith("--")}
    uri = values.get("tracking_uri", "")
    look = f"; look at it with `mlflow ui --backend-store-uri {uri}`" if uri.startswith("sqlite:") else ""
    return (f"train: MLflow tracking (rank 0): experiment {values.get('experiment_name')}, run "
            f"{values.get('run_name')}, in {uri}{look}")
