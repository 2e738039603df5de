"""The phantom's ischemic lesion: vascular territory, lesion propensity, fate threshold and perfusion deficit.

The lesion is a propensity field L: a few irregular Gaussian blobs in one vascular territory (MCA,
ACA or PCA) of one hemisphere, confined to the territory by a soft ellipsoid. The label thresholds a
tissue-fate field, L times smooth log-normal noise; the perfusion maps see the deficit S, the same
blobs displaced and rescaled a little, times other, independent noise, so that the maps only noisily
measure the label. :class:`LesionMixin` holds the drawing and evaluation of these fields for
:class:`~pipeline.data.synthetic.phantom.Phantom`.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.data.synthetic.fields import GridField, box_grid, ramp, smooth_noise, soft_step

__all__ = [
    "CORE_OFFSET_RANGE",
    "FATE_NOISE",
    "LESION_IRREGULARITY",
    "LESION_ML_LOG_SIGMA",
    "LESION_ML_MEDIAN",
    "LESION_ML_RANGE",
    "LESION_NOISE_SIGMA_MM",
    "MIN_FATE_THRESHOLD",
    "PERFUSION_BLOB_LOG_SCALE",
    "PERFUSION_BLOB_SHIFT",
    "PERFUSION_DEFICIT_NOISE",
    "TERRITORIES",
    "TERRITORY_EDGE_SOFTNESS",
    "TERRITORY_WEIGHTS",
    "LesionMixin",
]

LESION_ML_RANGE = (1.0, 100.0)
LESION_ML_MEDIAN = 15.0
LESION_ML_LOG_SIGMA = 1.6  # IQR about 5-45 mL around the 15 mL median
TERRITORIES = ("MCA", "ACA", "PCA")
TERRITORY_WEIGHTS = (0.7, 0.1, 0.2)
# Lowest fate threshold (the propensity peaks near 1): a volume target the lesion cannot reach
# above it is not met, rather than spreading the label over the whole territory.
MIN_FATE_THRESHOLD = 0.12
# Width (in territory radii) of the soft edge that confines a lesion to its vascular territory.
TERRITORY_EDGE_SOFTNESS = 0.2
# Standard deviations of the independent smooth log-noises by which the label (fate) and the
# perfusion deficit see the shared lesion propensity, and of the smooth modulation that makes the
# lesion border irregular.
FATE_NOISE = 0.8
PERFUSION_DEFICIT_NOISE = 0.9
LESION_IRREGULARITY = 0.35
LESION_NOISE_SIGMA_MM = 8.0  # smoothing of the fate and perfusion noises
# Where the CT-perfusion core starts, in log units above the fate threshold: a positive offset
# makes the maps' core smaller than the final infarct (infarct growth after the scan).
CORE_OFFSET_RANGE = (-0.15, 0.25)
# Displacement (in blob radii) and log-scale spread of the perfusion deficit's blobs relative to
# the infarct's.
PERFUSION_BLOB_SHIFT = 0.3
PERFUSION_BLOB_LOG_SCALE = 0.15

# Brain-normalised territory boxes (u lateral toward the lesion side, v anterior, w superior) where
# blob centres are drawn, and the soft ellipsoid (centre, semi-axes) the lesion is confined to.
_TERRITORY_BOXES = {
    "MCA": ((0.42, 0.72), (-0.35, 0.35), (-0.10, 0.45)),
    "MCA_deep": ((0.18, 0.38), (-0.05, 0.22), (-0.05, 0.22)),
    "ACA": ((0.08, 0.25), (0.10, 0.55), (0.30, 0.62)),
    "PCA": ((0.15, 0.45), (-0.82, -0.55), (-0.20, 0.25)),
}
_TERRITORY_ENVELOPES = {
    "MCA": ((0.60, 0.00, 0.15), (0.50, 0.62, 0.62)),
    "MCA_deep": ((0.32, 0.08, 0.08), (0.30, 0.35, 0.35)),
    "ACA": ((0.15, 0.30, 0.45), (0.28, 0.55, 0.50)),
    "PCA": ((0.30, -0.70, 0.02), (0.38, 0.40, 0.45)),
}


class LesionMixin:
    """Ischemic lesion of a :class:`~pipeline.data.synthetic.phantom.Phantom`: blobs, fate and perfusion deficit.

    Not used on its own: the phantom calls ``_draw_lesion`` after the anatomy (it needs
    ``brain_axes``, and :attr:`lesion_centre_scanner_z` needs ``to_scanner``), which sets the
    territory, hemisphere, volume target, blob shapes and the per-case noise and deficit
    parameters; :meth:`size_lesion` then scales the blobs for a slab extent and builds the lesion's
    noise fields. The other methods evaluate the lesion fields at sample points, turn the perfusion
    level into a deficit and choose the fate threshold that reaches a volume.
    """

    def _draw_lesion(self, rng: np.random.Generator) -> None:
        self.territory = str(rng.choice(TERRITORIES, p=TERRITORY_WEIGHTS))
        region = "MCA_deep" if self.territory == "MCA" and rng.random() < 0.25 else self.territory
        self.hemisphere = "left" if rng.random() < 0.5 else "right"
        self.side = 1.0 if self.hemisphere == "right" else -1.0
        self.target_ml = float(np.clip(LESION_ML_MEDIAN * math.exp(rng.normal(0, LESION_ML_LOG_SIGMA)), *LESION_ML_RANGE))
        n_blobs = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
        shares = rng.dirichlet(np.full(n_blobs, 2.0)) if n_blobs > 1 else np.ones(1)
        shares = np.sort(shares)[::-1]
        box = _TERRITORY_BOXES[region]
        centres = []
        for _ in range(n_blobs):
            for _ in range(100):
                u, v, w = (rng.uniform(lo, hi) for lo, hi in box)
                if u * u + v * v + w * w < 0.8:
                    break
            centres.append(np.array([self.side * u, v, w]) * self.brain_axes)
        self._blob_centres = np.array(centres, dtype=np.float32)
        self._blob_shares = shares.astype(np.float32)
        self._blob_aspect = rng.uniform(0.7, 1.4, size=(n_blobs, 3)).astype(np.float32)
        self._blob_weight = rng.uniform(0.8, 1.0, size=n_blobs).astype(np.float32)
        self._blob_weight[0] = 1.0
        self._blob_sigma = np.ones(n_blobs, np.float32)  # set per slab extent in size_lesion()
        # The perfusion deficit is centred and sized slightly differently from the final infarct.
        self._perfusion_shift = (PERFUSION_BLOB_SHIFT * rng.normal(0, 1, size=(n_blobs, 3))).astype(np.float32)
        self._perfusion_scale = np.exp(PERFUSION_BLOB_LOG_SCALE * rng.normal(0, 1, size=n_blobs)).astype(np.float32)
        env_centre, env_axes = _TERRITORY_ENVELOPES[region]
        self._territory_centre = np.array([self.side * env_centre[0], env_centre[1], env_centre[2]]) * self.brain_axes
        self._territory_axes = np.array(env_axes) * self.brain_axes
        self.perfusion_noise = rng.uniform(0.15, 0.25, size=4)  # CBF, CBV, MTT, Tmax
        self.ct_noise_hu = rng.uniform(2.0, 4.0)
        # Where the perfusion deficit starts (relative to the fate threshold) and where the CTP core
        # starts: each case's maps over- or under-call the final infarct differently.
        self.penumbra_margin = rng.uniform(0.25, 0.7)
        self.penumbra_widening = rng.uniform(1.2, 2.0)
        self.core_offset = rng.uniform(*CORE_OFFSET_RANGE)
        self.tmax_core_extra = rng.uniform(6.0, 12.0)
        self.core_darkening_hu = rng.uniform(2.0, 5.0)
        self._lesion_rng_state = rng.integers(0, 2**63 - 1)
        self._lesion_fields: dict[str, GridField] | None = None

    def size_lesion(self, slab_extent_mm: float) -> None:
        """Scale the lesion blobs so that their labelled volume in a slab of this extent is near the target.

        Args:
            slab_extent_mm: z coverage of the slab the volume target refers to.
        """
        volumes = self.target_ml * 1000.0 * self._blob_shares
        radius_3d = np.cbrt(3.0 * volumes / (4.0 * math.pi))
        radius_slab = np.sqrt(volumes / (math.pi * slab_extent_mm))
        radius = np.where(2 * radius_3d > slab_extent_mm, np.maximum(radius_3d, radius_slab), radius_3d)
        self._blob_sigma = (radius / 1.15).astype(np.float32)
        self._build_lesion_fields()

    def _build_lesion_fields(self) -> None:
        rng = np.random.default_rng(int(self._lesion_rng_state))
        reach = 3.5 * self._blob_sigma[:, None] * self._blob_aspect
        lo = np.min(self._blob_centres - reach, axis=0) - 6.0
        hi = np.max(self._blob_centres + reach, axis=0) + 6.0
        origin, shape = box_grid(lo, hi, 2.0)
        self._lesion_fields = {
            "irregular": GridField(smooth_noise(rng, shape, 2.0), origin, 2.0),
            "perfusion": GridField(smooth_noise(rng, shape, LESION_NOISE_SIGMA_MM / 2.0), origin, 2.0),
            "fate": GridField(smooth_noise(rng, shape, LESION_NOISE_SIGMA_MM / 2.0), origin, 2.0),
        }

    @property
    def lesion_centre_scanner_z(self) -> float:
        """Scanner z of the largest lesion blob's centre."""
        return float(self.to_scanner(self._blob_centres[0])[2])

    def _lesion_fields_at(self, h: np.ndarray) -> dict[str, np.ndarray]:
        """Lesion fields at points ``(3, M)``.

        Returns ``fate_base`` (the lesion propensity L that the label sees), ``perfusion_base`` (the
        propensity that the maps see: the same blobs, displaced and rescaled a little), ``envelope``
        (where the fate and perfusion noises act) and ``hypoperfusion`` (the perfusion blobs widened
        by the penumbra factor), all confined to the territory and hemisphere.
        """
        if self._lesion_fields is None:
            raise RuntimeError("call size_lesion() before sampling the lesion")
        x, y, z = h
        tc, ta = self._territory_centre, self._territory_axes
        territory = np.sqrt(((x - tc[0]) / ta[0]) ** 2 + ((y - tc[1]) / ta[1]) ** 2 + ((z - tc[2]) / ta[2]) ** 2)
        confine = soft_step(1.0 - territory, TERRITORY_EDGE_SOFTNESS) * soft_step(self.side * x - 1.0, 0.8)
        fate_base = np.zeros(h.shape[1], np.float32)
        perfusion_base = np.zeros(h.shape[1], np.float32)
        hypoperfusion = np.zeros(h.shape[1], np.float32)
        envelope = np.zeros(h.shape[1], np.float32)
        widening = 1.0 / self.penumbra_widening**2
        blobs = zip(self._blob_centres, self._blob_aspect, self._blob_sigma, self._blob_weight, self._perfusion_shift, self._perfusion_scale)
        for centre, aspect, sigma, weight, shift, scale in blobs:
            r = sigma * aspect
            q = ((x - centre[0]) / r[0]) ** 2 + ((y - centre[1]) / r[1]) ** 2 + ((z - centre[2]) / r[2]) ** 2
            fate_base += weight * np.exp(-0.5 * q)
            envelope += np.exp(-0.125 * q)
            c = centre + shift * r
            r = r * scale
            q = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
            perfusion_base += weight * np.exp(-0.5 * q)
            hypoperfusion += weight * np.exp(-0.5 * widening * q)
        envelope = confine * np.minimum(envelope, 1.0)
        active = np.nonzero(envelope > 1e-3)[0]
        irregular = np.ones(h.shape[1], np.float32)
        irregular[active] = np.clip(1.0 + LESION_IRREGULARITY * self._lesion_fields["irregular"](h[:, active]), 0.0, None)
        return {
            "fate_base": (confine * fate_base * irregular).astype(np.float32),
            "perfusion_base": (confine * perfusion_base * irregular).astype(np.float32),
            "envelope": envelope.astype(np.float32),
            "hypoperfusion": (confine * hypoperfusion).astype(np.float32),
        }

    def _deficit(self, rel: np.ndarray, rel_hypoperfusion: np.ndarray, healthy_tmax: np.ndarray) -> dict[str, np.ndarray]:
        """Perfusion deficit from the perfusion level relative to the fate threshold, ``rel = ln(S / tau)``.

        ``rel_hypoperfusion`` is the same for the wider hypoperfusion drive; the penumbra extends to
        the larger of the two. Returns multiplicative CBF and CBV factors and the Tmax (s):
        oligemia below the penumbra margin, penumbra (CBF mildly reduced, CBV preserved or raised,
        Tmax > 6 s) up to the core offset, core beyond (CBF falling to a few % of healthy, CBV
        below half, Tmax > 6, often > 10 s).
        """
        pen = self.penumbra_margin
        core = self.core_offset
        drive = np.maximum(rel, rel_hypoperfusion)
        oligemia = ramp(drive, -pen - 0.4, -pen)
        penumbra = ramp(drive, -pen, core)
        core_depth = ramp(rel, core, core + 0.5)
        in_core = rel > core
        tmax = healthy_tmax + oligemia * (6.2 - healthy_tmax) + ramp(drive, -pen, core + 0.6) * self.tmax_core_extra
        cbf = np.where(in_core, 0.35 - 0.3 * core_depth, 1.0 - 0.15 * oligemia - 0.4 * penumbra)
        # CBV collapses at the core border (below 2 mL/100g in grey matter once rCBF < 30%).
        cbv = np.where(
            in_core, 1.25 - 0.87 * ramp(rel, core, core + 0.08) - 0.18 * ramp(rel, core + 0.08, core + 0.5), 1.0 + 0.25 * penumbra
        )
        return {"cbf": cbf.astype(np.float32), "cbv": cbv.astype(np.float32), "tmax": tmax.astype(np.float32)}

    @staticmethod
    def _threshold_for_volume(voxel_log_fate: np.ndarray, target_ml: float, voxel_ml: float) -> float:
        """The fate threshold (linear units) that labels ``target_ml`` (kept within 1-100 mL).

        The threshold stays above :data:`MIN_FATE_THRESHOLD` unless that leaves less than 1 mL.
        """
        values = np.sort(voxel_log_fate[np.isfinite(voxel_log_fate)])[::-1]
        n_min = math.ceil(LESION_ML_RANGE[0] / voxel_ml - 1e-9)
        n_max = math.floor(LESION_ML_RANGE[1] / voxel_ml + 1e-9)
        n = min(max(int(round(target_ml / voxel_ml)), n_min), n_max)
        n_above_min = int(np.count_nonzero(values > math.log(MIN_FATE_THRESHOLD)))
        if n > n_above_min:
            if n_above_min >= n_min:
                return MIN_FATE_THRESHOLD
            n = n_min
        if values.size == 0:
            return MIN_FATE_THRESHOLD
        if n >= values.size:
            return float(math.exp(values[-1]) * 0.999)
        return float(math.exp(0.5 * (float(values[n - 1]) + float(values[n]))))
