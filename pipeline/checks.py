"""Content checks of a case's arrays that every phase shares: label values, and empty or constant channels.

``prepare`` (fingerprint), the training and inference transforms, and ``evaluate`` call these same
functions, so a label or a map is judged the same way wherever it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.errors import CaseError

# Values shown in a message about a label's values: the first few are enough to tell what went wrong.
_SHOWN_VALUES = 8


def _format_values(values: np.ndarray) -> str:
    shown = ", ".join(f"{float(v):g}" for v in values[:_SHOWN_VALUES])
    return shown + (f", ... ({len(values)} distinct values)" if len(values) > _SHOWN_VALUES else "")


def parse_label_values(mapping: Mapping | None) -> dict[float, int]:
    """A profile's ``label_values`` (``{255: 1}``: file value -> class) as ``{float: 0|1}``.

    Values not in the mapping keep their meaning only when they are 0 or 1.

    Raises:
        ValueError: a key that is not a number, or a target that is not 0 or 1.
    """
    result: dict[float, int] = {}
    for key, target in (mapping or {}).items():
        try:
            value = float(key)
        except (TypeError, ValueError):
            raise ValueError(f"label_values: {key!r} is not a number (write e.g. label_values: {{255: 1}})") from None
        if target not in (0, 1) or isinstance(target, bool):
            raise ValueError(f"label_values: {key!r} maps to {target!r}; a binary lesion label maps values to 0 or 1")
        result[value] = int(target)
    return result


# how far from 0 and 1 the values of a mask read through its header's scaling may be and still count as 0 and 1
SCALED_MASK_TOLERANCE = 1e-3


def binary_label(
    array,
    case_id: str | None,
    path: str | Path | None,
    label_values: Mapping | None = None,
    what: str = "label",
) -> np.ndarray:
    """Check that a lesion mask holds only 0 and 1 (after the profile's mapping) and return it as uint8.

    Args:
        array: the mask (numpy array or tensor).
        case_id, path: named in the error.
        label_values: optional mapping of file values to 0/1 (a profile's ``label_values``, e.g. ``{255: 1}``).
        what: how the mask is called in the message (``label``, ``prediction``).

    Returns:
        A uint8 array of the same shape with values 0 and 1.

    Floating values within :data:`SCALED_MASK_TOLERANCE` of 0 and 1 (a mask stored as integers 0/65535 with a
    header slope of 1/65535, as some ISLES 2024 masks are) count as 0 and 1.

    Raises:
        CaseError: values other than 0 and 1 remain (non-integers such as 0.5, several classes such as 2,
            or 255 without a mapping), or non-finite values; the message lists the values found.
    """
    data = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    if data.dtype == bool:
        return data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise CaseError(case_id, path, f"the {what} has data type {data.dtype}; a lesion mask holds the numbers 0 and 1")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise CaseError(case_id, path, f"the {what} holds non-finite values (NaN or Inf); a lesion mask holds 0 and 1")
    mapping = parse_label_values(label_values)
    values = np.unique(data)
    if mapping:
        out = np.zeros(data.shape, np.uint8)
        unmapped = []
        for value in values:
            target = mapping.get(float(value))
            if target is None:
                if float(value) in (0.0, 1.0):
                    target = int(value)
                else:
                    unmapped.append(value)
                    continue
            if target:
                out[data == value] = 1
        if unmapped:
            raise CaseError(
                case_id, path,
                f"the {what} holds value(s) {_format_values(np.asarray(unmapped))} that the profile's label_values "
                f"{dict(label_values or {})} do not map; map every value to 0 or 1",
            )
        return out
    if np.issubdtype(data.dtype, np.floating) and not np.isin(values, (0, 1)).all() and (
            np.isclose(values, 0, rtol=0, atol=SCALED_MASK_TOLERANCE)
            | np.isclose(values, 1, rtol=0, atol=SCALED_MASK_TOLERANCE)).all():
        # a mask stored as 0/65535 with a header slope of about 1/65535 (as in ISLES 2024) reads as 0 and 1.00006
        return np.rint(data).astype(np.uint8)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise CaseError(
            case_id, path,
            f"the {what} holds values {_format_values(values)}; a binary lesion mask holds only 0 and 1. "
            "If the dataset codes the lesion otherwise (e.g. 255), declare it in the profile "
            "(label_values: {255: 1}); a multi-class or soft mask cannot be used as it is",
        )
    return data.astype(np.uint8)


def constant_channel_note(array, case_id: str | None, path: str | Path | None, name: str) -> str | None:
    """Describe a channel that carries no information, or return ``None``.

    A map that is all zero, or the same value everywhere (inside the brain, where the maps are non-zero, or
    over the whole volume), gives the network nothing to see: it would be predicted as if normal.

    Args:
        array: the channel's voxels (any shape).
        case_id, path, name: named in the note (``name`` is the modality, e.g. ``CBF``).

    Returns:
        A sentence naming the case, the file and the channel, or ``None`` for a channel with contrast.
    """
    data = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data.ravel()
    where = f"case {case_id!r}, file {str(path)!r}"
    if finite.size == 0 or not np.any(finite):
        return f"{where}: channel {name} is empty (all zero); it carries no information and the case is predicted as if it were normal"
    nonzero = finite[finite != 0]
    if float(nonzero.min()) == float(nonzero.max()):
        return (
            f"{where}: channel {name} is constant ({float(nonzero[0]):g} wherever it is non-zero); it carries no "
            "information and the case is predicted as if it were normal"
        )
    return None
