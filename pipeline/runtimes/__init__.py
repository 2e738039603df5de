"""Runtimes for the network at inference: eager PyTorch, or the network exported to ONNX and run by ONNX Runtime or
OpenVINO behind the same inferer (same windows, blending, inversion and writing).

- :mod:`~pipeline.runtimes.choice`: :data:`RUNTIMES`, :func:`runtime_available`, :func:`default_runtime` (the
  measured choice for a device) and :func:`resolve_runtime` (a user's choice, with the stated fallback to torch);
- :mod:`~pipeline.runtimes.onnx_export`: :func:`export_onnx` (MONAI's ``convert_to_onnx``, written atomically),
  :func:`weights_digest` and the cache of exports between runs (:func:`runtime_cache_dir`);
- :mod:`~pipeline.runtimes.backends`: :class:`OnnxRuntimeModel` and :class:`OpenVINOModel`;
- :mod:`~pipeline.runtimes.network`: :class:`CompiledNetwork`, a module's stand-in that runs in a runtime;
- :mod:`~pipeline.runtimes.inferer`: :class:`RuntimeInferer`, any inferer with its network in a runtime.

``onnx``, ``onnxruntime`` and ``openvino`` are the optional extra ``runtimes``; without them everything runs in torch.
"""

from __future__ import annotations

from pipeline.runtimes.backends import OnnxRuntimeModel, OpenVINOModel, load_runtime_model
from pipeline.runtimes.choice import AUTO, RUNTIME_ENV, RUNTIMES, default_runtime, resolve_runtime, runtime_available
from pipeline.runtimes.inferer import RuntimeInferer
from pipeline.runtimes.network import CompiledNetwork
from pipeline.runtimes.onnx_export import (CACHE_ENV, ONNX_OPSET, RUNTIME_CACHE_FOLDER, SLICE_BATCHED, export_onnx,
                                           onnx_file_name, runtime_cache_dir, weights_digest)

__all__ = [
    "AUTO",
    "CACHE_ENV",
    "CompiledNetwork",
    "ONNX_OPSET",
    "OnnxRuntimeModel",
    "OpenVINOModel",
    "RUNTIMES",
    "RUNTIME_CACHE_FOLDER",
    "RuntimeInferer",
    "SLICE_BATCHED",
    "default_runtime",
    "export_onnx",
    "load_runtime_model",
    "onnx_file_name",
    "resolve_runtime",
    "runtime_available",
    "runtime_cache_dir",
    "weights_digest",
]
