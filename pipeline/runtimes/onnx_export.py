"""The network as an ONNX file: exported with MONAI's ``convert_to_onnx``, cached on disk by what it depends on."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["CACHE_ENV", "ONNX_OPSET", "RUNTIME_CACHE_FOLDER", "SLICE_BATCHED", "export_onnx", "onnx_file_name",
           "runtime_cache_dir", "weights_digest"]

ONNX_OPSET = 17
RUNTIME_CACHE_FOLDER = "compiled"
# the environment variable that moves the cache (runtime_cache_dir)
CACHE_ENV = "PIPELINE_CACHE_DIR"
# the layout tag of a slice-batched export (pipeline.networks.slice_batching) in its file name
SLICE_BATCHED = "slice-batched"


_SETTING_TYPES = (bool, int, float, str, type(None))


def _settings(module: nn.Module) -> str:
    """A module's class and its plain settings (numbers, strings, flags and tuples of them, such as a UNet++'s
    ``inference_level``), which change what it computes without changing its weights."""
    values = {k: v for k, v in vars(module).items() if k != "training" and (
        isinstance(v, _SETTING_TYPES) or (isinstance(v, (tuple, list)) and all(isinstance(i, _SETTING_TYPES) for i in v)))}
    return f"{type(module).__qualname__}{sorted(values.items())!r}"


def weights_digest(network: nn.Module) -> str:
    """A SHA-256 of the network's modules (their classes and plain settings) and state dict (names, dtypes, shapes
    and values): it changes whenever the weights or what the network computes with them do (the same weights
    pruned to another UNet++ level are another network), whatever checkpoint file they came from."""
    digest = hashlib.sha256(type(network).__qualname__.encode())
    for name, module in network.named_modules():
        digest.update(f"{name}|{_settings(module)}".encode())
    for name, value in network.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def onnx_file_name(digest: str, sample_shape: Sequence[int | None], layout: str = "") -> str:
    """The cache file name of a network's ONNX export for inputs of ``sample_shape`` (channels and spatial size,
    None for an axis the export leaves dynamic, written ``any``; the batch axis is always dynamic): keyed by the
    weights, the shape, the graph's layout (``""`` for the network as it is, :data:`SLICE_BATCHED`), the opset
    and the exporting torch version."""
    shape = "x".join("any" if s is None else str(int(s)) for s in sample_shape)
    torch_version = torch.__version__.split("+")[0]
    tag = f"-{layout}" if layout else ""
    return f"{digest[:24]}-{shape}{tag}-opset{ONNX_OPSET}-torch{torch_version}.onnx"


def runtime_cache_dir() -> str:
    """Where exported networks are kept between runs: ``$PIPELINE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/isles-pipeline/compiled``, else ``~/.cache/isles-pipeline/compiled``.

    Not beside the checkpoint: ``predict`` writes nothing outside ``--output`` but this cache, and model folders
    are often shared or read-only. The file names carry the weights' digest, so one cache serves every model.
    A folder that cannot be written gives way to a temporary one for the run (:class:`CompiledNetwork`).
    """
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return str(Path(chosen).expanduser())
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base).expanduser() / "isles-pipeline" / RUNTIME_CACHE_FOLDER)


def export_onnx(network: nn.Module, sample: torch.Tensor, path: str | Path,
                dynamic_spatial_axes: Sequence[int] = ()) -> Path:
    """Export ``network`` to ONNX at ``path`` for inputs shaped like ``sample`` with a dynamic batch axis.

    The file is written to a temporary name in the same folder and renamed into place, so a reader never sees
    a partial file and two processes exporting the same network do not collide.

    Args:
        network: the network in eval mode (one tensor out).
        sample: an input (N, C, *spatial) on the network's device; its values do not matter.
        path: the ONNX file to write.
        dynamic_spatial_axes: spatial axes (0 for the first) whose size the file leaves open too, input and
            output alike. Only for a network that traces them as sizes (the slice axis of a
            :class:`pipeline.networks.slice_batching.SliceBatchedNetwork`); where the network turns a size into a
            Python number, the file keeps the sample's size there.

    Returns:
        ``path``.

    Raises:
        OSError: the folder cannot be written.
        RuntimeError: the exporter cannot express the network (its own message).
    """
    from monai.networks.utils import convert_to_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".partial", dir=path.parent)
    os.close(handle)
    dynamic = {0: "batch", **{2 + int(a): f"spatial{int(a)}" for a in dynamic_spatial_axes}}
    axes = {"input": dict(dynamic), "output": dict(dynamic)}
    try:
        with warnings.catch_warnings():
            # the tracer's notes on sizes taken as constants: those of the axes left fixed here
            warnings.simplefilter("ignore")
            # the TorchScript exporter: the dynamo one takes several times longer for these networks, same graph
            convert_to_onnx(network.eval(), [sample], input_names=["input"], output_names=["output"],
                            opset_version=ONNX_OPSET, dynamic_axes=axes, filename=partial, verify=False,
                            use_trace=True, dynamo=False)
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the cache from the other users of a shared model folder
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path
