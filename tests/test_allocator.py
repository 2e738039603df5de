"""The glibc malloc settings the CLI applies to itself and passes on to the bundle runs it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.allocator import MALLOC_ENV, OPT_OUT, keep_freed_memory

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


@glibc_only
def test_settings_apply_here_and_reach_subprocesses(monkeypatch):
    for key in MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert keep_freed_memory() is True
    seen = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
                           f"{sorted(MALLOC_ENV)!r}}}))"], capture_output=True, text=True, check=True).stdout
    assert json.loads(seen) == MALLOC_ENV


def test_opting_out_changes_nothing(monkeypatch):
    for key in MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(OPT_OUT, "default")
    assert keep_freed_memory() is False
    assert not any(key in os.environ for key in MALLOC_ENV)
