"""What an evaluation found: :class:`EvaluationResult`, and the columns of its per-case and clinical tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.evaluation.cases import EvaluationCase
from pipeline.metrics import METRIC_NAMES

METHODS = ("model", "threshold")
# Columns of the per-case CSV, in order.
ROW_COLUMNS = ("case_id", "method", "status", "prediction", "truth", *METRIC_NAMES, "error")
CLINICAL_COLUMNS = (
    "case_id", "prediction", "core_ml", "hypoperfusion_ml", "mismatch_ml", "mismatch_ratio",
    "truth_core_ml", "threshold_core_ml", "tmax",
)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_predictions` found.

    Attributes:
        rows: one dict per case and method with :data:`ROW_COLUMNS` (``status`` is ``ok``,
            ``failed``, ``no_truth``, ``no_prediction`` or ``refused``; metrics are NaN unless ``ok``).
        clinical: one dict per prediction whose case has a Tmax map, with :data:`CLINICAL_COLUMNS`.
        failures: ``{"case_id", "method", "files", "error"}`` for each case that could not be scored.
        unmatched_predictions: ``{"prediction", "reason"}`` for predictions with no truth case.
        missing_predictions: ``{"case_id", "truth"}`` for truth cases with no prediction.
        summary: the summary dict written as JSON (see :func:`summarize`).
        pairs: the scored ``(case, prediction file)`` pairs (the report draws them).
        files: what was written: ``metrics``, ``summary`` and ``clinical`` -> path.
        refused_predictions: ``{"prediction", "reason"}`` for prediction files that are not scored because
            they cannot be trusted: not written by the run the folder's manifest describes, or a name
            that fits records of several splits.
    """

    rows: list[dict[str, Any]]
    clinical: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    unmatched_predictions: list[dict[str, str]]
    missing_predictions: list[dict[str, str]]
    summary: dict[str, Any]
    pairs: list[tuple[EvaluationCase, Path]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    refused_predictions: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no case failed and no prediction was refused (files without truth do not count)."""
        return not self.failures and not self.refused_predictions

    def table(self, method: str | None = None) -> pd.DataFrame:
        """The rows as a DataFrame (of one method when given), columns in :data:`ROW_COLUMNS` order."""
        frame = pd.DataFrame(self.rows, columns=list(ROW_COLUMNS))
        return frame if method is None else frame[frame["method"] == method].reset_index(drop=True)
