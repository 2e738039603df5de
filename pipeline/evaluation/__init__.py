"""Score a folder of predicted masks against the ground truth: per-case metrics, summary, clinical table.

Predictions are paired with truth cases by file name:

- ``<case_id>.nii.gz`` (or ``.nii``, ``.mha``, ``.nrrd``): the case id;
- ``SMIR.<name>.<ID>.nii``: the ISLES 2018 submission name, ID being the SMIR id of the case's CT_MTT
  folder (the datalist's ``smir_id``, or ``mtt_id`` in the synthetic ``TESTING_GROUND_TRUTH/cases.csv``);
- ``<sub>_ses-XXXX_msk.nii.gz`` (ISLES 2022): the subject, or ``<sub>_<ses>`` for multi-session subjects.

The truth is a datalist JSON (labelled records of both splits), a flat folder of ``<case_id>`` masks,
a dataset root in a known layout (its labelled cases, plus ``TESTING_GROUND_TRUTH/`` when present),
or the synthetic ``TESTING_GROUND_TRUTH`` folder itself. A prediction without truth and a truth without
prediction are listed (rows with status ``no_truth`` / ``no_prediction``) and warned about; a case that
cannot be scored (another grid, unreadable file, a mask whose values are not {0, 1}) is a failure naming
its files, and the others go on.

Which files are predictions: image files (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``) under ``--pred``;
``manifest.csv``, ``failures.csv``, ``*_probabilities.npz`` and hidden files (``.``-names, the partial
files of atomic writes) never are. When the folder holds ``predict``'s ``manifest.csv``, only the files it
lists as ``written`` are scored: any other prediction file (a stale result of an older run, a file copied
in) is refused by name (status ``refused``), a case the manifest lists as ``failed`` is a failed case,
and a listed file that is missing is an error. Without a manifest every prediction file is scored, with a
warning that nothing tells which run wrote them.

Splits: a datalist or dataset root holds training and test cases that may share a case id
(ISLES 2018's ``case_1``...). A prediction is paired with the record of the split its name matches; when
its name matches a record of each split, the split of the run decides (the one split that the other
predictions, and the manifest's cases, match on their own); when that is not known the prediction is
refused, naming both records, so that a test prediction is never scored against a training label.

Where each part lives:

- :mod:`~pipeline.evaluation.cases`: :class:`EvaluationCase`, :func:`read_volume`, which file names are images;
- :mod:`~pipeline.evaluation.truth`: the four truth sources (datalist, ``TESTING_GROUND_TRUTH`` folder, dataset
  layout, folder of masks), the profile's label values, :func:`load_cases`, :func:`load_truth_records`,
  :func:`load_truth_cases`;
- :mod:`~pipeline.evaluation.selection`: which files of the prediction folder are scored, after its manifest
  (:func:`find_predictions`, :class:`Selection`, :func:`select_predictions`);
- :mod:`~pipeline.evaluation.pairing`: the names a prediction goes by, pairing with the truth cases and the
  run's split (:func:`prediction_names`, :func:`resolve_prediction`, :class:`Pairing`, :func:`pair_predictions`,
  :func:`infer_run_split`);
- :mod:`~pipeline.evaluation.scoring`: reading masks and maps, grid checks, the per-case and clinical rows;
- :mod:`~pipeline.evaluation.summary`: :func:`summarize` (statistics per method and metric), :func:`format_summary`;
- :mod:`~pipeline.evaluation.result`: :class:`EvaluationResult` and the CSV columns;
- :mod:`~pipeline.evaluation.outputs`: :func:`output_paths`, :func:`write_outputs`, :func:`load_result`;
- :mod:`~pipeline.evaluation.evaluate`: :func:`evaluate_predictions`, :func:`nothing_to_score_message`.

The file-name conventions themselves (written and parsed) are in :mod:`pipeline.formats`.
"""

from __future__ import annotations

from pipeline.evaluation.cases import EvaluationCase, is_prediction_name, read_volume
from pipeline.evaluation.evaluate import BASELINES, evaluate_predictions, nothing_to_score_message
from pipeline.evaluation.outputs import load_result, output_paths, write_outputs
from pipeline.evaluation.pairing import (
    PREDICTION_PATTERNS, Pairing, describe_record, infer_run_split, pair_predictions, prediction_names,
    resolve_prediction,
)
from pipeline.evaluation.result import CLINICAL_COLUMNS, METHODS, ROW_COLUMNS, EvaluationResult
from pipeline.evaluation.selection import Selection, find_predictions, select_predictions
from pipeline.evaluation.summary import SHOWN_METRICS, format_summary, summarize
from pipeline.evaluation.truth import (
    GROUND_TRUTH_CSV, GROUND_TRUTH_FOLDER, datalist_label_values, load_cases, load_truth_cases, load_truth_records,
)

__all__ = [
    "BASELINES",
    "CLINICAL_COLUMNS",
    "GROUND_TRUTH_CSV",
    "GROUND_TRUTH_FOLDER",
    "METHODS",
    "PREDICTION_PATTERNS",
    "ROW_COLUMNS",
    "SHOWN_METRICS",
    "EvaluationCase",
    "EvaluationResult",
    "Pairing",
    "Selection",
    "datalist_label_values",
    "describe_record",
    "evaluate_predictions",
    "find_predictions",
    "format_summary",
    "infer_run_split",
    "is_prediction_name",
    "load_cases",
    "load_result",
    "load_truth_cases",
    "load_truth_records",
    "nothing_to_score_message",
    "output_paths",
    "pair_predictions",
    "prediction_names",
    "read_volume",
    "resolve_prediction",
    "select_predictions",
    "summarize",
    "write_outputs",
]
