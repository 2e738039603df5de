"""The service: the queue, the inputs (C-STORE listener, inbox folder), the warm worker, the sender and the status
endpoint, wired together and driven by one loop.

The loop queues studies that have been quiet for the stable time, hands the oldest queued job to the worker when it
is idle, and files the worker's result: results published -> ``sending`` (or ``done`` with no destination); else
``failed`` with the stage and the one-paragraph reason ``predict`` gave. A worker that dies (a job that took it down
despite the limits, a kill) is started again and its job queued again (failed after
:data:`pipeline.serve.jobs.MAX_RUN_ATTEMPTS` starts). Sending runs in its own thread, so a slow or absent PACS never
holds up predictions.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.manifest import FAILED as CASE_FAILED
from pipeline.manifest import STAGE_COLUMNS, WRITTEN, read_manifest
from pipeline.serve.inbox import Inbox
from pipeline.serve.jobs import DONE, FAILED, QUEUED, RECEIVED, RUNNING, SENDING, JobQueue
from pipeline.serve.sender import (
    RETRY_FIRST_SECONDS, Destination, SendError, result_objects, retry_delay, send,
)
from pipeline.serve.studies import JobFolders
from pipeline.serve.worker import JobLimits, PredictSettings, settings_payload, worker_main

LOG = logging.getLogger("pipeline.serve")
LOCK_NAME = "serve.lock"
WARMUP_LOG = "warmup.log"
# How long the worker may take to import and predict the warm-up study.
WORKER_START_SECONDS = 600.0
LOOP_SECONDS = 0.1


class ServiceError(RuntimeError):
    """The service cannot start (its state folder is in use, the model cannot predict, an address is taken)."""


@dataclass
class ServeOptions:
    """How the service runs (``python -m pipeline serve``'s options).

    Attributes:
        state_dir: the state folder (queue, studies, results, logs).
        ae_title: this service's AE title (listening and sending).
        dicom_port: the C-STORE listener's port (``None``: no listener; 0: a free port).
        dicom_host: the listener's address.
        allowed_ae: calling AE titles accepted by the listener.
        inbox: a folder watched for study folders (``None``: none).
        send_to: where results go (``None``: kept in the state folder only).
        http: the status endpoint's (host, port) (``None``: none).
        stable_seconds: a study is complete when no instance of it came for this long.
        once: run what is received and queued, try each send once, then stop.
        retry_seconds: the wait before the first new try of a failed send (doubling after each failure).
    """

    state_dir: Path
    ae_title: str = "ISLES_AI"
    dicom_port: int | None = None
    dicom_host: str = "127.0.0.1"
    allowed_ae: list[str] = field(default_factory=list)
    inbox: Path | None = None
    send_to: Destination | None = None
    http: tuple[str, int] | None = None
    stable_seconds: float = 10.0
    once: bool = False
    retry_seconds: float = RETRY_FIRST_SECONDS


class Service:
    """The running service (see the module docstring).

    Args:
        options: how it runs.
        settings: the ``predict`` flags of every study.
        limits: each job's limits.
    """

    def __init__(self, options: ServeOptions, settings: PredictSettings, limits: JobLimits) -> None:
        self.options = options
        self.settings = settings
        self.limits = limits
        self.state_dir = Path(options.state_dir).resolve()
        self.stopping = threading.Event()
        self.queue: JobQueue | None = None
        self.listener = None
        self.status = None
        self.inbox: Inbox | None = None
        self._lock_file = None
        self._worker = None
        self._connection = None
        self._running_job: int | None = None
        self._worker_state = "starting"
        self._sender = threading.Thread(target=self._send_loop, name="serve-sender", daemon=True)
        self._send_pass = threading.Event()

    # ---- start and stop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the state folder, put back what a stopped service left, start the status endpoint and the inputs (a
        study that arrives during the warm-up is received and waits), then the worker (waiting for its warm-up) and
        the sender.

        Raises:
            ServiceError: the state folder is used by another service, or the worker could not warm up.
            OSError: an address cannot be bound.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_state_folder()
        self.queue = JobQueue(self.state_dir)
        for job, what in self.queue.recover(lambda job_id: JobFolders(self.state_dir, job_id).published()):
            LOG.warning("job %d (study %s): %s", job.id, job.study_uid, what)
        if self.options.http is not None:
            from pipeline.serve.status import StatusServer

            self.status = StatusServer(self.queue, self.health, *self.options.http)
            self.status.start()
            LOG.info("status on http://%s:%d/health", self.options.http[0], self.status.port)
        if self.options.dicom_port is not None:
            from pipeline.serve.listener import StudyListener

            self.listener = StudyListener(self.queue, self.state_dir, self.options.ae_title, self.options.allowed_ae,
                                          self.options.dicom_host, self.options.dicom_port)
            self.listener.start()
            LOG.info("listening for DICOM C-STORE as %s on %s:%d (calling AE titles accepted: %s)",
                     self.options.ae_title, self.options.dicom_host, self.listener.port,
                     ", ".join(self.options.allowed_ae))
        if self.options.inbox is not None:
            self.inbox = Inbox(self.options.inbox, self.queue, self.state_dir, self.options.stable_seconds)
            LOG.info("watching %s for study folders", self.options.inbox)
        self._start_worker()  # studies that arrive meanwhile are received and wait in the queue
        if not self.options.once:  # with once, the loop makes one try of each send itself before it stops
            self._sender.start()

    def _take_state_folder(self) -> None:
        handle = open(self.state_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open while the service runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ServiceError(f"{self.state_dir} is the state folder of a running service ({holder}); stop it or "
                               "give another --state") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _start_worker(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        settings, limits = settings_payload(self.settings, self.limits)
        self._worker = context.Process(target=worker_main, name="serve-worker", daemon=True,
                                       args=(theirs, settings, limits, str(self.state_dir / WARMUP_LOG)))
        self._worker_state = "starting"
        started = time.perf_counter()
        self._worker.start()
        theirs.close()
        self._connection = ours
        if not ours.poll(WORKER_START_SECONDS):
            self._worker.kill()
            raise ServiceError(f"the worker did not finish its warm-up within {WORKER_START_SECONDS:g} s "
                               f"(see {self.state_dir / WARMUP_LOG})")
        try:
            ready = ours.recv()
        except EOFError:
            ready = {"ready": False, "error": f"the worker stopped during its warm-up (exit status "
                                              f"{self._worker.exitcode}; see {self.state_dir / WARMUP_LOG})"}
        if not ready.get("ready"):
            self._worker.join(5)
            raise ServiceError(str(ready.get("error")))
        self._worker_state = "warm"
        LOG.info("worker %d warm in %.1f s (warm-up study %.1f s)", self._worker.pid, time.perf_counter() - started,
                 ready.get("seconds", 0.0))

    def stop(self) -> None:
        """Stop the inputs, the status endpoint, the sender and the worker, queue the job it was running again (not
        counted as a failed start), and release the state folder."""
        self.stopping.set()
        self._send_pass.set()
        if self.listener is not None:
            self.listener.stop()
        if self.status is not None:
            self.status.stop()
        if self._sender.is_alive():
            self._sender.join(60)
        if self._worker is not None and self._worker.is_alive():
            self._worker.kill()
            self._worker.join(10)
        if self._running_job is not None and self.queue is not None:
            LOG.info("job %d: the service stopped during its run: queued again", self._running_job)
            self.queue.release(self._running_job)
            self._running_job = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ---- the loop -------------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The health fields of the status endpoint."""
        alive = self._worker is not None and self._worker.is_alive()
        status = "ok" if alive and self._worker_state == "warm" else ("starting" if self._worker_state == "starting"
                                                                        else "worker lost")
        return {"status": status, "worker": self._worker_state, "worker_pid": self._worker.pid if alive else None,
                "running_job": self._running_job,
                "listening": self.listener.port if self.listener is not None else None,
                "send_to": str(self.options.send_to) if self.options.send_to else None}

    def run(self) -> None:
        """Run until :meth:`stop` is called (or a signal sets :attr:`stopping`), or with ``once`` until nothing is
        left to receive, queue or run, and each result has been tried once."""
        next_scan = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.inbox is not None and now >= next_scan:
                self.inbox.scan()
                next_scan = now + 1.0
            for job in self.queue.queue_stable(self.options.stable_seconds):
                LOG.info("job %d (study %s): %d instance(s), quiet for %gs: queued", job.id, job.study_uid,
                         job.instances, self.options.stable_seconds)
            self._drive_worker()
            if self.options.once and self._idle():
                self._drain_sends_once()
                return
            time.sleep(LOOP_SECONDS)

    def _idle(self) -> bool:
        counts = self.queue.counts()
        return self._running_job is None and not any(counts[s] for s in (RECEIVED, QUEUED, RUNNING))

    def _drive_worker(self) -> None:
        if self._worker is not None and not self._worker.is_alive():
            lost = self._running_job
            self._running_job = None
            self._worker_state = "lost"
            if lost is not None:
                LOG.error("job %d: the worker stopped (exit status %s) while predicting it: queued again", lost,
                          self._worker.exitcode)
                self.queue.requeue(lost, f"the worker stopped (exit status {self._worker.exitcode}) during the run")
            self._start_worker()
            return
        if self._running_job is None:
            job = self.queue.claim_next()
            if job is None:
                return
            folders = JobFolders(self.state_dir, job.id)
            folders.root.mkdir(parents=True, exist_ok=True)
            LOG.info("job %d (study %s): predicting (%d instance(s))", job.id, job.study_uid, job.instances)
            self._running_job = job.id
            self._connection.send({"job": job.id, "input": str(folders.input_root), "output": str(folders.output),
                                   "log": str(folders.log)})
            return
        if self._connection.poll(0):
            try:
                result = self._connection.recv()
            except (EOFError, OSError):
                return  # the worker is gone: seen as dead on the next turn
            self._running_job = None
            self._file_result(result)

    def _file_result(self, result: dict[str, Any]) -> None:
        job_id = int(result["job"])
        job = self.queue.get(job_id)
        folders = JobFolders(self.state_dir, job_id)
        stages = {"receive": job.last_instance_at - job.received_at,
                  "wait": (job.started_at or job.last_instance_at) - job.last_instance_at,
                  "predict": float(result.get("seconds") or 0.0),
                  "peak_private_mb": float(result.get("peak_private_mb") or 0.0)}
        entries = [] if result.get("killed") else (read_manifest(folders.output) or [])
        written = [e for e in entries if e.status == WRITTEN]
        if written:
            for column in STAGE_COLUMNS:
                values = [float(getattr(e, column)) for e in written if getattr(e, column, "")]
                if values:
                    stages[column] = sum(values)
            state = SENDING if self.options.send_to is not None else DONE
            self.queue.finish(job_id, state, stages)
            LOG.info("job %d (study %s): predicted in %.1f s: %s", job_id, job.study_uid, stages["predict"],
                     "sending" if state == SENDING else f"results in {folders.output}")
            self._send_pass.set()
            return
        failure = result.get("killed") or next((e.error for e in entries if e.status == CASE_FAILED and e.error), "")
        reason = failure or result.get("error") or f"the run ended with exit status {result.get('exit')}"
        self.queue.finish(job_id, FAILED, stages, stage="predict", reason=reason)
        LOG.error("job %d (study %s) failed: %s", job_id, job.study_uid, reason)

    # ---- sending --------------------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self.stopping.is_set():
            self._send_pass.wait(1.0)
            self._send_pass.clear()
            if self.options.send_to is None:
                continue
            self._send_due()

    def _send_due(self) -> None:
        for job in self.queue.due_sends():
            if self.stopping.is_set():
                return
            self.send_job(job.id, job.study_uid, job.send_attempts)

    def _drain_sends_once(self) -> None:
        """With ``once``: one try for every result still waiting, then the service stops."""
        if self.options.send_to is None:
            return
        for job in self.queue.jobs((SENDING,)):
            self.send_job(job.id, job.study_uid, job.send_attempts)

    def send_job(self, job_id: int, study_uid: str, attempts: int) -> bool:
        """Send one job's results to the destination; on failure keep it for a later try (back-off). Returns
        whether it was sent."""
        files = result_objects(JobFolders(self.state_dir, job_id).output)
        started = time.perf_counter()
        try:
            if not files:
                raise SendError("the job's output folder holds no DICOM object to send")
            send(self.options.send_to, files, self.options.ae_title)
        except (SendError, OSError, ValueError) as err:
            delay = retry_delay(attempts + 1, self.options.retry_seconds)
            self.queue.send_failed(job_id, f"sending to {self.options.send_to} failed: {err}", delay)
            LOG.warning("job %d (study %s): sending to %s failed (%s): next try in %g s", job_id, study_uid,
                        self.options.send_to, err, delay)
            return False
        self.queue.sent(job_id, time.perf_counter() - started)
        LOG.info("job %d (study %s): %d object(s) sent to %s", job_id, study_uid, len(files), self.options.send_to)
        return True


__all__ = ["ServeOptions", "Service", "ServiceError"]
