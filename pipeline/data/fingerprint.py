"""The dataset fingerprint, now in :mod:`pipeline.planning.fingerprint`; this module is kept so older imports work."""

from __future__ import annotations

from pipeline.planning.fingerprint import (
    PERCENTILES,
    case_fingerprint,
    compute_fingerprint,
    format_summary,
    summarize_fingerprint,
    write_fingerprint,
)

__all__ = [
    "PERCENTILES",
    "case_fingerprint",
    "compute_fingerprint",
    "format_summary",
    "summarize_fingerprint",
    "write_fingerprint",
]
