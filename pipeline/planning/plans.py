"""Plans: the network geometry and training set-up derived from a dataset fingerprint (nnU-Net style).

The fingerprint (``prepare``'s ``fingerprint.json``) says what the data look like; the plans say
what every later phase does with them. They are plain, flat data (``plans.json``) so that a bundle
run can merge them as one more config file and override any value on its command line.

Rules (``derive_plans``; every axis is an axis of the fingerprint, i.e. the voxel order of the
reference files; the slice axis is the coarsest one):

- Target spacing: the median spacing of the training cases on each axis. nnU-Net takes a low
  percentile of the coarse axis of strongly anisotropic data because it resamples that axis; here
  the coarse axis of anisotropic data (coarsest / finest median spacing > 3) is never resampled:
  interpolating 2x12 mm slabs to 4-5 mm would invent slices between two thick slabs and change their
  slice count, while 22x4 mm slabs would lose detail if coarsened to 10-12 mm. Its median spacing is
  only the nominal value the pooling and kernel rules use. The other axes are resampled to the median
  when some training case is more than 10 % away from it (``IN_PLANE_TOLERANCE``), else left native.
  ``resample_pixdim`` is what MONAI's ``Spacingd`` takes: 0 (any value <= 0) on an axis keeps its native
  spacing, and all zeros leave the data untouched. The bundles take it as their ``pixdim`` config id
  (``train --plans`` passes it; ``predict`` takes it from the checkpoint's ``trained_plans.json``) and
  resample before reorienting, so its axes are the files' voxel axes, like every axis here.
- Configuration (:func:`configurations_for`): ``"2d"``, one slice per patch (slice extent 1, kernel and stride
  1 on the slice axis, which the bundles' 3D networks compute as 2D convolutions,
  :mod:`pipeline.networks.unit_axis`), when the median training case has a single slice or the spacing is
  anisotropic (ratio > 3: the ISLES slabs, where it beat the 3D configuration on the validation folds of the
  quality study); ``"3d_anisotropic"`` when the median case has at most 2 slices otherwise: a 3D network whose
  slice axis is taken whole and pooled only by the rule below, which never pools a 2-slice axis;
  ``"3d_fullres"`` otherwise. Every multi-slice dataset also gets the other of 2d and its 3D configuration in
  ``configurations`` (``train --configuration``); anisotropic data get ``"3d_anisotropic"`` there.
- Patch size: starts at the median shape (at target spacing) and is kept a multiple of the product
  of the strides on each axis. For ``3d_anisotropic`` the slice axis is the lower median slice count
  (an actual case's count: 2 for ISLES 2018, so a 2-slice slab is taken whole); shorter cases are
  padded by the training transforms. The patch shrinks by one stride product at a time, on the
  in-plane axes largest relative to the median shape (any axis for ``3d_fullres``, the slice axis of
  ``3d_anisotropic`` only as a last resort; axes tied at the largest ratio together), until it holds
  at most ``max_patch_voxels`` voxels and a batch of 2 fits the memory budget.
- Strides and kernels, level by level: an axis is pooled (stride 2) only when its current spacing
  is at most twice the finest current spacing and its current patch size is at least ``min_size``
  (so a pooled axis keeps at least ``min_size / 2`` voxels); levels stop when no axis pools or at
  ``max_depth``. An axis gets kernel 3 once its current spacing is at most twice the finest and keeps
  it at the coarser levels (nnU-Net's anisotropic kernels), else 1; an axis of extent 1 gets 1 (a
  wider kernel would only see padding).
- Features: ``base_features * 2**i`` capped at ``max_features``, one per level.
- Batch size: the largest batch (at least 2, nnU-Net's minimum) whose estimated training memory
  (``estimate_training_memory_mb``) fits ``memory_budget_mb``, and that covers at most
  ``max_dataset_fraction`` of the training voxels per step (nnU-Net's 5 % cap); 2 when nothing
  larger fits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io.atomic import atomic_write_json
from pipeline.io.jsonfile import read_json

__all__ = ["CONFIGURATION_KEYS", "PLANS_VERSION", "configurations_for", "derive_plans", "estimate_training_memory_mb",
           "load_plans", "select_configuration", "write_plans"]

PLANS_VERSION = 1
ANISOTROPY_RATIO = 3.0
IN_PLANE_TOLERANCE = 0.10
MIN_BATCH_SIZE = 2
BYTES_PER_VALUE = 4
# Peak memory of forward + backward over the activations autograd keeps: gradient buffers of the
# largest level, allocator slack and convolution workspaces (a margin over the activations alone).
BACKWARD_FACTOR = 1.5
# Weights, their gradients and Adam's two moments.
PARAMETER_COPIES = 4
OUT_CHANNELS = 2
# The deepest network plans may ask for: the UNet++ limit (``pipeline.networks.unetpp`` checks the same one itself).
MAX_DEPTH = 6
# the keys that differ between configurations; ``plans["configurations"][name]`` holds them for each one
CONFIGURATION_KEYS = ("configuration", "patch_size", "depth", "strides", "kernel_sizes", "features", "batch_size",
                      "memory_estimate_mb")
PLAN_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "batch_size", "target_spacing", "configuration")


def _fingerprint_dict(fingerprint: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(fingerprint, Mapping):
        return fingerprint
    path = Path(fingerprint)
    return read_json(path, f"fingerprint file {path}",
                     missing="{what} does not exist; run `python -m pipeline prepare` first")


def _training_geometry(fingerprint: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Shapes and spacings (cases x 3) of the training cases (all cases when none is marked training)."""
    cases = fingerprint.get("cases")
    if not isinstance(cases, Sequence) or not cases:
        raise ValueError("the fingerprint has no 'cases' rows to derive plans from")
    training = [c for c in cases if c.get("split", "training") == "training"] or list(cases)
    shapes, spacings = [], []
    for row in training:
        try:
            # a 2D image has no z entries (or None): one slice of nominal 1 mm
            shapes.append([int(row["shape_x"]), int(row["shape_y"]), int(row.get("shape_z") or 1)])
            spacings.append([float(row["spacing_x"]), float(row["spacing_y"]), float(row.get("spacing_z") or 1.0)])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"fingerprint case {row.get('case_id', '?')!r} lacks a valid shape_x/y/z or spacing_x/y/z ({err})"
            ) from err
    shapes_arr, spacings_arr = np.array(shapes), np.array(spacings)
    if (shapes_arr < 1).any() or (spacings_arr <= 0).any():
        raise ValueError("fingerprint shapes must be >= 1 and spacings > 0")
    return shapes_arr, spacings_arr, len(training)


def _lower_median(values: np.ndarray) -> int:
    return int(np.percentile(values, 50, method="lower"))


def _topology(
    patch: Sequence[int], spacing: Sequence[float], min_size: int, max_depth: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Strides (depth entries) and kernel sizes (depth + 1 entries) for a patch at a spacing."""
    size, current = list(patch), list(spacing)
    strides: list[list[int]] = []
    kernels: list[list[int]] = []
    has_kernel_3 = [False] * len(size)
    while True:
        finest = min(current)
        has_kernel_3 = [k or s <= 2 * finest for k, s in zip(has_kernel_3, current)]
        kernels.append([3 if k and n > 1 else 1 for k, n in zip(has_kernel_3, size)])
        if len(strides) == max_depth:
            break
        stride = [2 if s <= 2 * finest and n >= min_size else 1 for s, n in zip(current, size)]
        if max(stride) == 1:
            break
        strides.append(stride)
        size = [n // st for n, st in zip(size, stride)]
        current = [s * st for s, st in zip(current, stride)]
    return strides, kernels


def _stride_product(strides: Sequence[Sequence[int]], ndim: int) -> list[int]:
    return [int(np.prod([s[a] for s in strides])) if strides else 1 for a in range(ndim)]


def _features(depth: int, base_features: int, max_features: int) -> list[int]:
    return [min(base_features * 2**i, max_features) for i in range(depth + 1)]


def _memory_terms(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    kernel_sizes: Sequence[Sequence[int]],
    features: Sequence[int],
    in_channels: int,
) -> tuple[float, float]:
    """(MiB per sample, MiB per model) of one training step; see :func:`estimate_training_memory_mb`."""
    depth = len(strides)
    if len(kernel_sizes) != depth + 1 or len(features) != depth + 1:
        raise ValueError(
            f"{depth} strides need {depth + 1} kernel sizes and features, got {len(kernel_sizes)} and {len(features)}"
        )
    size = [int(n) for n in patch_size]
    activations = float(np.prod(size)) * (in_channels + depth * OUT_CHANNELS)
    parameters = float(features[0] * OUT_CHANNELS * depth)
    for i, f in enumerate(features):
        nodes = depth - i + 1
        activations += f * float(np.prod(size)) * nodes * (5 + (nodes + 1) / 2)
        kernel_volume = float(np.prod(kernel_sizes[i]))
        for j in range(nodes):
            cin = (in_channels if i == 0 else features[i - 1]) if j == 0 else (j + 1) * f
            parameters += (cin + f) * f * kernel_volume
            if j >= 1:
                parameters += features[i + 1] * f * float(np.prod(strides[i]))
        if i < depth:
            size = [n // s for n, s in zip(size, strides[i])]
    mib = BYTES_PER_VALUE / 2**20
    return activations * BACKWARD_FACTOR * mib, parameters * PARAMETER_COPIES * mib


def estimate_training_memory_mb(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    kernel_sizes: Sequence[Sequence[int]],
    features: Sequence[int],
    in_channels: int,
    batch_size: int,
) -> float:
    """Estimate the memory (MiB) of one UNet++ training step (float32, deep supervision, Adam).

    Activations: level i of a depth-L UNet++ holds n = L - i + 1 nodes X^{i,0..L-i}; node X^{i,j}
    keeps about 5 tensors of ``features[i]`` channels for its two convolution blocks (convolution,
    normalisation and activation outputs) plus its concatenated input of (j + 1) x ``features[i]``
    channels, so level i keeps ``features[i] * voxels[i] * n * (5 + (n + 1) / 2)`` values per sample
    (an approximation of what autograd saves). That is multiplied by
    ``BACKWARD_FACTOR`` for the backward pass; the parameters count 4 times (weights, gradients and
    Adam's two moments).

    Args:
        patch_size: patch extent per axis.
        strides: pooling factors, one entry per level transition (depth entries).
        kernel_sizes: kernel size per level and axis (depth + 1 entries).
        features: channels per level (depth + 1 entries).
        in_channels: input channels.
        batch_size: samples per step.

    Returns:
        The estimate in MiB.

    Raises:
        ValueError: if the per-level lists do not have depth / depth + 1 entries.
    """
    per_sample, per_model = _memory_terms(patch_size, strides, kernel_sizes, features, in_channels)
    return batch_size * per_sample + per_model


def configurations_for(median_slices: int, anisotropic: bool) -> list[str]:
    """The configurations a dataset can be planned in, the default first.

    Args:
        median_slices: slices of the median training case along the slice (coarsest) axis.
        anisotropic: whether the median spacing is anisotropic (coarsest / finest > ``ANISOTROPY_RATIO``).

    Returns:
        ``["2d"]`` for single-slice data; ``["2d", "3d_anisotropic"]`` for anisotropic data (the 2d default chosen
        on the validation folds of the quality study); ``["3d_anisotropic", "2d"]`` for isotropic data whose
        median case has at most 2 slices; ``["3d_fullres", "2d"]`` otherwise.
    """
    if median_slices <= 1:
        return ["2d"]
    if anisotropic:
        # measured on the ISLES-2018-like slabs (docs: the quality study): 2d trains better in the same budget
        return ["2d", "3d_anisotropic"]
    if median_slices <= 2:
        return ["3d_anisotropic", "2d"]
    return ["3d_fullres", "2d"]


def derive_plans(
    fingerprint: Mapping[str, Any] | str | Path,
    memory_budget_mb: float = 2048,
    base_features: int = 16,
    max_features: int = 256,
    max_depth: int = 5,
    min_size: int = 8,
    max_patch_voxels: int | None = None,
    max_dataset_fraction: float | None = 0.05,
    configuration: str | None = None,
) -> dict[str, Any]:
    """Derive the plans (network geometry, patch, batch, spacing) from a dataset fingerprint.

    The rules are those of this module's docstring.

    Args:
        fingerprint: the dictionary ``prepare`` writes to ``fingerprint.json`` (``summary`` and
            ``cases`` rows with shape_x/y/z and spacing_x/y/z), or the path of that file. Plans are
            derived from the ``training`` cases (from all cases when none is marked training).
        memory_budget_mb: memory one training step may take (MiB), see ``estimate_training_memory_mb``.
        base_features: channels of level 0.
        max_features: cap on the channels of any level.
        max_depth: most pooling levels (1 to 6, the UNet++ limit).
        min_size: an axis is pooled only while its patch extent is at least this.
        max_patch_voxels: cap on the voxels of one patch; None for no cap beyond memory.
        max_dataset_fraction: a batch covers at most this fraction of all training voxels (batch
            never below 2); None for no cap beyond memory.
        configuration: plan this configuration (one of :func:`configurations_for`'s); None for the default.

    Returns:
        A flat JSON-serialisable dictionary: ``version``, ``configuration``, ``spatial_dims``,
        ``target_spacing``, ``resample``, ``resample_pixdim``, ``slice_axis``, ``patch_size``,
        ``depth``, ``strides``, ``kernel_sizes``, ``features``, ``batch_size``, ``memory_budget_mb``,
        ``memory_estimate_mb``, ``fingerprint_summary``, ``configurations`` (for every configuration the data
        fit, its :data:`CONFIGURATION_KEYS`; :func:`select_configuration` picks one), and ``channels``/``in_channels``,
        ``normalization``, ``profile`` when the fingerprint summary has them. The per-axis network lists
        (patch, strides, kernels) have three entries; for ``"2d"`` the slice axis has patch extent 1, kernel 1
        and stride 1.

    Raises:
        FileNotFoundError: ``fingerprint`` is a path that does not exist.
        ValueError: unreadable fingerprint, no cases, missing geometry, out-of-range arguments, a configuration
            the data do not fit, or a median shape too small to pool even once.
    """
    if not 1 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH} (the UNet++ limit), got {max_depth}")
    if min_size < 2 or base_features < 1 or max_features < base_features or memory_budget_mb <= 0:
        raise ValueError(
            "need min_size >= 2, base_features >= 1, max_features >= base_features and a positive memory budget"
        )
    if max_patch_voxels is not None and max_patch_voxels < 1:
        raise ValueError(f"max_patch_voxels must be positive, got {max_patch_voxels}")

    fp = _fingerprint_dict(fingerprint)
    settings = dict(memory_budget_mb=memory_budget_mb, base_features=base_features, max_features=max_features,
                    max_depth=max_depth, min_size=min_size, max_patch_voxels=max_patch_voxels,
                    max_dataset_fraction=max_dataset_fraction)
    plans, available = _derive_configuration(fp, configuration, **settings)
    plans["configurations"] = {
        name: {k: v for k, v in (plans if name == plans["configuration"]
                                 else _derive_configuration(fp, name, **settings)[0]).items() if k in CONFIGURATION_KEYS}
        for name in available
    }
    return plans


def _derive_configuration(
    fp: Mapping[str, Any], configuration: str | None, memory_budget_mb: float, base_features: int,
    max_features: int, max_depth: int, min_size: int, max_patch_voxels: int | None,
    max_dataset_fraction: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """The flat plans of one configuration (:func:`derive_plans` without ``configurations``), and the
    configurations the data fit."""
    summary = fp.get("summary") or {}
    shapes, spacings, n_training = _training_geometry(fp)

    target = np.median(spacings, axis=0)
    slice_axis = 2 - int(np.argmax(target[::-1]))  # the coarsest axis; the last one on a tie
    anisotropy = float(target.max() / target.min())
    anisotropic = anisotropy > ANISOTROPY_RATIO
    deviation = np.abs(spacings / target - 1.0).max(axis=0)
    resample_axes = [
        bool(deviation[a] > IN_PLANE_TOLERANCE and not (anisotropic and a == slice_axis)) for a in range(3)
    ]
    working_spacing = np.where(resample_axes, target, spacings)
    shapes_at_target = np.maximum(1, np.round(shapes * working_spacing / target)).astype(int)
    median_shape = [_lower_median(shapes_at_target[:, a]) for a in range(3)]
    median_slices = median_shape[slice_axis]

    available = configurations_for(median_slices, anisotropic)
    if configuration is None:
        configuration = available[0]
    elif configuration not in available:
        raise ValueError(f"configuration {configuration!r} does not fit this data (median case of {median_slices} "
                         f"slice(s)); choose one of {', '.join(available)}")
    net_spacing = [float(s) for s in target]
    # a 2d patch keeps the slice axis with extent 1: the bundles' 3D networks then run it slice by slice
    net_median = [1 if configuration == "2d" and a == slice_axis else median_shape[a] for a in range(3)]
    # The axes that shrink first; the slice axis of an anisotropic patch only when nothing else can.
    preferred = [a for a in range(3) if configuration == "3d_fullres" or a != slice_axis]
    in_channels = len(summary["channels"]) if summary.get("channels") else 1

    patch = list(net_median)
    while True:
        strides, kernels = _topology(patch, net_spacing, min_size, max_depth)
        divisor = _stride_product(strides, 3)
        rounded = [(n // d) * d for n, d in zip(patch, divisor)]
        if rounded != patch:
            patch = rounded
            continue
        if not strides:
            raise ValueError(
                f"the median case shape {median_shape} is too small to pool any axis (each needs >= {min_size} voxels)"
            )
        features = _features(len(strides), base_features, max_features)
        memory = estimate_training_memory_mb(patch, strides, kernels, features, in_channels, MIN_BATCH_SIZE)
        too_big = max_patch_voxels is not None and math.prod(patch) > max_patch_voxels
        if memory <= memory_budget_mb and not too_big:
            break
        shrinkable = [i for i in preferred if patch[i] - divisor[i] >= min(min_size, net_median[i])]
        if not shrinkable:
            shrinkable = [i for i in range(3) if patch[i] - divisor[i] >= min(min_size, net_median[i])]
        if not shrinkable:
            break  # the smallest patch; batch 2 even if the estimate exceeds the budget
        largest = max(patch[i] / net_median[i] for i in shrinkable)
        # Axes tied at the largest ratio shrink together, so a square in-plane patch stays square.
        for i in shrinkable:
            if patch[i] / net_median[i] >= largest - 1e-9:
                patch[i] -= divisor[i]

    per_sample, per_model = _memory_terms(patch, strides, kernels, features, in_channels)
    batch_size = max(MIN_BATCH_SIZE, int((memory_budget_mb - per_model) // per_sample))
    if max_dataset_fraction is not None:
        dataset_voxels = float(np.prod(shapes_at_target, axis=1).sum())
        batch_size = max(MIN_BATCH_SIZE, min(batch_size, int(max_dataset_fraction * dataset_voxels / math.prod(patch))))

    plans: dict[str, Any] = {
        "version": PLANS_VERSION,
        "configuration": configuration,
        "spatial_dims": 3,
        "target_spacing": [round(float(s), 4) for s in target],
        "resample": any(resample_axes),
        "resample_pixdim": [round(float(target[a]), 4) if resample_axes[a] else 0.0 for a in range(3)],
        "slice_axis": slice_axis,
        "patch_size": patch,
        "depth": len(strides),
        "strides": strides,
        "kernel_sizes": kernels,
        "features": features,
        "batch_size": int(batch_size),
        "memory_budget_mb": float(memory_budget_mb),
        "memory_estimate_mb": round(
            estimate_training_memory_mb(patch, strides, kernels, features, in_channels, batch_size), 1
        ),
    }
    if summary.get("channels"):
        plans["channels"] = list(summary["channels"])
        plans["in_channels"] = in_channels
    if summary.get("normalization"):
        plans["normalization"] = summary["normalization"]
    if summary.get("profile"):
        plans["profile"] = summary["profile"]
    plans["fingerprint_summary"] = {
        "training_cases": n_training,
        "median_shape": median_shape,
        "median_slices": median_slices,
        "spacing_median_mm": [round(float(s), 4) for s in target],
        "spacing_min_mm": [round(float(s), 4) for s in spacings.min(axis=0)],
        "spacing_max_mm": [round(float(s), 4) for s in spacings.max(axis=0)],
        "max_spacing_deviation": [round(float(d), 4) for d in deviation],
        "anisotropy": round(anisotropy, 3),
        "two_slice_fraction": round(float((shapes[:, slice_axis] <= 2).mean()), 4),
        **{k: summary[k] for k in ("slabs", "in_plane_shapes", "lesion_ml") if k in summary},
    }
    return plans, available


def write_plans(plans: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``plans`` as indented JSON to ``path`` atomically (a reader never sees half a file).

    Args:
        plans: the dictionary from :func:`derive_plans` (possibly edited).
        path: the output file (``plans.json``); missing folders are created.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: the plans lack one of the keys every later phase reads.
    """
    missing = [k for k in PLAN_KEYS if k not in plans]
    if missing:
        raise ValueError(f"plans lack {', '.join(missing)}; derive them with derive_plans")
    return atomic_write_json(path, dict(plans))


def select_configuration(plans: Mapping[str, Any], configuration: str | None) -> dict[str, Any]:
    """The flat plans of one of the configurations ``plans`` holds.

    Args:
        plans: plans from :func:`derive_plans` / :func:`load_plans`.
        configuration: a name in ``plans["configurations"]``; None (or the plans' own ``configuration``) keeps the
            plans' default.

    Returns:
        A copy of ``plans`` whose :data:`CONFIGURATION_KEYS` are those of ``configuration``.

    Raises:
        ValueError: the plans hold no such configuration (the message lists those they hold).
    """
    chosen = dict(plans)
    if configuration is None or configuration == plans.get("configuration"):
        return chosen
    held = plans.get("configurations") or {}
    if configuration not in held:
        names = ", ".join(held) or str(plans.get("configuration"))
        raise ValueError(f"the plans hold no {configuration!r} configuration; they hold {names}")
    chosen.update(held[configuration])
    chosen["configuration"] = configuration
    return chosen


def load_plans(path: str | Path, configuration: str | None = None) -> dict[str, Any]:
    """Read a plans file written by :func:`write_plans`.

    Args:
        path: the ``plans.json`` file.
        configuration: one of the configurations the file holds (:func:`select_configuration`); None for its default.

    Returns:
        The plans dictionary.

    Raises:
        FileNotFoundError: the file does not exist (the message says how to make it).
        ValueError: the file cannot be read, is not JSON, not a JSON object, lacks a required key, has a
            ``version`` this code does not read, or does not hold ``configuration``.
    """
    path = Path(path)
    plans = read_json(path, f"plans file {path}",
                      missing="{what} does not exist; derive it from the fingerprint with derive_plans/write_plans")
    missing = [k for k in PLAN_KEYS if k not in plans]
    if missing:
        raise ValueError(f"plans file {path} lacks {', '.join(missing)}")
    if plans.get("version") != PLANS_VERSION:
        raise ValueError(
            f"plans file {path} has version {plans.get('version')!r}; this code reads version {PLANS_VERSION}"
        )
    try:
        return select_configuration(plans, configuration)
    except ValueError as err:
        raise ValueError(f"plans file {path}: {err}") from None
