"""Label-versus-map discrepancies of the realistic phantom: what happens between the CTP and the DWI label.

On the real ISLES 2018 data the label is drawn on a DWI acquired after the CT perfusion, at another
site's scanner settings, by a human rater; so it differs from what the maps show in ways no model can
fully recover. This module holds those mechanisms, each a small function of a label (or a site) and
its own random generator, so that the phantom (:mod:`.phantom`) stays the physics of one scan:

- :func:`grow_infarct`: the infarct grows into part of the penumbra before the DWI (a per-patient
  growth fraction: time to the DWI and collaterals are not in the maps).
- :func:`shrink_infarct`: reperfused patients' DWI lesions are smaller than the CTP-time core (the
  "ghost core" the CTP over-calls after early reperfusion): the label keeps its deepest part.
- :func:`misregister_label`: the DWI is registered to the CTP slab with a small rigid in-plane error
  (shift in mm, rotation in degrees about the slab's in-plane centre), applied to the label only.
- :func:`jitter_border`: raters disagree at the border: the label boundary moves by smooth noise.
- the mismatch: the hypoperfused region (Tmax > 6 s) is several times the core, as in acute
  large-vessel occlusion, and the core's Tmax overlaps the penumbra's
  (:data:`HYPOPERFUSION_WIDENING_FACTOR`, :data:`TMAX_CORE_EXTRA_FACTOR`; :mod:`.patients` applies them).
- :class:`SiteProfile` and :data:`SITES`: sites differ in CBF/CBV units, map noise and smoothing
  (post-processing); :mod:`.imaging` applies a profile when it writes the maps.

:class:`AcquisitionSettings` switches each mechanism on or off, :func:`draw_acquisition` draws one
patient's parameters (:class:`PatientAcquisition`), :func:`draw_slab_misregistration` one slab's
registration error, and :func:`apply_label_mechanisms` runs the label mechanisms in their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.data.synthetic.fields import smooth_noise

__all__ = [
    "BORDER_JITTER_MM_RANGE",
    "BORDER_NOISE_SIGMA_MM",
    "DEFAULT_PHANTOM",
    "GROWTH_FRACTION_RANGE",
    "GROWTH_FRONT_NOISE_MM",
    "HYPOPERFUSION_WIDENING_FACTOR",
    "MECHANISMS",
    "MISREGISTRATION_ROTATION_SD_DEG",
    "MISREGISTRATION_SHIFT_SD_MM",
    "NO_GROWTH_PROBABILITY",
    "PENUMBRA_MIN_RCBF",
    "PENUMBRA_TMAX_S",
    "PHANTOMS",
    "REPERFUSED_KEEP_RANGE",
    "SITES",
    "TMAX_CORE_EXTRA_FACTOR",
    "AcquisitionSettings",
    "PatientAcquisition",
    "SiteProfile",
    "apply_label_mechanisms",
    "draw_acquisition",
    "draw_slab_misregistration",
    "grow_infarct",
    "jitter_border",
    "misregister_label",
    "penumbra_mask",
    "shrink_infarct",
]

# The phantoms ``synth --phantom`` offers: "realistic" (the label-vs-map mechanisms of this module on),
# "classic" (the label is the tissue fate of the CTP phantom itself, as before those mechanisms).
PHANTOMS = ("realistic", "classic")
DEFAULT_PHANTOM = "realistic"
# The mechanisms that AcquisitionSettings switches, by name (``synth --phantom-without NAME``).
MECHANISMS = ("growth", "misregistration", "border", "sites", "mismatch")

# Infarct growth before the DWI, as a fraction of the CTP-time core's volume, taken from the penumbra
# (hypoperfused tissue outside the core) nearest the core; uniform in this range (small: in ISLES 2018 the
# DWI followed the CTP by a median 36 min); none for this share of the patients (reperfused: their label
# shrinks instead).
GROWTH_FRACTION_RANGE = (0.05, 0.3)
NO_GROWTH_PROBABILITY = 0.3
# Reperfused patients: the share of the CTP-time label the DWI still shows, uniform in this range.
REPERFUSED_KEEP_RANGE = (0.4, 0.9)
# The hypoperfused region is wider than the classic phantom's (its per-patient widening times this):
# in acute large-vessel stroke the Tmax > 6 s volume is typically several times the core.
HYPOPERFUSION_WIDENING_FACTOR = 2.0
# ...and the core's Tmax rises less above the penumbra's (times the classic phantom's extra delay):
# on real maps Tmax in the core and in the penumbra overlap widely, so no Tmax threshold finds the core.
TMAX_CORE_EXTRA_FACTOR = 0.5
# Tissue with Tmax above this (s, noise-free map) is hypoperfused: where the infarct can grow.
# Irregularity (mm) of the growth front: the penumbra is not taken in strict order of distance.
GROWTH_FRONT_NOISE_MM = 8.0
PENUMBRA_TMAX_S = 6.0
# ...and CBF at least this fraction of healthy: tissue the CTP does not call core.
PENUMBRA_MIN_RCBF = 0.3
# DWI-to-CTP registration error per slab: in-plane shift (mm, per axis) and rotation (degrees), normal.
MISREGISTRATION_SHIFT_SD_MM = 2.0
MISREGISTRATION_ROTATION_SD_DEG = 2.0
# Rater border disagreement: amplitude (mm) of the boundary displacement, uniform in this range, and
# the in-plane smoothing (mm) of the displacement noise.
BORDER_JITTER_MM_RANGE = (1.5, 3.0)
BORDER_NOISE_SIGMA_MM = 4.0


@dataclass(frozen=True)
class SiteProfile:
    """How one site's CT-perfusion software writes the maps.

    Attributes:
        name: the site's name (``site_1``...).
        cbf_scale, cbv_scale: factors from mL/100g/min and mL/100g to the stored integer units.
        noise_factor: multiplies the phantom's per-case map noise levels.
        smoothing_mm: in-plane Gaussian sigma (mm) of the site's post-processing of the maps
            (0: none).
        cbf_contrast: exponent of the site's CBF contrast relative to healthy grey matter (the
            deconvolution method: below 1 a deficit looks milder, above 1 deeper; 1: faithful).
        tmax_scale: factor of the site's Tmax (the arterial input and delay handling; 1: faithful).
    """

    name: str
    cbf_scale: float
    cbv_scale: float
    noise_factor: float
    smoothing_mm: float
    cbf_contrast: float = 1.0
    tmax_scale: float = 1.0


# The simulated sites: units, noise, deconvolution and post-processing differ.
SITES = (
    SiteProfile("site_1", 1.0, 10.0, 1.0, 0.0, 1.0, 1.0),
    SiteProfile("site_2", 2.5, 25.0, 1.3, 1.0, 0.8, 0.8),
    SiteProfile("site_3", 10.0, 100.0, 0.8, 2.0, 0.7, 1.25),
    SiteProfile("site_4", 6.0, 40.0, 1.5, 0.5, 1.25, 0.7),
)


@dataclass(frozen=True)
class AcquisitionSettings:
    """Which label-vs-map mechanisms the realistic phantom applies (all on by default).

    Attributes:
        growth: infarct growth into the penumbra (:func:`grow_infarct`).
        misregistration: DWI-to-CTP rigid registration error of the label (:func:`misregister_label`).
        border: rater border noise (:func:`jitter_border`).
        sites: per-site units, noise and smoothing of the maps (:data:`SITES`); off, every patient
            gets the classic phantom's units and noise, unsmoothed.
        mismatch: the wider hypoperfusion and overlapping core Tmax of the maps
            (:data:`HYPOPERFUSION_WIDENING_FACTOR`, :data:`TMAX_CORE_EXTRA_FACTOR`); off, the
            classic phantom's perfusion deficit.
    """

    growth: bool = True
    misregistration: bool = True
    border: bool = True
    sites: bool = True
    mismatch: bool = True

    @classmethod
    def without(cls, names: list[str] | tuple[str, ...] | None) -> "AcquisitionSettings":
        """All mechanisms on except those named.

        Args:
            names: mechanism names from :data:`MECHANISMS` (``None`` or empty: all on).

        Returns:
            The settings.

        Raises:
            ValueError: a name is not in :data:`MECHANISMS`.
        """
        names = list(names or [])
        unknown = [n for n in names if n not in MECHANISMS]
        if unknown:
            raise ValueError(f"unknown phantom mechanism(s) {', '.join(unknown)}; choose from {', '.join(MECHANISMS)}")
        return cls(**{n: n not in names for n in MECHANISMS})


@dataclass
class PatientAcquisition:
    """One patient's drawn acquisition parameters (per-slab registration errors are added per slab).

    Attributes:
        site: the site profile, or ``None`` when sites are off.
        growth_fraction: growth of the infarct before the DWI, as a fraction of its CTP-time volume (0: none).
        keep_fraction: share of the CTP-time label a reperfused patient's DWI still shows (1: all).
        border_mm: amplitude of the rater's border displacement (0: none).
        slabs: per slab, ``(shift_x_mm, shift_y_mm, rotation_deg)`` of the label's misregistration.
    """

    site: SiteProfile | None
    growth_fraction: float
    border_mm: float
    keep_fraction: float = 1.0
    slabs: list[tuple[float, float, float]] = field(default_factory=list)


def draw_acquisition(settings: AcquisitionSettings, rngs: dict[str, np.random.Generator]) -> PatientAcquisition:
    """Draw one patient's site, growth (or, reperfused, shrink) fraction and border-noise amplitude.

    Args:
        settings: the mechanisms switched on; a mechanism switched off draws nothing.
        rngs: one generator per mechanism name of :data:`MECHANISMS` (each mechanism draws only from
            its own, so switching one off leaves the others' draws unchanged).

    Returns:
        The patient's parameters, with no slab registration errors yet.
    """
    site = SITES[int(rngs["sites"].integers(len(SITES)))] if settings.sites else None
    growth, keep = 0.0, 1.0
    if settings.growth:
        if rngs["growth"].random() >= NO_GROWTH_PROBABILITY:
            growth = float(rngs["growth"].uniform(*GROWTH_FRACTION_RANGE))
        else:
            keep = float(rngs["growth"].uniform(*REPERFUSED_KEEP_RANGE))
    border = float(rngs["border"].uniform(*BORDER_JITTER_MM_RANGE)) if settings.border else 0.0
    return PatientAcquisition(site=site, growth_fraction=round(growth, 4), border_mm=round(border, 4), keep_fraction=round(keep, 4))


def draw_slab_misregistration(settings: AcquisitionSettings, rng: np.random.Generator) -> tuple[float, float, float]:
    """Draw one slab's DWI-to-CTP registration error.

    Args:
        settings: ``misregistration`` off gives no error.
        rng: the misregistration generator.

    Returns:
        ``(shift_x_mm, shift_y_mm, rotation_deg)``, rounded to 0.01.
    """
    if not settings.misregistration:
        return (0.0, 0.0, 0.0)
    dx, dy = rng.normal(0.0, MISREGISTRATION_SHIFT_SD_MM, size=2)
    angle = rng.normal(0.0, MISREGISTRATION_ROTATION_SD_DEG)
    return (round(float(dx), 2), round(float(dy), 2), round(float(angle), 2))


def penumbra_mask(tmax: np.ndarray, rcbf: np.ndarray, brain_mask: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The penumbra the infarct can grow into: hypoperfused, not yet core-like brain outside the label.

    Args:
        tmax: noise-free Tmax map (s).
        rcbf: noise-free CBF relative to the healthy CBF of the same voxel.
        brain_mask: brain voxels.
        label: the infarct core (non-zero).

    Returns:
        Boolean mask: ``tmax > PENUMBRA_TMAX_S`` and ``rcbf >= PENUMBRA_MIN_RCBF``, inside the brain,
        not in the label (the mismatch tissue the CTP calls salvageable).
    """
    return (
        (np.asarray(tmax) > PENUMBRA_TMAX_S) & (np.asarray(rcbf) >= PENUMBRA_MIN_RCBF)
        & (np.asarray(brain_mask) != 0) & (np.asarray(label) == 0)
    )


def grow_infarct(
    label: np.ndarray, penumbra: np.ndarray, fraction: float, spacing_mm: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Grow the infarct into a fraction of the penumbra, nearest the infarct first (with a smooth random front).

    The penumbra voxels are ranked by their distance (mm) to the label plus smooth noise, and the
    ``fraction`` of them nearest the label become infarct: growth only adds voxels of ``penumbra``.

    Args:
        label: the infarct before growth (non-zero), 3D.
        penumbra: where it may grow (boolean, same shape).
        fraction: share of the penumbra's voxels that become infarct, 0..1.
        spacing_mm: voxel size along the three axes.
        rng: draws the irregularity of the growth front.

    Returns:
        uint8 0/1 grown label.

    Raises:
        ValueError: shapes differ or ``fraction`` is outside 0..1.
    """
    label = np.asarray(label) != 0
    penumbra = np.asarray(penumbra, dtype=bool) & ~label
    if label.shape != penumbra.shape:
        raise ValueError(f"grow_infarct: label shape {label.shape} differs from penumbra shape {penumbra.shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"grow_infarct: fraction must be within 0..1, got {fraction}")
    n = int(round(fraction * penumbra.sum()))
    if n == 0 or not label.any():
        return label.astype(np.uint8)
    distance = ndimage.distance_transform_edt(~label, sampling=spacing_mm)
    sigma = tuple(4.0 / s for s in spacing_mm[:2]) + (0.0,)
    front = distance + GROWTH_FRONT_NOISE_MM * smooth_noise(rng, label.shape, sigma)
    candidates = np.flatnonzero(penumbra)
    chosen = candidates[np.argsort(front.ravel()[candidates], kind="stable")[:n]]
    grown = label.copy().ravel()
    grown[chosen] = True
    return grown.reshape(label.shape).astype(np.uint8)


def shrink_infarct(label: np.ndarray, keep_fraction: float, spacing_mm: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Keep the deepest ``keep_fraction`` of the label (with a smooth random front), as reperfusion spares its rim.

    Label voxels are ranked by their distance (mm) to the label's boundary minus smooth noise; the
    deepest ones are kept. Shrinking only removes voxels.

    Args:
        label: the CTP-time infarct (non-zero), 3D.
        keep_fraction: share of its voxels the DWI still shows, 0..1 (at least one voxel is kept).
        spacing_mm: voxel size along the three axes.
        rng: draws the irregularity of the front.

    Returns:
        uint8 0/1 shrunk label.

    Raises:
        ValueError: ``keep_fraction`` is outside 0..1.
    """
    label = np.asarray(label) != 0
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"shrink_infarct: keep_fraction must be within 0..1, got {keep_fraction}")
    total = int(label.sum())
    n = max(1, int(round(keep_fraction * total)))
    if total == 0 or n >= total:
        return label.astype(np.uint8)
    depth = ndimage.distance_transform_edt(label, sampling=spacing_mm)
    sigma = tuple(4.0 / s for s in spacing_mm[:2]) + (0.0,)
    front = depth + 0.5 * GROWTH_FRONT_NOISE_MM * smooth_noise(rng, label.shape, sigma)
    candidates = np.flatnonzero(label)
    kept = candidates[np.argsort(-front.ravel()[candidates], kind="stable")[:n]]
    shrunk = np.zeros(label.size, bool)
    shrunk[kept] = True
    return shrunk.reshape(label.shape).astype(np.uint8)


def misregister_label(label: np.ndarray, shift_mm: tuple[float, float], rotation_deg: float, spacing_mm: float) -> np.ndarray:
    """Move the label by a rigid in-plane transform, as a DWI registered to the CTP slab with an error.

    Each slice is rotated by ``rotation_deg`` about the in-plane centre of the grid, then shifted
    by ``shift_mm`` along the first two array axes (nearest neighbour).

    Args:
        label: 3D label (non-zero is lesion), in-plane axes first.
        shift_mm: shift along array axes 0 and 1 (mm).
        rotation_deg: in-plane rotation (degrees).
        spacing_mm: in-plane voxel size (the same along both axes).

    Returns:
        uint8 0/1 moved label, same shape (what leaves the grid is lost).

    Raises:
        ValueError: ``label`` is not 3D or ``spacing_mm`` is not positive.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"misregister_label: expected a 3D label, got shape {label.shape}")
    if not spacing_mm > 0:
        raise ValueError(f"misregister_label: spacing must be positive, got {spacing_mm}")
    theta = math.radians(rotation_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = (np.array(label.shape[:2], dtype=float) - 1.0) / 2.0
    shift = np.asarray(shift_mm, dtype=float) / spacing_mm
    # Output point o holds the input at R^T (o - c - d) + c.
    matrix = rot.T
    offset = centre - matrix @ (centre + shift)
    moved = np.zeros(label.shape, np.uint8)
    for k in range(label.shape[2]):
        moved[..., k] = ndimage.affine_transform(
            (label[..., k] != 0).astype(np.uint8), matrix, offset=offset, order=0, mode="constant", cval=0
        )
    return moved


def jitter_border(label: np.ndarray, amplitude_mm: float, spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Move the label's boundary in or out by smooth noise, as another rater would draw it (slice by slice).

    The in-plane signed distance to the boundary (mm, negative inside) is compared with
    ``amplitude_mm`` times smooth unit noise: the boundary moves outward where the noise is
    positive, inward where it is negative; far from the boundary nothing changes.

    Args:
        label: 3D label (non-zero is lesion), in-plane axes first.
        amplitude_mm: standard deviation of the boundary displacement (0: unchanged).
        spacing_mm: in-plane voxel size.
        rng: draws the displacement noise.

    Returns:
        uint8 0/1 label.

    Raises:
        ValueError: ``label`` is not 3D or ``amplitude_mm`` is negative.
    """
    label = np.asarray(label) != 0
    if label.ndim != 3:
        raise ValueError(f"jitter_border: expected a 3D label, got shape {label.shape}")
    if amplitude_mm < 0:
        raise ValueError(f"jitter_border: amplitude must be >= 0, got {amplitude_mm}")
    sigma = BORDER_NOISE_SIGMA_MM / spacing_mm
    noise = smooth_noise(rng, label.shape, (sigma, sigma, 0.0))
    if amplitude_mm == 0 or not label.any():
        return label.astype(np.uint8)
    out = np.zeros(label.shape, np.uint8)
    for k in range(label.shape[2]):
        piece = label[..., k]
        if not piece.any():
            continue
        signed = ndimage.distance_transform_edt(~piece) - ndimage.distance_transform_edt(piece)
        out[..., k] = signed * spacing_mm < amplitude_mm * noise[..., k]
    return out


def apply_label_mechanisms(
    label: np.ndarray,
    clean_tmax: np.ndarray,
    rcbf: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    patient: PatientAcquisition,
    slab_index: int,
    rngs: dict[str, np.random.Generator],
    max_voxels: int | None = None,
    volume_voxels: tuple[int, int] | None = None,
) -> np.ndarray:
    """The DWI label of one slab from its CTP-time label: growth (or shrink), then misregistration, then border noise.

    Args:
        label: the slab's label at CTP time (the phantom's tissue fate).
        clean_tmax: the slab's noise-free Tmax (s), which locates the penumbra.
        rcbf: the slab's noise-free CBF relative to healthy (with ``clean_tmax``: the penumbra).
        brain_mask: the slab's brain voxels; the result stays inside them.
        spacing_mm: voxel size along the three axes (in-plane first, equal).
        patient: the patient's drawn parameters; ``patient.slabs[slab_index]`` is this slab's
            registration error.
        slab_index: 0 for slab A, 1 for B.
        rngs: generators ``growth`` and ``border`` for this slab.
        max_voxels: cap on the grown label's voxels (growth stops there); ``None``: no cap.
        volume_voxels: ``(lo, hi)`` voxel counts the result must lie within; when a later step
            leaves that range, the label of the step before is kept; ``None``: no check.

    Returns:
        uint8 0/1 label.
    """
    brain = np.asarray(brain_mask) != 0
    steps = [np.asarray(label).astype(np.uint8)]
    result = steps[0]
    if patient.growth_fraction > 0:
        penumbra = penumbra_mask(clean_tmax, rcbf, brain_mask, result)
        if penumbra.any():
            # the core grows by growth_fraction of its own volume (what patients.py sizes the CTP-time core by),
            # into the penumbra nearest it
            grown = patient.growth_fraction * int(result.sum())
            if max_voxels is not None:
                grown = min(grown, max(0, max_voxels - int(result.sum())))
            result = grow_infarct(result, penumbra, min(1.0, grown / float(penumbra.sum())), spacing_mm, rngs["growth"])
        steps.append(result)
    elif patient.keep_fraction < 1.0:
        result = shrink_infarct(result, patient.keep_fraction, spacing_mm, rngs["growth"])
        steps.append(result)
    dx, dy, angle = patient.slabs[slab_index]
    if dx or dy or angle:
        result = (misregister_label(result, (dx, dy), angle, spacing_mm[0]).astype(bool) & brain).astype(np.uint8)
        steps.append(result)
    if patient.border_mm > 0:
        result = (jitter_border(result, patient.border_mm, spacing_mm[0], rngs["border"]).astype(bool) & brain).astype(np.uint8)
        steps.append(result)
    if volume_voxels is not None:
        lo, hi = volume_voxels
        for step in reversed(steps):
            if lo <= int(step.sum()) <= hi:
                return step
    return result
