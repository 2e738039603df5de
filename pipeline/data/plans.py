"""The plans derived from a fingerprint, now in :mod:`pipeline.planning.plans`; this module is kept so older
imports work."""

from __future__ import annotations

from pipeline.planning.plans import (
    ANISOTROPY_RATIO,
    BACKWARD_FACTOR,
    BYTES_PER_VALUE,
    IN_PLANE_TOLERANCE,
    MAX_DEPTH,
    MIN_BATCH_SIZE,
    OUT_CHANNELS,
    PARAMETER_COPIES,
    PLAN_KEYS,
    PLANS_VERSION,
    derive_plans,
    estimate_training_memory_mb,
    load_plans,
    write_plans,
)

__all__ = [
    "ANISOTROPY_RATIO",
    "BACKWARD_FACTOR",
    "BYTES_PER_VALUE",
    "IN_PLANE_TOLERANCE",
    "MAX_DEPTH",
    "MIN_BATCH_SIZE",
    "OUT_CHANNELS",
    "PARAMETER_COPIES",
    "PLAN_KEYS",
    "PLANS_VERSION",
    "derive_plans",
    "estimate_training_memory_mb",
    "load_plans",
    "write_plans",
]
