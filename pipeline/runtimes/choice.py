"""Which runtime executes the network at inference: the names, whether each is installed, and the default."""

from __future__ import annotations

import os
import warnings

import torch
from monai.utils import optional_import

from pipeline.precision import low_precision_pays_off

__all__ = ["AUTO", "RUNTIMES", "RUNTIME_ENV", "default_runtime", "resolve_runtime", "runtime_available"]

# torch: eager PyTorch (autocast with ``amp``); the others run the network exported to ONNX.
RUNTIMES = ("torch", "onnxruntime", "openvino")
AUTO = "auto"
# pins what "auto" means on this machine (a site that validated one runtime; the test suite, which pins torch)
RUNTIME_ENV = "PIPELINE_RUNTIME"
# the package each runtime needs (beside torch), as the ``runtimes`` extra installs it
_PACKAGES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
_EXTRA_HINT = "pip install 'isles-unet-pipeline[runtimes]'"


def runtime_available(runtime: str) -> bool:
    """Whether the packages ``runtime`` needs can be imported (``torch`` always can).

    Raises:
        ValueError: an unknown runtime name.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)} or {AUTO!r}")
    return all(optional_import(name)[1] for name in _PACKAGES.get(runtime, ()))


def default_runtime(device: str | torch.device = "cpu") -> str:
    """The runtime inference uses when none is asked for, chosen by measurement (``docs/benchmark.md``):

    - a CPU without native bfloat16 (AVX2, plain AVX-512): ``onnxruntime`` in float32 when it is installed, the
      fastest of the three over the demo model's test cases end to end (``predict``), at the same Dice;
    - a CPU with native bfloat16 (AVX512-BF16, AMX): ``torch``, whose bfloat16 autocast (the bundles' ``amp``
      default there) is faster than the ONNX runtimes in float32 and keeps Dice within 0.01;
    - a GPU or any other device: ``torch``.

    The environment variable ``PIPELINE_RUNTIME`` (:data:`RUNTIME_ENV`), when set to one of :data:`RUNTIMES`,
    replaces that choice.

    Args:
        device: where the network runs.

    Returns:
        One of :data:`RUNTIMES`; ``torch`` when the measured choice is not installed.

    Raises:
        ValueError: ``PIPELINE_RUNTIME`` names no runtime.
    """
    pinned = os.environ.get(RUNTIME_ENV, "").strip()
    if pinned:
        if pinned not in RUNTIMES:
            raise ValueError(f"${RUNTIME_ENV}={pinned!r} is not a runtime: choose one of {', '.join(RUNTIMES)}, "
                             "or unset it for the measured default")
        return pinned
    device = torch.device(device)
    if device.type == "cpu" and not low_precision_pays_off(device) and runtime_available("onnxruntime"):
        return "onnxruntime"
    return "torch"


def resolve_runtime(runtime: str | None, device: str | torch.device = "cpu") -> str:
    """The runtime a run uses for the name a user or config gave.

    Args:
        runtime: one of :data:`RUNTIMES`, ``"auto"`` or None (both: :func:`default_runtime`).
        device: where the network runs. The ONNX runtimes run on the CPU here; on any other device they give
            way to ``torch``.

    Returns:
        One of :data:`RUNTIMES`. A runtime whose package is missing, or a CPU runtime asked for on a GPU, falls
        back to ``torch`` with a warning that says so.

    Raises:
        ValueError: an unknown runtime name.
    """
    if runtime is None or runtime == AUTO:
        runtime = default_runtime(device)
        if os.environ.get(RUNTIME_ENV, "").strip() in ("", "torch"):
            return runtime
    if not runtime_available(runtime):
        warnings.warn(f"runtime {runtime!r} is not installed ({_EXTRA_HINT}): the network runs in torch instead",
                      stacklevel=2)
        return "torch"
    if runtime != "torch" and torch.device(device).type != "cpu":
        warnings.warn(f"runtime {runtime!r} runs the network on the CPU here, but the device is {device}: the "
                      "network runs in torch on that device instead", stacklevel=2)
        return "torch"
    return runtime
