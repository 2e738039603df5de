"""Dataset profiles: which modalities become channels, in which order, and how each is normalized.

A profile is a YAML file under ``configs/datasets/`` (or any path). It is plain data so that a
bundle run can merge it with ``--config_file "[train.json, configs/datasets/isles2018.yaml]"``. Its channel list is
``default_channels``, not ``channels``: a bundle's ``channels`` are the ones its datalist names
(:func:`pipeline.data.datalist.datalist_channels`), which ``prepare`` chose from the profile's default and optional
channels, so merging the profile must not pin them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.checks import parse_label_values

PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "datasets"
NORMALIZATION_METHODS = ("percentile", "ct_window", "zscore", "range", "none")


@dataclass
class DatasetProfile:
    """A dataset profile.

    Attributes:
        name: profile name (``isles2018``...).
        channels: modality names stacked as channels, in this order (the YAML's ``default_channels``, or the
            ``--channels`` of ``prepare``).
        modalities: every known modality -> its settings (``normalization`` dict, ``skip``, and for the ``dicom``
            layout ``dicom: {series_description: [regex, ...], exclude: [regex, ...]}``, see
            :meth:`dicom_series_patterns`).
        reference_modality: modality whose grid and header outputs are written on; when a case lacks
            it, the first channel is the reference.
        label_modality: the name the layout gives the label (``OT`` for ISLES 2018).
        resample_to_reference: modalities allowed to be on another grid; they are resampled onto the
            reference grid. Any other grid mismatch is an error.
        geometry_tolerance_mm: tolerance on spacing and origin when comparing grids.
        layout: the layout this profile is meant for (informative).
        label_classes: class name -> label value.
        label_values: optional mapping of the values a label file holds to 0/1 (``{255: 1}`` for a dataset whose
            masks code the lesion as 255); ``None`` when the labels already hold only 0 and 1. Any other value
            in a label is an error naming the case and the file (:func:`pipeline.checks.binary_label`).
        optional_channels: modalities that ``prepare`` (without ``--channels``) appends to ``channels`` when every
            case of the dataset has them (the ISLES 2018 CT), and leaves out, saying so, when some case lacks them.
        path: the file it was read from.
    """

    name: str
    channels: list[str]
    modalities: dict[str, dict[str, Any]]
    reference_modality: str | None = None
    label_modality: str | None = None
    resample_to_reference: list[str] = field(default_factory=list)
    geometry_tolerance_mm: float = 0.01
    layout: str | None = None
    label_classes: dict[str, int] = field(default_factory=lambda: {"background": 0, "lesion": 1})
    label_values: dict[int | float, int] | None = None
    optional_channels: list[str] = field(default_factory=list)
    path: str | None = None

    def canonical(self, name: str) -> str:
        """Return the profile's spelling of a modality name (case-insensitive match), else ``name``."""
        for known in list(self.modalities) + list(self.channels):
            if known.lower() == name.lower():
                return known
        return name

    def normalization(self, modality: str) -> dict[str, Any]:
        """Return the normalization settings of ``modality`` (``{"method": "none"}`` when unset)."""
        return dict(self.modalities.get(modality, {}).get("normalization", {"method": "none"}))

    def dicom_series_patterns(self, modality: str) -> tuple[list[str], list[str]]:
        """The regular expressions that choose ``modality``'s DICOM series by its SeriesDescription.

        Args:
            modality: a modality name of the profile.

        Returns:
            ``(series_description, exclude)``: a series is the modality's when its description matches one of the
            first (``re.search``) and none of the second; both lists are empty when the profile gives none.
        """
        dicom = self.modalities.get(modality, {}).get("dicom") or {}
        return list(dicom.get("series_description") or []), list(dicom.get("exclude") or [])

    def with_channels(self, channels: list[str]) -> "DatasetProfile":
        """Return a copy whose channel order is ``channels`` (names matched case-insensitively).

        Raises:
            ValueError: a channel is unknown to the profile, is repeated, or the list is empty.
        """
        if not channels:
            raise ValueError("at least one channel is needed")
        resolved = [self.canonical(c) for c in channels]
        unknown = [c for c in resolved if c not in self.modalities]
        if unknown:
            raise ValueError(
                f"profile {self.name!r} does not know modality {unknown[0]!r}; known: {', '.join(self.modalities)}"
            )
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"a channel is repeated in {channels}")
        copy = DatasetProfile(**{**self.__dict__})
        copy.channels = resolved
        return copy


def load_profile(name_or_path: str | Path) -> DatasetProfile:
    """Load a dataset profile by name (``isles2018``) or by path to a YAML file.

    Raises:
        FileNotFoundError: no such profile.
        ValueError: the profile is malformed (no ``default_channels``, a ``channels`` key, which would pin every
            bundle run's channels, a channel or optional channel without settings, an optional channel that is also
            a default one, an unknown normalization method, a ``label_values`` entry that does not map a number to
            0 or 1, a ``dicom`` entry without ``series_description`` patterns or with a pattern that is not a regular
            expression).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"dataset profile {str(name_or_path)!r} not found (available: {available})")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if "channels" in raw:
        raise ValueError(f"profile {path}: rename 'channels' to 'default_channels' (a 'channels' key would override "
                         "the channels that each bundle run reads from its datalist)")
    channels = list(raw.get("default_channels") or [])
    modalities = {str(k): dict(v or {}) for k, v in (raw.get("modalities") or {}).items()}
    if not channels:
        raise ValueError(f"profile {path}: 'default_channels' is empty")
    for ch in channels:
        if ch not in modalities:
            raise ValueError(f"profile {path}: channel {ch!r} has no entry under 'modalities'")
    optional = list(raw.get("optional_channels") or [])
    for ch in optional:
        if ch not in modalities or ch in channels:
            raise ValueError(f"profile {path}: optional channel {ch!r} must have an entry under 'modalities' and not "
                             "be one of 'default_channels'")
    for mod, settings in modalities.items():
        method = settings.get("normalization", {}).get("method", "none")
        if method not in NORMALIZATION_METHODS:
            raise ValueError(f"profile {path}: modality {mod!r} has unknown normalization {method!r}")
        if "dicom" in settings:
            _check_dicom_patterns(settings["dicom"], mod, path)
    return DatasetProfile(
        name=str(raw.get("profile_name", path.stem)),
        channels=channels,
        modalities=modalities,
        reference_modality=raw.get("reference_modality"),
        label_modality=raw.get("label_modality"),
        resample_to_reference=list(raw.get("resample_to_reference") or []),
        geometry_tolerance_mm=float(raw.get("geometry_tolerance_mm", 0.01)),
        layout=raw.get("layout"),
        label_classes=dict(raw.get("label_classes") or {"background": 0, "lesion": 1}),
        label_values=_label_values(raw.get("label_values"), path),
        optional_channels=optional,
        path=str(path),
    )


def _check_dicom_patterns(raw: Any, modality: str, path: Path) -> None:
    """Validate a modality's ``dicom`` entry: ``series_description`` (required) and ``exclude`` (optional) are lists
    of regular expressions.

    Raises:
        ValueError: not a mapping, an unknown key, an empty or missing ``series_description``, an entry that is not a
            string, or a pattern that does not compile; the message names the profile and the modality.
    """
    where = f"profile {path}: modality {modality!r}: dicom"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping such as {{series_description: ['(?i)\\bcbf\\b']}}, got {raw!r}")
    unknown = set(raw) - {"series_description", "exclude"}
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; the keys are "
                         "series_description and exclude")
    for key in ("series_description", "exclude"):
        patterns = raw.get(key)
        if patterns is None and key == "exclude":
            continue
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(f"{where}.{key} must be a non-empty list of regular expressions, got {patterns!r}")
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{where}.{key}: {pattern!r} is not a regular expression ({err})") from None


def _label_values(raw: Any, path: Path) -> dict[int | float, int] | None:
    """Validate a profile's ``label_values`` (file value -> 0/1); whole numbers are kept as ints (``{255: 1}``).

    Raises:
        ValueError: not a mapping, a key that is not a number, or a target other than 0 and 1.
    """
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"profile {path}: label_values must be a mapping such as {{255: 1}}, got {raw!r}")
    try:
        parsed = parse_label_values(raw)
    except ValueError as err:
        raise ValueError(f"profile {path}: {err}") from None
    return {int(k) if float(k).is_integer() else k: v for k, v in parsed.items()}
