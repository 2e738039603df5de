"""Reduced-precision compute (autocast): which dtype a device uses, whether it pays off there, and an inferer
that runs another one under autocast.

The bundles' ``amp`` switch means: convolutions in bfloat16 where the device computes it natively (CUDA GPUs
from Ampere on; CPUs with AVX512-BF16 or AMX), float16 on older CUDA GPUs; accumulation, losses and outputs stay
in float32. On a CPU without native bfloat16 the conversion is emulated and slower than float32, so inference
turns it on by default only where :func:`low_precision_pays_off` says so.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "amp_dtype", "low_precision_pays_off"]


def amp_dtype(device: str | torch.device) -> torch.dtype:
    """The autocast dtype of the ``amp`` switch on ``device``: bfloat16 where it is supported (CPUs,
    CUDA GPUs from Ampere on), else float16 (with MONAI's gradient scaler on CUDA).

    Args:
        device: the device the network runs on.

    Returns:
        ``torch.bfloat16`` or ``torch.float16``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def _cpu_has_native_bf16() -> bool:
    # torch.ops.mkldnn._is_mkldnn_bf16_supported() is also true on plain AVX512, where bf16 is emulated (slower).
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def low_precision_pays_off(device: str | torch.device) -> bool:
    """Whether autocast makes a network faster on ``device``: any CUDA GPU (fp16 or bf16 tensor cores), or a CPU
    with native bfloat16 instructions (AVX512-BF16 or AMX) and oneDNN. Other devices and CPUs: False.

    Args:
        device: the device the network runs on (``"cpu"``, ``"cuda:0"``, a ``torch.device``).

    Returns:
        True where the bundles' inference turns ``amp`` on by default.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and _cpu_has_native_bf16()
    return False


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast(device_type, dtype)`` and return float32 outputs,
    so that losses, blending weights and post-processing see full precision.

    Args:
        inferer: the wrapped inferer (e.g. MONAI ``SimpleInferer`` or ``SlidingWindowInferer``).
        device_type: ``"cpu"``, ``"cuda"``, ...
        dtype: the autocast dtype (None: autocast's default for the device).
        enabled: False runs the wrapped inferer as it is (a config can switch autocast off without rewiring).
    """

    def __init__(self, inferer: Inferer, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True) -> None:
        self.inferer = inferer
        self.device_type = device_type
        self.dtype = dtype
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any):
        """Returns the wrapped inferer's output, floating tensors cast to float32 (stacked heads too)."""
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled):
            out = self.inferer(inputs, network, *args, **kwargs)
        if self.enabled and isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.float()
        return out
