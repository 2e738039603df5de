"""The phantom's images: the ISLES 2018 modalities and dtypes, site scales, and the noisy images of a slab.

From a slab's noise-free maps the phantom writes the release's images: CBF, CBV, MTT and Tmax with
multiplicative noise (CBF and CBV in the units of one of three simulated sites; the realistic phantom's
sites of :mod:`.acquisition` also set noise, deconvolution and smoothing), a noisy CT, a 4D
perfusion source (the CT baseline plus a gamma-variate bolus delayed by Tmax and scaled by CBV), and
the label. :class:`ImagingMixin` holds this step for :class:`~pipeline.data.synthetic.phantom.Phantom`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from pipeline.data.synthetic.anatomy import GREY_MATTER
from pipeline.data.synthetic.fields import smooth_noise

if TYPE_CHECKING:
    from pipeline.data.synthetic.phantom import RenderedSlab

__all__ = [
    "MODALITIES", "MODALITY_DTYPES", "PWI_FRAMES", "PWI_FRAME_INTERVAL_S", "SITE_SCALES", "ImagingMixin",
    "site_cbf_contrast", "smooth_within_mask",
]

MODALITIES = ("CT", "CT_4DPWI", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT")
MODALITY_DTYPES = {
    "CT": np.int32,
    "CT_4DPWI": np.int16,
    "CT_CBF": np.uint16,
    "CT_CBV": np.uint16,
    "CT_MTT": np.float64,
    "CT_Tmax": np.float64,
    "OT": np.uint8,
}

PWI_FRAME_INTERVAL_S = 4.0
PWI_FRAMES = 6
# (CBF factor, CBV factor) of the three simulated sites: CBF/CBV units differ between sites.
SITE_SCALES = ((1.0, 10.0), (2.5, 25.0), (10.0, 100.0))


def smooth_within_mask(values: np.ndarray, mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    """In-plane Gaussian smoothing of a map inside a mask (a site's post-processing), slice by slice.

    Normalised convolution: the mask's outside neither darkens nor brightens the border voxels.

    Args:
        values: 3D map, in-plane axes first.
        mask: where the map is defined (same shape); the result is 0 outside.
        sigma_vox: in-plane Gaussian sigma in voxels (0: unchanged).

    Returns:
        float32 smoothed map.
    """
    if sigma_vox <= 0:
        return values
    weight = mask.astype(np.float32)
    sigma = (sigma_vox, sigma_vox, 0.0)
    total = ndimage.gaussian_filter(values.astype(np.float32) * weight, sigma, mode="constant")
    norm = ndimage.gaussian_filter(weight, sigma, mode="constant")
    return np.divide(total, norm, out=np.zeros_like(total), where=norm > 1e-6) * weight


def site_cbf_contrast(cbf: np.ndarray, reference: float, exponent: float) -> np.ndarray:
    """A site's CBF contrast: ``reference * (cbf / reference) ** exponent`` (a deconvolution's bias).

    Args:
        cbf: CBF map (mL/100g/min), >= 0.
        reference: the CBF that stays unchanged (healthy grey matter), > 0.
        exponent: below 1 a deficit looks milder, above 1 deeper; 1 leaves the map unchanged.

    Returns:
        float32 map of the same shape (0 stays 0).
    """
    ratio = np.clip(cbf, 0.0, None) / np.float32(reference)
    return (np.float32(reference) * np.power(ratio, np.float32(exponent))).astype(np.float32)


class ImagingMixin:
    """Image synthesis of a :class:`~pipeline.data.synthetic.phantom.Phantom`: noisy images in the release dtypes.

    Not used on its own: ``_images`` needs the per-case noise levels (``perfusion_noise``,
    ``ct_noise_hu``, drawn with the lesion) and the site scales (``cbf_scale``, ``cbv_scale``) that
    the phantom sets, and ``map_smoothing_mm``, a site's in-plane smoothing of the maps (none unless
    the realistic phantom's site sets it), ``cbf_contrast`` and ``tmax_scale``, a site's deconvolution
    (faithful, 1, unless the realistic phantom's site sets them).
    """

    map_smoothing_mm: float = 0.0
    cbf_contrast: float = 1.0
    tmax_scale: float = 1.0

    def _images(self, slab: RenderedSlab, crop: tuple[slice, slice], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Noisy images in the release dtypes (the head lies inside ``crop``; outside is air)."""
        shape = slab.geometry.shape
        rows, cols = crop
        mask = slab.brain_mask[rows, cols]
        crop_shape = mask.shape

        maps = {}
        for name, level in zip(("cbf", "cbv", "mtt", "tmax"), self.perfusion_noise):
            # Multiplicative noise, slightly correlated in-plane, independent per map.
            noise = smooth_noise(rng, crop_shape, (0.7, 0.7, 0.0))
            maps[name] = np.clip(slab.clean[name][rows, cols] * (1.0 + level * noise), 0.0, None) * mask
            if self.map_smoothing_mm > 0:
                maps[name] = smooth_within_mask(maps[name], mask, self.map_smoothing_mm / slab.geometry.spacing_mm)
        if self.cbf_contrast != 1.0:
            maps["cbf"] = site_cbf_contrast(maps["cbf"], float(self.cbf_by_tissue[GREY_MATTER]), self.cbf_contrast)
        if self.tmax_scale != 1.0:
            maps["tmax"] = maps["tmax"] * np.float32(self.tmax_scale)
        images: dict[str, np.ndarray] = {}
        for name, scale, modality in (("cbf", self.cbf_scale, "CT_CBF"), ("cbv", self.cbv_scale, "CT_CBV")):
            values = np.clip(np.rint(maps[name] * scale), 0, 65535)
            # At least 1 inside the brain so that CBF > 0 recovers the brain mask exactly.
            values = np.where(mask, np.maximum(values, 1), 0)
            full = np.zeros(shape, np.uint16)
            full[rows, cols] = values
            images[modality] = full
        for name, modality in (("mtt", "CT_MTT"), ("tmax", "CT_Tmax")):
            full = np.zeros(shape, np.float64)
            full[rows, cols] = maps[name]
            images[modality] = full
        ct = slab.clean["ct"] + self.ct_noise_hu * rng.standard_normal(shape, dtype=np.float32)
        images["CT"] = np.clip(np.rint(ct), -1024, 3071).astype(np.int32)

        # Perfusion source: CT baseline plus a gamma-variate bolus arriving 3 s + Tmax after
        # injection (peak 5 s later), scaled by CBV (about 10 HU per mL/100g).
        brain = np.flatnonzero(slab.brain_mask)
        times = PWI_FRAME_INTERVAL_S * np.arange(PWI_FRAMES, dtype=np.float32)
        arrival = 3.0 + slab.clean["tmax"].ravel()[brain]
        rel_t = np.clip((times[None, :] - arrival[:, None]) / 5.0, 0.0, None)
        bolus = rel_t**3 * np.exp(3.0 * (1.0 - rel_t))
        pwi = images["CT"].astype(np.float32)[..., None] + 3.0 * rng.standard_normal(shape + (PWI_FRAMES,), dtype=np.float32)
        pwi.reshape(-1, PWI_FRAMES)[brain] += 10.0 * slab.clean["cbv"].ravel()[brain][:, None] * bolus
        images["CT_4DPWI"] = np.clip(np.rint(pwi), -32768, 32767).astype(np.int16)
        images["OT"] = slab.label.astype(np.uint8)
        return {m: images[m] for m in MODALITIES}
