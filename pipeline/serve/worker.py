"""The warm worker: one process that imports torch, MONAI and the bundle's code once, runs one warm-up study, and
then runs each job in a child forked from itself, with a time and a memory limit.

The worker is a process of its own (started by the service with ``multiprocessing``'s spawn), single-threaded, so
that forking it is safe: the service's listener and status threads stay out of it. While warming up it runs torch on
one thread only: a forked child of a process whose OpenMP team has started hangs at its first parallel region (GNU
OpenMP is not fork-safe), while one forked before that starts its own team. The warm-up study (a small synthetic
study, written with :mod:`pipeline.dicom.writer`) goes through ``predict``'s whole path with the torch runtime, so
that the imports, MONAI's config parsing, highdicom's tables and matplotlib's fonts are loaded before the first
real study, and a model that cannot predict a DICOM study stops the service at its start. ONNX Runtime and
OpenVINO start threads when a model is loaded: their sessions are made in each job's child, from the export cache.

Each job's child runs ``predict --format dicom-seg`` in process (:func:`pipeline.predict.command.run_predict` with
``in_process=True``): exactly the command's path, on the job's input folder, into its output folder, its output
in the job's log. The worker kills a child that runs past the time limit or whose own memory (its private pages:
what it allocated, not what it shares with the worker) passes the memory limit; its address space is also capped
(``RLIMIT_AS``) so that one huge allocation fails at once instead of waiting for the next look.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# How often the worker looks at a running job (seconds).
POLL_SECONDS = 0.05
# The warm-up study's grid: small, so the warm-up costs little beyond the imports.
WARMUP_SHAPE = (64, 64, 4)
WARMUP_SPACING_MM = (1.0, 1.0, 5.0)
# The channels the warm-up study carries, each with its own name as SeriesDescription (the dicom_ctp profile's).
WARMUP_CHANNELS = ("NCCT", "CBF", "CBV", "MTT", "Tmax")


@dataclass
class PredictSettings:
    """What ``serve`` passes to ``predict`` for every study (the same flags as ``predict``'s).

    Attributes:
        bundle: the bundle folder.
        model, checkpoint: ``--model`` and ``--checkpoint``.
        runtime, tta, postprocessing, plans, strict: as ``predict``'s flags.
        overrides: ``--set KEY=VALUE`` items.
    """

    bundle: str
    model: str | None = None
    checkpoint: str | None = None
    runtime: str = "auto"
    tta: bool = False
    postprocessing: str | None = None
    plans: str | None = None
    strict: bool = False
    overrides: list[str] = field(default_factory=list)

    def predict_args(self, input_dir: str | Path, output_dir: str | Path, **changes: Any) -> argparse.Namespace:
        """The ``predict`` arguments of one study: ``--format dicom-seg`` from ``input_dir`` into ``output_dir``."""
        values = dict(bundle=self.bundle, input=str(input_dir), output=str(output_dir), format="dicom-seg",
                      name="team", split="testing", checkpoint=self.checkpoint, model=self.model, probabilities=False,
                      tta=self.tta, runtime=self.runtime, postprocessing=self.postprocessing, overwrite=False,
                      strict=self.strict, nproc=1, plans=self.plans, set=list(self.overrides), in_process=True,
                      debug=False)
        values.update(changes)
        return argparse.Namespace(**values)


@dataclass
class JobLimits:
    """Limits of one job's child.

    Attributes:
        seconds: wall-clock time before it is killed.
        memory_bytes: its own memory (private pages) before it is killed; its address space may grow by as much.
        threads: torch threads of the child (``None``: the machine's default).
    """

    seconds: float = 600.0
    memory_bytes: int = 8 << 30
    threads: int | None = None


def die_with_parent(parent: int) -> None:
    """Have this process killed (SIGKILL) when ``parent`` dies, so that a worker or a job never outlives a killed
    service (:func:`pipeline.bundles.parent_death_signal`); no-op where Linux's request is not available."""
    from pipeline.bundles import parent_death_signal

    request = parent_death_signal(signal.SIGKILL, parent)
    if request is not None:
        request()


def private_memory_bytes(pid: int) -> int | None:
    """The private memory of a process (``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup``): what a
    forked child allocated or wrote, not the pages it still shares with its parent. ``None`` when unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def _address_space_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def write_warmup_study(folder: str | Path, seed: int = 0) -> Path:
    """A small synthetic CTP study (NCCT and the four maps on one grid) as a patient folder of the ``dicom`` layout,
    under ``folder``. Returns the folder ``predict --input`` takes."""
    from pipeline.dicom.writer import write_ct_study

    rng = np.random.default_rng(seed)
    shape = WARMUP_SHAPE
    affine = np.diag([*WARMUP_SPACING_MM, 1.0])
    inside = np.zeros(shape, bool)
    inside[8:-8, 8:-8, :] = True
    values = {"NCCT": np.where(inside, rng.normal(32.0, 4.0, shape), -1000.0),
              "CBF": np.where(inside, rng.uniform(10.0, 60.0, shape), 0.0),
              "CBV": np.where(inside, rng.uniform(1.0, 5.0, shape), 0.0),
              "MTT": np.where(inside, rng.uniform(3.0, 9.0, shape), 0.0),
              "Tmax": np.where(inside, rng.uniform(0.0, 12.0, shape), 0.0)}
    root = Path(folder)
    write_ct_study(root / "warmup", {name: values[name] for name in WARMUP_CHANNELS}, affine,
                   {name: name for name in WARMUP_CHANNELS},
                   study={"StudyInstanceUID": "2.25.1", "PatientID": "WARMUP"})
    return root


@contextlib.contextmanager
def output_to(log_path: str | Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also what C libraries print) to
    ``log_path`` (appended) while inside; restored afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _last_error(log_path: Path) -> str:
    """The last ``error:`` paragraph of a job's log (what the CLI prints on bad input), else its last line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def warm_up(settings: PredictSettings, log_path: Path) -> float:
    """Import and load everything a study needs, then predict the warm-up study in this process (torch on one
    thread, the torch runtime). Returns the seconds it took.

    Raises:
        RuntimeError: the warm-up study could not be predicted (the message says why: usually the model's channels
            are not the DICOM profile's, or the checkpoint does not fit the bundle).
    """
    import torch

    started = time.perf_counter()
    torch.set_num_threads(1)
    from pipeline.manifest import WRITTEN, read_manifest
    from pipeline.predict.command import run_predict
    from pipeline.runtimes.choice import RUNTIMES, runtime_available

    if settings.runtime != "torch":  # the warm-up runs torch: import the ONNX runtimes' packages for the jobs
        for runtime in RUNTIMES:
            runtime_available(runtime)

    with tempfile.TemporaryDirectory(prefix="serve-warmup-") as work:
        study = write_warmup_study(Path(work) / "in")
        output = Path(work) / "out"
        args = settings.predict_args(study, output, runtime="torch")
        with output_to(log_path):
            try:
                status = run_predict(args, in_process=True)
            except Exception as err:  # noqa: BLE001 - reported as the CLI reports it
                from pipeline.errors import cli_message

                print(cli_message(err)[1], flush=True)
                status = 2
        entries = read_manifest(output) or []
        if status != 0 or not any(e.status == WRITTEN for e in entries):
            reason = next((e.error for e in entries if e.error), "") or _last_error(log_path)
            raise RuntimeError(f"the model could not predict the warm-up study ({reason or f'exit status {status}'}); "
                               f"see {log_path}")
    return time.perf_counter() - started


def run_job_child(settings: PredictSettings, request: Mapping[str, Any], limits: JobLimits) -> int:
    """In the forked child: cap the address space, restore torch's threads, run ``predict`` on the job's study with
    the output in its log. Returns the exit status (the child exits with it)."""
    size = _address_space_bytes()
    if size is not None and limits.memory_bytes > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (size + limits.memory_bytes, size + limits.memory_bytes))
    import torch

    if limits.threads:
        torch.set_num_threads(int(limits.threads))
    from pipeline.errors import cli_message
    from pipeline.predict.command import run_predict

    with output_to(request["log"]):
        try:
            return run_predict(settings.predict_args(request["input"], request["output"]), in_process=True)
        except MemoryError:
            print(f"error: the study needs more memory than the job's limit of {limits.memory_bytes / 2**30:.1f} GiB "
                  "(serve --job-memory-gb)", flush=True)
            return 2
        except Exception as err:  # noqa: BLE001 - reported as the CLI reports it
            traceback.print_exc()
            print(cli_message(err)[1], flush=True)
            return cli_message(err)[0]


def run_job(settings: PredictSettings, request: Mapping[str, Any], limits: JobLimits,
            child: Callable[[PredictSettings, Mapping[str, Any], JobLimits], int] = run_job_child) -> dict[str, Any]:
    """Fork a child for one job and wait for it within the limits.

    Args:
        settings: the ``predict`` flags.
        request: ``{"job": id, "input": folder, "output": folder, "log": file}``.
        limits: the job's limits.
        child: what the child runs (its return value is the child's exit status): :func:`run_job_child`.

    Returns:
        ``{"job": id, "exit": status or None, "killed": why or None, "seconds": wall time, "peak_private_mb": the
        largest private memory seen, "error": the log's last error line}``.
    """
    started = time.perf_counter()
    worker = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the worker's loop
        status = 1
        try:
            die_with_parent(worker)
            status = child(settings, request, limits)
        finally:
            os._exit(status if isinstance(status, int) else 1)
    killed = None
    peak = 0
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        elapsed = time.perf_counter() - started
        if elapsed > limits.seconds:
            killed = f"it ran past the job's time limit of {limits.seconds:g} s (serve --job-timeout)"
        else:
            private = private_memory_bytes(pid)
            peak = max(peak, private or 0)
            if private is not None and limits.memory_bytes > 0 and private > limits.memory_bytes:
                killed = (f"it used more than the job's memory limit of {limits.memory_bytes / 2**30:.1f} GiB "
                          "(serve --job-memory-gb)")
        if killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _, wait_status = os.waitpid(pid, 0)
            break
        time.sleep(POLL_SECONDS)
    code = os.waitstatus_to_exitcode(wait_status)
    if killed is None and code < 0:
        killed = f"it was ended by signal {-code} ({signal.Signals(-code).name})"
    return {"job": request["job"], "exit": None if killed else code, "killed": killed,
            "seconds": round(time.perf_counter() - started, 3), "peak_private_mb": round(peak / 2**20, 1),
            "error": _last_error(Path(request["log"]))}


def worker_main(connection, settings: Mapping[str, Any], limits: Mapping[str, Any], warmup_log: str) -> None:
    """The worker process: warm up, say so, then run each job request from ``connection`` and send back its result
    (see :func:`run_job`); ends when the connection closes. Started by :class:`pipeline.serve.service.Service`."""
    die_with_parent(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the service's to handle: it stops the worker itself
    from pipeline.allocator import keep_freed_memory

    keep_freed_memory()
    predict = PredictSettings(**settings)
    job_limits = JobLimits(**limits)
    if job_limits.threads is None:
        import torch

        job_limits.threads = torch.get_num_threads()
    try:
        seconds = warm_up(predict, Path(warmup_log))
    except Exception as err:  # noqa: BLE001 - whatever stops the warm-up is the service's start-up error
        connection.send({"ready": False, "error": str(err)})
        return
    connection.send({"ready": True, "seconds": round(seconds, 3), "pid": os.getpid()})
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        connection.send(run_job(predict, request, job_limits))


def settings_payload(settings: PredictSettings, limits: JobLimits) -> tuple[dict, dict]:
    """The worker's arguments as plain data (they cross a process boundary)."""
    return asdict(settings), asdict(limits)

