"""The evaluation report: per-case overlay pictures, a markdown summary and training curves.

``report.md`` holds the metrics table (model and, when scored, the threshold rule), the per-case
table with links to the overlay PNGs, the clinical volumes, what could not be scored, and the
training curves. Pictures are drawn with matplotlib's Agg backend (no display needed).

Where each part lives:

- :mod:`~pipeline.report.overlays`: :func:`plot_case_overlay`, :func:`lesion_slice`, the maps and colours drawn;
- :mod:`~pipeline.report.curves`: :func:`read_training_scalars` (TensorBoard and CSV logs),
  :func:`plot_training_curves`;
- :mod:`~pipeline.report.markdown`: :func:`write_report` (``report.md``), :func:`safe_name`, the file names;
- :mod:`~pipeline.report.figures`: the Agg backend and atomic PNG saving.
"""

from __future__ import annotations

from pipeline.report.curves import plot_training_curves, read_training_scalars
from pipeline.report.markdown import CASES_FOLDER, CURVES_NAME, REPORT_NAME, safe_name, write_report
from pipeline.report.overlays import (
    PERFUSION_MAPS, PREDICTION_COLOUR, SKIPPED_MODALITIES, THRESHOLD_COLOUR, TRUTH_COLOUR, lesion_slice,
    plot_case_overlay,
)

__all__ = [
    "CASES_FOLDER",
    "CURVES_NAME",
    "PERFUSION_MAPS",
    "PREDICTION_COLOUR",
    "REPORT_NAME",
    "SKIPPED_MODALITIES",
    "THRESHOLD_COLOUR",
    "TRUTH_COLOUR",
    "lesion_slice",
    "plot_case_overlay",
    "plot_training_curves",
    "read_training_scalars",
    "safe_name",
    "write_report",
]
