"""An inferer whose network runs in another runtime: :class:`RuntimeInferer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from pipeline.runtimes.network import CompiledNetwork

__all__ = ["RuntimeInferer"]


class RuntimeInferer(Inferer):
    """Run ``inferer`` with the network it is given replaced by a :class:`CompiledNetwork` of it, so windows,
    blending and everything after the inferer stay as they are and only the network's arithmetic moves to the
    runtime. One compiled network is kept per module it is called with (each member of an ensemble).

    Args:
        inferer: the inferer to run (MONAI's windows, the overlap-tile inferer, ...).
        runtime: ``"onnxruntime"`` or ``"openvino"`` (see :func:`pipeline.runtimes.resolve_runtime`).
        cache_dir: where exported networks are kept (:func:`pipeline.runtimes.runtime_cache_dir`), or None.
        reduced_precision: let the runtime compute in bfloat16 where the CPU has it (OpenVINO only).
    """

    def __init__(self, inferer: Inferer, runtime: str, cache_dir: str | Path | None = None,
                 reduced_precision: bool = False) -> None:
        super().__init__()
        self.inferer = inferer
        self.runtime = runtime
        self.cache_dir = cache_dir
        self.reduced_precision = bool(reduced_precision)
        self._compiled: dict[int, tuple[nn.Module, CompiledNetwork]] = {}

    def compiled(self, network: Any) -> Any:
        """The :class:`CompiledNetwork` of ``network`` (made on first use); anything but a module as it is."""
        if not isinstance(network, nn.Module):
            return network
        kept = self._compiled.get(id(network))
        if kept is None or kept[0] is not network:
            kept = (network, CompiledNetwork(network, self.runtime, self.cache_dir, self.reduced_precision))
            self._compiled[id(network)] = kept
        return kept[1]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any):
        """``inferer(inputs, compiled network, ...)``."""
        return self.inferer(inputs, self.compiled(network), *args, **kwargs)
