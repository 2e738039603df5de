"""Reduced precision: the autocast dtype per device, where it pays off, and the autocast inferer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from monai.inferers import SimpleInferer

from pipeline.precision import AutocastInferer, low_precision_pays_off


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the CPU flags from /proc/cpuinfo")
def test_cpu_low_precision_is_on_exactly_where_the_cpu_has_native_bf16_instructions():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    assert low_precision_pays_off("cpu") is native
    assert low_precision_pays_off(torch.device("cpu")) is native


def test_devices_without_fast_low_precision_stay_in_float32():
    assert low_precision_pays_off("meta") is False
    if not torch.cuda.is_available():
        assert low_precision_pays_off("cuda") is False


def test_autocast_inferer_runs_the_network_in_bf16_and_returns_float32():
    seen = []

    def network(x):
        y = torch.nn.functional.linear(x, torch.ones(3, 4))  # autocast casts linear to bf16
        seen.append(y.dtype)
        return y

    x = torch.randn(2, 4)
    out = AutocastInferer(SimpleInferer(), "cpu", torch.bfloat16)(x, network)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32


def test_a_disabled_autocast_inferer_is_the_wrapped_inferer():
    network = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with torch.no_grad():
        out = AutocastInferer(SimpleInferer(), "cpu", torch.bfloat16, enabled=False)(x, network)
        torch.testing.assert_close(out, network(x), rtol=0, atol=0)
