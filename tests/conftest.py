"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def seeded_single_thread():
    """Seed, and run single-threaded: tiny networks are many times faster without thread hand-offs."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
