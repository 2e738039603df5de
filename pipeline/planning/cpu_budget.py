"""The planned network sized for a short CPU training budget: the demo's and the benchmark's recipe.

The plans keep their strides and kernels (what the data's spacing and shape asked for); the widths, the in-plane
patch and the batch shrink so that a 2-core CPU trains enough epochs within minutes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# The demo's channels: every ISLES 2018 modality but the raw 4D perfusion series, as challenge entries used them.
# The non-contrast CT adds the early hypodensity of the core that the perfusion maps do not show.
DEMO_CHANNELS = "CBF,CBV,MTT,Tmax,CT"

# Widths of the smoke-test network (``benchmark --quick``), one per level.
QUICK_FEATURES = [4, 4, 8, 8, 16, 16]


def cpu_budget_plans(plans: Mapping[str, Any], quick: bool = False) -> dict[str, Any]:
    """A copy of ``plans`` sized for a CPU budget.

    Args:
        plans: plans as :func:`pipeline.planning.plans.load_plans` returns them (``strides``, ``patch_size``, ...).
        quick: the smoke-test size (``QUICK_FEATURES``, a 64x64 in-plane patch, batch 2) instead of the demo's
            (widths 8, 16, ... up to 128, a 128x128 in-plane patch, batch 4, or 8 for a
            one-slice patch).

    Returns:
        The resized plans; ``plans`` itself is left unchanged.

    Raises:
        KeyError: ``plans`` has no ``strides`` or ``patch_size``.
    """
    sized = copy.deepcopy(dict(plans))
    sized.pop("configurations", None)  # the sized plans are of one configuration; the others keep their full size
    depth = len(sized["strides"])
    if quick:
        sized.update(features=QUICK_FEATURES[: depth + 1], patch_size=[64, 64, sized["patch_size"][2]], batch_size=2)
    else:
        slices = sized["patch_size"][2]
        # a one-slice (2d) patch takes twice the batch: the same voxels per step as a 2-slice slab
        sized.update(features=[min(8 * 2**i, 128) for i in range(depth + 1)],
                     patch_size=[128, 128, slices], batch_size=8 if slices == 1 else 4)
    return sized
