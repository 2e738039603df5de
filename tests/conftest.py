"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``slow`` unless RUN_SLOW=1 (CI runs without it)."""
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory):
    """The ONNX runtimes' export cache of every run the tests start, in a temporary folder instead of the user's;
    and ``auto`` pinned to torch, so that only the tests about runtimes pay for ONNX exports (they name theirs)."""
    from pipeline.runtimes import CACHE_ENV, RUNTIME_ENV

    previous = {name: os.environ.get(name) for name in (CACHE_ENV, RUNTIME_ENV)}
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("runtime-cache"))
    os.environ[RUNTIME_ENV] = "torch"
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def seeded_single_thread():
    """Seed, and run single-threaded: tiny networks are many times faster without thread hand-offs."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_datalist(tmp_path_factory):
    """A factory ``make(name, cases, test_cases, seed=21, folds=2) -> Path``: writes the synthetic dataset and
    its datalist with the CLI's own ``synth`` and ``prepare`` under a fresh folder, returns the datalist."""

    def make(name: str, cases: int, test_cases: int, seed: int = 21, folds: int = 2) -> Path:
        root = tmp_path_factory.mktemp(name)
        assert main(["synth", str(root / "data"), "--cases", str(cases), "--test-cases", str(test_cases),
                     "--seed", str(seed)]) == 0
        assert main(["prepare", "--root", str(root / "data"), "--out", str(root / "datalist.json"),
                     "--folds", str(folds)]) == 0
        return root / "datalist.json"

    return make


TINY_NETWORK = ["--set", "features=[4,4,8,8,8,8]", "--set", "batch_size=2", "--set", "cache_rate=0.0",
                "--set", "patch_size=[64,64,1]"]


@pytest.fixture(scope="session")
def tiny_ctp_model(tmp_path_factory) -> Path:
    """A tiny UNet++ trained for one epoch on the synthetic ISLES 2024 data (channels NCCT, CBF, CBV, MTT, Tmax: the
    hospital DICOM profile's), once per test session; returns its ``train --output`` folder."""
    root = tmp_path_factory.mktemp("tiny-ctp-model")
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
    assert main(["synth", str(root / "synth"), "--cases", "4", "--test-cases", "1", "--seed", "5",
                 "--layout", "isles2024"]) == 0
    assert main(["prepare", "--root", str(root / "synth"), "--out", str(root / "synth.json"), "--folds", "2"]) == 0
    assert main(["train", "--bundle", str(bundle), "--datalist", str(root / "synth.json"), "--fold", "0",
                 "--epochs", "1", "--output", str(root / "run"), "--postprocessing", "none", *TINY_NETWORK]) == 0
    return root / "run"
