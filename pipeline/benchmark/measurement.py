"""The measuring toolkit: time inside a network's forward calls (:class:`NetworkClock`), peak memory of a
block (:class:`PeakMemory`, resident set size helpers), and side-by-side timing of several methods
(:func:`time_side_by_side`, one :class:`Timing` per method)."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NetworkClock:
    """Time spent inside a network's forward calls, through forward hooks (the network itself is not wrapped,
    so an inferer sees exactly the same module and attributes).

    Args:
        network: the module to time.
        device: the device it runs on (CUDA work is synchronised before each reading).

    Use as a context manager; ``seconds`` and ``calls`` accumulate while it is open.
    """

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        self.network = network
        self.device = torch.device(device)
        self.seconds = 0.0
        self.calls = 0
        self._started: float | None = None
        self._handles: list[Any] = []

    def _before(self, module: nn.Module, inputs: Any) -> None:
        _synchronize(self.device)
        self._started = time.perf_counter()

    def _after(self, module: nn.Module, inputs: Any, output: Any) -> None:
        _synchronize(self.device)
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.calls += 1
            self._started = None

    def __enter__(self) -> "NetworkClock":
        self._handles = [
            self.network.register_forward_pre_hook(self._before),
            self.network.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _rss_bytes() -> int | None:
    """The resident set size of this process now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Hand memory that the C allocator keeps after ``free`` back to the system (glibc ``malloc_trim``), so that
    the resident set size before a measured call does not already hold the memory the call is going to need."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (``resource.getrusage``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakMemory:
    """Peak memory of a block of code beyond what was in use when it started.

    The resident set size is sampled every ``interval_s`` by a background thread (``/proc/self/statm``; the
    process-wide ``getrusage`` peak cannot be reset, so it cannot give the peak of one call), after the memory
    the C allocator kept from earlier work has been handed back (glibc ``malloc_trim``); on a CUDA device the
    allocator's peak is read as well.

    Args:
        device: the device the code runs on.
        interval_s: the sampling interval.

    Attributes (after the block): ``rss_bytes`` (None where ``/proc`` is missing) and ``gpu_bytes``
    (None off CUDA).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.rss_bytes: int | None = None
        self.gpu_bytes: int | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._start = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = _rss_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __enter__(self) -> "PeakMemory":
        _release_free_memory()
        start = _rss_bytes()
        if start is not None:
            self._start = self._peak = start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._gpu_start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gpu_bytes = torch.cuda.max_memory_allocated(self.device) - self._gpu_start
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = _rss_bytes()
            self.rss_bytes = max(self._peak, now or 0) - self._start


@dataclass
class Timing:
    """Measurements of one method in a side-by-side row.

    Attributes:
        total_s: end-to-end seconds per timed repeat.
        network_s: seconds inside the network's forward calls per timed repeat.
        calls: network calls per timed repeat.
        page_faults: minor page faults of the process per timed repeat (first touches of fresh memory).
        rss_bytes: peak resident memory beyond the start, in the untimed memory pass (None where not measurable).
        gpu_bytes: peak GPU memory beyond the start, in the memory pass (None off CUDA).
    """

    total_s: list[float] = field(default_factory=list)
    network_s: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    page_faults: list[int] = field(default_factory=list)
    rss_bytes: int | None = None
    gpu_bytes: int | None = None

    @property
    def total(self) -> float:
        """Median end-to-end seconds."""
        return statistics.median(self.total_s)

    @property
    def network(self) -> float:
        """Median seconds inside the network."""
        return statistics.median(self.network_s)

    def to_dict(self) -> dict[str, Any]:
        """The measurements as plain JSON-able values."""
        return {k: getattr(self, k) for k in ("total_s", "network_s", "calls", "page_faults", "rss_bytes", "gpu_bytes")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Timing":
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: values[k] for k in ("total_s", "network_s", "calls", "page_faults", "rss_bytes", "gpu_bytes")})


def _minor_faults() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def time_side_by_side(
    methods: Mapping[str, tuple[nn.Module, Callable[[], Any]]], repeats: int, device: torch.device,
    memory_pass: bool = True,
) -> dict[str, Timing]:
    """Run every method once per repeat, in an order that rotates from repeat to repeat, and time each call.

    Args:
        methods: name -> (the network it runs, a callable doing the whole work). The network's forward calls
            are timed by a :class:`NetworkClock`.
        repeats: how many timed runs every method gets.
        device: the device the methods run on.
        memory_pass: first run every method once, untimed, under :class:`PeakMemory` (this is also the warm-up;
            memory is not sampled during the timed runs, whose allocations it would otherwise slow down).

    Returns:
        name -> :class:`Timing`.
    """
    names = list(methods)
    timings = {name: Timing() for name in names}
    if memory_pass:
        for name in names:
            with PeakMemory(device) as memory:
                methods[name][1]()
            timings[name].rss_bytes, timings[name].gpu_bytes = memory.rss_bytes, memory.gpu_bytes
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            network, run = methods[name]
            with NetworkClock(network, device) as clock:
                faults = _minor_faults()
                _synchronize(device)
                started = time.perf_counter()
                run()
                _synchronize(device)
                elapsed = time.perf_counter() - started
                faults = _minor_faults() - faults
            timing = timings[name]
            timing.total_s.append(elapsed)
            timing.network_s.append(clock.seconds)
            timing.calls.append(clock.calls)
            timing.page_faults.append(faults)
    return timings
