"""An exported network loaded into an ONNX runtime: one small class per runtime, each ``__call__(array) -> array``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.utils import optional_import

__all__ = ["OnnxRuntimeModel", "OpenVINOModel", "load_runtime_model"]


class OnnxRuntimeModel:
    """An ONNX file in an ONNX Runtime CPU session with all graph optimisations, one thread per torch thread.

    Args:
        path: the ONNX file (input ``input``, dynamic batch axis).

    Raises:
        ImportError: onnxruntime is not installed.
        Exception: onnxruntime cannot load the file (its own error).
    """

    def __init__(self, path: str | Path) -> None:
        ort, has_ort = optional_import("onnxruntime")
        if not has_ort:
            raise ImportError("onnxruntime is not installed")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """The network's output for ``array`` (N, C, *spatial), float32."""
        return self.session.run(None, {"input": array})[0]


class OpenVINOModel:
    """An ONNX file compiled by OpenVINO for the CPU, with its batch axis dynamic (one compilation serves every
    number of windows: a case's last call has fewer), the latency hint and one thread per torch thread.

    Args:
        path: the ONNX file.
        reduced_precision: let the CPU plugin compute in bfloat16 where the CPU has it natively
            (``INFERENCE_PRECISION_HINT``); False (the default) keeps float32, which OpenVINO would otherwise
            leave on bfloat16-capable CPUs.
        cache_dir: OpenVINO's cache of compiled models (``CACHE_DIR``, keyed by OpenVINO itself), or None.

    Raises:
        ImportError: openvino is not installed.
        Exception: OpenVINO cannot read or compile the file (its own error).
    """

    def __init__(self, path: str | Path, reduced_precision: bool = False, cache_dir: str | Path | None = None) -> None:
        ov, has_ov = optional_import("openvino")
        if not has_ov:
            raise ImportError("openvino is not installed")
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": "bf16" if reduced_precision else "f32",
        }
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """The network's output for ``array`` (N, C, *spatial), float32."""
        return np.asarray(self.compiled(array)[0], dtype=np.float32)


def load_runtime_model(runtime: str, path: str | Path, reduced_precision: bool = False,
                       cache_dir: str | Path | None = None):
    """The ONNX file at ``path`` loaded into ``runtime`` (``"onnxruntime"`` or ``"openvino"``).

    Raises:
        ValueError: another runtime name.
        ImportError: the runtime is not installed.
    """
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(path)
    if runtime == "openvino":
        return OpenVINOModel(path, reduced_precision=reduced_precision, cache_dir=cache_dir)
    raise ValueError(f"no ONNX model loader for runtime {runtime!r}")


def runtime_version(runtime: str) -> str:
    """The installed version of a runtime's package (``onnxruntime``, ``openvino``), ``""`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(runtime)
    except PackageNotFoundError:
        return ""
