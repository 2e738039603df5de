"""Prediction: ``python -m pipeline predict`` and the parts of the bundles' inference config.

- :mod:`pipeline.predict.names`: the output file name of each case per format, checked before a run.
- :mod:`pipeline.predict.writer`: :class:`SavePredictiond`, the transform that writes each mask on its reference grid.
- :mod:`pipeline.predict.publishing`: the prediction folder, its staging folder and the publishing of a run's results.
- :mod:`pipeline.predict.checkpoint`: the checkpoint checked against the configured network before a run.
- :mod:`pipeline.predict.weights`: :func:`ensemble_network` and :class:`EnsembleCheckpointLoader`, the config's
  network and its weights (one checkpoint, or the mean of several).
- :mod:`pipeline.predict.models`: :func:`resolve_checkpoints`, the checkpoints ``--checkpoint``/``--model`` name
  (files, a training run, a folder of fold runs).
- :mod:`pipeline.predict.engine`: :class:`ResilientEvaluator` over :class:`ResilientDataset`, the inference engine
  that records a bad case and goes on with the others.
- :mod:`pipeline.predict.command`: :func:`run_predict`, the command itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names for readers, type checkers and the export's vendoring (pipeline.export.vendoring)
    from pipeline.data.prepare import input_datalist
    from pipeline.predict.checkpoint import check_checkpoint, configured_network
    from pipeline.predict.command import run_predict
    from pipeline.predict.engine import CaseFailuresError, ResilientDataset, ResilientEvaluator, describe_failure
    from pipeline.predict.names import OUTPUT_FORMATS, TEAM_NAME, planned_output_names, prediction_filename
    from pipeline.predict.publishing import (
        STAGING_PREFIX, clear_stale_staging, existing_outputs, is_result_file, publish_results,
    )
    from pipeline.predict.weights import EnsembleCheckpointLoader, ensemble_network, load_weights
    from pipeline.predict.writer import SavePredictiond

# Each name's module, imported on first use (PEP 562): ``predict`` imports only what its checks need before it
# starts the bundle run, and the engine's, writer's and weights' imports (MONAI, seconds) happen in the bundle
# process, where the config names them.
_SOURCES = {
    "input_datalist": "pipeline.data.prepare",
    "check_checkpoint": "pipeline.predict.checkpoint",
    "configured_network": "pipeline.predict.checkpoint",
    "run_predict": "pipeline.predict.command",
    "CaseFailuresError": "pipeline.predict.engine",
    "ResilientDataset": "pipeline.predict.engine",
    "ResilientEvaluator": "pipeline.predict.engine",
    "describe_failure": "pipeline.predict.engine",
    "OUTPUT_FORMATS": "pipeline.predict.names",
    "TEAM_NAME": "pipeline.predict.names",
    "planned_output_names": "pipeline.predict.names",
    "prediction_filename": "pipeline.predict.names",
    "STAGING_PREFIX": "pipeline.predict.publishing",
    "clear_stale_staging": "pipeline.predict.publishing",
    "existing_outputs": "pipeline.predict.publishing",
    "is_result_file": "pipeline.predict.publishing",
    "publish_results": "pipeline.predict.publishing",
    "EnsembleCheckpointLoader": "pipeline.predict.weights",
    "ensemble_network": "pipeline.predict.weights",
    "load_weights": "pipeline.predict.weights",
    "SavePredictiond": "pipeline.predict.writer",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
