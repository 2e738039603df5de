"""Helpers of the reliability tests: the bundle, tiny weights, the predict command line."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.networks import UNetPlusPlus

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "isles_unetplusplus"
TINY_FEATURES = [4, 4, 8, 8, 16]


def tiny_network(in_channels: int = 5, features=TINY_FEATURES) -> UNetPlusPlus:
    """The bundle's default UNet++ (strides, kernels) at tiny widths, as ``--set features=...`` builds it, for the
    five channels ``prepare`` stacks from the synthetic data (CBF, CBV, MTT, Tmax and the CT)."""
    return UNetPlusPlus(spatial_dims=3, in_channels=in_channels, out_channels=2, strides=[[2, 2, 1]] * 4,
                        kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                        features=list(features), norm="instance", deep_supervision=True)


def predict_args(dataset: Path, *extra: str, in_process: bool = False) -> list[str]:
    """The argv of ``predict`` with the tiny weights of :func:`small_dataset` (``in_process``: the bundle runs in
    the test's process, for the tests that are not about the bundle's process)."""
    return ["predict", *(["--in-process"] if in_process else []), "--bundle", str(BUNDLE), "--checkpoint",
            str(dataset / "model.pt"), "--set", "features=[" + ",".join(map(str, TINY_FEATURES)) + "]", *extra]


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no block left."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
