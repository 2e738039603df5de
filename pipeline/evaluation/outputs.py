"""The files of an evaluation: where they go, writing them atomically, and reading them back."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from pipeline.evaluation.cases import EvaluationCase
from pipeline.evaluation.result import CLINICAL_COLUMNS, ROW_COLUMNS, EvaluationResult
from pipeline.io import atomic_path, atomic_write_json


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    frame = pd.DataFrame(list(rows), columns=list(columns))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files written for ``--out metrics.csv``: ``metrics``, ``summary`` (``<stem>_summary.json``)
    and ``clinical`` (``<stem>_clinical.csv``), all beside it."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "metrics": out,
        "summary": out.with_name(f"{stem}_summary.json"),
        "clinical": out.with_name(f"{stem}_clinical.csv"),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(result: EvaluationResult, out: str | Path) -> dict[str, Path]:
    """Write the per-case CSV, the summary JSON and (when not empty) the clinical CSV, atomically.

    Args:
        result: what :func:`evaluate_predictions` returned.
        out: the per-case CSV path; the others go beside it (see :func:`output_paths`).

    Returns:
        The paths written (also stored in ``result.files``).
    """
    paths = output_paths(out)
    written = {"metrics": _write_csv(paths["metrics"], result.rows, ROW_COLUMNS)}
    if result.clinical:
        written["clinical"] = _write_csv(paths["clinical"], result.clinical, CLINICAL_COLUMNS)
    elif paths["clinical"].exists():
        # A clinical table left from an earlier run would no longer match the metrics beside it.
        os.remove(paths["clinical"])
    summary = dict(result.summary)
    summary["files"] = {k: str(v) for k, v in {**written, "summary": paths["summary"]}.items()}
    written["summary"] = atomic_write_json(paths["summary"], _json_safe(summary))
    result.summary = summary
    result.files = written
    return written


def _records(path: Path) -> list[dict[str, Any]]:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = []
    for record in frame.to_dict(orient="records"):
        rows.append({k: ("" if isinstance(v, float) and math.isnan(v) and k in ("prediction", "truth", "error", "tmax")
                         else v) for k, v in record.items()})
    return rows


def load_result(out: str | Path) -> EvaluationResult:
    """Read back an evaluation written by :func:`write_outputs` (``--out metrics.csv``).

    Args:
        out: the per-case CSV; its ``<stem>_summary.json`` must lie beside it (the clinical CSV is
            read when present).

    Returns:
        The :class:`EvaluationResult`, with ``pairs`` rebuilt from the summary's ``cases``.

    Raises:
        FileNotFoundError: the CSV or its summary is missing.
        ValueError: a file is not what :func:`write_outputs` writes.
    """
    paths = output_paths(out)
    for name in ("metrics", "summary"):
        if not paths[name].is_file():
            raise FileNotFoundError(f"evaluation {name} file {str(paths[name])!r} not found")
    try:
        summary = json.loads(paths["summary"].read_text())
        rows = _records(paths["metrics"])
        clinical = _records(paths["clinical"]) if paths["clinical"].is_file() else []
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{paths['metrics']}: cannot read the evaluation back ({err})") from err
    missing = [c for c in ("case_id", "method", "status") if rows and c not in rows[0]]
    if missing or not isinstance(summary, dict):
        raise ValueError(f"{paths['metrics']}: not an evaluation table (missing {', '.join(missing) or 'summary'})")
    pairs = []
    for item in summary.get("cases", []):
        case = EvaluationCase(
            case_id=item["case_id"].split("/")[-1], label=item.get("truth"),
            modalities=dict(item.get("modalities") or {}), key=item["case_id"],
        )
        pairs.append((case, Path(item["prediction"])))
    return EvaluationResult(
        rows=rows,
        clinical=clinical,
        failures=list(summary.get("failures", [])),
        unmatched_predictions=list(summary.get("unmatched_predictions", [])),
        missing_predictions=list(summary.get("missing_predictions", [])),
        summary=summary,
        pairs=pairs,
        files={k: v for k, v in paths.items() if v.is_file()},
        refused_predictions=list(summary.get("refused_predictions", [])),
    )
