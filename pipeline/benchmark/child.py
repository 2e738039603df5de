"""The inference rows once more in a child process with glibc malloc tuned (:data:`~pipeline.allocator.MALLOC_ENV`):
the parent's launch of ``python -c "from pipeline.benchmark.child import _child_main; _child_main()"`` and the
child's entry, a JSON spec on stdin and JSON timings on stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from pipeline.allocator import MALLOC_ENV
from pipeline.benchmark.measurement import Timing
from pipeline.benchmark.options import PROJECT_ROOT
from pipeline.benchmark.scenarios import inference_timings

CHILD_METHODS = ("ours", "monai", "grown", "whole", "default_ours")


def _child_main() -> None:
    """Entry of the allocator-comparison child: a JSON spec on stdin, JSON timings as the last stdout line."""
    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(int(spec["threads"]))
    results = inference_timings(spec, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({name: {m: t.to_dict() for m, t in rows.items()} for name, rows in results.items()}))


def _tuned_malloc_timings(spec: Mapping[str, Any]) -> tuple[dict[str, dict[str, Timing]] | None, str]:
    """The inference rows once more in a child process whose glibc malloc is set by :data:`MALLOC_ENV`.

    Returns:
        (the timings, or None where this is not Linux or the child failed; a note on what happened).
    """
    import subprocess

    if not sys.platform.startswith("linux"):
        return None, "not measured: the malloc settings are glibc's (Linux)"
    env = dict(os.environ, **MALLOC_ENV)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    child_spec = dict(spec, methods=list(CHILD_METHODS), patch=None, memory_pass=False,
                      repeats=int(spec["repeats"]) + 1, threads=torch.get_num_threads())
    command = [sys.executable, "-c", "from pipeline.benchmark.child import _child_main; _child_main()"]
    done = subprocess.run(command, input=json.dumps(child_spec), capture_output=True, text=True, env=env,
                          cwd=str(PROJECT_ROOT))
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"not measured: the child process failed ({tail})"
    values = json.loads(done.stdout.strip().splitlines()[-1])
    timings = {name: {m: Timing.from_dict(t) for m, t in rows.items()} for name, rows in values.items()}
    for rows in timings.values():  # its first run is the warm-up
        for t in rows.values():
            t.total_s, t.network_s, t.calls, t.page_faults = (
                t.total_s[1:], t.network_s[1:], t.calls[1:], t.page_faults[1:])
    return timings, " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
