"""The case record that every layout reader produces and the datalist is written from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CaseRecord:
    """One case as found on disk, before the profile picks its channels.

    Attributes:
        case_id: unique within its split (``case_12``, ``sub-strokecase0001``).
        split: ``training`` or ``testing``.
        modalities: canonical modality name (the profile's spelling) -> absolute file path, for every
            modality found, channels or not (CT_4DPWI included).
        label: absolute path of the label file, ``None`` when there is none (test cases).
        folder: the case's folder, for error messages.
        patient_id: groups slabs of one patient into one fold (``Train_40``); ``None`` when unknown.
        slab_id: the slab letter (``A``/``B``) when known.
        smir_id: ISLES 2018: the SMIR id of the CT_MTT folder; submissions are named by it.
        extra: layout-specific fields kept in the datalist (JSON-serialisable).
    """

    case_id: str
    split: str
    modalities: dict[str, str]
    label: str | None = None
    folder: str | None = None
    patient_id: str | None = None
    slab_id: str | None = None
    smir_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The fold-grouping key: the patient when known, else the case itself."""
        return self.patient_id or self.case_id
