"""A network run by an ONNX runtime behind the interface of the torch module it was exported from."""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from pipeline.io import atomic_write_json
from pipeline.manifest import file_sha256
from pipeline.runtimes.backends import load_runtime_model, runtime_version
from pipeline.networks.slice_batching import SliceBatchedNetwork, slice_axis_of
from pipeline.runtimes.onnx_export import SLICE_BATCHED, export_onnx, onnx_file_name, weights_digest

__all__ = ["CompiledNetwork"]

logger = logging.getLogger(__name__)

# how close the runtime's first output must be to torch's on the same window (logits): float32 rounding, with room
# for a different order of summation; reduced precision is checked by the classes it predicts instead
FLOAT32_TOLERANCE = 1e-3
REDUCED_PRECISION_AGREEMENT = 0.99


def _open_axis_probes(key: tuple[int, ...], axis: int) -> list[tuple[int, ...]]:
    """Shapes (channels and spatial size) that check a model whose spatial ``axis`` is open: one slice (the
    slices never meet) and three (they meet in the norms), whatever depth the export was traced with."""
    return [tuple(slices if i == 1 + axis else size for i, size in enumerate(key)) for slices in (1, 3)]


class CompiledNetwork(nn.Module):
    """``network`` exported to ONNX and run by ``runtime``: a module whose forward gives the network's output
    (tensor in, tensor out), so an inferer, a forward hook or a timer treats it as the network itself.

    Attributes the inferers read (``size_divisor``, ``strides``, ``margin``, ...) are the network's. For each new
    input shape (channels and spatial size; the batch axis is dynamic) the network is exported once
    (:func:`pipeline.runtimes.onnx_export.export_onnx`) into ``cache_dir`` under a name keyed by its weights,
    so later runs load the file instead. A slice-wise network is exported slice-batched
    (:mod:`pipeline.networks.slice_batching`) with its number of slices left open, so one file and one loaded
    model serve windows of every depth. Every loaded model is first checked against the torch module on random
    windows (of its shape; of two depths when the depth is open); a file that passed is recorded as such beside it
    (``<file>.<runtime>.checked``: its SHA-256 and the runtime's version) and loads unchecked afterwards. The
    weights are read again whenever they change in place (a checkpoint loaded after this object was made).

    A cached file that cannot be loaded or fails the check is exported again. Whatever fails after that (the
    export, loading, the check) is stated in a warning, and the network then runs in torch: the result is
    always the module's.

    Args:
        network: the torch module (eval mode at call time; one tensor out).
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        cache_dir: where ONNX files are kept; None, or a folder that cannot be written: a temporary folder for
            this process.
        reduced_precision: let the runtime compute in bfloat16 where the CPU has it (OpenVINO only).
    """

    def __init__(self, network: nn.Module, runtime: str, cache_dir: str | Path | None = None,
                 reduced_precision: bool = False) -> None:
        super().__init__()
        self.network = network
        self.runtime = runtime
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.reduced_precision = bool(reduced_precision)
        self._models: dict[tuple[int, ...], Any] = {}  # by input shape; shapes that share a file share its model
        self._loaded: dict[Path, Any] = {}
        self._refused: set[Path] = set()  # slice-batched files that failed: not exported again for each depth
        self._weights_version: tuple | None = None
        self._digest = ""
        self._fallback_reason: str | None = None
        self._temporary: tempfile.TemporaryDirectory | None = None

    def __getattr__(self, name: str) -> Any:
        # only called for names this module lacks: the inferers' questions go to the network
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "network":
                raise
            return getattr(self._modules["network"], name)

    def _weights_changed(self) -> bool:
        tensors = itertools.chain(self.network.parameters(), self.network.buffers())
        version = tuple((id(t), t._version) for t in tensors)  # _version counts in-place writes (load_state_dict)
        if version == self._weights_version:
            return False
        self._weights_version = version
        return True

    def _writable_cache(self) -> Path:
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.cache_dir):
                    return self.cache_dir
            except OSError as error:
                logger.warning("cannot write the compiled-network cache %s (%s): exporting to a temporary folder",
                               self.cache_dir, error)
                self.cache_dir = None
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="pipeline-compiled-")
        return Path(self._temporary.name)

    def _load(self, sample: torch.Tensor) -> Any:
        """The runtime's model for inputs shaped like ``sample``, checked: already loaded, from the cache, else
        exported.

        A network whose slices meet only in instance norms is exported slice-batched
        (:class:`pipeline.networks.slice_batching.SliceBatchedNetwork`: the same output with fewer copies), with
        its slice axis open; if that export fails or does not match the module, the network is exported as it is,
        for this shape.
        """
        folder = self._writable_cache()
        key = tuple(sample.shape[1:])
        axis = slice_axis_of(self.network)
        if axis is not None:
            open_key = tuple(None if i == 1 + axis else size for i, size in enumerate(key))
            path = folder / onnx_file_name(self._digest, open_key, SLICE_BATCHED)
            try:
                if path not in self._refused:
                    return self._load_file(path, lambda: SliceBatchedNetwork(self.network, axis).eval(), sample,
                                           key, axis)
            except Exception as error:
                self._refused.add(path)
                logger.info("exporting the network as it is: its slice-batched export failed (%s: %s)",
                            type(error).__name__, error)
        return self._load_file(folder / onnx_file_name(self._digest, key), lambda: self.network, sample, key)

    def _load_file(self, path: Path, build: Callable[[], nn.Module], sample: torch.Tensor,
                   key: tuple[int, ...], open_axis: int | None = None) -> Any:
        """The model in ``path``: already loaded, else loaded if the file is there and checks, else ``build()``
        exported there (``open_axis``, a spatial axis, left dynamic), loaded and checked."""
        if path in self._loaded:
            return self._loaded[path]
        shapes = [key] if open_axis is None else _open_axis_probes(key, open_axis)
        cache = path.parent / "openvino" if self.runtime == "openvino" else None
        model = None
        if path.is_file():
            try:
                model = load_runtime_model(self.runtime, path, self.reduced_precision, cache)
                if not self._passed_before(path):
                    self._check(model, shapes)
                    self._record_pass(path)
            except Exception as error:  # a damaged or foreign file: export it again
                logger.warning("re-exporting %s: %s", path, error)
                model = None
        if model is None:
            export_onnx(build(), sample, path, () if open_axis is None else (open_axis,))
            logger.info("network exported to %s for %s", path, self.runtime)
            model = load_runtime_model(self.runtime, path, self.reduced_precision, cache)
            self._check(model, shapes)
            self._record_pass(path)
        self._loaded[path] = model
        return model

    def _pass_record(self, path: Path) -> Path:
        precision = "-reduced" if self.reduced_precision else ""
        return path.with_name(f"{path.name}.{self.runtime}{precision}.checked")

    def _pass_content(self, path: Path) -> dict[str, str]:
        return {"sha256": file_sha256(path), "runtime": self.runtime, "version": runtime_version(self.runtime)}

    def _passed_before(self, path: Path) -> bool:
        """True when this very file (by its SHA-256) passed the check with this runtime, version and precision:
        a warm service's job or a new predict run then loads it without running torch beside it."""
        try:
            return json.loads(self._pass_record(path).read_text()) == self._pass_content(path)
        except (OSError, ValueError):
            return False

    def _record_pass(self, path: Path) -> None:
        try:
            atomic_write_json(self._pass_record(path), self._pass_content(path))
        except OSError as error:  # a read-only cache: the check runs again next time
            logger.info("cannot record the check of %s: %s", path, error)

    def _check(self, model: Any, sample_shapes: list[tuple[int, ...]]) -> None:
        # on fixed random windows rather than the data: on a constant window (background) instance norm divides
        # rounding noise by sqrt(eps), and any two runtimes, or two torch builds, disagree there by design
        generator = torch.Generator().manual_seed(0)
        for sample_shape in sample_shapes:
            self._check_shape(model, torch.randn((1, *sample_shape), generator=generator))

    def _check_shape(self, model: Any, probe: torch.Tensor) -> None:
        with torch.no_grad():
            expected = self.network(probe.to(self._device())).float().cpu()
        got = torch.from_numpy(np.ascontiguousarray(model(probe.numpy())))
        if got.shape != expected.shape:
            raise ValueError(f"{self.runtime} gives an output of shape {tuple(got.shape)}, torch {tuple(expected.shape)}")
        if self.reduced_precision:
            agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
            if agreement < REDUCED_PRECISION_AGREEMENT:
                raise ValueError(f"{self.runtime} in reduced precision agrees with torch on {agreement:.1%} of "
                                 "the voxels of a test window")
        elif not torch.allclose(got, expected, rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE):
            difference = (got - expected).abs().max().item()
            raise ValueError(f"{self.runtime} differs from torch by up to {difference:.3g} on a test window")

    def _device(self) -> torch.device:
        first = next(itertools.chain(self.network.parameters(), self.network.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    def _fall_back(self, reason: str) -> None:
        self._fallback_reason = reason
        self._models.clear()
        self._loaded.clear()
        warnings.warn(f"runtime {self.runtime!r}: {reason}; the network runs in torch instead", stacklevel=3)

    def forward(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The network's output for ``inputs`` (N, C, *spatial) on their device, float32.

        Extra arguments are passed to the torch module, which then runs itself.
        """
        if self._weights_changed():
            self._digest = weights_digest(self.network)
            self._models.clear()
            self._loaded.clear()
            self._refused.clear()
            self._fallback_reason = None
        if args or kwargs or self._fallback_reason is not None:
            return self.network(inputs, *args, **kwargs)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        key = tuple(plain.shape[1:])
        model = self._models.get(key)
        if model is None:
            try:
                model = self._load(plain)
            except Exception as error:
                self._fall_back(f"the network could not be exported, loaded or checked ({type(error).__name__}: "
                                f"{error})")
                return self.network(inputs)
            self._models[key] = model
        array = plain.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(np.ascontiguousarray(model(array))).to(plain.device)
