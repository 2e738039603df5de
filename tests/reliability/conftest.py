"""Shared fixtures of the reliability tests: one small synthetic dataset in the ISLES 2018 layout and tiny weights."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main
from reliability_helpers import tiny_network


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """``root/data`` (synthetic ISLES 2018: 1 training, 3 test cases), ``root/datalist.json``, ``root/model.pt``."""
    root = tmp_path_factory.mktemp("reliability")
    assert main(["synth", str(root / "data"), "--cases", "1", "--test-cases", "3", "--seed", "11"]) == 0
    assert main(["prepare", "--root", str(root / "data"), "--out", str(root / "datalist.json"), "--folds", "1"]) == 0
    torch.manual_seed(0)
    torch.save({"model": tiny_network().state_dict()}, root / "model.pt")
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at tmp_path/disk (skipped where this process may not mount one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)
