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

__all__ = [
    "OUTPUT_FORMATS", "STAGING_PREFIX", "TEAM_NAME", "CaseFailuresError", "ResilientDataset", "ResilientEvaluator",
    "SavePredictiond", "describe_failure", "check_checkpoint", "clear_stale_staging",
    "configured_network", "existing_outputs", "input_datalist", "is_result_file", "planned_output_names",
    "prediction_filename", "publish_results", "run_predict", "EnsembleCheckpointLoader", "ensemble_network", "load_weights",
]
